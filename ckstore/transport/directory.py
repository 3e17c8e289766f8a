"""A remote in a local or shared (NFS) directory.

Every write goes to a temp file in `<root>/tmp/`, is fsynced, then takes its name atomically:

* plain put:      under the key's lock, `os.replace(tmp, final)`;
* if_absent:      `os.link(tmp, final)`, which fails if `final` exists (atomic on local filesystems and NFS);
                  where hard links are not supported, the key's lock and a check for the file instead;
* if_match:       under the key's lock, hash the current file and compare, then `os.replace`.

A key's lock is `<final>.lock`, created with `O_CREAT|O_EXCL` and holding "host pid time". A lock older than
60 s, or one whose owner was a process on this host that no longer exists, is broken by the next writer; one held
by a live writer makes others wait up to `lock_timeout` seconds and then fail with RemoteUnavailable.
The etag is the BLAKE3-256 hex of the file's content, so `stat` reads the file (use `exists` when the etag
is not needed). Keys ending in `.lock` and keys under `tmp/` are reserved.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat as stat_mode
import uuid
from pathlib import Path
from typing import ContextManager, Iterator

import blake3

from ..errors import (
    RemoteAccessDenied,
    RemoteBucketMissing,
    RemoteError,
    RemotePreconditionFailed,
    RemoteUnavailable,
    UsageError,
)
from ..fs import locks
from .base import Data, KeyStat, Transport, check_key, check_prefix, check_range, content_etag

LOCK_SUFFIX = ".lock"
RESERVED_TOP = "tmp"
_TRANSIENT = {errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ENOLCK,
              errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH,
              getattr(errno, "ESTALE", -1), getattr(errno, "EREMOTEIO", -1)}
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _hash_fd(fd: int, size: int) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO if size >= 1 << 22 else 1)
    if size:
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            h.update(mm)
    return h.hexdigest()


class DirectoryTransport(Transport):
    """Keys are files under `root`; see the module docstring for how writes stay atomic."""

    etag_reads_content = True
    LOCK_STALE_AFTER = 60.0

    def __init__(self, root: str | os.PathLike, *, create: bool = False, lock_timeout: float = 10.0,
                 fsync: bool = True) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.url = self.root.as_uri()
        self.lock_timeout = float(lock_timeout)
        self.fsync = fsync
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._map(exc, "create the remote directory", None) from exc
        if not self.root.is_dir():
            raise RemoteBucketMissing(f"remote directory {self.root} does not exist" if not self.root.exists()
                                      else f"remote {self.root} is not a directory", url=self.url)
        self.tmp_dir = self.root / RESERVED_TOP

    # ---------------------------------------------------------------- helpers
    def _key(self, key: str) -> str:
        check_key(key)
        if key.endswith(LOCK_SUFFIX) or key.split("/", 1)[0] == RESERVED_TOP:
            raise UsageError(f"refusing remote key {key!r}: keys ending in {LOCK_SUFFIX!r} and keys under "
                             f"{RESERVED_TOP + '/'!r} are reserved by directory remotes")
        return key

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _map(self, exc: OSError, what: str, key: str | None) -> RemoteError:
        where = f"{self.url}: {what}" + (f" {key!r}" if key else "")
        cls: type[RemoteError]
        if isinstance(exc, PermissionError):
            cls = RemoteAccessDenied
        elif exc.errno in _TRANSIENT:
            cls = RemoteUnavailable
        else:
            cls = RemoteError
        return cls(f"{where} failed: {exc.strerror or exc}", url=self.url, key=key)

    def _fsync_dir(self, path: str | os.PathLike) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _makedirs(self, path: str) -> None:
        """Create the missing parents of `path` (up to root), fsyncing each new entry's directory."""
        parent = os.path.dirname(path)
        missing = []
        while parent != str(self.root) and not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise NotADirectoryError(errno.ENOTDIR, "a key exists where a directory is needed", d)
                continue
            self._fsync_dir(os.path.dirname(d))

    def _write_tmp(self, data: Data) -> str:
        os.makedirs(self.tmp_dir, exist_ok=True)
        tmp = os.path.join(self.tmp_dir, f"{os.getpid()}-{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data).cast("B")
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._unlink_quiet(tmp)
            raise
        os.close(fd)
        return tmp

    @staticmethod
    def _unlink_quiet(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _etag_of(self, path: str) -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            return _hash_fd(fd, st.st_size) if stat_mode.S_ISREG(st.st_mode) else None
        finally:
            os.close(fd)

    def _locked(self, key: str, final: str) -> ContextManager[None]:
        def busy(owner: str) -> RemoteUnavailable:
            return RemoteUnavailable(
                f"{self.url}: {key!r} is locked by another writer ({final + LOCK_SUFFIX}: {owner})", url=self.url,
                key=key, hint=f"retry; a lock left by a crashed writer is broken after {self.LOCK_STALE_AFTER:.0f} s")
        return locks.hold(final + LOCK_SUFFIX, timeout=self.lock_timeout, aside_dir=self.tmp_dir, busy=busy,
                          stale_after=self.LOCK_STALE_AFTER)

    # ---------------------------------------------------------------- reads
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The file's bytes, or [start:end] clipped to its size; RemoteNotFound if there is no such file."""
        self._key(key)
        check_range(start, end)
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._map(exc, "open", key) from exc
        try:
            st = os.fstat(fd)
            if not stat_mode.S_ISREG(st.st_mode):
                raise self._not_found(key)
            size = st.st_size
            lo = min(start or 0, size)
            hi = size if end is None else max(lo, min(end, size))
            parts, pos = [], lo
            while pos < hi:
                chunk = os.pread(fd, hi - pos, pos)
                if not chunk:
                    break                 # the file shrank under us (it should not: writes replace it)
                parts.append(chunk)
                pos += len(chunk)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except IsADirectoryError:
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._map(exc, "read", key) from exc
        finally:
            os.close(fd)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The file's bytes and their content etag (BLAKE3 hex)."""
        data = self.get(key)
        return data, content_etag(data)

    def stat(self, key: str) -> KeyStat | None:
        """Size and content etag of the file (reads all of it to hash it), or None if absent."""
        self._key(key)
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise self._map(exc, "stat", key) from exc
        try:
            st = os.fstat(fd)
            if not stat_mode.S_ISREG(st.st_mode):
                return None
            return KeyStat(st.st_size, _hash_fd(fd, st.st_size))
        except OSError as exc:
            raise self._map(exc, "stat", key) from exc
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        """True when the key's file exists; cheaper than stat, which hashes the content."""
        self._key(key)
        return os.path.isfile(self._path(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix`, sorted; lock files, tmp/ and names no key can have are skipped."""
        prefix = check_prefix(prefix)
        top = self._path(prefix) if prefix else str(self.root)
        keys: list[str] = []
        try:
            if prefix and not os.path.isdir(top):
                return iter(())
            for dirpath, dirnames, filenames in os.walk(top, onerror=None):
                rel = os.path.relpath(dirpath, self.root)
                rel = "" if rel == "." else rel.replace(os.sep, "/")
                if not rel:
                    dirnames[:] = [d for d in dirnames if d != RESERVED_TOP]
                for name in filenames:
                    if name.endswith(LOCK_SUFFIX):
                        continue
                    k = f"{rel}/{name}" if rel else name
                    try:
                        check_key(k)
                    except UsageError:
                        continue          # a name no key can have: not ours
                    if os.path.isfile(os.path.join(dirpath, name)):
                        keys.append(k)
        except OSError as exc:
            raise self._map(exc, "list", prefix) from exc
        keys.sort()
        return iter(keys)

    # ---------------------------------------------------------------- writes
    def put(self, key: str, data: Data, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """Write `data` durably: a temp file, then an atomic rename or link (module docstring); returns its etag."""
        self._check_put_args(key, if_absent, if_match)
        self._key(key)
        etag = content_etag(data)
        final = self._path(key)
        tmp = None
        try:
            tmp = self._write_tmp(data)
            self._makedirs(final)
            if if_absent:
                self._put_if_absent(key, tmp, final)
            else:
                with self._locked(key, final):
                    if if_match is not None:
                        cur = self._etag_of(final)
                        if cur != if_match:
                            found = "nothing" if cur is None else f"etag {cur}"
                            raise RemotePreconditionFailed(
                                f"{self.url}: {key!r} changed: expected etag {if_match}, found {found}",
                                url=self.url, key=key)
                    os.replace(tmp, final)
                    tmp = None
                    self._fsync_dir(os.path.dirname(final))
        except RemoteError:
            raise
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise RemoteError(f"{self.url}: cannot store {key!r}: a key and a key prefix collide ({exc.filename})",
                              url=self.url, key=key) from exc
        except OSError as exc:
            raise self._map(exc, "write", key) from exc
        finally:
            if tmp is not None:
                self._unlink_quiet(tmp)
        return etag

    @staticmethod
    def _same_file(a: str, b: str) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False

    def _put_if_absent(self, key: str, tmp: str, final: str) -> None:
        try:
            os.link(tmp, final)
        except FileExistsError:
            if not self._same_file(tmp, final):   # same file: NFS retried our successful link
                raise RemotePreconditionFailed(f"{self.url}: {key!r} already exists", url=self.url,
                                               key=key) from None
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            with self._locked(key, final):      # no hard links here: check and rename under the key's lock
                if os.path.lexists(final):
                    raise RemotePreconditionFailed(f"{self.url}: {key!r} already exists",
                                                   url=self.url, key=key) from None
                os.replace(tmp, final)
        self._fsync_dir(os.path.dirname(final))

    def delete(self, key: str) -> None:
        """Remove the key's file under its lock and fsync the directory; absent keys are ignored."""
        self._key(key)
        final = self._path(key)
        if not os.path.lexists(final):
            return
        try:
            with self._locked(key, final):
                try:
                    os.unlink(final)
                except FileNotFoundError:
                    return
                except IsADirectoryError:
                    return
                self._fsync_dir(os.path.dirname(final))
        except OSError as exc:
            raise self._map(exc, "delete", key) from exc
