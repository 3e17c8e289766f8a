"""Running and measuring subprocesses; stored bytes of a tree, making files cold, hashing trees."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class ToolError(RuntimeError):
    pass


@dataclass
class Run:
    """One finished subprocess: wall seconds, CPU seconds (user+sys of it and its waited-for children), peak RSS."""

    wall: float
    user: float
    sys: float
    maxrss: int  # bytes
    rc: int
    out: str = ""
    err: str = ""
    anon: int = 0  # peak anonymous RSS of the process itself, bytes (see AnonPeak)
    rchar: int = 0  # /proc/PID/io of the process at exit (run(..., io=True) only)
    wchar: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.sys


class AnonPeak(threading.Thread):
    """Polls /proc/PID/status of the started process (not its children) for its peak anonymous RSS.

    ru_maxrss also counts the page-cache pages of files the process maps (ckstore mmaps its inputs), so this is the
    figure that says how much memory the process itself allocated. Sampled every 10 ms: a shorter peak can be missed.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        path = f"/proc/{self.pid}/status"
        while not self.done.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
                            break
            except (OSError, ValueError):
                return
            self.done.wait(0.01)


def proc_io(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except OSError:
        return {}


def run(cmd: list[Any], cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True,
        io: bool = False) -> Run:
    """Run cmd to its end and measure it with os.wait4.

    Without io the peak anonymous RSS of the process is sampled (AnonPeak). With io, rchar/wchar instead: the
    child is left a zombie (waitid WNOWAIT) while /proc/PID/io is read. They count every byte the process (all its
    threads) passed through read/write-like calls: files, pipes and sockets, not those of children it started.
    """
    cmd = [str(c) for c in cmd]
    counters: dict[str, int] = {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        poll = None if io else AnonPeak(proc.pid)
        if poll:
            poll.start()
        else:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - t0
            counters = proc_io(proc.pid)
        _, status, ru = os.wait4(proc.pid, 0)
        if poll:
            wall = time.perf_counter() - t0
            poll.done.set()
            poll.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        r = Run(wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss * 1024, proc.returncode,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"), poll.peak if poll else 0,
                counters.get("rchar", 0), counters.get("wchar", 0))
    if check and r.rc != 0:
        raise ToolError(f"{' '.join(cmd)} exited {r.rc}: {(r.err or r.out)[-1500:]}")
    return r


@dataclass
class Step:
    """A measured step made of one or more commands: times add up, peak RSS is the largest."""

    wall: float = 0.0
    cpu: float = 0.0
    maxrss: int = 0
    anon: int = 0
    runs: int = 0

    def add(self, r: Run) -> Run:
        self.wall += r.wall
        self.cpu += r.cpu
        self.maxrss = max(self.maxrss, r.maxrss)
        self.anon = max(self.anon, r.anon)
        self.runs += 1
        return r


def load() -> float:
    """The 1-minute load average, recorded with each step."""
    return round(os.getloadavg()[0], 2)


def files_under(folder: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def apparent_bytes(folder: Path, exclude: list[Path] = ()) -> int:
    """Sum of st_size of the regular files under folder (du --apparent-size -b), minus the excluded subtrees."""
    if not folder.exists():
        return 0
    total = 0
    ex = [str(e) for e in exclude]
    for dirpath, dirs, names in os.walk(folder):
        if any(dirpath == e or dirpath.startswith(e + os.sep) for e in ex):
            dirs[:] = []
            continue
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            if not os.path.islink(os.path.join(dirpath, n)):
                total += st.st_size
    return total


def evict(folders: list[Path]) -> int:
    """Make the files under folders cold: sync, then POSIX_FADV_DONTNEED on each (never drops the system caches)."""
    os.sync()
    n = 0
    for folder in folders:
        if not folder.exists():
            continue
        for p in files_under(folder):
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(files_under(folder))}


def tree_digest(folder: Path) -> str:
    """The identity of a source tree: sha256 over the names and bytes of its .py files."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.py")):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def mismatches(restored: dict[str, str], want: dict[str, str]) -> list[str]:
    """Paths missing on either side, then paths whose sha256 differs."""
    return sorted(set(restored) ^ set(want)) + sorted(p for p in restored if p in want and restored[p] != want[p])


def median_time(fn: Callable[[], Any], repeat: int = 5, clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """fn run repeat times in this process: the median of the clock's differences, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t = clock()
        result = fn()
        times.append(clock() - t)
    return statistics.median(times), result
