"""Refs on a remote: read, listed and moved by compare-and-swap; in an encrypted repository sealed, each with a
sequence number that only grows, checked against the highest this repository saw (a replayed old value is
refused)."""

from __future__ import annotations

import json
import time
import threading
from concurrent.futures import ThreadPoolExecutor

from ..engine.repository import Repository
from ..errors import CorruptObject, RemoteError, RemotePreconditionFailed, RemoteRefMoved, RemoteUnavailable, UsageError
from ..fs.fileio import write_atomic
from ..model.refnames import HEADS, check_ref_name
from ..model.crypto import Keyring
from ..storage import remotes
from ..storage.keys import KEYS, KeyStore, Passphrase, parse_files, resolve, unlock
from ..storage.refs import next_seq
from ..transport import retry
from .session import Session

_seen_lock = threading.Lock()  # remote_refs reads refs on several threads


def upload_keys(repo: Repository, remote: Session) -> int:
    """Put the key files of an encrypted repository on the remote (`keys/<name>`, create-only) that it lacks, so
    a clone can open it with any of their passphrases; how many were put."""
    if not repo.store.scheme.encrypted:
        return 0
    there = set(remote.list(KEYS))
    return sum(remote.put_new(f"{KEYS}/{name}", data) for name, data in KeyStore(repo.dir).raw().items()
               if f"{KEYS}/{name}" not in there)


def remote_keyring(remote: Session, cfg: dict, passphrase: Passphrase) -> tuple[Keyring, dict[str, bytes]]:
    """The master key of an encrypted remote (its config `cfg`), opened with `passphrase` from its key files;
    with those files' bytes, for the clone to keep. WrongPassphrase when none opens."""
    raw = {}
    for key in remote.list(KEYS):
        data = remote.get_small(key, 1 << 16)
        if data is not None:
            raw[key[len(KEYS) + 1:]] = data
    what = f"remote {remote.url}"
    ring, _ = unlock(parse_files(raw), resolve(passphrase, what), cfg["encryption"]["key_id"], what,
                     where=f"{remote.url}/{KEYS}")
    return ring, {name: raw[name] for name, kf in parse_files(raw).items() if not isinstance(kf, Exception)}


def track_refs(remote: Session, repo: Repository) -> None:
    """Check the sealed refs `remote` serves against the highest sequence numbers this repository saw of them
    (kept in its cache for that remote), so an old ref value written back — a replay — is refused."""
    if not remote.scheme.encrypted:
        return
    remote.seen_file = remotes.cache_dir(repo.dir, remote.name) / "ref-seqs.json"
    try:
        raw = json.loads(remote.seen_file.read_text())
        remote.seen = {k: v for k, v in raw.items() if isinstance(k, str) and type(v) is int}
    except (OSError, ValueError, AttributeError):
        remote.seen = {}


def _parse_ref(remote: Session, key: str, data: bytes) -> bytes | None:
    """The id a remote ref's bytes hold (None: not a ref at all); RemoteError for a sealed ref that does not
    open as `key`'s or that is older than one seen before."""
    try:
        got = remote.scheme.ref_value(key, data)
    except CorruptObject as exc:
        raise RemoteError(f"{remote.url}: ref {key} does not open ({exc.detail})", url=remote.url, key=key,
                          hint="someone with write access changed it; restore it from a clone") from None
    if got is None:
        return None
    oid, seq = got
    with _seen_lock:
        if remote.seen is not None and seq < remote.seen.get(key, 0):
            raise RemoteError(f"{remote.url}: ref {key} is a replayed old value (sequence {seq}, this repository "
                              f"has seen {remote.seen[key]})", url=remote.url, key=key,
                              hint="someone with write access put back an older ref; restore it from a clone")
        remote.seqs[key] = seq
        if remote.seen is not None and seq > remote.seen.get(key, 0):
            remote.seen[key] = seq
            assert remote.seen_file is not None
            remote.seen_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(remote.seen_file, json.dumps(remote.seen, sort_keys=True).encode(),
                         remote.seen_file.parent)
    return oid


def ref_bytes(remote: Session, key: str, new: bytes) -> bytes:
    """The bytes that make the remote ref `key` hold `new`: sealed with the next sequence number when encrypted."""
    return remote.scheme.ref_bytes(key, new, next_seq(remote.seqs.get(key, 0)))


def read_ref(remote: Session, key: str) -> tuple[bytes | None, str | None]:
    """(id, etag) of the remote ref at `key`, or (None, None) if absent; RemoteError if it is not an id (or a
    sealed ref of this repository, when it is encrypted)."""
    got = remote.get_with_etag(key)
    if got is None:
        return None, None
    value = _parse_ref(remote, key, got[0])
    if value is None:
        raise RemoteError(f"{remote.url}: ref {key} is damaged (not "
                          + ("a sealed ref)" if remote.scheme.encrypted else "a 64-digit id)"), url=remote.url,
                          key=key, hint="repair or delete that key on the remote")
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
    for name, data in zip(names, io.map(lambda n: remote.get_small(prefix + n, 4096), names)):
        value = _parse_ref(remote, prefix + name, data) if data is not None else None
        if value is None:
            if data is not None:
                warnings.append(f"ignored remote ref {prefix + name}: not "
                                + ("a sealed ref" if remote.scheme.encrypted else "a 64-digit id"))
            continue
        out[name] = value
    return out


def remote_head(remote: Session) -> str | None:
    """The branch the remote's HEAD names, or None when it is absent, detached or not a valid name."""
    data = remote.get_small("HEAD", 4096)
    if not data:
        return None
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("ref: " + HEADS):
        try:
            return check_ref_name(text[5 + len(HEADS):])
        except UsageError:
            return None
    return None


def move_ref(remote: Session, ref: str, new: bytes, expected: bytes | None, etag: str | None) -> None:
    """Move a remote ref by compare-and-swap against `etag` (retrying transient faults; RemoteRefMoved when
    another writer moved it)."""
    data = ref_bytes(remote, ref, new)
    delay = retry.BACKOFF
    for attempt in range(retry.ATTEMPTS):
        try:
            remote.put_cas(ref, data, etag)
            return
        except RemotePreconditionFailed:
            cur, _ = read_ref(remote, ref)
            if cur == new:
                return                      # our write landed; its reply was lost and the retry was refused
            raise RemoteRefMoved(f"the remote ref moved during the push: fetch and retry ({ref} on {remote.url} "
                                 f"is now {cur.hex()[:12] if cur else 'gone'})") from None
        except RemoteUnavailable as exc:
            if attempt + 1 == retry.ATTEMPTS:
                raise RemoteUnavailable(f"cannot update {ref} on {remote.url}: {exc}", url=remote.url, key=ref,
                                        hint="retry the push; what was uploaded is kept") from exc
            time.sleep(delay)
            delay *= 3
            cur, cur_etag = read_ref(remote, ref)
            if cur == new:
                return
            if cur != expected:
                raise RemoteRefMoved(f"the remote ref moved during the push: fetch and retry ({ref} on "
                                     f"{remote.url})") from None
            etag = cur_etag
