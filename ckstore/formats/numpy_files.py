""".npy and .npz read without numpy's loader (no pickle ever): the header is parsed, the data is a span."""

from __future__ import annotations

import ast
import io
import struct
import zipfile

import numpy as np

from ..errors import MalformedCheckpoint
from .base import ZIP_ERRORS, ScannedFile, TensorInfo, check_shape, dtype_name, opaque, spans_from_tensors

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20


def _npy_header(rel: str, buf: memoryview, base: int) -> tuple[int, dict]:
    """(data offset, header dict) of the .npy that starts at `base` in `buf`."""
    head = bytes(buf[base:base + 12])
    if len(head) < 10 or head[:6] != MAGIC:
        raise MalformedCheckpoint(rel, "not a .npy file (bad magic)")
    major = head[6]
    if major == 1:
        (n,), start = struct.unpack("<H", head[8:10]), base + 10
    elif major in (2, 3) and len(head) >= 12:
        (n,), start = struct.unpack("<I", head[8:12]), base + 12
    else:
        raise MalformedCheckpoint(rel, f"unsupported .npy version {major}")
    if n > MAX_HEADER or start + n > len(buf):
        raise MalformedCheckpoint(rel, f".npy header length {n} runs past the end of the file")
    try:
        header = ast.literal_eval(bytes(buf[start:start + n]).decode("latin1" if major < 3 else "utf-8"))
    except (ValueError, TypeError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise MalformedCheckpoint(rel, f".npy header does not parse: {exc}") from None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        raise MalformedCheckpoint(rel, ".npy header lacks descr, fortran_order or shape")
    return start + n, header


def _npy_tensor(rel: str, name: str, buf: memoryview, base: int, end: int) -> tuple[int, int, TensorInfo] | None:
    """The tensor of an .npy occupying buf[base:end], or None when its data is not plain little-endian C order."""
    start, header = _npy_header(rel, buf, base)
    shape = header["shape"]
    if not isinstance(shape, tuple):
        raise MalformedCheckpoint(rel, f".npy shape {shape!r} is not a tuple")
    # numpy reads a descr like 'f4,,' with Python's parser (SyntaxError); a deprecated one ('a') warns, an error
    # when warnings are errors
    try:
        dt = np.dtype(header["descr"]) if isinstance(header["descr"], str) else None
        dtype = dtype_name(dt) if dt is not None and dt.byteorder in "<|=" else None
    except (TypeError, ValueError, SyntaxError, Warning):
        dtype = None  # object arrays, structured dtypes, big endian: kept as opaque bytes, never unpickled
    if dtype is None or header["fortran_order"]:
        return None
    nbytes = end - start
    check_shape(rel, name, dtype, list(shape), nbytes)
    return start, nbytes, TensorInfo(name, dtype, tuple(shape))


def scan_npy(rel: str, buf: memoryview) -> ScannedFile:
    """Scan a .npy file: one tensor named after the file, or opaque unless its data is plain little-endian C order."""
    name = rel.rsplit("/", 1)[-1].removesuffix(".npy")
    tensor = _npy_tensor(rel, name, buf, 0, len(buf))
    return spans_from_tensors(rel, buf, [tensor] if tensor else [])


def scan_npz(rel: str, buf: memoryview) -> ScannedFile:
    """Stored (uncompressed) members become tensor spans; compressed archives stay opaque."""
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as zf:
            infos = zf.infolist()
    except ZIP_ERRORS as exc:
        raise MalformedCheckpoint(rel, f"not a valid .npz archive: {exc}") from None
    tensors = []
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
            continue
        local = bytes(buf[info.header_offset:info.header_offset + 30])
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise MalformedCheckpoint(rel, f"member {info.filename!r} has no local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        base = info.header_offset + 30 + name_len + extra_len
        end = base + info.file_size
        if end > len(buf):
            raise MalformedCheckpoint(rel, f"member {info.filename!r} runs past the end of the archive")
        tensor = _npy_tensor(rel, info.filename.removesuffix(".npy"), buf, base, end)
        if tensor:
            tensors.append(tensor)
    return spans_from_tensors(rel, buf, tensors) if tensors else opaque(rel, buf)
