"""Cutting spans into chunks: element-aligned fixed-size pieces for tensors; opaque runs cut by their content
(FastCDC), so an insertion or deletion changes the chunks around it and no others; small opaque runs stay inline."""

from __future__ import annotations

from collections.abc import Iterator

INLINE_MAX = 64 * 1024  # opaque runs up to this size live inside the manifest (headers, padding, configs)
# FastCDC (2016, normalized chunking) sizes. Fixed forever for the "cdc" feature: other sizes would cut the same
# bytes elsewhere, and the chunks of one version would no longer be found in the next.
CDC_MIN, CDC_AVG, CDC_MAX = 16 * 1024, 64 * 1024, 256 * 1024


def chunk_bytes_for(itemsize: int, chunk_size: int) -> int:
    """The largest multiple of the element size that fits in `chunk_size` (at least one element)."""
    return max(itemsize, chunk_size // itemsize * itemsize)


def split(data: memoryview, chunk_bytes: int) -> list[memoryview]:
    """Zero-copy views of consecutive chunks; the last may be short, an empty span has none."""
    return [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]


def cut_by_content(data: memoryview) -> Iterator[memoryview]:
    """Zero-copy views of `data` cut where its content says (FastCDC: CDC_MIN ≤ length ≤ CDC_MAX, about CDC_AVG
    on average; the last may be shorter), the same cut points wherever the same bytes occur; read in order, one
    chunk at a time, so a caller can let go of what is behind."""
    from fastcdc import fastcdc  # the Cython build cuts at ~1.5 GB/s; imported only when an opaque run is cut

    pos = 0
    for chunk in fastcdc(data, CDC_MIN, CDC_AVG, CDC_MAX):
        yield data[pos:pos + chunk.length]
        pos += chunk.length
    if pos != len(data):
        raise AssertionError("FastCDC did not cover its input")
