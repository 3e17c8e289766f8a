"""Frame codec: round trips for every width, compression where it should, bounded decoding of hostile frames."""

import ml_dtypes
import numpy as np
import pytest
import zstandard

from ckstore.model import codec


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, np.int8,
                                   np.float64, np.bool_])
def test_round_trip_every_width(dtype):
    rng = np.random.default_rng(1)
    arr = rng.standard_normal(10_000).astype(dtype)
    raw = arr.tobytes()
    frame = codec.encode(raw, arr.dtype.itemsize)
    assert bytes(codec.decode(frame, len(raw))) == raw


def test_odd_length_opaque_and_empty():
    for raw in (b"", b"x", bytes(range(256)) * 3 + b"abc"):
        for width in (1, 2, 4):
            assert bytes(codec.decode(codec.encode(raw, width), len(raw))) == raw


def test_byte_grouping_beats_entropy_floor_fp32():
    arr = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
    frame = codec.encode(arr.tobytes(), 4)
    ratio = arr.nbytes / len(frame)
    assert 1.15 < ratio < 1.21  # exponent plane compresses; mantissa planes stay raw (entropy limit ≈ 1.206)


def test_xor_delta_used_when_smaller_and_decodes():
    rng = np.random.default_rng(0)
    old = rng.standard_normal(1 << 16).astype(np.float32)
    new = old.copy()
    new[:100] += 1e-3
    base_id = b"\x07" * 32
    frame = codec.encode(new.tobytes(), 4, base=old.tobytes(), base_id=base_id)
    assert codec.frame_base(frame) == base_id
    assert len(frame) < new.nbytes / 20
    out = codec.decode(frame, new.nbytes, lambda b: memoryview(old.tobytes()))
    assert bytes(out) == new.tobytes()


def test_xor_not_used_when_larger():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(4096).astype(np.float32), rng.standard_normal(4096).astype(np.float32)
    frame = codec.encode(a.tobytes(), 4, base=b.tobytes(), base_id=b"\1" * 32)
    assert codec.frame_base(frame) is None


def test_declared_length_must_match_index():
    frame = codec.encode(b"a" * 1000, 1)
    with pytest.raises(codec.FrameError, match="declares"):
        codec.decode(frame, 999)


def test_zstd_bomb_refused_before_decompressing():
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (1 << 24))
    frame = codec.HEADER.pack(codec.ZSTD, 0, 1, 0, 100) + bomb
    with pytest.raises(codec.FrameError, match="declares"):
        codec.decode(frame, 100)


@pytest.mark.parametrize("cut", [0, 3, 8, 9, 12, 20])
def test_truncated_frames_are_frame_errors(cut):
    raw = np.random.default_rng(0).standard_normal(1000).astype(np.float32).tobytes()
    frame = codec.encode(raw, 4)
    with pytest.raises(codec.FrameError):
        codec.decode(frame[:cut], len(raw))


def test_trailing_garbage_refused():
    frame = codec.encode(b"abcd" * 100, 4)
    with pytest.raises(codec.FrameError):
        codec.decode(frame + b"x", 400)


def _series(n_versions: int, size: int = 1 << 14, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    cur = rng.standard_normal(size).astype(dtype)
    out = [cur]
    for _ in range(n_versions - 1):
        cur = cur.copy()
        cur[::10] = (cur[::10].astype(np.float32) + 1e-2 * rng.standard_normal(cur[::10].size)).astype(dtype)
        out.append(cur)
    return out


def _chain(versions: list[np.ndarray], width: int) -> list[bytes]:
    """Frames newest first, each a delta against the version before it; the oldest is full."""
    frames = [codec.encode(versions[0].tobytes(), width)]
    for prev, cur in zip(versions, versions[1:]):
        frames.append(codec.encode(cur.tobytes(), width, base=prev.tobytes(), base_id=b"\x01" * 32))
    return frames[::-1]


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float64])
def test_decode_chain_matches_frame_by_frame(dtype):
    versions = _series(5, dtype=dtype)
    frames = _chain(versions, versions[0].dtype.itemsize)
    assert all(codec.frame_base(f) is not None for f in frames[:-1]) and codec.frame_base(frames[-1]) is None
    raw_len = versions[0].nbytes
    for k in range(len(frames)):  # each suffix is the chain of an older version
        assert bytes(codec.decode_chain(frames[k:], raw_len)) == versions[len(frames) - 1 - k].tobytes()


def test_decode_chain_ends_at_a_cached_base():
    versions = _series(3)
    frames = _chain(versions, 4)
    got = codec.decode_chain(frames[:1], versions[0].nbytes, tail=memoryview(versions[1].tobytes()))
    assert bytes(got) == versions[2].tobytes()


def test_decode_chain_mixed_widths_and_odd_length():
    rng = np.random.default_rng(5)
    old = rng.integers(0, 255, 4099, dtype=np.uint8).tobytes()
    new = bytearray(old)
    new[10:20] = b"x" * 10
    frames = [codec.encode(bytes(new), 2, base=old, base_id=b"\x02" * 32), codec.encode(old, 4)]
    assert bytes(codec.decode_chain(frames, len(old))) == bytes(new)


def test_decode_chain_refuses_inconsistent_chains():
    versions = _series(2)
    frames = _chain(versions, 4)
    with pytest.raises(codec.FrameError):  # the last frame of a chain must be full unless a tail is given
        codec.decode_chain(frames[:1], versions[0].nbytes)
    with pytest.raises(codec.FrameError):  # a full frame in the middle
        codec.decode_chain([frames[1], frames[1]], versions[0].nbytes)
    with pytest.raises(codec.FrameError):
        codec.decode_chain(frames, versions[0].nbytes + 4)


def test_plain_hint_skips_the_plain_attempt_only_when_the_delta_is_clearly_smaller(monkeypatch):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(1 << 16).astype(np.float32)
    old, new = a.tobytes(), (a + 1e-3 * rng.standard_normal(a.size).astype(np.float32)).tobytes()  # dense change
    tried = []
    real = codec._grouped
    monkeypatch.setattr(codec, "_grouped", lambda *a: tried.append(1) or real(*a))
    plain_len = len(codec.encode(old, 4))
    tried.clear()
    frame = codec.encode(new, 4, base=old, base_id=b"\x03" * 32, plain_hint=plain_len)
    assert codec.frame_base(frame) is not None and len(tried) == 1  # delta well under the hint: plain not tried
    tried.clear()
    codec.encode(new, 4, base=old, base_id=b"\x03" * 32, plain_hint=len(frame))
    assert len(tried) == 2  # delta not clearly smaller than the hint: both tried, the smaller kept


@pytest.mark.parametrize("width", range(1, 17))
def test_planes_are_the_bytes_of_each_element_in_order(width):
    """The word-shift split (widths 2 and 4) and the transpose (others) give the planes the format defines: plane j
    holds byte j of every element, the remainder last; unaligned inputs too (frames must not change with the code)."""
    rng = np.random.default_rng(width)
    for length in (0, 1, width - 1, 1000, 4099, 1 << 16):
        data = rng.bytes(max(length, 0))
        for raw in (np.frombuffer(data, np.uint8), np.frombuffer(b"x" + data, np.uint8)[1:]):
            n = len(raw) // width
            want = [bytes(raw[j:n * width:width]) for j in range(width)] if width > 1 else [bytes(raw[:n])]
            if len(raw) % width:
                want.append(bytes(raw[n * width:]))
            assert [bytes(p) for p in codec._planes(raw, width)] == want


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4097, 1 << 20])
def test_two_planes_join_back_to_the_bytes(length):
    """The word-shift join of 2-byte elements (the bf16/fp16 hot path) gives back exactly the split bytes."""
    raw = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8)
    planes = codec._planes(raw, 2)
    assert np.array_equal(codec._interleave(planes, 2, length), raw)
