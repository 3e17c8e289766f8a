"""T2 power loss (a test helper, not a test module): record the file-system operations a real ckstore process
performs, then rebuild the disk states a power loss at any point of them could leave.

Recording: the command runs under `strace -f -X raw -y -xx` (every thread and child, raw flags, file descriptors
annotated with their paths, every byte of every string in hex). strace, not a Python shim, because the writes that
matter are not all Python's: LMDB writes its pages and meta pages from C (pwrite/writev + fdatasync), `io.FileIO`
writes from C, and a monkeypatched `os` module sees neither; strace sees every system call of the process tree with
the exact bytes, offsets and return values, and needs nothing inside the process. (mmap writes would be missed:
LMDB is opened without writemap, so only its lock file, which LMDB rebuilds, is written that way.)

Model: the recorded calls under the given roots are resolved, in the order they completed, to operations on inodes:
data ops (write bytes at an offset, truncate) on files, entry ops (set or remove one name) on directories, and
syncs. A file's data op is durable once a later fsync/fdatasync of that file (or a sync) is in the prefix, or when
the file was opened O_SYNC/O_DSYNC; a directory entry op once a later fsync of that directory is. A rename is two
entry ops (remove from the old directory, set in the new one), each made durable only by its own directory's fsync;
a mkdir is an entry op in its parent, so an unsynced new directory can vanish with everything below it. What was
on disk before the command is durable.

A power-loss state is a prefix of the operations with some of its non-durable operations dropped (and possibly the
last unsynced write torn): `states()` yields, for every prefix, the states below (deduplicated by content).
    volatile        nothing lost (what a SIGKILL leaves)
    durable         every non-durable operation lost
    names-not-data  unsynced data lost, unsynced names kept (the zero-length-file-after-rename case)
    data-not-names  unsynced names lost, unsynced data kept
    drop:<op>       one unsynced directory entry lost (outside tmp/), everything else kept
    tmp-back        every unsynced change of a tmp/ directory lost (temp files come back)
    torn            the last unsynced write cut in half, the rest kept
    torn-durable    the last unsynced write cut in half, the rest of what was unsynced lost
`sweep()` records a command once and runs a check on every state, materialized at the roots' own paths; a new case
(gc, say) is one more `Scenario`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

SYSCALLS = ("open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,fsync,fdatasync,sync,syncfs,rename,"
            "renameat,renameat2,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,ftruncate,truncate,close,dup,dup2,"
            "dup3,fcntl,clone,clone3,fork,vfork,copy_file_range,sendfile,fallocate,symlink,symlinkat")
O_ACCMODE, O_CREAT, O_TRUNC, O_APPEND, O_DSYNC, O_DIRECTORY = 3, 0o100, 0o1000, 0o2000, 0o10000, 0o200000
O_TMPFILE = 0o20000000
AT_FDCWD, AT_REMOVEDIR, CLONE_FILES, RENAME_EXCHANGE = -100, 0x200, 0x400, 2


class Unsupported(AssertionError):
    """The command did something under the roots this model does not know (it must be taught, not ignored)."""


# -- parsing strace output ------------------------------------------------------------------------------------------

_LINE = re.compile(r"^(\d+) +(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\) += (.*)$", re.S)
_HEX = re.compile(r"\\x([0-9a-f]{2})")


def _unhex(s: str) -> bytes:
    return bytes.fromhex("".join(_HEX.findall(s))) if s else b""


def _split_args(s: str) -> list[str]:
    out, depth, cur, quote = [], 0, [], False
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            cur.append(c)
            if c == "\\":
                cur.append(s[i + 1])
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
            cur.append(c)
        elif c in "[{<(":
            depth += 1
            cur.append(c)
        elif c in "]}>)":
            depth -= 1
            cur.append(c)
        elif c == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        out.append("".join(cur).strip())
    return out


def _string(arg: str) -> bytes:
    if not arg.startswith('"'):
        raise Unsupported(f"not a string argument: {arg[:80]}")
    if arg.endswith("..."):
        raise Unsupported("strace truncated a string: raise -s")
    return _unhex(arg[1:-1])


def _fd(arg: str) -> tuple[int, str | None]:
    """`3<\\x2f...>` -> (3, "/..."); `-100<...>` for AT_FDCWD."""
    m = re.match(r"^(-?\d+|0x[0-9a-f]+)(?:<(.*)>)?(?:\(deleted\))?$", arg, re.S)  # an fd of an unlinked file
    if not m:
        raise Unsupported(f"not a descriptor: {arg[:80]}")
    n = int(m.group(1), 0)
    if n == 0xFFFFFF9C:
        n = AT_FDCWD
    path = _unhex(m.group(2)).decode("utf-8", "surrogateescape") if m.group(2) else None
    return n, path


def _int(arg: str) -> int:
    return int(arg.split("|")[0].split()[0], 0) if "|" not in arg else sum(int(x, 0) for x in arg.split("|"))


def parse(text: str) -> list[tuple[int, str, list[str], str]]:
    """(pid, syscall, args, return value) of every completed call, in completion order."""
    pending: dict[int, str] = {}
    calls = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.startswith(("+++", "---")):
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<..."):
            head = pending.pop(pid, None)
            if head is None:
                continue
            rest = head + rest.split("resumed>", 1)[1]
        c = _CALL.match(rest)
        if not c:
            continue
        calls.append((pid, c.group(1), _split_args(c.group(2)), c.group(3)))
    return calls


# -- the inode model ------------------------------------------------------------------------------------------------

@dataclass
class Op:
    """One operation on one inode. kind: write (off, data), trunc (size), set (name -> target), remove (name),
    sync (this inode), syncall."""

    kind: str
    inode: int
    off: int = 0
    data: bytes = b""
    name: str = ""
    target: int = 0
    durable: bool = False  # made durable by itself (an O_DSYNC write)
    what: str = ""  # the recorded call, for messages

    def label(self) -> str:
        return f"{self.kind} {self.what}"


@dataclass
class Recording:
    """What `record` saw: the roots' contents before the command, and the operations on them."""

    roots: list[Path]
    kinds: dict[int, str]  # inode -> "f" | "d"
    base_files: dict[int, bytes]
    base_dirs: dict[int, dict[str, int]]
    root_inodes: dict[Path, int]
    ops: list[Op]
    returncode: int
    stdout: str
    stderr: str
    names: dict[int, str] = field(default_factory=dict)  # inode -> a path it had (messages)


class _Resolver:
    """Replays the recorded calls over the true namespace, turning paths and descriptors into inode operations."""

    def __init__(self, roots: list[Path], cwd: str) -> None:
        self.start_cwd = cwd
        self.roots = [Path(os.path.abspath(r)) for r in roots]
        self.next = 1
        self.kinds: dict[int, str] = {}
        self.files: dict[int, bytes] = {}
        self.dirs: dict[int, dict[str, int]] = {}
        self.paths: dict[str, int] = {}  # absolute path -> inode, everything under the roots
        self.root_inodes: dict[Path, int] = {}
        self.names: dict[int, str] = {}
        for root in self.roots:
            self.root_inodes[root] = self._snapshot(root)
        self.ops: list[Op] = []
        self.tables: dict[int, dict[int, dict]] = {}  # pid -> fd table (shared dict objects when CLONE_FILES)
        self.cwd: dict[int, str] = {}

    def _new(self, kind: str, path: str) -> int:
        ino, self.next = self.next, self.next + 1
        self.kinds[ino] = kind
        self.names[ino] = path
        return ino

    def _snapshot(self, root: Path) -> int:
        ino = self._new("d", str(root))
        self.dirs[ino] = {}
        self.paths[str(root)] = ino
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            p = os.path.join(root, entry.name)
            if entry.is_symlink():
                raise Unsupported(f"a symlink under a root: {p}")
            if entry.is_dir():
                child = self._snapshot(Path(p))
            else:
                child = self._new("f", p)
                self.files[child] = Path(p).read_bytes()
                self.paths[p] = child
            self.dirs[ino][entry.name] = child
        return ino

    # paths
    def under(self, path: str | None) -> bool:
        return path is not None and any(path == str(r) or path.startswith(str(r) + "/") for r in self.roots)

    def _abs(self, pid: int, dirfd: tuple[int, str | None] | None, path: str) -> str:
        if path.startswith("/"):
            return os.path.normpath(path)
        base = dirfd[1] if dirfd and dirfd[1] else self.cwd.get(pid, self.start_cwd)
        return os.path.normpath(os.path.join(base, path))

    def _parent(self, path: str) -> tuple[int, str]:
        parent, name = os.path.split(path)
        ino = self.paths.get(parent)
        if ino is None or self.kinds[ino] != "d":
            raise Unsupported(f"parent of {path} unknown")
        return ino, name

    def _set(self, path: str, ino: int, what: str) -> None:
        d, name = self._parent(path)
        self.ops.append(Op("set", d, name=name, target=ino, what=what))

    def _remove(self, path: str, what: str) -> None:
        d, name = self._parent(path)
        self.ops.append(Op("remove", d, name=name, what=what))

    def _move_paths(self, old: str, new: str) -> None:
        ino = self.paths.pop(old)
        for p in [p for p in self.paths if p.startswith(old + "/")]:
            self.paths[new + p[len(old):]] = self.paths.pop(p)
        self.paths[new] = ino

    def _forget(self, path: str) -> None:
        self.paths.pop(path, None)
        for p in [p for p in self.paths if p.startswith(path + "/")]:
            del self.paths[p]

    # descriptors
    def table(self, pid: int) -> dict[int, dict]:
        return self.tables.setdefault(pid, {})

    def _desc(self, pid: int, arg: str) -> dict | None:
        fd, path = _fd(arg)
        d = self.table(pid).get(fd)
        if d is None:
            if self.under(path) and not (path or "").endswith(" (deleted)"):
                raise Unsupported(f"descriptor {fd} of {path} was opened before the recording")
            return None
        return d

    def call(self, pid: int, name: str, args: list[str], ret: str) -> None:
        for a in args[:1]:
            if a.startswith("-100<"):
                self.cwd[pid] = _fd(a)[1] or self.cwd.get(pid, "")
        if ret.startswith("-1") or ret.startswith("?"):
            return
        rv = ret.split()[0]
        h = getattr(self, "do_" + name, None)
        if h is not None:
            h(pid, args, rv)

    # syscalls
    def do_clone(self, pid: int, args: list[str], rv: str) -> None:
        flags = next((_int(a.split("=", 1)[1]) for a in args if a.startswith("flags=")), 0)
        self._fork(pid, int(rv), flags)

    def do_clone3(self, pid: int, args: list[str], rv: str) -> None:
        m = re.search(r"flags=([0-9a-fx|]+)", args[0])
        self._fork(pid, int(rv), _int(m.group(1)) if m else 0)

    def do_fork(self, pid: int, args: list[str], rv: str) -> None:
        self._fork(pid, int(rv), 0)

    do_vfork = do_fork

    def _fork(self, pid: int, child: int, flags: int) -> None:
        parent = self.table(pid)
        early = self.tables.get(child, {})  # the child's calls can be printed before the clone returns
        if flags & CLONE_FILES:
            parent.update(early)
            self.tables[child] = parent
        else:
            self.tables[child] = {**parent, **early}
        if pid in self.cwd:
            self.cwd[child] = self.cwd[pid]

    def _open(self, pid: int, path: str, flags: int, rv: str, what: str) -> None:
        fd, shown = _fd(rv)
        self.table(pid).pop(fd, None)
        if not self.under(path):
            return
        if flags & O_TMPFILE == O_TMPFILE:
            raise Unsupported(f"O_TMPFILE under a root: {path}")
        ino = self.paths.get(path)
        if ino is None:
            if not flags & O_CREAT:
                raise Unsupported(f"{path} opened but unknown")
            kind = "d" if flags & O_DIRECTORY else "f"
            ino = self._new(kind, path)
            self.files[ino] = b""
            self.paths[path] = ino
            self._set(path, ino, what)
        elif flags & O_TRUNC and flags & O_ACCMODE and self.kinds[ino] == "f":
            self.ops.append(Op("trunc", ino, off=0, what=what))
        self.table(pid)[fd] = {"inode": ino, "pos": [0], "append": bool(flags & O_APPEND),
                               "sync": bool(flags & O_DSYNC)}

    def do_open(self, pid: int, args: list[str], rv: str) -> None:
        self._open(pid, self._abs(pid, None, _string(args[0]).decode("utf-8", "surrogateescape")),
                   _int(args[1]), rv, f"open {_string(args[0])!r}")

    def do_openat(self, pid: int, args: list[str], rv: str) -> None:
        path = self._abs(pid, _fd(args[0]), _string(args[1]).decode("utf-8", "surrogateescape"))
        self._open(pid, path, _int(args[2]), rv, f"openat {path}")

    def do_creat(self, pid: int, args: list[str], rv: str) -> None:
        self._open(pid, self._abs(pid, None, _string(args[0]).decode("utf-8", "surrogateescape")),
                   O_CREAT | O_TRUNC | 1, rv, "creat")

    def do_close(self, pid: int, args: list[str], rv: str) -> None:
        self.table(pid).pop(_fd(args[0])[0], None)

    def _dup(self, pid: int, args: list[str], rv: str) -> None:
        d = self.table(pid).get(_fd(args[0])[0])
        new = _fd(rv)[0]
        if d is not None:
            self.table(pid)[new] = d
        else:
            self.table(pid).pop(new, None)

    do_dup = do_dup2 = do_dup3 = _dup

    def do_fcntl(self, pid: int, args: list[str], rv: str) -> None:
        if len(args) > 1 and _int(args[1]) in (0, 1030):  # F_DUPFD, F_DUPFD_CLOEXEC
            self._dup(pid, args, rv)

    def _write(self, pid: int, fdarg: str, data: bytes, n: int, off: int | None, what: str) -> None:
        d = self._desc(pid, fdarg)
        if d is None:
            return
        data = data[:n]
        ino = d["inode"]
        if off is None:
            off = -1 if d["append"] else d["pos"][0]  # -1: at the end, whatever the end is then
            if off >= 0:
                d["pos"][0] = off + n
        self.ops.append(Op("write", ino, off=off, data=data, durable=d["sync"], what=f"{what} {self.names[ino]}"))

    def do_write(self, pid: int, args: list[str], rv: str) -> None:
        self._write(pid, args[0], _string(args[1]), int(rv), None, "write")

    def do_pwrite64(self, pid: int, args: list[str], rv: str) -> None:
        self._write(pid, args[0], _string(args[1]), int(rv), int(args[3]), "pwrite64")

    @staticmethod
    def _iov(arg: str) -> bytes:
        return b"".join(_string(m) for m in re.findall(r'iov_base=("(?:[^"\\]|\\.)*"(?:\.\.\.)?)', arg))

    def do_writev(self, pid: int, args: list[str], rv: str) -> None:
        self._write(pid, args[0], self._iov(args[1]), int(rv), None, "writev")

    def do_pwritev(self, pid: int, args: list[str], rv: str) -> None:
        self._write(pid, args[0], self._iov(args[1]), int(rv), int(args[3]), "pwritev")

    do_pwritev2 = do_pwritev

    def do_lseek(self, pid: int, args: list[str], rv: str) -> None:
        d = self._desc(pid, args[0])
        if d is not None:
            d["pos"][0] = int(rv)

    def do_ftruncate(self, pid: int, args: list[str], rv: str) -> None:
        d = self._desc(pid, args[0])
        if d is not None:
            self.ops.append(Op("trunc", d["inode"], off=int(args[1]), what=f"ftruncate {self.names[d['inode']]}"))

    def do_truncate(self, pid: int, args: list[str], rv: str) -> None:
        path = self._abs(pid, None, _string(args[0]).decode("utf-8", "surrogateescape"))
        if self.under(path):
            self.ops.append(Op("trunc", self.paths[path], off=int(args[1]), what=f"truncate {path}"))

    def do_fallocate(self, pid: int, args: list[str], rv: str) -> None:
        if self._desc(pid, args[0]) is not None:
            raise Unsupported("fallocate under a root")

    def _sync(self, pid: int, args: list[str], rv: str) -> None:
        d = self._desc(pid, args[0])
        if d is not None:
            self.ops.append(Op("sync", d["inode"], what=f"fsync {self.names[d['inode']]}"))

    do_fsync = do_fdatasync = _sync

    def do_sync(self, pid: int, args: list[str], rv: str) -> None:
        self.ops.append(Op("syncall", 0, what="sync"))

    do_syncfs = do_sync

    def _rename(self, pid: int, old: str, new: str, flags: int, what: str) -> None:
        a, b = self.under(old), self.under(new)
        if not a and not b:
            return
        if not a:
            raise Unsupported(f"{what}: moved in from outside the roots")
        if flags & RENAME_EXCHANGE:
            raise Unsupported(f"{what}: RENAME_EXCHANGE")
        ino = self.paths[old]
        if b:
            if new in self.paths:
                self._forget(new)
            self._set(new, ino, what)
        self._remove(old, what)
        if b:
            self._move_paths(old, new)
        else:
            self._forget(old)

    def do_rename(self, pid: int, args: list[str], rv: str) -> None:
        old, new = (self._abs(pid, None, _string(x).decode("utf-8", "surrogateescape")) for x in args[:2])
        self._rename(pid, old, new, 0, f"rename {old} -> {new}")

    def do_renameat(self, pid: int, args: list[str], rv: str) -> None:
        old = self._abs(pid, _fd(args[0]), _string(args[1]).decode("utf-8", "surrogateescape"))
        new = self._abs(pid, _fd(args[2]), _string(args[3]).decode("utf-8", "surrogateescape"))
        self._rename(pid, old, new, _int(args[4]) if len(args) > 4 else 0, f"rename {old} -> {new}")

    do_renameat2 = do_renameat

    def _link(self, pid: int, old: str, new: str, what: str) -> None:
        if not self.under(new):
            return
        if not self.under(old):
            raise Unsupported(f"{what}: linked in from outside the roots")
        ino = self.paths[old]
        self.paths[new] = ino
        self._set(new, ino, what)

    def do_link(self, pid: int, args: list[str], rv: str) -> None:
        old, new = (self._abs(pid, None, _string(x).decode("utf-8", "surrogateescape")) for x in args[:2])
        self._link(pid, old, new, f"link {old} -> {new}")

    def do_linkat(self, pid: int, args: list[str], rv: str) -> None:
        old = self._abs(pid, _fd(args[0]), _string(args[1]).decode("utf-8", "surrogateescape"))
        new = self._abs(pid, _fd(args[2]), _string(args[3]).decode("utf-8", "surrogateescape"))
        self._link(pid, old, new, f"link {old} -> {new}")

    def _unlink(self, path: str, what: str) -> None:
        if self.under(path):
            self._remove(path, what)
            self._forget(path)

    def do_unlink(self, pid: int, args: list[str], rv: str) -> None:
        path = self._abs(pid, None, _string(args[0]).decode("utf-8", "surrogateescape"))
        self._unlink(path, f"unlink {path}")

    def do_unlinkat(self, pid: int, args: list[str], rv: str) -> None:
        path = self._abs(pid, _fd(args[0]), _string(args[1]).decode("utf-8", "surrogateescape"))
        self._unlink(path, f"unlink {path}")

    do_rmdir = do_unlink

    def _mkdir(self, path: str, what: str) -> None:
        if self.under(path):
            ino = self._new("d", path)
            self.dirs[ino] = {}
            self._set(path, ino, what)
            self.paths[path] = ino

    def do_mkdir(self, pid: int, args: list[str], rv: str) -> None:
        path = self._abs(pid, None, _string(args[0]).decode("utf-8", "surrogateescape"))
        self._mkdir(path, f"mkdir {path}")

    def do_mkdirat(self, pid: int, args: list[str], rv: str) -> None:
        path = self._abs(pid, _fd(args[0]), _string(args[1]).decode("utf-8", "surrogateescape"))
        self._mkdir(path, f"mkdir {path}")

    def _unsupported_out(self, pid: int, args: list[str], rv: str) -> None:
        if self._desc(pid, args[0]) is not None:
            raise Unsupported("copy_file_range/sendfile into a root")

    do_copy_file_range = do_sendfile = _unsupported_out

    def do_symlink(self, pid: int, args: list[str], rv: str) -> None:
        if self.under(self._abs(pid, None, _string(args[1]).decode("utf-8", "surrogateescape"))):
            raise Unsupported("symlink under a root")

    def do_symlinkat(self, pid: int, args: list[str], rv: str) -> None:
        if self.under(self._abs(pid, _fd(args[1]), _string(args[2]).decode("utf-8", "surrogateescape"))):
            raise Unsupported("symlink under a root")


def record(cmd: list[str], roots: list[Path], *, env: dict | None = None, cwd: str | Path | None = None,
           timeout: float = 600) -> Recording:
    """Run `cmd` under strace and return what it did under `roots` (their contents before it ran included)."""
    res = _Resolver(roots, str(cwd or os.getcwd()))
    with tempfile.TemporaryDirectory(prefix="ckstrace-") as tmp:
        log = Path(tmp) / "trace"
        p = subprocess.run(["strace", "-f", "-qq", "-X", "raw", "-y", "-xx", "-s", str(1 << 26), "-e",
                            f"trace={SYSCALLS}", "-o", str(log), "--", *map(str, cmd)], env=env, cwd=cwd,
                           capture_output=True, text=True, timeout=timeout)
        text = log.read_text(encoding="ascii", errors="replace")
    first = next((int(m.group(1)) for m in map(_LINE.match, text.splitlines()) if m), None)
    if first is not None:
        res.tables[first] = {}
    for pid, name, args, ret in parse(text):
        res.call(pid, name, args, ret)
    # res.files and res.dirs hold the roots' contents before the command (files and directories it created
    # start empty): the resolver never changes them, it only records operations
    return Recording(res.roots, res.kinds, res.files, res.dirs, res.root_inodes, res.ops, p.returncode, p.stdout,
                     p.stderr, res.names)


# -- power-loss states ----------------------------------------------------------------------------------------------

def durable_set(ops: list[Op], k: int) -> set[int]:
    """Indices of the first `k` operations that are durable at the end of that prefix."""
    out, synced, everything = set(), set(), False
    for i in range(k - 1, -1, -1):
        op = ops[i]
        if op.kind == "syncall":
            everything = True
            out.add(i)
        elif op.kind == "sync":
            synced.add(op.inode)
            out.add(i)
        elif everything or op.inode in synced or op.durable:
            out.add(i)
    return out


@dataclass(frozen=True)
class State:
    prefix: int  # operations 0..prefix-1 happened
    variant: str
    drop: frozenset[int]
    tear: tuple[int, int] | None  # (op index, bytes kept)


def build(rec: Recording, state: State) -> dict[str, bytes | None]:
    """{path: bytes (a file) | None (a directory)} of the state, for every root."""
    files: dict[int, bytes | bytearray] = dict(rec.base_files)
    mutable: set[int] = set()
    dirs = {ino: dict(d) for ino, d in rec.base_dirs.items()}
    for i, op in enumerate(rec.ops[: state.prefix]):
        if i in state.drop:
            continue
        if op.kind in ("write", "trunc"):
            if op.inode not in mutable:
                files[op.inode] = bytearray(files.get(op.inode, b""))
                mutable.add(op.inode)
            buf = files[op.inode]
            if op.kind == "trunc":
                del buf[op.off:]
                buf.extend(bytes(max(0, op.off - len(buf))))
            else:
                data = op.data[: state.tear[1]] if state.tear and state.tear[0] == i else op.data
                off = len(buf) if op.off < 0 else op.off
                if off > len(buf):
                    buf.extend(bytes(off - len(buf)))
                buf[off:off + len(data)] = data
        elif op.kind == "set":
            d = dirs.setdefault(op.inode, {})
            d[op.name] = op.target
            if rec.kinds[op.target] == "d":
                dirs.setdefault(op.target, {})
            else:
                files.setdefault(op.target, b"")
        elif op.kind == "remove":
            dirs.setdefault(op.inode, {}).pop(op.name, None)
    out: dict[str, bytes | None] = {}

    def walk(ino: int, path: str, seen: frozenset[int]) -> None:
        if ino in seen:
            return
        if rec.kinds[ino] == "d":
            out[path] = None
            for name, child in sorted(dirs.get(ino, {}).items()):
                walk(child, f"{path}/{name}", seen | {ino})
        else:
            out[path] = bytes(files.get(ino, b""))

    for root, ino in rec.root_inodes.items():
        walk(ino, str(root), frozenset())
    return out


def digest(tree: dict[str, bytes | None]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in sorted(tree):
        v = tree[p]
        h.update(p.encode("utf-8", "surrogateescape") + b"\0" + (b"D" if v is None else b"F" + hashlib.blake2b(
            v, digest_size=16).digest()))
    return h.hexdigest()


def _in_tmp(rec: Recording, op: Op) -> bool:
    return os.path.basename(rec.names.get(op.inode, "")) == "tmp"


def states(rec: Recording, prefixes: Iterator[int] | None = None, *,
           variants: tuple[str, ...] | None = None) -> Iterator[State]:
    """Every power-loss state of every prefix (or of `prefixes`), per the variants in the module docstring."""
    for k in (range(len(rec.ops) + 1) if prefixes is None else prefixes):
        durable = durable_set(rec.ops, k)
        loose = [i for i in range(k) if i not in durable and rec.ops[i].kind not in ("sync", "syncall")]
        data = frozenset(i for i in loose if rec.ops[i].kind in ("write", "trunc"))
        names = frozenset(i for i in loose if rec.ops[i].kind in ("set", "remove"))
        out = [State(k, "volatile", frozenset(), None), State(k, "durable", frozenset(loose), None),
               State(k, "names-not-data", data, None), State(k, "data-not-names", names, None)]
        out += [State(k, f"drop:{rec.ops[i].label()}", frozenset([i]), None) for i in sorted(names)
                if not _in_tmp(rec, rec.ops[i])]
        tmp = frozenset(i for i in names if _in_tmp(rec, rec.ops[i]))
        if tmp:
            out.append(State(k, "tmp-back", tmp, None))
        writes = [i for i in data if rec.ops[i].kind == "write" and len(rec.ops[i].data) > 1]
        if writes:
            last = max(writes)
            half = len(rec.ops[last].data) // 2
            out += [State(k, "torn", frozenset(), (last, half)),
                    State(k, "torn-durable", frozenset(loose) - {last}, (last, half))]
        for s in out:
            if variants is None or s.variant.split(":")[0] in variants:
                yield s


def materialize(rec: Recording, tree: dict[str, bytes | None]) -> None:
    """Replace each root's contents with the state's (at the roots' own paths: absolute paths inside stay right)."""
    for root in rec.roots:
        if root.exists():
            shutil.rmtree(root)
    for path in sorted(tree, key=lambda p: (p.count("/"), p)):
        v = tree[path]
        if v is None:
            os.makedirs(path, exist_ok=True)
        else:
            Path(path).write_bytes(v)


@dataclass
class Scenario:
    """One recorded command and its oracle: `prepare(work)` builds the roots and returns (command, roots, context);
    `check(context, acknowledged)` runs on each materialized state (acknowledged: the command had exited 0
    before the power was lost)."""

    name: str
    prepare: Callable[[Path], tuple[list[str], list[Path], dict]]
    check: Callable[[dict, bool], None]
    env: dict = field(default_factory=dict)


@dataclass
class SweepResult:
    recording: Recording
    states: int = 0  # states built
    distinct: int = 0  # states checked (distinct contents)
    failures: list[tuple[State, str]] = field(default_factory=list)
    durable_points: int = 0


def sweep(scenario: Scenario, work: Path, *, prefixes: Callable[[Recording], list[int]] | None = None,
          variants: tuple[str, ...] | None = None, on_case=None) -> SweepResult:
    """Record the scenario's command once, then check every power-loss state (or those of `prefixes(rec)`).

    `on_case(label, fn)` runs each check (a soak Tally's `case`); without it a failing check raises."""
    cmd, roots, ctx = scenario.prepare(work)
    env = dict(os.environ, **scenario.env)
    rec = record(cmd, roots, env=env)
    if rec.returncode != 0:
        raise AssertionError(f"the recorded command failed ({rec.returncode}): {rec.stderr[-2000:]}")
    result = SweepResult(rec)
    result.durable_points = sum(op.kind in ("sync", "syncall") for op in rec.ops)
    seen: set[str] = set()
    chosen = None if prefixes is None else prefixes(rec)
    for state in states(rec, chosen, variants=variants):
        result.states += 1
        tree = build(rec, state)
        key = digest(tree)
        acked = state.prefix == len(rec.ops)
        if (key, acked) in seen:
            continue
        seen.add((key, acked))
        result.distinct += 1
        where = rec.ops[state.prefix - 1].label() if state.prefix else "before the first operation"
        label = f"{scenario.name} prefix {state.prefix}/{len(rec.ops)} ({where}) {state.variant}"

        def one(tree=tree, acked=acked) -> None:
            materialize(rec, tree)
            scenario.check(ctx, acked)

        if on_case is None:
            try:
                one()
            except Exception as exc:
                raise AssertionError(f"{label}: {type(exc).__name__}: {exc}") from exc
        else:
            on_case(label, one)
    return result
