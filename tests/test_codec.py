"""Frame codec: round trips for every width, compression where it should, bounded decoding of hostile frames."""

import ml_dtypes
import numpy as np
import pytest
import zstandard

from ckstore import codec


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
