"""The safetensors container read and written by hand: an 8-byte header length, a JSON header, the data."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def encode_header(header: dict[str, Any]) -> bytes:
    """The length prefix and the JSON header, padded with spaces to 8-byte alignment as the format does."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def read_header(f: BinaryIO) -> tuple[dict[str, Any], int]:
    """The header of the file open at its start, and the offset its data begins at."""
    (n,) = struct.unpack("<Q", f.read(8))
    return json.loads(f.read(n)), 8 + n


def largest_tensor(path: Path) -> int:
    """Bytes of the largest tensor of a safetensors file or torch.save zip (0 for anything else)."""
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as f:
                header, _ = read_header(f)
            return max((v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"),
                       default=0)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return max((i.file_size for i in z.infolist() if "/data/" in i.filename), default=0)
    except Exception:  # noqa: BLE001 - informative only
        return 0
    return 0


def subset(paths: Path | list[Path], keep: Callable[[str], bool]) -> bytes:
    """A safetensors file with only the tensors whose names pass keep (same dtypes and bytes, same metadata),
    taken from one file or from several (the shards of a model, in the order given)."""
    out_header: dict[str, Any] = {}
    blobs, off = [], 0
    for path in [paths] if isinstance(paths, Path) else paths:
        with open(path, "rb") as f:
            header, base = read_header(f)
            if "__metadata__" in header:
                out_header.setdefault("__metadata__", header["__metadata__"])
            for name, v in header.items():
                if name == "__metadata__" or not keep(name):
                    continue
                a, b = v["data_offsets"]
                f.seek(base + a)
                blobs.append(f.read(b - a))
                out_header[name] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [off, off + b - a]}
                off += b - a
    return encode_header(out_header) + b"".join(blobs)
