"""Format readers: turn checkpoint files into spans of tensor and opaque bytes, never running code."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MalformedCheckpoint, UsageError
from ..model.text import shown
from .base import DTYPES, ScannedFile, Span, TensorInfo, check_file_name, dtype_name, itemsize, map_file, opaque

__all__ = ["DTYPES", "ScannedFile", "Span", "TensorInfo", "dtype_name", "itemsize", "scan_buffer", "scan_path",
           "walk_source"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".jit", ".ptl")  # .jit, .ptl: TorchScript (and mobile) archives
SKIP_DIRS = {".ckstore", ".git"}


def scan_buffer(rel: str, buf: memoryview) -> ScannedFile:
    """Pick a reader by name and magic; anything unrecognised is opaque bytes. A name that is not valid UTF-8 is
    refused (MalformedCheckpoint)."""
    lower = check_file_name(rel).lower()
    if lower.endswith(".safetensors"):
        from . import safetensors
        return safetensors.scan(rel, buf)
    if lower.endswith(".npy"):
        from . import numpy_files
        return numpy_files.scan_npy(rel, buf)
    if lower.endswith(".onnx"):
        from . import onnx
        return onnx.scan(rel, buf)
    if lower.endswith(".gguf"):
        from . import gguf
        return gguf.scan(rel, buf)
    if lower.endswith(".npz"):
        from . import numpy_files
        return numpy_files.scan_npz(rel, buf)
    if lower.endswith(TORCH_SUFFIXES) and (bytes(buf[:4]) == b"PK\x03\x04" or bytes(buf[:2]) == b"\x80\x02"):
        from . import torchzip           # a zip archive, or a legacy stream (its magic number's pickle)
        return torchzip.scan(rel, buf)
    return opaque(rel, buf)


def scan_path(path: str | os.PathLike, rel: str) -> ScannedFile:
    """Map the file at `path` and scan it as `rel` (see scan_buffer; a torch.distributed.checkpoint `.distcp` data
    file with the `.metadata` beside it, an ONNX external data file with the models beside it that place their
    initializers in it); MalformedCheckpoint if it cannot be read."""
    try:
        if check_file_name(rel).lower().endswith(".distcp"):   # read with the .metadata of its directory
            from . import dcp
            return dcp.scan(rel, map_file(path), dcp.sibling_metadata(path))
        buf = map_file(path)
        scanned = scan_buffer(rel, buf)
        if not scanned.tensors() and len(buf) > 0:
            from . import onnx                                   # an ONNX model's external data file?
            placed = onnx.beside(path)
            if placed:
                return onnx.scan_external(rel, buf, placed)
        return scanned
    except OSError as exc:
        raise MalformedCheckpoint(rel, f"cannot read: {exc.strerror or exc}") from None


def walk_source(src: str | os.PathLike) -> list[tuple[Path, str]]:
    """(absolute path, relative name) of every file to commit: a file by its base name, a directory's contents
    relative to it (sorted, skipping .ckstore/.git; symlinked files are read through, as in HF caches). A name
    that is not valid UTF-8 is refused (MalformedCheckpoint) before anything is read."""
    root = Path(src)
    if root.is_file():
        return [(root, check_file_name(root.name))]
    if not root.is_dir():
        raise UsageError(f"{shown(os.fspath(src))}: no such file or directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_file():
                out.append((full, check_file_name(full.relative_to(root).as_posix())))
    return sorted(out, key=lambda item: item[1])
