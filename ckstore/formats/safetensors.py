"""safetensors read by our own bounded header parser over mmap, and a deterministic writer."""

from __future__ import annotations

import json
import struct

from ..errors import MalformedCheckpoint
from .base import ScannedFile, TensorInfo, check_shape, spans_from_tensors

MAX_HEADER = 100 * 1024 * 1024


def _no_duplicates(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_header(rel: str, buf: memoryview) -> tuple[int, dict]:
    """Return (data start, header dict) after checking the length prefix and JSON."""
    if len(buf) < 8:
        raise MalformedCheckpoint(rel, f"safetensors file of {len(buf)} bytes is shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", buf[:8])
    if n < 2 or n > min(MAX_HEADER, len(buf) - 8):
        raise MalformedCheckpoint(rel, f"safetensors header length {n} is impossible for a file of {len(buf)} bytes")
    try:
        header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedCheckpoint(rel, f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedCheckpoint(rel, "safetensors header is not a JSON object")
    return 8 + n, header


def scan(rel: str, buf: memoryview) -> ScannedFile:
    """Scan a .safetensors file: its header's tensors by byte range; raises MalformedCheckpoint on a bad header."""
    start, header = parse_header(rel, buf)
    data_len = len(buf) - start
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise MalformedCheckpoint(rel, "__metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise MalformedCheckpoint(rel, f"tensor {name!r} entry must have exactly dtype, shape, data_offsets")
        offs = entry["data_offsets"]
        if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_len):
            raise MalformedCheckpoint(rel, f"tensor {name!r} has data_offsets {offs!r} outside the "
                                           f"{data_len}-byte data section")
        shape = check_shape(rel, name, entry["dtype"], entry["shape"], offs[1] - offs[0])
        tensors.append((start + offs[0], offs[1] - offs[0], TensorInfo(name, entry["dtype"], shape)))
    return spans_from_tensors(rel, buf, tensors)


def build_header(tensors: list[tuple[str, str, tuple[int, ...], int]], metadata: dict | None = None) -> bytes:
    """The 8-byte length plus JSON header (space padded to 8 bytes) for (name, dtype, shape, nbytes) in order."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = metadata
    pos = 0
    for name, dtype, shape, nbytes in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text
