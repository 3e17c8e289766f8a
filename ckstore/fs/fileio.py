"""Durable file writes: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CRASH_AT = int(os.environ.get("CKSTORE_CRASH_AT", "0") or 0)
_steps = 0


def io_step() -> None:
    """Count durable I/O steps; with CKSTORE_CRASH_AT=N the process dies at the Nth (crash-test hook)."""
    global _steps
    _steps += 1
    if _CRASH_AT and _steps == _CRASH_AT:
        os._exit(137)


def fsync_dir(path: str | os.PathLike) -> None:
    """Fsync a directory, so the renames and new entries in it survive a crash (counts as an I/O step)."""
    io_step()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs(path: str | os.PathLike) -> None:
    """Create directory `path` and its missing parents durably: each new directory's entry is fsynced into its
    parent (without that, a power loss can take a new fan-out directory and every fsynced file in it). Raises
    what `Path.mkdir(parents=True, exist_ok=True)` raises when a file is in the way."""
    path = Path(path)
    if path.is_dir():
        return
    parent = path.parent
    if parent != path and not parent.exists():
        makedirs(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        if not path.is_dir():
            raise
        # another process made it and may not have fsynced its parent yet: do it too
    fsync_dir(parent)


def write_atomic(path: Path, data: bytes | memoryview, tmp_dir: Path, *, exclusive: bool = False,
                 mode: int | None = None) -> bool:
    """Write `data` under `path` all-or-nothing. With `exclusive`, an existing file wins (returns False). The
    file is private (0600, from mkstemp) unless `mode` is given: then `mode` less the umask, as `open` would
    make it (for files written for the user, such as a picture)."""
    if exclusive and path.exists():
        return False
    makedirs(path.parent)
    makedirs(tmp_dir)  # a removed tmp/ is recreated, not an error
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f"{os.getpid()}-", suffix=".tmp")
    try:
        if mode is not None:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, mode & ~mask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            io_step()
            os.fsync(f.fileno())
        io_step()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise NotDurable(exc.errno, exc.strerror, str(path)) from None
    return True


class NotDurable(OSError):
    """A file got its name, but its directory could not be synced: the change is visible now and may not survive a
    power loss. Callers for whom that name is the change itself (a ref) say so; to others it is a write error."""
