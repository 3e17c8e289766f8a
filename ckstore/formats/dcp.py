"""torch.distributed.checkpoint directories (`dcp.save` with its FileSystemWriter): each `.distcp` data file's
tensors as spans, named by their fully qualified names, so two saves that differ in one tensor share the rest.

A data file is the write items one after another, each tensor item a small torch.save zip archive; where each one
lies (file, offset, length) is known only from the directory's `.metadata`, a pickle of DCP's metadata dataclasses.
That pickle is read through the torch.save allowlist unpickler, its dataclasses resolved to attribute-only records
(nothing of DCP is imported or run), and each tensor item's archive is then read as any torch.save file. An item
that is not a plain archive (byte items, a transform such as compression) stays opaque, and so does a whole file
whose metadata is missing, hostile or disagrees with it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MalformedCheckpoint
from ..model.crypto import hash_bytes
from . import torchzip
from .base import ScannedFile, TensorInfo, opaque, spans_from_tensors

METADATA = ".metadata"
MAX_METADATA = 64 << 20
_META = "torch.distributed.checkpoint.metadata"
_RECORDS = {(_META, n) for n in ("Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
                                 "BytesStorageMetadata", "MetadataIndex", "StorageMeta")}
_RECORDS.add(("torch.distributed.checkpoint.filesystem", "_StorageInfo"))


def _ints(values: object) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(type(v) is int and 0 <= v < 1 << 62 for v in values):
        raise torchzip.Refused("torch.Size of unexpected values")
    return tuple(values)


def _text(*parts: object) -> str:
    if not all(isinstance(p, str) for p in parts):
        raise torchzip.Refused("a path or layout that is not text")
    return "/".join(parts)


# the globals DCP's metadata pickles besides its records and torch's dtypes: each resolves to plain values
_EXTRA = {("torch", "Size"): torchzip.Call(_ints), ("torch.serialization", "_get_layout"): torchzip.Call(_text),
          (_META, "_MEM_FORMAT_ENCODING"): torchzip.Call(lambda v: v if type(v) is int else _text(v)),
          **{("pathlib", n): torchzip.Call(_text) for n in ("Path", "PosixPath", "WindowsPath", "PurePosixPath")}}


def _fields(obj: object, cls: str) -> dict:
    if not isinstance(obj, torchzip.Record) or not isinstance(obj.state, dict):
        raise torchzip.Refused(f"expected a {cls} record")
    return obj.state


_PARSED: dict[bytes, tuple] = {}   # a few metadata pickles by hash: each rank's data file reads the same one
PARSED_KEPT = 4


def read_metadata(data: bytes) -> tuple[tuple[str, tuple[int, ...] | None, str, int, int, bool], ...]:
    """(fqn, shard offsets or None for a byte item, data file, offset, length, plain) of every stored item of a
    `.metadata` pickle (`plain`: no storage transform); torchzip.Refused when it is not DCP metadata. Unpickled
    once for all the data files of a checkpoint."""
    key = hash_bytes(data)
    if key not in _PARSED:
        while len(_PARSED) >= PARSED_KEPT:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = _read_metadata(data)
    return _PARSED[key]


def _read_metadata(data: bytes) -> tuple:
    root = _fields(torchzip.load_records(data, lambda m, n: (m, n) in _RECORDS, _EXTRA), "Metadata")
    items = root.get("storage_data")
    if not isinstance(items, dict):
        raise torchzip.Refused("no storage_data")
    out = []
    for key, where in items.items():
        index, info = _fields(key, "MetadataIndex"), _fields(where, "_StorageInfo")
        fqn, offsets = index.get("fqn"), index.get("offset")
        path, at, length = info.get("relative_path"), info.get("offset"), info.get("length")
        if not (isinstance(fqn, str) and isinstance(path, str) and type(at) is int and type(length) is int
                and 0 <= at and 0 <= length and (offsets is None or isinstance(offsets, tuple))):
            raise torchzip.Refused("a storage item of unexpected fields")
        out.append((fqn, offsets, path, at, length, info.get("transform_descriptors") in (None, [], ())))
    return tuple(out)


def sibling_metadata(path: str | os.PathLike) -> bytes | None:
    """The `.metadata` beside a data file, when there is one of a sane size."""
    meta = Path(path).parent / METADATA
    try:
        if meta.stat().st_size <= MAX_METADATA:
            return meta.read_bytes()
    except OSError:
        pass
    return None


def scan(rel: str, buf: memoryview, metadata: bytes | None) -> ScannedFile:
    """Scan a `.distcp` data file with the directory's `.metadata` bytes: its plain tensor items as tensors;
    opaque without metadata, or when the metadata does not parse or places items outside the file."""
    if metadata is None:
        return opaque(rel, buf)
    try:
        items = read_metadata(metadata)
    except Exception:  # the unpickler only ever reaches our placeholders: whatever fails, the answer is "refuse"
        return opaque(rel, buf)
    name = rel.rsplit("/", 1)[-1]
    tensors, seen = [], set()
    for fqn, offsets, path, at, length, plain in sorted((i for i in items if i[2] == name), key=lambda i: i[3]):
        if at + length > len(buf):
            return opaque(rel, buf)                         # the metadata is not this file's
        if offsets is None or not plain:
            continue                                        # a byte item, or transformed bytes: opaque
        try:
            inner = torchzip.scan(rel, buf[at:at + length]).tensors()
        except MalformedCheckpoint:
            continue
        if len(inner) != 1:
            continue                                        # not one tensor's archive: kept as it is
        info = inner[0].tensor
        label = fqn if not any(offsets) else f"{fqn}@{','.join(map(str, offsets))}"
        if label in seen:
            return opaque(rel, buf)
        seen.add(label)
        tensors.append((at + inner[0].offset, inner[0].nbytes, TensorInfo(label, info.dtype, info.shape)))
    try:
        return spans_from_tensors(rel, buf, tensors)
    except MalformedCheckpoint:
        return opaque(rel, buf)                             # overlapping items
