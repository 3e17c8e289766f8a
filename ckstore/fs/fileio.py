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


def write_atomic(path: Path, data: bytes | memoryview, tmp_dir: Path, *, exclusive: bool = False) -> bool:
    """Write `data` under `path` all-or-nothing. With `exclusive`, an existing file wins (returns False)."""
    if exclusive and path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)  # a removed tmp/ is recreated, not an error
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f"{os.getpid()}-", suffix=".tmp")
    try:
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
    fsync_dir(path.parent)
    return True
