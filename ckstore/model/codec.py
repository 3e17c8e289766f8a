"""Frame encoding: byte-grouped zstd, optionally XORed against a base chunk; bounded, verified decoding."""

from __future__ import annotations

import struct
import threading
from typing import Callable

import numpy as np
import zstandard

RAW, ZSTD, GROUPED = 0, 1, 2
FLAG_XOR = 1
HEADER = struct.Struct("<BBBBI")
PLANE = struct.Struct("<BI")
PLANE_RAW, PLANE_ZSTD = 0, 1
MAX_WIDTH = 16

_local = threading.local()


class FrameError(ValueError):
    """A frame that cannot be what it claims (raised before any unbounded work)."""


def _plane_params() -> zstandard.ZstdCompressionParameters:
    """zstd tuned for byte planes: exponent planes are low-entropy symbols with few useful repeats, so a tiny
    hash table and long minimum matches leave the work to the entropy coder. Measured on fp32 exponent planes:
    3.6x faster than level 1 and 13% smaller (bf16 high bytes: 4x faster, 8% smaller)."""
    return zstandard.ZstdCompressionParameters(compression_level=1, hash_log=6, min_match=7, search_log=1,
                                               window_log=17, strategy=zstandard.STRATEGY_FAST,
                                               write_content_size=True)


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstd contexts are not thread safe; one per thread and level, reused across chunks.
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = (zstandard.ZstdCompressor(compression_params=_plane_params()) if level <= 1
                        else zstandard.ZstdCompressor(level=level, write_content_size=True))
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


def _planes(raw: np.ndarray, width: int) -> list[np.ndarray]:
    n = len(raw) // width
    if width in (2, 4):
        planes = list(_split_bytes(raw[: n * width], width, n))
    elif width > 1:
        planes = list(raw[: n * width].reshape(n, width).T.copy())  # one transpose pass: plane j is row j
    else:
        planes = [raw[: n * width]]
    if len(raw) % width:
        planes.append(raw[n * width:])
    return planes


def _split_bytes(raw: np.ndarray, width: int, n: int) -> np.ndarray:
    """Byte j of every little-endian element as plane j, by shifting whole words and truncating: SIMD loops,
    where numpy's transposed copy gathers one byte at a time (per MiB: 0.13 ms instead of 0.42 for 2-byte
    elements, 0.26 instead of 0.43 for 4-byte ones; for 8-byte ones the transpose is faster)."""
    words = raw.view(f"<u{width}")
    out = np.empty((width, n), dtype=np.uint8)
    out[0] = words  # truncating cast: the low byte
    shifted = np.empty(n, dtype=words.dtype)
    for j in range(1, width):
        np.right_shift(words, 8 * j, out=shifted)
        out[j] = shifted
    return out


SAMPLE = 16 * 1024


def _encode_plane(plane: np.ndarray, level: int) -> tuple[bytes, bytes | np.ndarray]:
    """(plane header, body): a raw body is the plane itself, copied only once, into the joined frame."""
    # Mantissa planes are near random: a sample that does not compress means the plane will not either, so the
    # full zstd pass is skipped (it costs most of the encode time on dense float data).
    if len(plane) > 4 * SAMPLE:
        sample = plane[:SAMPLE]
        if len(_compressor(level).compress(sample)) >= SAMPLE - (SAMPLE >> 6):
            return PLANE.pack(PLANE_RAW, len(plane)), plane
    packed = _compressor(level).compress(plane)
    # Store raw unless zstd saves at least 1/64.
    if len(packed) < len(plane) - (len(plane) >> 6):
        return PLANE.pack(PLANE_ZSTD, len(packed)), packed
    return PLANE.pack(PLANE_RAW, len(plane)), plane


def encode(raw: memoryview | bytes, width: int, level: int = 1, base: memoryview | bytes | None = None,
           base_id: bytes | None = None, plain_hint: int | None = None) -> bytes:
    """Encode one chunk; with `base` (same length) the XOR delta is used when it is smaller. `plain_hint` is what
    a plain frame of earlier data of this chunk cost: a delta well under it is taken without trying plain."""
    data = np.frombuffer(raw, dtype=np.uint8)
    width = max(1, min(width, MAX_WIDTH))
    xored = None
    if base is not None and base_id is not None and len(base) == len(data):
        delta = np.bitwise_xor(data, np.frombuffer(base, dtype=np.uint8))
        xored = HEADER.pack(GROUPED, FLAG_XOR, width, 0, len(data)) + base_id + _grouped(delta, width, level)
        # A plain frame of dense data cannot beat half the raw size, nor (much) what plain frames of the same
        # tensor cost before: past either bound, trying it would double the encode time for nothing.
        if len(xored) * 2 <= len(data) or (plain_hint is not None and len(xored) * 10 <= plain_hint * 9):
            return xored
    plain = HEADER.pack(GROUPED, 0, width, 0, len(data)) + _grouped(data, width, level)
    return xored if xored is not None and len(xored) < len(plain) else plain


def _grouped(data: np.ndarray, width: int, level: int) -> bytes:
    return b"".join([part for p in _planes(data, width) for part in _encode_plane(p, level)])


def frame_base(frame: bytes | memoryview) -> bytes | None:
    """The chunk id this frame is a delta against, if any."""
    if len(frame) < HEADER.size:
        raise FrameError("frame shorter than its header")
    _, flags, *_ = HEADER.unpack_from(frame)
    if flags & FLAG_XOR:
        if len(frame) < HEADER.size + 32:
            raise FrameError("delta frame shorter than its base id")
        return bytes(frame[HEADER.size:HEADER.size + 32])
    return None


def decode(frame: bytes | memoryview, raw_length: int, base: Callable[[bytes], memoryview] | None = None) -> memoryview:
    """Decode a frame whose index entry says `raw_length`; every length is checked before it is trusted."""
    frame = memoryview(frame)
    if len(frame) < HEADER.size:
        raise FrameError("frame shorter than its header")
    codec, flags, width, _, length = HEADER.unpack_from(frame)
    if length != raw_length:
        raise FrameError(f"frame declares {length} bytes, index says {raw_length}")
    pos = HEADER.size
    base_id = None
    if flags & FLAG_XOR:
        base_id = bytes(frame[pos:pos + 32])
        pos += 32
    if codec == RAW:
        out = np.frombuffer(frame[pos:], dtype=np.uint8).copy()
        if len(out) != length:
            raise FrameError("raw frame length mismatch")
    elif codec == ZSTD:
        out = np.frombuffer(_unzstd(frame[pos:], length), dtype=np.uint8).copy()
    elif codec == GROUPED and 1 <= width <= MAX_WIDTH:
        out = _interleave(_read_planes(frame, pos, width, length), width, length)
    else:
        raise FrameError(f"unknown codec {codec} / width {width}")
    if base_id is not None:
        if base is None:
            raise FrameError("delta frame without a base reader")
        ref = np.frombuffer(base(base_id), dtype=np.uint8)
        if len(ref) != length:
            raise FrameError("delta base has another length")
        np.bitwise_xor(out, ref, out=out)
    return memoryview(out).cast("B")


def decode_chain(frames: list[bytes | memoryview], raw_length: int, tail: memoryview | None = None) -> memoryview:
    """Decode a delta chain at once: `frames[0]` is the chunk asked for, each next one the base of the one before;
    the last is a full frame, or a delta against `tail` (raw bytes already at hand). When every frame is grouped
    with one width, the XORs run plane by plane on the stored planes (raw planes straight from the frame) and the
    bytes are interleaved once at the end, instead of once per frame."""
    if len(frames) == 1 and tail is None:
        return decode(frames[0], raw_length)
    views = [memoryview(f) for f in frames]
    heads = []
    for i, f in enumerate(views):
        if len(f) < HEADER.size:
            raise FrameError("frame shorter than its header")
        codec, flags, width, _, length = HEADER.unpack_from(f)
        if length != raw_length:
            raise FrameError(f"frame declares {length} bytes, index says {raw_length}")
        last = i == len(views) - 1
        if bool(flags & FLAG_XOR) != (not last or tail is not None):
            raise FrameError("delta chain does not match its frames")
        heads.append((codec, width, HEADER.size + (32 if flags & FLAG_XOR else 0)))
    codecs, widths = {h[0] for h in heads}, {h[1] for h in heads}
    if codecs != {GROUPED} or len(widths) != 1 or not 1 <= heads[0][1] <= MAX_WIDTH:
        return _decode_nested(views, raw_length, tail)
    width = heads[0][1]
    planes = _read_planes(views[0], heads[0][2], width, raw_length)
    for f, (_, _, pos) in zip(views[1:], heads[1:]):
        planes = [np.bitwise_xor(a, b) for a, b in zip(planes, _read_planes(f, pos, width, raw_length))]
    out = _interleave(planes, width, raw_length)  # once for the whole chain
    if tail is not None:
        ref = np.frombuffer(tail, dtype=np.uint8)
        if len(ref) != raw_length:
            raise FrameError("delta base has another length")
        np.bitwise_xor(out, ref, out=out)
    return memoryview(out).cast("B")


def _decode_nested(frames: list[memoryview], raw_length: int, tail: memoryview | None) -> memoryview:
    """Mixed kinds or widths in one chain (rare): decode frame by frame from the oldest."""
    raw = tail
    for f in reversed(frames):
        base = raw
        raw = decode(f, raw_length, (lambda _id, b=base: b) if base is not None else None)
    return raw


def _interleave(planes: list[np.ndarray], width: int, length: int) -> np.ndarray:
    """Planes back to element order (plane j holds byte j of every element; a plane past `width` is the tail).
    Two planes are joined as little-endian words (low | high << 8: SIMD loops, 0.28 instead of 0.42 ms per MiB);
    wider ones column by column (numpy copies a whole transposed (width, n) block 5x slower than one strided
    column, and building 4-byte words from bytes costs more than the columns)."""
    out = np.empty(length, dtype=np.uint8)
    n = length // width
    if width == 2:
        words = out[: 2 * n].view("<u2")
        np.left_shift(planes[1], 8, out=words, dtype="<u2")
        np.bitwise_or(words, planes[0], out=words)
        if len(planes) > width:
            out[2 * n:] = planes[2]
        return out
    grid = out[: n * width].reshape(n, width)
    for j in range(width):
        grid[:, j] = planes[j]
    if len(planes) > width:
        out[n * width:] = planes[width]
    return out


def _read_planes(frame: memoryview, pos: int, width: int, length: int) -> list[np.ndarray]:
    """The planes of a grouped frame: raw planes as views into the frame, zstd planes decompressed."""
    n, rest = divmod(length, width)
    planes = []
    for j in range(width + (1 if rest else 0)):
        size = n if j < width else rest
        if pos + PLANE.size > len(frame):
            raise FrameError("frame truncated in a plane header")
        mode, stored = PLANE.unpack_from(frame, pos)
        pos += PLANE.size
        body = frame[pos:pos + stored]
        pos += stored
        if len(body) != stored:
            raise FrameError("frame truncated in a plane")
        if mode == PLANE_RAW:
            if stored != size:
                raise FrameError("raw plane has the wrong length")
            planes.append(np.frombuffer(body, dtype=np.uint8))
        elif mode == PLANE_ZSTD:
            planes.append(np.frombuffer(_unzstd(body, size), dtype=np.uint8))
        else:
            raise FrameError(f"unknown plane mode {mode}")
    if pos != len(frame):
        raise FrameError("trailing bytes after the last plane")
    return planes


def _unzstd(data: memoryview, expected: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise FrameError(f"bad zstd frame: {exc}") from None
    if declared != expected:
        raise FrameError(f"zstd frame declares {declared} bytes, expected {expected}")
    try:
        out = _decompressor().decompress(data, max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise FrameError(f"bad zstd frame: {exc}") from None
    if len(out) != expected:
        raise FrameError("zstd frame decoded to another length")
    return out
