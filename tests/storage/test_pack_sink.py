"""The pack sink reads back what it has not sealed yet: a delta frame whose base is in the unsealed pack decodes
from that pack's file, before anything is indexed; a damaged frame there is named, not handed out.

Real packs in a real repository under tmp_path.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import ckstore
from ckstore.errors import CorruptObject
from ckstore.model import codec
from ckstore.model.objects import hash_bytes


@pytest.fixture
def store(tmp_path):
    with ckstore.Repo.init(tmp_path / "r") as repo:
        yield repo.engine.store


def chunk_pair() -> tuple[bytes, bytes]:
    rng = np.random.default_rng(5)
    old = (rng.standard_normal(16384) * 0.02).astype(np.float32)
    new = old + (rng.standard_normal(16384) * 1e-5).astype(np.float32)
    return old.tobytes(), new.tobytes()


def test_a_delta_on_a_chunk_of_the_unsealed_pack_decodes_from_its_file(store):
    old, new = chunk_pair()
    a, b = hash_bytes(old), hash_bytes(new)
    delta = codec.encode(new, 4, base=old, base_id=a)
    assert codec.frame_base(delta) == a
    sink = store.sink(64 << 20, index_each_pack=True)
    sink.add(a, codec.encode(old, 4), len(old))
    sink.add(b, delta, len(new))
    assert not store.has_chunk(a)                       # nothing sealed or indexed yet
    assert bytes(sink.chunk(a)) == old
    assert bytes(codec.decode(delta, len(new), sink.chunk)) == new
    sink.seal()
    assert store.has_chunk(b) and bytes(store.get_chunk(b)) == new


def test_a_damaged_frame_in_the_unsealed_pack_is_named(store):
    old, _ = chunk_pair()
    a = hash_bytes(old)
    frame = codec.encode(old, 4)
    sink = store.sink(64 << 20, index_each_pack=True)
    sink.add(a, frame, len(old))
    sink.current._drain()
    fd = sink.current.file.fileno()
    e = sink.current.entries[0]
    last = os.pread(fd, 1, e.offset + e.length - 1)
    os.pwrite(fd, bytes([last[0] ^ 0x10]), e.offset + e.length - 1)   # the disk changed it under us
    with pytest.raises(CorruptObject) as err:
        sink.chunk(a)
    assert a.hex() in str(err.value) and "pack being written" in str(err.value)
    sink.abort()


def test_small_views_of_large_reads_do_not_pin_them(store):
    """A fetch hands the sink views of frames inside the ranges it read: the batch counts the whole buffer a view
    keeps alive, so small frames cannot hold many 8 MiB reads at once."""
    from ckstore.storage.packs import BATCH
    sink = store.sink(64 << 20, index_each_pack=True)
    for i in range(64):
        read = bytes([i]) * (8 << 20)                  # one range GET's bytes
        frame = codec.encode(memoryview(read)[:4096], 1)
        buf = frame + read[len(frame):]                  # the frame at the start of its read
        sink.add(hash_bytes(read[:4096]), memoryview(buf)[:len(frame)], 4096)
        held = {id(v.obj) for v in sink.current._batch if isinstance(v, memoryview)}
        assert len(held) * (8 << 20) <= BATCH + (8 << 20)   # at most the buffers of one batch's worth
    sink.seal()
    assert store.has_chunk(hash_bytes(bytes([63]) * 4096))
