"""GGUF files (llama.cpp, versions 2 and 3) read by a bounded parser of our own: each tensor a span with its GGML
type, the header, metadata and alignment padding the opaque rest.

Layout (little endian): b"GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata key/value pairs,
one info per tensor (name, u32 dims, u64 each dim innermost first, u32 GGML type, u64 offset into the data
section), then the data section at the next multiple of `general.alignment` (32 unless set). Every count and length
is checked against the bytes that are left before anything is allocated, and nested arrays are bounded, so a hostile
header costs at most one pass over itself. The `gguf` package is not used: its reader maps every field into numpy
arrays (and it pulls requests, tqdm and pyyaml); this one never copies a tensor. A tensor of a GGML type we do not
know stays in the opaque part (its size is not knowable); anything that does not parse makes the file opaque.
"""

from __future__ import annotations

import struct

from .base import ScannedFile, TensorInfo, opaque, spans_from_tensors, tensor_nbytes

MAGIC = b"GGUF"
MAX_DIMS = 8                # GGML has 4; a little room, never an absurd loop
MAX_DEPTH = 4               # arrays of arrays nest at most this deep
MAX_NAME = 1 << 16          # a tensor name (GGML caps it at 64 bytes)
# GGML type number -> our dtype name (a key of DTYPES or BLOCKS)
TYPES = {0: "F32", 1: "F16", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 30: "BF16",
         2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K",
         13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
         20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}
# metadata value type -> its fixed size in bytes (8: string and 9: array are variable)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT32 = 8, 9, 4


class _Bad(Exception):
    """The bytes are not a GGUF file this reader understands."""


class _Reader:
    """A cursor over the header whose every read is checked against the end of the file."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> memoryview:
        if n < 0 or n > len(self.buf) - self.pos:
            raise _Bad("a field runs past the end of the file")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self, limit: int | None = None) -> memoryview:
        n = self.u64()
        if limit is not None and n > limit:
            raise _Bad(f"a {n}-byte name")
        return self.take(n)

    def count(self, n: int, least: int) -> int:
        """`n` items of at least `least` bytes each must fit in what is left."""
        if n * least > len(self.buf) - self.pos:
            raise _Bad(f"{n} items cannot fit in the {len(self.buf) - self.pos} bytes left")
        return n

    def value(self, kind: int, depth: int = 0) -> memoryview | None:
        """Skip one metadata value; the raw bytes of a uint32 (for general.alignment), else None."""
        if kind in _FIXED:
            raw = self.take(_FIXED[kind])
            return raw if kind == UINT32 else None
        if kind == STRING:
            self.string()
        elif kind == ARRAY:
            if depth >= MAX_DEPTH:
                raise _Bad("arrays nest too deep")
            inner, n = self.u32(), self.u64()
            if inner in _FIXED:
                self.take(self.count(n, _FIXED[inner]) * _FIXED[inner])
            elif inner in (STRING, ARRAY):
                for _ in range(self.count(n, 8 if inner == STRING else 12)):
                    self.value(inner, depth + 1)
            else:
                raise _Bad(f"unknown array item type {inner}")
        else:
            raise _Bad(f"unknown metadata value type {kind}")
        return None


def _header(buf: memoryview) -> tuple[int, list[tuple[str, int, tuple[int, ...], int]]]:
    """(data section start, [(name, GGML type, numpy-order shape, offset in the data section)])."""
    r = _Reader(buf)
    if bytes(r.take(4)) != MAGIC:
        raise _Bad("not GGUF")
    if r.u32() not in (2, 3):                     # v1 (32-bit counts) is long gone; a big-endian file reads as huge
        raise _Bad("unsupported GGUF version")
    n_tensors, n_kv = r.u64(), r.u64()
    alignment = 32
    for _ in range(r.count(n_kv, 12)):
        key = bytes(r.string())
        kind = r.u32()
        raw = r.value(kind)
        if key == b"general.alignment":
            if raw is None:
                raise _Bad("general.alignment is not a uint32")
            alignment = struct.unpack("<I", raw)[0]
    if alignment == 0 or alignment & (alignment - 1):
        raise _Bad(f"alignment {alignment} is not a power of two")
    infos = []
    for _ in range(r.count(n_tensors, 24)):
        try:
            name = bytes(r.string(MAX_NAME)).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("a tensor name is not UTF-8") from None
        n_dims = r.u32()
        if n_dims > MAX_DIMS:
            raise _Bad(f"{n_dims} dimensions")
        dims = tuple(r.u64() for _ in range(n_dims))
        infos.append((name, r.u32(), dims[::-1], r.u64()))   # GGML lists the innermost dimension first
    return -(-r.pos // alignment) * alignment, infos


def scan(rel: str, buf: memoryview) -> ScannedFile:
    """Scan a .gguf file: every tensor of a known GGML type as a span; opaque when the header does not parse or
    the tensors it declares do not fit the file."""
    try:
        start, infos = _header(buf)
    except _Bad:
        return opaque(rel, buf)
    tensors, names = [], set()
    for name, kind, shape, offset in infos:
        if name in names:
            return opaque(rel, buf)               # names are unique in a file llama.cpp would load
        names.add(name)
        dtype = TYPES.get(kind)
        if dtype is None or any(d >= 1 << 62 for d in shape):
            continue                              # its size is not knowable: its bytes stay opaque
        nbytes = tensor_nbytes(dtype, shape)
        if nbytes is None or start + offset + nbytes > len(buf):
            return opaque(rel, buf)
        tensors.append((start + offset, nbytes, TensorInfo(name, dtype, shape)))
    ends = sorted((off, off + n) for off, n, _ in tensors)
    if any(b[0] < a[1] for a, b in zip(ends, ends[1:])):
        return opaque(rel, buf)                   # overlapping tensors: not a layout we can cut
    return spans_from_tensors(rel, buf, tensors)

