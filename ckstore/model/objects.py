"""The pure data model: ids, Commit, Manifest, FileRecipe, TensorEntry, Tag, Note, AliasMove and their canonical
encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Union

import msgpack

from ..errors import CorruptObject
from .crypto import PLAIN, Scheme, hash_bytes
from .metadata import ALL_SECTIONS

ID_BYTES = 32
FORMAT_VERSION = 1
ZERO_ID = b"\0" * ID_BYTES



def hex_id(oid: bytes) -> str:
    """An object id as lowercase hex."""
    return oid.hex()


def is_hex(text: str) -> bool:
    """True when `text` is non-empty and all lowercase hex digits (an id or id prefix)."""
    return bool(text) and all(c in "0123456789abcdef" for c in text)


# -- canonical msgpack --------------------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value, key=lambda k: k.encode() if isinstance(k, str) else k)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def pack_canonical(value: Any) -> bytes:
    """msgpack with sorted map keys and float64 floats: equal content gives equal bytes."""
    return msgpack.packb(_canonical(value), use_bin_type=True, use_single_float=False)


def unpack_limited(data: bytes) -> Any:
    """msgpack decoding with bounds on every container, for bytes that may be hostile."""
    n = len(data)
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_str_len=n, max_bin_len=n,
            max_array_len=n, max_map_len=n // 2, max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError) as exc:
        raise ValueError(f"undecodable msgpack: {exc}") from exc


# -- schema checks ------------------------------------------------------------------------------------------------


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def _is_id(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == ID_BYTES


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# -- values -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of a manifest: where it lives in its file and the chunks holding its data."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    chunk_bytes: int
    chunks: tuple[bytes, ...]
    stats: dict = field(default_factory=dict, compare=False)

    def chunk_ranges(self) -> list[tuple[bytes, int, int]]:
        """(chunk id, start, end) of each chunk within the tensor's bytes."""
        step = self.chunk_bytes
        return [(c, k * step, min((k + 1) * step, self.nbytes)) for k, c in enumerate(self.chunks)]

    def to_dict(self) -> dict:
        """The entry as the plain dict stored in a manifest."""
        return {"name": self.name, "file": self.file, "dtype": self.dtype, "shape": list(self.shape),
                "offset": self.offset, "nbytes": self.nbytes, "chunk_bytes": self.chunk_bytes,
                "chunks": list(self.chunks), "stats": self.stats}

    @classmethod
    def from_dict(cls, d: dict) -> TensorEntry:
        """An entry from its stored dict, schema-checked: chunks must cover nbytes; raises ValueError if not."""
        for key in ("name", "file", "dtype"):
            _need(isinstance(d.get(key), str), f"tensor.{key} must be a string")
        _need(isinstance(d.get("shape"), list) and all(_is_int(x) and x >= 0 for x in d["shape"]), "tensor.shape")
        for key in ("offset", "nbytes", "chunk_bytes"):
            _need(_is_int(d.get(key)) and d[key] >= 0, f"tensor.{key} must be a non-negative integer")
        _need(isinstance(d.get("chunks"), list) and all(_is_id(c) for c in d["chunks"]), "tensor.chunks")
        _need(d["chunk_bytes"] > 0 or not d["chunks"], "tensor.chunk_bytes")
        expected = -(-d["nbytes"] // d["chunk_bytes"]) if d["chunk_bytes"] else 0
        _need(len(d["chunks"]) == expected, "tensor.chunks does not cover nbytes")
        _need(isinstance(d.get("stats", {}), dict), "tensor.stats")
        return cls(d["name"], d["file"], d["dtype"], tuple(d["shape"]), d["offset"], d["nbytes"],
                   d["chunk_bytes"], tuple(d["chunks"]), d.get("stats", {}))


# A file recipe is a sequence of typed segments; on disk each is a list headed by its kind.
SEG_INLINE, SEG_CHUNKS, SEG_TENSOR, SEG_CDC = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Inline:
    """Bytes kept in the manifest itself (headers, small files)."""

    data: bytes

    def encode(self) -> list:
        """The segment as stored: [0, data]."""
        return [SEG_INLINE, self.data]


@dataclass(frozen=True, slots=True)
class ChunkRun:
    """`nbytes` of opaque file content cut into chunks of `chunk_size` (the last may be shorter), or, cut by content
    (`lengths` set, `chunk_size` 0), into chunks of those lengths."""

    nbytes: int
    chunk_size: int
    chunks: tuple[bytes, ...]
    lengths: tuple[int, ...] | None = None

    def encode(self) -> list:
        """The segment as stored: [1, nbytes, chunk_size, [chunk ids]], or [3, [lengths], [chunk ids]]."""
        if self.lengths is not None:
            return [SEG_CDC, list(self.lengths), list(self.chunks)]
        return [SEG_CHUNKS, self.nbytes, self.chunk_size, list(self.chunks)]

    def ranges(self) -> Iterator[tuple[bytes, int, int]]:
        """(chunk id, start, length) of each chunk within the run."""
        start = 0
        for k, cid in enumerate(self.chunks):
            n = self.lengths[k] if self.lengths is not None else min(self.chunk_size, self.nbytes - start)
            yield cid, start, n
            start += n


@dataclass(frozen=True, slots=True)
class TensorRef:
    """The bytes of the manifest's tensor number `index`."""

    index: int

    def encode(self) -> list:
        """The segment as stored: [2, index]."""
        return [SEG_TENSOR, self.index]


Segment = Union[Inline, ChunkRun, TensorRef]


def decode_segment(s: Any, n_tensors: int) -> Segment:
    """A stored segment list, checked against the schema."""
    _need(isinstance(s, list) and s and s[0] in (SEG_INLINE, SEG_CHUNKS, SEG_TENSOR, SEG_CDC), "segment kind")
    if s[0] == SEG_INLINE:
        _need(len(s) == 2 and isinstance(s[1], bytes), "inline segment")
        return Inline(s[1])
    if s[0] == SEG_CHUNKS:
        _need(len(s) == 4 and _is_int(s[1]) and _is_int(s[2]) and s[2] > 0 and isinstance(s[3], list)
              and all(_is_id(c) for c in s[3]) and len(s[3]) == -(-s[1] // s[2]), "chunk segment")
        return ChunkRun(s[1], s[2], tuple(s[3]))
    if s[0] == SEG_CDC:
        _need(len(s) == 3 and isinstance(s[1], list) and isinstance(s[2], list) and len(s[1]) == len(s[2])
              and all(_is_int(n) and n > 0 for n in s[1]) and all(_is_id(c) for c in s[2]), "content-cut segment")
        return ChunkRun(sum(s[1]), 0, tuple(s[2]), tuple(s[1]))
    _need(len(s) == 2 and _is_int(s[1]) and 0 <= s[1] < n_tensors, "tensor segment")
    return TensorRef(s[1])


@dataclass(frozen=True, slots=True)
class FileRecipe:
    """How to rebuild one file byte for byte."""

    path: str
    size: int
    hash: bytes
    segments: tuple[Segment, ...]

    def to_dict(self) -> dict:
        """The stored form."""
        return {"path": self.path, "size": self.size, "hash": self.hash,
                "segments": [seg.encode() for seg in self.segments]}

    @classmethod
    def from_dict(cls, d: dict, n_tensors: int) -> FileRecipe:
        """A recipe from its stored form, checked against the schema."""
        _need(isinstance(d.get("path"), str), "file.path")
        _need(_is_int(d.get("size")) and d["size"] >= 0, "file.size")
        _need(_is_id(d.get("hash")), "file.hash")
        _need(isinstance(d.get("segments"), list), "file.segments")
        return cls(d["path"], d["size"], d["hash"], tuple(decode_segment(s, n_tensors) for s in d["segments"]))


@dataclass(frozen=True, slots=True)
class Manifest:
    """A commit's content: file recipes, the tensors they reference, and the nesting tree of a committed state dict."""

    files: tuple[FileRecipe, ...]
    tensors: tuple[TensorEntry, ...]
    tree: Any = None

    def file(self, path: str) -> FileRecipe | None:
        """The recipe of the file at `path`, or None."""
        return next((f for f in self.files if f.path == path), None)

    def segment_length(self, seg: Segment) -> int:
        """How many bytes of its file a segment holds."""
        if isinstance(seg, Inline):
            return len(seg.data)
        if isinstance(seg, ChunkRun):
            return seg.nbytes
        return self.tensors[seg.index].nbytes

    def chunk_ids(self) -> set[bytes]:
        """Every chunk the manifest needs."""
        ids = {c for t in self.tensors for c in t.chunks}
        ids.update(c for f in self.files for s in f.segments if isinstance(s, ChunkRun) for c in s.chunks)
        return ids

    def file_chunks(self, files: Iterable[FileRecipe]) -> Iterator[bytes]:
        """The chunk ids `files` are made of, in file order (repeats included)."""
        for f in files:
            for seg in f.segments:
                if isinstance(seg, ChunkRun):
                    yield from seg.chunks
                elif isinstance(seg, TensorRef):
                    yield from self.tensors[seg.index].chunks

    def logical_bytes(self) -> int:
        """Total size of the files in bytes, before deduplication and compression."""
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict:
        """The manifest as the plain dict that is encoded."""
        return {"files": [f.to_dict() for f in self.files], "tensors": [t.to_dict() for t in self.tensors],
                "tree": self.tree}

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        """A manifest from its stored dict, schema-checked: every file's segments must add up to its size."""
        _need(isinstance(d.get("files"), list) and isinstance(d.get("tensors"), list), "manifest fields")
        tensors = tuple(TensorEntry.from_dict(t) for t in d["tensors"])
        files = tuple(FileRecipe.from_dict(f, len(tensors)) for f in d["files"])
        m = cls(files, tensors, d.get("tree"))
        for f in files:
            _need(sum(m.segment_length(s) for s in f.segments) == f.size, f"segments of {f.path!r} do not add up")
        return m




@dataclass(frozen=True, slots=True)
class Commit:
    """A commit: its manifest id, parent ids, author, time (Unix seconds), message, step and metadata sections."""

    manifest: bytes
    parents: tuple[bytes, ...]
    author: str
    time: float
    message: str
    step: int | None = None
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    seeds: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    reverted_from: bytes | None = None

    def to_dict(self) -> dict:
        """The commit as the plain dict that is encoded (reverted_from only when set)."""
        d = {"manifest": self.manifest, "parents": list(self.parents), "author": self.author, "time": float(self.time),
             "message": self.message, "step": self.step, "metrics": self.metrics, "params": self.params,
             "data": self.data, "seeds": self.seeds, "env": self.env, "extra": self.extra}
        if self.reverted_from is not None:
            d["reverted_from"] = self.reverted_from
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Commit:
        """A commit from its stored dict, schema-checked field by field; raises ValueError on a bad field."""
        _need(_is_id(d.get("manifest")), "commit.manifest")
        _need(isinstance(d.get("parents"), list) and all(_is_id(p) for p in d["parents"]), "commit.parents")
        _need(isinstance(d.get("author"), str) and isinstance(d.get("message"), str), "commit author/message")
        _need(isinstance(d.get("time"), (int, float)), "commit.time")
        _need(d.get("step") is None or _is_int(d["step"]), "commit.step")
        for key in ALL_SECTIONS:
            _need(isinstance(d.get(key, {}), dict), f"commit.{key}")
        _need(d.get("reverted_from") is None or _is_id(d["reverted_from"]), "commit.reverted_from")
        return cls(d["manifest"], tuple(d["parents"]), d["author"], float(d["time"]), d["message"], d.get("step"),
                   *(d.get(k, {}) for k in ALL_SECTIONS), d.get("reverted_from"))


@dataclass(frozen=True, slots=True)
class Tag:
    """An annotated tag: the commit it names, its name, tagger, time (Unix seconds) and message."""

    target: bytes
    name: str
    tagger: str
    time: float
    message: str

    def to_dict(self) -> dict:
        """The tag as the plain dict that is encoded."""
        return {"target": self.target, "name": self.name, "tagger": self.tagger, "time": float(self.time),
                "message": self.message}

    @classmethod
    def from_dict(cls, d: dict) -> Tag:
        """A tag from its stored dict, schema-checked; raises ValueError on a bad field."""
        _need(_is_id(d.get("target")), "tag.target")
        _need(all(isinstance(d.get(k), str) for k in ("name", "tagger", "message")), "tag fields")
        _need(isinstance(d.get("time"), (int, float)), "tag.time")
        return cls(d["target"], d["name"], d["tagger"], float(d["time"]), d["message"])


def _is_text(d: dict, *keys: str) -> bool:
    return all(isinstance(d.get(k), str) for k in keys)


@dataclass(frozen=True, slots=True)
class Note:
    """One addition to a notes namespace (refs/notes/NS): data about a commit, added after the fact without
    changing its id. `parents` are the namespace's earlier heads — two when the notes of two clones were merged
    (a merge has no target and no data)."""

    target: bytes | None
    ns: str
    data: dict
    message: str
    author: str
    time: float
    parents: tuple[bytes, ...] = ()

    def to_dict(self) -> dict:
        """The note as the plain dict that is encoded."""
        return {"target": self.target, "ns": self.ns, "data": self.data, "message": self.message,
                "author": self.author, "time": float(self.time), "parents": list(self.parents)}

    @classmethod
    def from_dict(cls, d: dict) -> Note:
        """A note from its stored dict, schema-checked; raises ValueError on a bad field."""
        _need(d.get("target") is None or _is_id(d["target"]), "note.target")
        _need(_is_text(d, "ns", "message", "author") and isinstance(d.get("data"), dict), "note fields")
        _need(isinstance(d.get("time"), (int, float)), "note.time")
        _need(isinstance(d.get("parents"), list) and all(_is_id(p) for p in d["parents"]), "note.parents")
        return cls(d["target"], d["ns"], d["data"], d["message"], d["author"], float(d["time"]), tuple(d["parents"]))


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One move of an alias (refs/aliases/NAME): the commit it names from now on (None: deleted), the move before
    it (so the alias's whole history travels with it), who, when, why, and how (set, promote, rollback, delete)."""

    name: str
    target: bytes | None
    previous: bytes | None
    author: str
    time: float
    reason: str
    action: str = "set"

    def to_dict(self) -> dict:
        """The move as the plain dict that is encoded."""
        return {"name": self.name, "target": self.target, "previous": self.previous, "author": self.author,
                "time": float(self.time), "reason": self.reason, "action": self.action}

    @classmethod
    def from_dict(cls, d: dict) -> AliasMove:
        """A move from its stored dict, schema-checked; raises ValueError on a bad field."""
        _need(d.get("target") is None or _is_id(d["target"]), "alias.target")
        _need(d.get("previous") is None or _is_id(d["previous"]), "alias.previous")
        _need(_is_text(d, "name", "author", "reason", "action"), "alias fields")
        _need(isinstance(d.get("time"), (int, float)), "alias.time")
        return cls(d["name"], d["target"], d["previous"], d["author"], float(d["time"]), d["reason"], d["action"])


Object = Commit | Manifest | Tag | Note | AliasMove
_TYPES: dict[str, type] = {"commit": Commit, "manifest": Manifest, "tag": Tag, "note": Note, "alias": AliasMove}
_NAMES = {v: k for k, v in _TYPES.items()}


def encode_object(obj: Object) -> bytes:
    """Canonical encoding `[type, version, body]`; its BLAKE3 is the object id."""
    return pack_canonical([_NAMES[type(obj)], FORMAT_VERSION, obj.to_dict()])


def object_id(encoded: bytes) -> bytes:
    """The id of an encoded object in a plain repository: the BLAKE3-256 of its bytes (an encrypted one keys it:
    `Scheme.object_id`)."""
    return hash_bytes(encoded)


def decode_trusted_commit(encoded: bytes) -> Commit:
    """A commit from the local cache, which holds only encodings already verified and schema-checked: skips the
    per-field checks (history walks decode thousands)."""
    _, _, d = msgpack.unpackb(encoded, raw=False)
    return Commit(d["manifest"], tuple(d["parents"]), d["author"], d["time"], d["message"], d.get("step"),
                  *(d.get(k, {}) for k in ALL_SECTIONS), d.get("reverted_from"))


def decode_object(encoded: bytes, expected_id: bytes | None = None, scheme: Scheme = PLAIN) -> Object:
    """Verify (the id under the repository's `scheme`), decode and schema-check an object; raises CorruptObject on
    any mismatch."""
    label = expected_id.hex() if expected_id else "?"
    if expected_id is not None:
        got = scheme.object_id(encoded)
        if got != expected_id:
            raise CorruptObject("object", label, got.hex())
    try:
        value = unpack_limited(encoded)
        _need(isinstance(value, list) and len(value) == 3, "object envelope")
        kind, version, body = value
        _need(kind in _TYPES, f"unknown object type {kind!r}")
        _need(version == FORMAT_VERSION, f"unsupported object version {version!r}")
        _need(isinstance(body, dict), "object body")
        return _TYPES[kind].from_dict(body)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptObject("object", label, label, detail=str(exc)) from exc
