"""One sync's view of a remote: a transport with retries and a count of the bytes moved, and the remote's
config, refs and pack index read from it, every name and id checked; plus what a sync reports (`SyncResult`).

`push`, `fetch` and `sync` (pull, clone) build on it; docs/design.md, "Remotes", describes the layout.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..engine.repository import Repository
from ..errors import (
    CorruptObject,
    MissingObject,
    RemoteError,
    RemoteNotFound,
    RemotePreconditionFailed,
    UnsupportedFormat,
    UsageError,
)
from ..fs.fileio import write_atomic
from ..model.objects import decode_object
from ..model.refnames import HEADS, check_ref_name
from ..storage import remotes
from ..storage.config import FORMAT, HASH, VERSION
from ..storage.packs import Entry, PackFormatError, parse_idx
from ..storage.remotes import RemoteSpec
from ..storage.store import Store
from ..transport.base import Transport
from ..transport.retry import RetryingTransport

IO_WORKERS = 4                  # requests in flight
PACK_LIMIT = 64 << 20           # packs pushed, and packs written by a fetch, are sealed at this size
MAX_FRAME = 1 << 28             # an index entry claiming a bigger frame is not believed
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
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

    def __init__(self, transport: Transport, name: str) -> None:
        self.t, self.name, self.url = transport, name, transport.url
        self.r = transport if isinstance(transport, RetryingTransport) else RetryingTransport(transport)
        self.sent = self.received = 0
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


def remote_config(remote: Session, create_from: bytes | None = None) -> dict:
    """The remote's config (created if-absent from `create_from` on an empty remote); other formats refused."""
    data = remote.get_opt("config")
    if data is None and create_from is not None:
        remote.put_new("config", create_from)
        data = remote.get_opt("config")
    if data is None:
        raise RemoteNotFound(f"{remote.url} is not a ckstore remote: it has no config", url=remote.url, key="config",
                             hint="check the URL, or push to it first")
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UnsupportedFormat(f"{remote.url}: its config is not a ckstore config", hint="check the URL")
    if raw.get("version") != VERSION:
        raise UnsupportedFormat(f"remote {remote.url} has repository format version {raw.get('version')!r} "
                                f"(this ckstore reads version {VERSION})")
    if raw.get("hash") != HASH:
        raise UnsupportedFormat(f"remote {remote.url} uses hash {raw.get('hash')!r} (this ckstore uses {HASH})")
    return raw


def _parse_id(data: bytes) -> bytes | None:
    text = data.decode("ascii", "replace").strip()
    return bytes.fromhex(text) if _HEX64.match(text) else None


def read_ref(remote: Session, key: str) -> tuple[bytes | None, str | None]:
    """(id, etag) of the remote ref at `key`, or (None, None) if absent; RemoteError if it is not a 64-digit id."""
    got = remote.get_with_etag(key)
    if got is None:
        return None, None
    value = _parse_id(got[0])
    if value is None:
        raise RemoteError(f"{remote.url}: ref {key} is damaged (not a 64-digit id)", url=remote.url, key=key,
                          hint="repair or delete that key on the remote")
    return value, got[1]


def remote_refs(remote: Session, io: ThreadPoolExecutor, prefix: str, warnings: list[str]) -> dict[str, bytes]:
    """Refs under `prefix` ("refs/heads/" or "refs/tags/"): {short name: id}, names and ids checked."""
    names = []
    for key in remote.list(prefix.rstrip("/")):
        name = key[len(prefix):]
        try:
            check_ref_name(name)
        except UsageError:
            warnings.append(f"ignored remote ref with an invalid name: {key[:200]!r}")
            continue
        names.append(name)
    out = {}
    for name, data in zip(names, io.map(lambda n: remote.get_opt(prefix + n), names)):
        value = _parse_id(data) if data is not None else None
        if value is None:
            if data is not None:
                warnings.append(f"ignored remote ref {prefix + name}: not a 64-digit id")
            continue
        out[name] = value
    return out


def remote_head(remote: Session) -> str | None:
    """The branch the remote's HEAD names, or None when it is absent, detached or not a valid name."""
    data = remote.get_opt("HEAD")
    if not data:
        return None
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("ref: " + HEADS):
        try:
            return check_ref_name(text[5 + len(HEADS):])
        except UsageError:
            return None
    return None


def load_index(repo: Repository, remote: Session, io: ThreadPoolExecutor, warnings: list[str]
                ) -> dict[bytes, tuple[bytes, Entry]]:
    """chunk id -> (pack id, entry) over the remote's `.idx` files; each is cached locally after its download."""
    packs, idxs = set(), []
    for key in remote.list("packs"):
        m = _PACK_KEY.match(key)
        if not m or m.group(1) != m.group(2)[:2]:
            continue
        if m.group(3) == "idx":
            idxs.append(bytes.fromhex(m.group(2)))
        else:
            packs.add(bytes.fromhex(m.group(2)))
    cache = remotes.cache_dir(repo.dir, remote.name)

    def load(pack_id: bytes) -> list[Entry] | None:
        path = cache / f"{pack_id.hex()}.idx"
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
        cache.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, repo.store.tmp_dir)
        return entries

    out: dict[bytes, tuple[bytes, Entry]] = {}
    wanted = [p for p in idxs if p in packs]
    for pack_id, entries in zip(wanted, io.map(load, wanted)):
        for e in entries or ():
            if e.offset >= 8 and 0 < e.length <= MAX_FRAME and e.raw_length <= MAX_FRAME:
                out.setdefault(e.chunk, (pack_id, e))
    return out


def cache_idx(repo: Repository, remote: Session, pack_id: bytes, data: bytes) -> None:
    """Keep a copy of a remote pack's .idx bytes in this repository's cache for that remote."""
    cache = remotes.cache_dir(repo.dir, remote.name)
    cache.mkdir(parents=True, exist_ok=True)
    write_atomic(cache / f"{pack_id.hex()}.idx", data, repo.store.tmp_dir)


def verified_object(oid: bytes, data: bytes, where: str) -> Any:
    """Decompress, verify against `oid` and decode an object downloaded from `where`; CorruptObject if bad."""
    try:
        return decode_object(Store.decompress_object(oid, data), oid)
    except CorruptObject as exc:
        raise CorruptObject("object", oid.hex(), exc.got, detail=f"from {where}") from None


def missing_on(what: str, oid: bytes, url: str) -> MissingObject:
    """A MissingObject for an object or chunk the remote at `url` should have and does not, with a hint to retry."""
    exc = MissingObject(what, oid.hex())
    exc.hint = f"the remote {url} does not have it: it may be damaged, or a push to it is under way; retry later"
    return exc
