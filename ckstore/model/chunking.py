"""Cutting spans into chunks: element-aligned fixed-size pieces; small opaque runs stay inline."""

from __future__ import annotations

INLINE_MAX = 64 * 1024  # opaque runs up to this size live inside the manifest (headers, padding, configs)


def chunk_bytes_for(itemsize: int, chunk_size: int) -> int:
    """The largest multiple of the element size that fits in `chunk_size` (at least one element)."""
    return max(itemsize, chunk_size // itemsize * itemsize)


def split(data: memoryview, chunk_bytes: int) -> list[memoryview]:
    """Zero-copy views of consecutive chunks; the last may be short, an empty span has none."""
    return [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
