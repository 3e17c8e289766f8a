"""One sync's view of a remote: a transport with retries and a count of the bytes moved, and the remote's
config, refs and pack index read from it, every name and id checked; plus what a sync reports (`SyncResult`).

`push`, `fetch` and `sync` (pull, clone) build on it; docs/design.md, "Remotes", describes the layout.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import zstandard

from ..engine.repository import Repository
from ..errors import (
    CorruptObject,
    MissingObject,
    RemoteError,
    RemoteNotFound,
    RemotePreconditionFailed,
    UnsupportedFormat,
)
from ..fs.fileio import write_atomic
from ..model import codec
from ..model.chunking import CDC_MAX
from ..model.metadata import SCHEMA_TYPES
from ..model.crypto import Scheme
from ..model.objects import decode_object
from ..storage import remotes
from ..storage.config import FEATURES_VERSION, FORMAT, HASH, check_version, with_checksum
from ..storage.packs import Entry, PackFormatError, parse_idx
from ..storage.remotes import RemoteSpec
from ..storage.store import decompress_object
from ..transport.base import Transport
from ..transport.retry import RetryingTransport

IO_WORKERS = 8                  # requests in flight (at most: see Transport.reads_in_flight)
PACK_LIMIT = 32 << 20           # packs pushed, and packs written by a fetch, are sealed at this size (a push
#                                holds three: one uploading, one built, the frames of the next)
MAX_FRAME = 1 << 28             # push: an index entry claiming a bigger frame is not believed
MAX_CHUNK = 64 << 20            # the largest chunk_size a remote's config may declare
MAX_CONFIG = 1 << 20            # bytes of a remote's config, HEAD or ref file read at most
# Objects a fetch accepts: a commit or tag is metadata (KBs); a manifest holds ~34 bytes per chunk id plus a few
# hundred per tensor, so 32 MiB covers about a million chunks (1 TiB of tensors at the default 1 MiB chunk size).
MAX_COMMIT = 16 << 20
MAX_MANIFEST = 32 << 20
STREAM_CHECK = 1 << 20          # an object declaring more is hashed while streaming before it is held whole
_stream_lock = threading.Lock()  # ...one at a time, so requests in flight do not each hold a large object
_PACK_KEY = re.compile(r"^packs/([0-9a-f]{2})/([0-9a-f]{64})\.(pack|idx)$")


# ------------------------------------------------------------------------------------------------- the remote
def obj_key(oid: bytes) -> str:
    """The remote key of a loose object: objects/ab/cdef... by hex id."""
    h = oid.hex()
    return f"objects/{h[:2]}/{h[2:]}"


def pack_key(pack_id: bytes, suffix: str = ".pack") -> str:
    """The remote key of a pack (or, with suffix ".idx", its index): packs/ab/abcd....pack."""
    h = pack_id.hex()
    return f"packs/{h[:2]}/{h}{suffix}"


class Session:
    """One sync's view of a remote: a RetryingTransport around it, and a count of the bytes moved."""

    def __init__(self, transport: Transport, name: str, scheme: Scheme) -> None:
        self.t, self.name, self.url = transport, name, transport.url
        #: the scheme its ids and sealed bytes follow: the local repository's (an encrypted repository's remotes
        #: hold the same ids and sealed frames, so a push copies them as they are)
        self.scheme = scheme
        self.seqs: dict[str, int] = {}       # the sequence number each sealed ref read this session held
        self.seen: dict[str, int] | None = None   # the highest seen before (`track_refs`): lower is a replay
        self.seen_file: Path | None = None
        self.r = transport if isinstance(transport, RetryingTransport) else RetryingTransport(transport)
        self.sent = self.received = 0
        self.config: dict | None = None  # set by remote_config()
        self._lock = threading.Lock()

    def _count(self, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.received += received

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The bytes of `key` (or [start:end]), with retries; RemoteNotFound if absent. Counts the bytes received."""
        data = self.r.get(key, start, end)
        self._count(received=len(data))
        return data

    def get_opt(self, key: str) -> bytes | None:
        """The bytes of `key`, or None if it is absent."""
        try:
            return self.get(key)
        except RemoteNotFound:
            return None

    def get_small(self, key: str, limit: int = MAX_CONFIG) -> bytes | None:
        """The bytes of `key` (None if absent) when it holds at most `limit` bytes; RemoteError if it holds more
        (only limit + 1 bytes are read: a huge file on a hostile remote costs nothing)."""
        try:
            data = self.get(key, 0, limit + 1)
        except RemoteNotFound:
            return None
        if len(data) > limit:
            raise RemoteError(f"{self.url}: {key} is larger than the {limit} bytes it may hold", url=self.url,
                              key=key, hint="the remote is damaged: repair or delete that key")
        return data

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """(bytes, etag) of `key`, or None if it is absent."""
        try:
            data, etag = self.r.get_with_etag(key)
        except RemoteNotFound:
            return None
        self._count(received=len(data))
        return data, etag

    def exists(self, key: str) -> bool:
        """True when `key` exists on the remote."""
        return self.r.exists(key)

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, as a list."""
        return list(self.r.list(prefix))

    def put_new(self, key: str, data: bytes | memoryview) -> bool:
        """Create a hash-named key if absent: True if written, False if it was there (a retried put that landed)."""
        self._count(sent=len(data))
        try:
            self.r.put(key, data, if_absent=True)
            return True
        except RemotePreconditionFailed:
            return False

    def put_cas(self, key: str, data: bytes, etag: str | None) -> None:
        """One conditional put (no retry: the caller re-reads and decides)."""
        self._count(sent=len(data))
        if etag is None:
            self.t.put(key, data, if_absent=True)
        else:
            self.t.put(key, data, if_match=etag)


def io_pool() -> ThreadPoolExecutor:
    """The request threads of one sync: IO_WORKERS requests in flight (shut down by the caller)."""
    return ThreadPoolExecutor(IO_WORKERS, thread_name_prefix="ckstore-io")


def open_spec(spec: RemoteSpec, *, create: bool) -> Transport:
    """Open the transport for a remote: S3 with bounded retries; a local directory created first when `create`."""
    from ..transport import open_transport
    opts: dict[str, Any] = spec.transport_options()
    scheme = spec.url.split("://", 1)[0].lower() if "://" in spec.url else ""
    if scheme in ("s3", "s3a"):
        opts.setdefault("max_retries", 2)
        opts.setdefault("retry_timeout", 30.0)
    elif scheme in ("", "file") and create:
        opts["create"] = True
    return open_transport(spec.url, **opts)


def frame_bound(chunk_size: int) -> int:
    """The most bytes a stored frame of a chunk of at most `chunk_size` raw bytes can take: the frame header, a
    delta's base id and a header per plane (at most MAX_WIDTH + 1 planes), plus the payload — raw planes are
    exactly the raw bytes; a zstd payload expands incompressible data by at most 1/256 plus a few hundred bytes
    (ZSTD_compressBound), bounded here by 1/128 + 4 KiB."""
    headers = codec.HEADER.size + 32 + (codec.MAX_WIDTH + 1) * codec.PLANE.size
    return chunk_size + chunk_size // 128 + headers + 4096


@dataclass(frozen=True)
class FrameLimits:
    """What a fetch believes of a remote's pack index: a chunk of at most `raw` bytes, a frame of at most `stored`."""

    raw: int
    stored: int

    @classmethod
    def for_chunks(cls, *chunk_sizes: int) -> FrameLimits:
        """Limits for chunks of the largest of `chunk_sizes` (the remote's config, and this repository's), and
        never below the longest content-cut chunk."""
        raw = max(*chunk_sizes, CDC_MAX)
        return cls(raw, frame_bound(raw))


def check_remote_config(raw: dict, url: str) -> dict:
    """`raw` when its settings have the types a config's must (docs/design.md, "config"); UnsupportedFormat
    naming the first that does not. Checked like an object: nothing from a remote is used unchecked."""
    def bad(what: str) -> UnsupportedFormat:
        return UnsupportedFormat(f"remote {url}: its config is damaged: {what}",
                                 hint="repair the remote's config (or push to a new remote)")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    chunk = raw.get("chunk_size", 1 << 20)
    if not is_int(chunk) or not 4096 <= chunk <= MAX_CHUNK:
        raise bad(f"chunk_size {ascii(chunk)[:80]} is not an integer from 4096 to {MAX_CHUNK}")
    pack = raw.get("pack_size", 1)
    if not is_int(pack) or pack <= 0:
        raise bad(f"pack_size {ascii(pack)[:80]} is not a positive integer")
    cdc = raw.get("codec", {})
    if not isinstance(cdc, dict) or not all(is_int(cdc.get(k, 0)) for k in ("zstd_level", "max_delta_depth")):
        raise bad("codec must map zstd_level and max_delta_depth to integers")
    schema = raw.get("schema") or {}
    if not isinstance(schema, dict):
        raise bad(f"schema must be a mapping, not {type(schema).__name__}")
    required = schema.get("required") or {}
    if not isinstance(required, dict):
        raise bad(f"schema.required must map metadata keys to types, not be a {type(required).__name__}")
    for key, kind in required.items():
        if not isinstance(key, str) or not key or not isinstance(kind, str) or kind not in SCHEMA_TYPES:
            raise bad(f"schema.required entry {ascii(key)[:80]}: {ascii(kind)[:80]} is not a key and one of "
                      f"{', '.join(SCHEMA_TYPES)}")
    return raw


def remote_config(remote: Session, create_from: bytes | None = None, *, match_scheme: bool = True) -> dict:
    """The remote's config (created if-absent from `create_from` on an empty remote), schema-checked; other
    formats refused, and (`match_scheme`) a remote encrypted otherwise than the session's scheme: a plain one for
    an encrypted repository, an encrypted one for a plain repository, or one under another master key. Kept as
    `remote.config` for the rest of the session."""
    data = remote.get_small("config")
    if data is None and create_from is not None:
        remote.put_new("config", create_from)
        data = remote.get_small("config")
    if data is None:
        raise RemoteNotFound(f"{remote.url} is not a ckstore remote: it has no config", url=remote.url, key="config",
                             hint="check the URL, or push to it first")
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UnsupportedFormat(f"{remote.url}: its config is not a ckstore config", hint="check the URL")
    check_version(raw, f"remote {remote.url}")
    if raw.get("hash") != HASH:
        raise UnsupportedFormat(f"remote {remote.url} uses hash {raw.get('hash')!r} (this ckstore uses {HASH})")
    if match_scheme:
        check_same_keys(raw, remote.scheme, remote.url)
    remote.config = check_remote_config(raw, remote.url)
    return raw


def edit_remote_config(remote: Session, change: Callable[[dict], None]) -> dict:
    """Rewrite the remote's config by compare-and-swap: read it (checked as `remote_config` checks it), let
    `change` edit the table in place, write it back with a fresh checksum; returns the new table."""
    got = remote.get_with_etag("config")
    if got is None:
        raise RemoteError(f"{remote.url} has no config: push to it first", url=remote.url, key="config")
    data, etag = got
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise UnsupportedFormat(f"{remote.url}: its config is not a ckstore config", hint="check the URL")
    check_remote_config(raw, remote.url)
    change(raw)
    remote.put_cas("config", (json.dumps(with_checksum(raw), indent=2) + "\n").encode(), etag)
    return raw


def add_remote_features(remote: Session, raw: dict, features: tuple[str, ...]) -> dict:
    """The remote's config `raw`, raised to version 3 with `features` added when it lacks any: before objects that
    use a feature are pushed, so an older client refuses the remote instead of misreading it."""
    if all(f in (raw.get("features") or []) for f in features):
        return raw

    def add(table: dict) -> None:
        have = list(table.get("features") or [])
        table["features"] = have + [f for f in features if f not in have]
        table["version"] = FEATURES_VERSION

    new = edit_remote_config(remote, add)
    remote.config = check_remote_config(new, remote.url)
    return new


def check_same_keys(raw: dict, scheme: Scheme, url: str) -> None:
    """UnsupportedFormat unless the remote config `raw` is encrypted exactly when `scheme` is, under its key."""
    enc = raw.get("encryption") or {}
    mine = getattr(scheme, "keyring", None)
    if enc and mine is None:
        raise UnsupportedFormat(f"remote {url} is an encrypted repository and this one is not",
                                hint="clone it instead (it asks for its passphrase)")
    if mine is not None and not enc:
        raise UnsupportedFormat(f"this repository is encrypted and the remote {url} is not: its ids and frames "
                                "would not match", hint="push to a new (empty) remote")
    if mine is not None and enc.get("key_id") != mine.key_id:
        raise UnsupportedFormat(f"remote {url} is encrypted under another master key ({enc.get('key_id')}, this "
                                f"repository's is {mine.key_id})", hint="push to a new (empty) remote")


def load_index(repo: Repository, remote: Session, io: ThreadPoolExecutor, warnings: list[str],
               limits: FrameLimits | None = None, refused: dict[bytes, str] | None = None
               ) -> dict[bytes, tuple[bytes, Entry]]:
    """chunk id -> (pack id, entry) over the remote's `.idx` files; each is cached locally after its download.
    Entries claiming more than `limits` (default: MAX_FRAME) are not believed: their chunks are not there (and
    are named in `refused`, with why)."""
    limits = limits or FrameLimits(MAX_FRAME, MAX_FRAME)
    packs, idxs = set(), []
    for key in remote.list("packs"):
        m = _PACK_KEY.match(key)
        if not m or m.group(1) != m.group(2)[:2]:
            continue
        if m.group(3) == "idx":
            idxs.append(bytes.fromhex(m.group(2)))
        else:
            packs.add(bytes.fromhex(m.group(2)))
    def load(pack_id: bytes) -> list[Entry] | None:
        return remote_idx(repo, remote, pack_id, warnings)

    out: dict[bytes, tuple[bytes, Entry]] = {}
    wanted = [p for p in idxs if p in packs]
    for pack_id, entries in zip(wanted, io.map(load, wanted)):
        for e in entries or ():
            if e.offset >= 8 and 0 < e.length <= limits.stored and e.raw_length <= limits.raw:
                out.setdefault(e.chunk, (pack_id, e))
            elif refused is not None:
                refused[e.chunk] = (f"packs/{pack_id.hex()}.idx declares a frame of {e.length} bytes for "
                                    f"{e.raw_length} raw bytes at offset {e.offset}; at most {limits.stored} "
                                    f"and {limits.raw} are possible")
    return out


def remote_idx(repo: Repository, remote: Session, pack_id: bytes, warnings: list[str]) -> list[Entry] | None:
    """The entries of a remote pack's .idx: from this repository's cache of the remote when it is there (and
    checks), else downloaded, checked and cached; None (with a warning) when the remote's copy is damaged."""
    path = remotes.cache_dir(repo.dir, remote.name) / f"{pack_id.hex()}.idx"
    try:
        pid, entries = parse_idx(path.read_bytes())
        if pid == pack_id:
            return entries
    except (OSError, PackFormatError):
        pass
    data = remote.get(pack_key(pack_id, ".idx"))
    try:
        pid, entries = parse_idx(data)
    except PackFormatError as exc:
        warnings.append(f"ignored damaged index packs/{pack_id.hex()}.idx on the remote: {exc}")
        return None
    if pid != pack_id:
        warnings.append(f"ignored index {pack_id.hex()}.idx on the remote: it names another pack")
        return None
    cache_idx(repo, remote, pack_id, data)
    return entries


def cache_idx(repo: Repository, remote: Session, pack_id: bytes, data: bytes) -> None:
    """Keep a copy of a remote pack's .idx bytes in this repository's cache for that remote."""
    cache = remotes.cache_dir(repo.dir, remote.name)
    cache.mkdir(parents=True, exist_ok=True)
    write_atomic(cache / f"{pack_id.hex()}.idx", data, repo.store.tmp_dir)


def verified_object(oid: bytes, data: bytes, where: str, limit: int | None = None, *, scheme: Scheme) -> Any:
    """Open (under `scheme`), decompress, verify against `oid` and decode an object downloaded from `where`;
    CorruptObject if bad. With
    `limit`, an object declaring more decoded bytes is refused before any is decompressed, and one declaring over
    STREAM_CHECK is first hashed as it streams (one at a time), so a zstd bomb never sits in memory whole."""
    try:
        data = scheme.open_object(oid, data)
    except CorruptObject as exc:
        raise CorruptObject("object", oid.hex(), "?", detail=f"from {where}: {exc.detail}") from None
    if limit is not None:
        _check_declared(oid, data, where, limit, scheme)
    try:
        return decode_object(decompress_object(oid, data), oid, scheme)
    except CorruptObject as exc:
        raise CorruptObject("object", oid.hex(), exc.got, detail=f"from {where}") from None


def _check_declared(oid: bytes, data: bytes, where: str, limit: int, scheme: Scheme) -> None:
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise CorruptObject("object", oid.hex(), "?", detail=f"from {where}: undecodable: {exc}") from None
    if not 0 <= size <= limit:
        raise CorruptObject("object", oid.hex(), "?", detail=f"from {where}: it declares "
                            f"{size if size >= 0 else 'no'} decoded bytes, more than the {limit} an object of its "
                            "kind may have")
    if size <= STREAM_CHECK:
        return
    with _stream_lock:
        h, n = scheme.hasher(), 0
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(data)
            while n <= size:
                block = reader.read(1 << 20)
                if not block:
                    break
                h.update(block)
                n += len(block)
        except zstandard.ZstdError as exc:
            raise CorruptObject("object", oid.hex(), "?", detail=f"from {where}: undecodable: {exc}") from None
    if n != size or h.digest() != oid:
        raise CorruptObject("object", oid.hex(), h.hexdigest() if n == size else "?",
                            detail=f"from {where}: {n} decoded bytes, {size} declared")


def missing_on(what: str, oid: bytes, url: str) -> MissingObject:
    """A MissingObject for an object or chunk the remote at `url` should have and does not, with a hint to retry."""
    exc = MissingObject(what, oid.hex())
    exc.hint = f"the remote {url} does not have it: it may be damaged, or a push to it is under way; retry later"
    return exc
