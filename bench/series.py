"""Side-by-side benchmark of ckstore and its peers on the checkpoint series of bench/scenarios.py.

    python bench/series.py --size S --scenarios mix,A,B,C,Cfile,D,E,Ept,R --dtypes fp32,bf16 --tools all \
        --out bench/out

For every series <scenario>-<dtype> (generated into --inputs by scenarios.py when missing) every tool commits
the same version directories v0..vN in one run, then checks out every version into a fresh directory and
compares each restored file with the source by sha256. Every tool command runs as a subprocess; measured per
tool: stored bytes after each version (apparent bytes of the repository's files; ckstore's `.ckstore/cache` is
left out of the stored figure and reported apart), commit wall and CPU time and peak RSS per version (os.wait4
of the child: user+sys and ru_maxrss of the command and the children it waited for), checkout of the oldest and
newest version hot (median of --repeat runs) and cold (after `sync` and posix_fadvise(DONTNEED) on every file of
the tool's directory: repository, caches and redirected HOME; the system caches are never dropped), a no-op
re-commit of the newest directory, and the byte-identical check.

Results: --out/series/<scenario>-<dtype>.json per series (kept between runs: `--resume` skips series already
measured with the same ckstore snapshot), --out/results.json and --json (all figures), --md (the tables).
`--report-only` rebuilds the report from --out/series without measuring anything.

Tools run from their own directories under --work; HOME, XDG_*, BORG_BASE_DIR, DVC_SITE_CACHE_DIR and the
restic cache point into them. ckstore runs from a snapshot of the ckstore/ package copied at start, so edits
made to the tree during a run do not mix versions; its hash goes into the results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ALL_SCENARIOS = ["mix", "A", "B", "C", "Cfile", "D", "E", "Ept", "R"]
ALL_DTYPES = ["fp32", "bf16"]
ALL_TOOLS = ["ckstore", "restic", "restic-max", "borg", "dvc", "git-lfs", "git-theta", "zstd", "zipnn", "copy"]
DEFAULT_ENVS = Path("/tmp/ckbench-envs")  # venvs for DVC, ZipNN and git-theta (created on demand)
TORCH_PIN = "torch==2.13.0"  # the CPU wheel on this machine; a bare `torch` pulls a multi-GB CUDA build
KIB, MIB = 1024, 1024 * 1024
SLACK = 64 * KIB
SLOW = 5.0  # seconds: a hot checkout slower than this is not repeated

# the "figures seen here" table of shared/BENCHMARKS.md (mix series, size S)
REACHABLE = {"fp32": 2.55, "bf16": 3.60}
SINGLE_DENSE = {"fp32": 1.19, "bf16": 1.49}
PEERS_SEEN = [
    ("DVC, git-lfs", "1.00×", "1.00×", "the whole file again"),
    ("ZipNN per file", "1.20×", "1.51×", "the whole file again"),
    ("restic", "1.72×", "1.61×", "17 MB"),
    ("borg zstd,3", "1.74×", "1.81×", "31 MB"),
    ("git-theta", "1.93× (37 s to commit)", "crashes", "0.6 MB"),
    ("what a tensor-level store with grouping + XOR can reach", "**2.55×**", "**3.60×**", "**0.43 MB**"),
]


# ---------------------------------------------------------------- running and measuring subprocesses


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


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> Run:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        poll = AnonPeak(proc.pid)
        poll.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        poll.done.set()
        poll.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        r = Run(wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss * 1024, proc.returncode,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"), poll.peak)
    if check and r.rc != 0:
        tail = (r.err or r.out)[-1500:]
        raise ToolError(f"{' '.join(map(str, cmd))} exited {r.rc}: {tail}")
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


# ---------------------------------------------------------------- tools


@dataclass
class Ctx:
    """What a tool adapter gets: its own directory, the environment to run in, the series dtype."""

    dir: Path
    env: dict[str, str]
    dtype: str
    envs: Path  # where the venvs live


class Tool:
    """A peer adapter: init, commit version i from src, check out version i into dest, say what is stored."""

    name = "?"
    description = ""
    restore_ignore: tuple[str, ...] = ()  # top-level names in the restored directory that are the tool's own

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.ids: list[str] = []

    @classmethod
    def version(cls, envs: Path) -> str:
        return ""

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        """None when the tool can run here, else the reason it cannot."""
        return None

    def sh(self, step: Step, cmd: list[str], cwd: Path | None = None) -> Run:
        return step.add(run([str(c) for c in cmd], cwd=cwd, env=self.ctx.env))

    def init(self) -> None:
        raise NotImplementedError

    def commit(self, i: int, src: Path, step: Step) -> None:
        raise NotImplementedError

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        """Restore version i; returns the directory holding the restored files (dest unless the tool can't)."""
        raise NotImplementedError

    def stored(self) -> tuple[int, int]:
        """(stored bytes, auxiliary cache bytes not counted as stored)."""
        raise NotImplementedError

    def cold_paths(self) -> list[Path]:
        return [self.ctx.dir]

    def recommit_src(self, src: Path) -> Path:
        return src


def which(name: str) -> str | None:
    return shutil.which(name)


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a version string is informative only
        return f"? ({e})"


class Ckstore(Tool):
    name = "ckstore"
    description = "ckstore CLI (this repository), `commit DIR -m vN`, `checkout ID -o DIR`"
    launcher: Path | None = None  # set up by prepare_ckstore()
    snapshot_hash = ""

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if cls.launcher else "ckstore snapshot not prepared"

    def cmd(self, *args: Any) -> list[str]:
        return [sys.executable, str(self.launcher), *map(str, args)]

    @property
    def repo(self) -> Path:
        return self.ctx.dir / "repo"

    def init(self) -> None:
        self.repo.mkdir(parents=True)
        self.sh(Step(), self.cmd("init", self.repo))

    def commit(self, i: int, src: Path, step: Step) -> None:
        r = self.sh(step, self.cmd("-C", self.repo, "commit", src, "-m", f"v{i}", "--json"))
        self.ids.append(json.loads(r.out)["id"])

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, self.cmd("-C", self.repo, "checkout", self.ids[i], "-o", dest))
        return dest

    def stored(self) -> tuple[int, int]:
        cache = self.repo / ".ckstore" / "cache"
        return apparent_bytes(self.repo / ".ckstore", exclude=[cache]), apparent_bytes(cache)


class Restic(Tool):
    name = "restic"
    compression = "auto"
    description = "restic 0.14, repository v2, `backup --compression auto`, `restore`"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if which("restic") else "restic not installed (apt-get install -y restic)"

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(["restic", "version"])

    @property
    def repo(self) -> Path:
        return self.ctx.dir / "repo"

    def init(self) -> None:
        self.sh(Step(), ["restic", "-r", self.repo, "init", "--repository-version", "2"])

    def commit(self, i: int, src: Path, step: Step) -> None:
        r = self.sh(step, ["restic", "-r", self.repo, "backup", "--compression", self.compression, "--host", "bench",
                           "--json", "."], cwd=src)
        summary = [json.loads(line) for line in r.out.splitlines() if '"summary"' in line][-1]
        self.ids.append(summary["snapshot_id"])

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["restic", "-r", self.repo, "restore", self.ids[i], "--target", dest])
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.repo), apparent_bytes(self.ctx.dir / "home" / ".cache")


class ResticMax(Restic):
    name = "restic-max"
    compression = "max"
    description = "restic as above with `--compression max`"


class Borg(Tool):
    name = "borg"
    description = "borg 1.2, `init -e none`, `create --compression zstd,3`, `extract`"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if which("borg") else "borg not installed (apt-get install -y borgbackup)"

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(["borg", "--version"])

    @property
    def repo(self) -> Path:
        return self.ctx.dir / "repo"

    def init(self) -> None:
        self.sh(Step(), ["borg", "init", "-e", "none", self.repo])

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = f"v{i}" if i >= 0 else f"recommit{len(self.ids)}"
        self.sh(step, ["borg", "create", "--compression", "zstd,3", f"{self.repo}::{name}", "."], cwd=src)
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["borg", "extract", f"{self.repo}::{self.ids[i]}"], cwd=dest)
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.repo), apparent_bytes(self.ctx.dir / "home" / "borg")


class Dvc(Tool):
    """DVC tracks a workspace directory: each version is copied into ws/ckpt (untimed), then `dvc add ckpt`.

    Checkout: the version's .dvc file is put back and `dvc checkout` rebuilds ws/ckpt from the cache (copy links).
    """

    name = "dvc"
    description = "DVC 3 (own venv), `init --no-scm`, `dvc add` of the version directory, `dvc checkout`"

    @classmethod
    def bin(cls, envs: Path) -> Path:
        return envs / "dvc" / "bin" / "dvc"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if cls.bin(envs).exists() else f"DVC venv missing ({cls.bin(envs)}); run with --install"

    @classmethod
    def version(cls, envs: Path) -> str:
        return "dvc " + tool_version([str(cls.bin(envs)), "--version"])

    @property
    def ws(self) -> Path:
        return self.ctx.dir / "ws"

    def dvc(self, step: Step, *args: Any) -> Run:
        return self.sh(step, [self.bin(self.ctx.envs), *args], cwd=self.ws)

    def init(self) -> None:
        self.ws.mkdir(parents=True)
        self.dvc(Step(), "init", "--no-scm", "-q")
        self.dvc(Step(), "config", "core.analytics", "false")
        (self.ctx.dir / "versions").mkdir()

    def commit(self, i: int, src: Path, step: Step) -> None:
        ck = self.ws / "ckpt"
        if src != ck:
            shutil.rmtree(ck, ignore_errors=True)
            shutil.copytree(src, ck)  # the workspace a training run would have written (untimed)
        self.dvc(step, "add", "-q", "ckpt")
        record = self.ctx.dir / "versions" / f"{len(self.ids)}.dvc"
        shutil.copyfile(self.ws / "ckpt.dvc", record)
        self.ids.append(str(record))

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        shutil.rmtree(self.ws / "ckpt", ignore_errors=True)
        shutil.copyfile(self.ids[i], self.ws / "ckpt.dvc")
        self.dvc(step, "checkout", "-q", "ckpt.dvc")
        return self.ws / "ckpt"

    def stored(self) -> tuple[int, int]:
        d = self.ws / ".dvc"
        return apparent_bytes(d / "cache"), apparent_bytes(d, exclude=[d / "cache"]) + apparent_bytes(
            self.ctx.dir / "home")

    def cold_paths(self) -> list[Path]:
        return [self.ws / ".dvc", self.ctx.dir / "home"]

    def recommit_src(self, src: Path) -> Path:
        return self.ws / "ckpt"  # holds the newest version after the checkouts: `dvc add` again


class GitLfs(Tool):
    """A git repository whose *.safetensors and *.pt go through git-lfs; stored = the size of .git."""

    name = "git-lfs"
    description = "git + git-lfs (`*.safetensors`, `*.pt` tracked), `git add -A && git commit`, checkout into a work tree"
    patterns = ["*.safetensors", "*.pt"]

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        if not which("git"):
            return "git not installed"
        r = subprocess.run(["git", "lfs", "version"], capture_output=True)
        return None if r.returncode == 0 else "git-lfs not installed (apt-get install -y git-lfs)"

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(["git", "lfs", "version"]) + "; " + tool_version(["git", "--version"])

    @property
    def repo(self) -> Path:
        return self.ctx.dir / "repo"

    def git(self, step: Step, *args: Any) -> Run:
        return self.sh(step, ["git", *args], cwd=self.repo)

    def setup_filters(self) -> None:
        # the LFS rules go into .git/info/attributes, not .gitattributes: the work tree then holds exactly the
        # version's files (a checkpoint directory may bring its own .gitattributes, as the HF one of R does)
        self.git(Step(), "lfs", "install", "--local")
        rules = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in self.patterns)
        (self.repo / ".git" / "info").mkdir(exist_ok=True)
        (self.repo / ".git" / "info" / "attributes").write_text(rules)

    def init(self) -> None:
        self.repo.mkdir(parents=True)
        self.git(Step(), "init", "-q")
        self.setup_filters()

    def commit(self, i: int, src: Path, step: Step) -> None:
        if i >= 0:
            for p in self.repo.iterdir():
                if p.name not in (".git",) + self.restore_ignore:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            shutil.copytree(src, self.repo, dirs_exist_ok=True)  # the work tree a training run wrote (untimed)
        self.git(step, "add", "-A")
        self.git(step, "commit", "-q", "--allow-empty", "-m", f"v{i}")
        self.ids.append(self.git(Step(), "rev-parse", "HEAD").out.strip())

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["git", f"--work-tree={dest}", "checkout", self.ids[i], "--", "."], cwd=self.repo)
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.repo / ".git"), 0

    def cold_paths(self) -> list[Path]:
        return [self.repo / ".git", self.ctx.dir / "home"]

    def recommit_src(self, src: Path) -> Path:
        return self.repo


class GitTheta(GitLfs):
    """git-theta (optional): per-tensor LFS objects for safetensors; needs its venv on PATH for the filters."""

    name = "git-theta"
    restore_ignore = (".git", ".gitattributes")
    description = "git-theta (own venv, GIT_THETA_CHECKPOINT_TYPE=safetensors), `*.safetensors` tracked"
    patterns = ["*.safetensors"]

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        if not (envs / "theta" / "bin" / "git-theta").exists():
            return f"git-theta venv missing ({envs / 'theta'}); it is optional"
        return GitLfs.unavailable(envs)

    @classmethod
    def version(cls, envs: Path) -> str:
        r = subprocess.run([str(envs / "theta" / "bin" / "pip"), "show", "git-theta"], capture_output=True, text=True)
        v = [line for line in r.stdout.splitlines() if line.startswith("Version")]
        return "git-theta " + (v[0].split()[-1] if v else "?")

    def setup_filters(self) -> None:
        self.git(Step(), "lfs", "install", "--local")
        self.git(Step(), "theta", "install")  # writes the filter config into the redirected HOME
        for pat in self.patterns:
            self.git(Step(), "theta", "track", pat)  # writes .gitattributes: left out of the comparison
        self.git(Step(), "add", ".gitattributes")
        self.git(Step(), "commit", "-q", "-m", "init")

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        # git-theta's smudge filter opens the work tree as a repository and refuses `--work-tree` and linked work
        # trees: the repository's own work tree is emptied (untimed) and checked out, and is what gets verified
        for p in self.repo.iterdir():
            if p.name not in (".git", ".gitattributes"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        self.sh(step, ["git", "checkout", "-f", self.ids[i], "--", "."], cwd=self.repo)
        return self.repo


class Zstd(Tool):
    name = "zstd"
    description = "zstd CLI, `zstd -3 -T2` per file per version; store = sum of the .zst"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if which("zstd") else "zstd not installed (apt-get install -y zstd)"

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(["zstd", "--version"])

    @property
    def store(self) -> Path:
        return self.ctx.dir / "store"

    def init(self) -> None:
        self.store.mkdir(parents=True)

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = f"{len(self.ids)}"
        for p in sorted(files_under(src)):
            out = self.store / name / (str(p.relative_to(src)) + ".zst")
            out.parent.mkdir(parents=True, exist_ok=True)
            self.sh(step, ["zstd", "-3", "-T2", "-q", p, "-o", out])
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        folder = self.store / self.ids[i]
        for p in sorted(files_under(folder)):
            out = dest / str(p.relative_to(folder))[: -len(".zst")]
            out.parent.mkdir(parents=True, exist_ok=True)
            self.sh(step, ["zstd", "-d", "-q", p, "-o", out])
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.store), 0


class Zipnn(Tool):
    name = "zipnn"
    description = "ZipNN per file per version (own venv with torch==2.13.0), bytes mode, dtype of the series"

    @classmethod
    def python(cls, envs: Path) -> Path:
        return envs / "zipnn" / "bin" / "python"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        py = cls.python(envs)
        if not py.exists():
            return f"ZipNN venv missing ({py}); run with --install"
        r = subprocess.run([str(py), "-c", "import zipnn"], capture_output=True, text=True)
        return None if r.returncode == 0 else f"import zipnn failed: {r.stderr.strip()[-300:]}"

    @classmethod
    def version(cls, envs: Path) -> str:
        r = subprocess.run([str(cls.python(envs)), "-m", "pip", "show", "zipnn"], capture_output=True, text=True)
        v = [line for line in r.stdout.splitlines() if line.startswith("Version")]
        return "zipnn " + (v[0].split()[-1] if v else "?")

    @property
    def store(self) -> Path:
        return self.ctx.dir / "store"

    def init(self) -> None:
        self.store.mkdir(parents=True)

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = f"{len(self.ids)}"
        dtype = {"fp32": "float32", "bf16": "bfloat16"}[self.ctx.dtype]
        self.sh(step, [self.python(self.ctx.envs), BENCH / "zipnn_tool.py", "compress", src, self.store / name, dtype])
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, [self.python(self.ctx.envs), BENCH / "zipnn_tool.py", "decompress", self.store / self.ids[i], dest])
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.store), 0


class Copy(Tool):
    name = "copy"
    description = "plain copy: `cp -r` + `sync` per version (the speed floor)"

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(["cp", "--version"])

    @property
    def store(self) -> Path:
        return self.ctx.dir / "store"

    def init(self) -> None:
        self.store.mkdir(parents=True)

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = f"{len(self.ids)}"
        self.sh(step, ["sh", "-c", 'cp -r "$0" "$1" && sync', src, self.store / name])
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["cp", "-r", f"{self.store / self.ids[i]}/.", dest])
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.store), 0


TOOLS: dict[str, type[Tool]] = {t.name: t for t in (Ckstore, Restic, ResticMax, Borg, Dvc, GitLfs, GitTheta, Zstd,
                                                     Zipnn, Copy)}


# ---------------------------------------------------------------- setup: ckstore snapshot, venvs


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.py")):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def prepare_ckstore(src_root: Path, work: Path) -> str | None:
    """Copy ckstore/ into work and write a launcher equal to the console script; None or the reason it fails."""
    snap = work / "ckstore-snapshot"
    shutil.rmtree(snap, ignore_errors=True)
    shutil.copytree(src_root / "ckstore", snap / "ckstore", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    launcher = snap / "ckstore-cli.py"
    launcher.write_text(f"import sys\nsys.path.insert(0, {str(snap)!r})\n"
                        "from ckstore.cli import main\nsys.exit(main())\n")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(snap / "ckstore")], capture_output=True)
    Ckstore.launcher = launcher
    Ckstore.snapshot_hash = tree_digest(snap / "ckstore")
    with tempfile.TemporaryDirectory(dir=work) as tmp:  # a smoke test: init + commit + checkout of a tiny file
        (Path(tmp) / "in").mkdir()
        (Path(tmp) / "in" / "x.bin").write_bytes(os.urandom(1000))
        try:
            run([sys.executable, str(launcher), "init", f"{tmp}/r"])
            run([sys.executable, str(launcher), "-C", f"{tmp}/r", "commit", f"{tmp}/in", "-m", "smoke"])
            run([sys.executable, str(launcher), "-C", f"{tmp}/r", "checkout", "HEAD", "-o", f"{tmp}/out"])
        except ToolError as e:
            Ckstore.launcher = None
            return f"the ckstore tree does not run: {e}"[:600]
    return None


def install_envs(envs: Path, tools: list[str], log: Callable[[str], None]) -> None:
    """apt-get / venv installs for the peers that are missing; failures are left for unavailable() to report."""
    apt = {"restic": "restic", "restic-max": "restic", "borg": "borgbackup", "git-lfs": "git-lfs", "zstd": "zstd"}
    missing = sorted({apt[t] for t in tools if t in apt and TOOLS[t].unavailable(envs)})
    if missing:
        log(f"apt-get install -y {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True)
    envs.mkdir(parents=True, exist_ok=True)
    venvs = {"dvc": [["dvc"]], "zipnn": [[TORCH_PIN], ["zipnn"]], "git-theta": [[TORCH_PIN], ["git-theta", "safetensors"]]}
    for tool, steps in venvs.items():
        if tool not in tools or not TOOLS[tool].unavailable(envs):
            continue
        venv = envs / ("theta" if tool == "git-theta" else tool)
        log(f"creating {venv} for {tool}")
        with open(envs / f"{tool}-install.log", "ab") as f:
            ok = subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=f, stderr=f).returncode == 0
            for pkgs in steps:
                if ok:
                    ok = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs], stdout=f, stderr=f,
                                        timeout=900).returncode == 0


def tool_env(d: Path, envs: Path) -> dict[str, str]:
    home = d / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GIT_", "BORG_", "RESTIC_", "DVC_"))}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"), XDG_STATE_HOME=str(home / ".local" / "state"),
        BORG_BASE_DIR=str(home / "borg"), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", DVC_SITE_CACHE_DIR=str(home / "dvc-site"), DVC_NO_ANALYTICS="1",
        RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(home / ".cache" / "restic"),
        GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost", GIT_THETA_CHECKPOINT_TYPE="safetensors",
    )
    # the pyenv shims look for their root under HOME: keep the real one
    env.setdefault("PYENV_ROOT", str(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))))
    theta_bin = envs / "theta" / "bin"
    if theta_bin.exists():  # git-theta's filters are found on PATH; harmless for the others (nothing shadows git)
        env["PATH"] = env.get("PATH", "") + os.pathsep + str(theta_bin)
    for sub in ("", ".config", ".cache", ".local/share", ".local/state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return env


# ---------------------------------------------------------------- one series


def largest_tensor(path: Path) -> int:
    """Bytes of the largest tensor of a safetensors file or torch.save zip (0 for anything else)."""
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            return max((v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"),
                       default=0)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return max((i.file_size for i in z.infolist() if "/data/" in i.filename), default=0)
    except Exception:  # noqa: BLE001 - informative only
        return 0
    return 0


def safetensors_subset(path: Path, keep: Callable[[str], bool]) -> bytes:
    """A safetensors file with only the tensors whose names pass keep (same dtypes and bytes, same metadata)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out_header: dict[str, Any] = {}
        if "__metadata__" in header:
            out_header["__metadata__"] = header["__metadata__"]
        blobs, off = [], 0
        for name, v in header.items():
            if name == "__metadata__" or not keep(name):
                continue
            a, b = v["data_offsets"]
            f.seek(base + a)
            blobs.append(f.read(b - a))
            out_header[name] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [off, off + b - a]}
            off += b - a
    raw = json.dumps(out_header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def adapter_reference(series_dir: Path, versions: list[Path], dtype: str, envs: Path, work: Path) -> dict | None:
    """The LoRA adapter of the first LoRA version, alone, and what zstd -3 and ZipNN make of it."""
    name = series_dir.name.rsplit("-", 1)[0]
    if name == "Cfile":
        i, blob = 1, (versions[1] / "adapter_model.safetensors").read_bytes()
    elif name in ("C", "mix"):
        i = 1 if name == "C" else 3
        blob = safetensors_subset(versions[i] / "model.safetensors", lambda k: ".lora_" in k)
    else:
        return None
    import zstandard
    ref = {"version": i, "raw": len(blob), "zstd3": len(zstandard.ZstdCompressor(level=3).compress(blob))}
    if not Zipnn.unavailable(envs):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            (Path(tmp) / "in").mkdir()
            (Path(tmp) / "in" / "adapter.safetensors").write_bytes(blob)
            try:
                run([str(Zipnn.python(envs)), str(BENCH / "zipnn_tool.py"), "compress", f"{tmp}/in", f"{tmp}/out",
                     {"fp32": "float32", "bf16": "bfloat16"}[dtype]])
                ref["zipnn"] = apparent_bytes(Path(tmp) / "out")
            except ToolError:
                pass
    ref["compressed"] = min(v for k, v in ref.items() if k in ("zstd3", "zipnn"))
    return ref


class Measured:
    """One tool's figures on one series, filled in step by step; a failure stops only this tool."""

    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self.res: dict[str, Any] = {"available": True, "commits": [], "checkouts": [], "identical": True,
                                    "mismatches": []}
        self.failed = False

    def attempt(self, what: str, fn: Callable[[], None], log: Callable[[str], None]) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one tool failing must not stop the others
            self.failed = True
            self.res = {"available": True, "error": f"{what}: {type(e).__name__}: {e}"[-2500:]}
            log(f"    {self.tool.name} FAILED at {what}: {str(e)[-300:]}")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measure_all(tools: list[Tool], versions: list[Path], hashes: list[dict[str, str]], repeat: int,
                log: Callable[[str], None]) -> dict[str, dict]:
    """Every tool, interleaved: version by version, checkout by checkout, so a load change on the shared machine
    falls on all tools alike instead of on whichever ran at that moment."""
    ms = [Measured(t) for t in tools]
    for m in ms:
        def init(m: Measured = m) -> None:
            m.tool.init()
            m.res["init_stored"] = m.tool.stored()[0]
        m.attempt("init", init, log)
    for i, src in enumerate(versions):
        for m in ms:
            def commit(m: Measured = m) -> None:
                os.sync()
                step, ld = Step(), load()
                m.tool.commit(i, src, step)
                stored, aux = m.tool.stored()
                m.res["commits"].append({"version": i, **asdict(step), "stored": stored, "aux": aux, "load": ld})
                log(f"    v{i} commit {m.tool.name}: {step.wall:.2f} s wall, {step.cpu:.2f} s cpu, "
                    f"{step.maxrss / MIB:.0f} MiB, stored {stored / MIB:.1f} MiB (load {ld})")
            m.attempt(f"commit v{i}", commit, log)
    last = len(versions) - 1
    for i in range(len(versions)):
        kinds = ["cold"] + ["hot"] * repeat if i in (0, last) else ["hot"]
        for k, kind in enumerate(kinds):
            for m in ms:
                def checkout(m: Measured = m, k: int = k, kind: str = kind) -> None:
                    prev = [c for c in m.res["checkouts"] if c["version"] == i]
                    if k >= 2 and prev and prev[-1]["wall"] > SLOW:
                        return  # repeating is not cheap for this tool: one hot run is the figure
                    root = m.tool.ctx.dir / "restore"
                    shutil.rmtree(root, ignore_errors=True)
                    dest = root / f"v{i}-{k}"
                    dest.mkdir(parents=True)
                    if kind == "cold":
                        evict(m.tool.cold_paths())
                    else:
                        os.sync()
                    step, ld = Step(), load()
                    got = m.tool.checkout(i, dest, step)
                    entry = {"version": i, "kind": kind, **asdict(step), "load": ld}
                    # every restore is checked, repeats included (outside the timed step)
                    restored = {p: h for p, h in tree_hashes(got).items()
                                if p.split("/")[0] not in m.tool.restore_ignore}
                    bad = sorted(set(restored) ^ set(hashes[i])) + sorted(
                        p for p in restored if p in hashes[i] and restored[p] != hashes[i][p])
                    entry["identical"] = not bad
                    if bad:
                        m.res["identical"] = False
                        m.res["mismatches"].append({"version": i, "paths": bad[:20]})
                    m.res["checkouts"].append(entry)
                    shutil.rmtree(root, ignore_errors=True)
                m.attempt(f"checkout v{i} ({kind})", checkout, log)
        for m in ms:
            if not m.failed:
                hot = [c["wall"] for c in m.res["checkouts"] if c["version"] == i and c["kind"] == "hot"]
                cold = [c["wall"] for c in m.res["checkouts"] if c["version"] == i and c["kind"] == "cold"]
                log(f"    v{i} checkout {m.tool.name}: hot {statistics.median(hot):.2f} s"
                    + (f", cold {cold[0]:.2f} s" if cold else ""))
    for m in ms:  # a no-op re-commit: the newest version once more, unchanged (same directory where possible)
        def recommit(m: Measured = m) -> None:
            before = m.tool.stored()[0]
            os.sync()
            step, ld = Step(), load()
            m.tool.commit(-1, m.tool.recommit_src(versions[-1]), step)
            m.res["recommit"] = {**asdict(step), "added": m.tool.stored()[0] - before, "load": ld}
            log(f"    re-commit {m.tool.name}: {step.wall:.2f} s, +{m.res['recommit']['added']} B")
        m.attempt("re-commit", recommit, log)
    return {m.tool.name: m.res for m in ms}


def measure_series(name: str, series_dir: Path, tools: list[str], args: argparse.Namespace,
                   log: Callable[[str], None]) -> dict:
    info = json.loads((series_dir / "series.json").read_text())
    versions = [series_dir / v["name"] for v in info["versions"]]
    hashes = [tree_hashes(v) for v in versions]  # also warms the page cache with the inputs, the same for all tools
    logical = [apparent_bytes(v) for v in versions]
    largest = max((largest_tensor(p) for v in versions for p in files_under(v)), default=0)
    out: dict[str, Any] = {
        "series": name, "scenario": info["scenario"], "dtype": info["dtype"], "size": info.get("size", "-"),
        "versions": [{"name": v["name"], "description": v["description"], "logical": b, "files": v["files"]}
                     for v, b in zip(info["versions"], logical)],
        "logical_total": sum(logical), "largest_tensor": largest,
        "input_sha256": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16],
        "ckstore_snapshot": Ckstore.snapshot_hash, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "repeat": args.repeat, "tools": {},
    }
    out["adapter"] = adapter_reference(series_dir, versions, info["dtype"], args.envs, args.work)
    runnable: list[Tool] = []
    for t in tools:
        cls = TOOLS[t]
        reason = cls.unavailable(args.envs)
        if t == "git-theta" and not reason and info["scenario"] not in args.theta_scenarios:
            reason = f"optional; run only on {','.join(args.theta_scenarios)} (--theta-scenarios)"
        if reason:
            out["tools"][t] = {"available": False, "reason": reason}
            continue
        d = args.work / name / t
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        runnable.append(cls(Ctx(d, tool_env(d, args.envs), info["dtype"], args.envs)))
    log(f"  {name}: {', '.join(t.name for t in runnable)} interleaved")
    try:
        out["tools"].update(measure_all(runnable, versions, hashes, args.repeat, log))
    finally:
        if not args.keep:
            for t in runnable:
                shutil.rmtree(t.ctx.dir, ignore_errors=True)
    out["tools"] = dict(sorted(out["tools"].items(), key=lambda x: tool_rank(x[0])))
    return out


def help_timing(n: int = 10) -> dict | None:
    if not Ckstore.launcher:
        return None
    times = [run([sys.executable, str(Ckstore.launcher), "--help"]).wall for _ in range(n)]
    # the same interpreter doing nothing, timed the same way: what any Python command costs here
    bare = [run([sys.executable, "-c", "pass"]).wall for _ in range(n)]
    entry = {"median": statistics.median(times), "runs": times, "how": "snapshot launcher (= console script)",
             "load": load(), "python_runs": bare}
    shim = shutil.which("ckstore")  # as a user types it (pyenv shim, if any); the tree itself may be mid-edit
    if shim:
        try:
            entry["installed_median"] = statistics.median(run([shim, "--help"]).wall for _ in range(n))
            entry["installed_path"] = shim
        except ToolError:
            pass
    return entry


# ---------------------------------------------------------------- report


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_b(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < KIB:
        return f"{sign}{n:.0f} B"
    if n < MIB:
        return f"{sign}{n / KIB:.1f} KiB"
    return f"{sign}{n / MIB:.1f} MiB"


def fmt_s(x: float | None) -> str:
    return "–" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def fmt_r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def tool_summary(series: dict, t: str) -> dict | None:
    """The derived figures of one tool on one series (None when it did not run)."""
    r = series["tools"].get(t)
    if not r or not r.get("available") or "error" in r:
        return None
    logical = [v["logical"] for v in series["versions"]]
    commits = r["commits"]
    stored = [c["stored"] for c in commits]
    added = [stored[0] - r.get("init_stored", 0)] + [b - a for a, b in zip(stored, stored[1:])]
    last = len(logical) - 1

    def co(i: int, kind: str) -> float | None:
        return med([c["wall"] for c in r["checkouts"] if c["version"] == i and c["kind"] == kind])

    return {
        "ratio": sum(logical) / stored[-1] if stored[-1] else None,
        "v0_ratio": logical[0] / stored[0] if stored[0] else None,
        "stored": stored[-1], "aux": commits[-1]["aux"], "added": added,
        "commit_wall": [c["wall"] for c in commits], "commit_cpu": [c["cpu"] for c in commits],
        "commit_med": med([c["wall"] for c in commits]), "commit_cpu_med": med([c["cpu"] for c in commits]),
        "commit_total": sum(c["wall"] for c in commits),
        "throughput": [b / c["wall"] for b, c in zip(logical, commits)],
        "throughput_med": med([b / c["wall"] for b, c in zip(logical, commits)]),
        "cpu_throughput": [b / c["cpu"] if c["cpu"] else None for b, c in zip(logical, commits)],
        "cpu_throughput_med": med([b / c["cpu"] for b, c in zip(logical, commits) if c["cpu"]]),
        "load_med": med([c.get("load") for c in commits] + [c.get("load") for c in r["checkouts"]]),
        "rss_commit": max(c["maxrss"] for c in commits),
        "rss_checkout": max((c["maxrss"] for c in r["checkouts"]), default=0),
        "anon_commit": max(c.get("anon", 0) for c in commits),
        "anon_checkout": max((c.get("anon", 0) for c in r["checkouts"]), default=0),
        "old_hot": co(0, "hot"), "old_cold": co(0, "cold"), "new_hot": co(last, "hot"), "new_cold": co(last, "cold"),
        "new_hot_gbs": logical[last] / co(last, "hot") / 1e9 if co(last, "hot") else None,
        "old_hot_gbs": logical[0] / co(0, "hot") / 1e9 if co(0, "hot") else None,
        "identical": r["identical"], "recommit": r.get("recommit"),
    }


def series_rank(name: str) -> tuple:
    sc, _, dt = name.rpartition("-")
    return (ALL_SCENARIOS.index(sc) if sc in ALL_SCENARIOS else 99, ALL_DTYPES.index(dt) if dt in ALL_DTYPES else 9,
            name)


def tool_rank(t: str) -> int:
    return ALL_TOOLS.index(t) if t in ALL_TOOLS else len(ALL_TOOLS)


def ck(ok: bool | None) -> str:
    return "–" if ok is None else ("✓" if ok else "✗")


def targets(all_series: dict[str, dict], help_t: dict | None) -> list[dict]:
    rows: list[dict] = []

    def S(name: str, t: str = "ckstore") -> dict | None:
        s = all_series.get(name)
        return tool_summary(s, t) if s else None

    for dt in ALL_DTYPES:
        s = S(f"mix-{dt}")
        if s:
            need = 0.95 * REACHABLE[dt]
            rows.append({"target": f"mix {dt} series store ratio ≥ 0.95 × {REACHABLE[dt]:.2f} = {need:.2f}×",
                         "measured": fmt_r(s["ratio"]), "ok": s["ratio"] >= need})
    for dt in ALL_DTYPES:
        s = S(f"mix-{dt}")
        if s:
            rows.append({"target": f"single dense checkpoint (mix v0) {dt} ≥ {SINGLE_DENSE[dt]:.2f}×",
                         "measured": fmt_r(s["v0_ratio"]), "ok": s["v0_ratio"] >= SINGLE_DENSE[dt]})
    behind = []
    n = 0
    for name, series in sorted(all_series.items()):
        s = tool_summary(series, "ckstore")
        if not s:
            continue
        n += 1
        best = max(((t, tool_summary(series, t)) for t in series["tools"] if t != "ckstore"),
                   key=lambda x: (x[1] or {}).get("ratio") or 0, default=(None, None))
        if best[1] and best[1]["ratio"] and best[1]["ratio"] > s["ratio"]:
            behind.append(f"{name}: {best[0]} {best[1]['ratio']:.2f}× > {s['ratio']:.2f}×")
    if n:
        rows.append({"target": "store ratio ahead of every peer on every series",
                     "measured": f"{n - len(behind)}/{n} series" + (" — behind: " + "; ".join(behind) if behind else ""),
                     "ok": not behind})
    for name in ("mix", "C", "Cfile"):
        for dt in ALL_DTYPES:
            series = all_series.get(f"{name}-{dt}")
            s = S(f"{name}-{dt}")
            if not s or not series.get("adapter"):
                continue
            a = series["adapter"]
            cost = s["added"][a["version"]]
            rows.append({"target": f"LoRA version ({name}-{dt} v{a['version']}) ≤ compressed adapter "
                                   f"({fmt_b(a['compressed'])}) + 64 KiB",
                         "measured": fmt_b(cost), "ok": cost <= a["compressed"] + SLACK})
    for dt in ALL_DTYPES:
        s = S(f"D-{dt}")
        if s:
            what = ["re-shard (v1)", "reorder (v2)", "no-op re-save (v3)"]
            worst = max(s["added"][1:4])
            rows.append({"target": f"D {dt}: re-shard / reorder / no-op re-save each ≤ 64 KiB",
                         "measured": " / ".join(f"{w} {fmt_b(b)}" for w, b in zip(what, s["added"][1:4])),
                         "ok": worst <= SLACK})
    v0 = [(n, tool_summary(se, "ckstore")) for n, se in sorted(all_series.items())]
    v0c = [s["cpu_throughput"][0] for n, s in v0 if s and s["cpu_throughput"][0]]
    v0 = [(n, s["throughput"][0]) for n, s in v0 if s]
    if v0:
        m = med([x for _, x in v0])
        worst = min(v0, key=lambda x: x[1])
        rows.append({"target": "commit of new data (v0 of every series) ≥ 0.5 GB/s (median over series)",
                     "measured": f"median {m / 1e9:.2f} GB/s, slowest {worst[0]} {worst[1] / 1e9:.2f} GB/s "
                                 f"(per CPU-second: median {med(v0c) / 1e9:.2f} GB/s)",
                     "ok": m >= 0.5e9})
    unchanged = []
    for name in ("C", "Cfile", "D"):
        for dt in ALL_DTYPES:
            s = S(f"{name}-{dt}")
            if s:
                unchanged += [(f"{name}-{dt} v{i}", x) for i, x in enumerate(s["throughput"]) if i >= 1]
    if unchanged:
        m = med([x for _, x in unchanged])
        worst = min(unchanged, key=lambda x: x[1])
        rows.append({"target": "commit of unchanged tensors (C, Cfile, D v1–v3: new files, known tensors) ≥ 2.5 GB/s",
                     "measured": f"median {m / 1e9:.2f} GB/s, slowest {worst[0]} {worst[1] / 1e9:.2f} GB/s",
                     "ok": m >= 2.5e9})
    rc = []
    for name, se in sorted(all_series.items()):
        s = tool_summary(se, "ckstore")
        if s and s["recommit"]:
            rc.append((name, s["recommit"]["wall"], se["versions"][-1]["logical"]))
    if rc:
        name, wall, b = max(rc, key=lambda x: x[2])
        per_gib = wall * (1 << 30) / b
        rows.append({"target": "no-op re-commit of 1 GiB ≤ 0.5 s (same directory again, largest series)",
                     "measured": f"{name}: {wall:.2f} s for {fmt_b(b)} → {per_gib:.2f} s/GiB", "ok": per_gib <= 0.5})
    for what, key in (("commit (total series wall)", "commit_total"), ("newest checkout hot", "new_hot"),
                      ("newest checkout cold", "new_cold")):
        lost, n = [], 0
        for name, se in sorted(all_series.items()):
            s = tool_summary(se, "ckstore")
            if not s:
                continue
            for peer in ("borg", "restic"):
                p = tool_summary(se, peer)
                if p and p[key] is not None and s[key] is not None:
                    n += 1
                    if p[key] < s[key]:
                        lost.append(f"{name}: {peer} {p[key]:.2f} s < {s[key]:.2f} s")
        if n:
            shown = "; ".join(lost[:6]) + (f"; … {len(lost) - 6} more in the per-series tables" if len(lost) > 6 else "")
            rows.append({"target": f"{what} faster than borg and restic on every series",
                         "measured": f"{n - len(lost)}/{n} comparisons won" + (" — lost: " + shown if lost else ""),
                         "ok": not lost, "lost": lost})
    hots = []
    for name, se in sorted(all_series.items()):
        s = tool_summary(se, "ckstore")
        if s:
            hots += [(f"{name} v0", s["old_hot_gbs"]), (f"{name} newest", s["new_hot_gbs"])]
    hots = [h for h in hots if h[1]]
    if hots:
        m = med([x for _, x in hots])
        worst = min(hots, key=lambda x: x[1])
        rows.append({"target": "hot checkout ≥ 1 GB/s end to end (median over oldest+newest of every series)",
                     "measured": f"median {m:.2f} GB/s, slowest {worst[0]} {worst[1]:.2f} GB/s", "ok": m >= 1.0})
    mem = []
    for name, se in sorted(all_series.items()):
        s = tool_summary(se, "ckstore")
        if s:
            bound = 64 * MIB + 2 * se["largest_tensor"]
            mem.append((name, max(s["rss_commit"], s["rss_checkout"]), bound,
                        max(s["anon_commit"], s["anon_checkout"])))
    if mem:
        for label, j in (("peak RSS (ru_maxrss, includes mmapped input pages)", 1), ("peak anonymous RSS", 3)):
            over = [m for m in mem if m[j] > m[2]]
            worst = max(mem, key=lambda m: m[j] / m[2])
            rows.append({"target": f"{label} ≤ 64 MiB + 2 × largest tensor (commit and checkout, every series)",
                         "measured": f"worst {worst[0]}: {fmt_b(worst[j])} vs bound {fmt_b(worst[2])}; "
                                     f"{len(mem) - len(over)}/{len(mem)} series within", "ok": not over})
    ident = [(n, tool_summary(se, "ckstore")) for n, se in sorted(all_series.items())]
    ident = [(n, s["identical"]) for n, s in ident if s]
    if ident:
        bad = [n for n, ok in ident if not ok]
        rows.append({"target": "every restored file byte-identical (sha256), every version of every series",
                     "measured": f"{len(ident) - len(bad)}/{len(ident)} series" + (f" — bad: {bad}" if bad else ""),
                     "ok": not bad})
    if help_t:
        rows.append({"target": f"`ckstore --help` ≤ 0.2 s (median of {len(help_t['runs'])} runs, start and end)",
                     "measured": f"{help_t['median']:.3f} s" + (f" (via the installed `{help_t['installed_path']}`: "
                                                                 f"{help_t['installed_median']:.3f} s)"
                                                                 if "installed_median" in help_t else "")
                                 + (f"; the interpreter alone (`python -c pass`, same timing): "
                                    f"{statistics.median(help_t['python_runs']):.3f} s"
                                    if help_t.get("python_runs") else ""),
                     "ok": help_t["median"] <= 0.2})
    return rows


def series_table(series: dict) -> list[str]:
    nv = len(series["versions"])
    head = (["tool", "ratio"] + [f"+v{i}" for i in range(nv)] +
            ["commit s (median wall / cpu)", "commit GB/s wall / per CPU-s", "peak RSS commit / checkout",
             "checkout v0 hot / cold s", f"checkout v{nv - 1} hot / cold s", "re-commit s / +bytes", "identical"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for t, r in sorted(series["tools"].items(), key=lambda x: tool_rank(x[0])):
        if not r.get("available"):
            notes.append(f"{t}: not available — {r['reason']}")
            continue
        if "error" in r:
            err = " ".join(r["error"].split())
            notes.append(f"{t}: failed — {err[:80]} … {err[-300:]}")
            continue
        s = tool_summary(series, t)
        rc = s["recommit"] or {}
        row = [f"**{t}**" if t == "ckstore" else t, fmt_r(s["ratio"])] + [fmt_b(b) for b in s["added"]] + [
            f"{fmt_s(s['commit_med'])} / {fmt_s(s['commit_cpu_med'])}",
            f"{s['throughput_med'] / 1e9:.2f} / {(s['cpu_throughput_med'] or 0) / 1e9:.2f}",
            f"{fmt_b(s['rss_commit'])} / {fmt_b(s['rss_checkout'])} (anon {fmt_b(s['anon_commit'])} / "
            f"{fmt_b(s['anon_checkout'])})",
            f"{fmt_s(s['old_hot'])} / {fmt_s(s['old_cold'])}", f"{fmt_s(s['new_hot'])} / {fmt_s(s['new_cold'])}",
            f"{fmt_s(rc.get('wall'))} / {fmt_b(rc.get('added'))}", ck(s["identical"])]
        lines.append("| " + " | ".join(row) + " |")
        if t == "ckstore":
            notes.append(f"ckstore: `.ckstore/cache` (LMDB index, not counted as stored) {fmt_b(s['aux'])}; "
                         f"median 1-min load average during its steps {s['load_med']}")
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def size_of(cmd: str) -> str:
    """The --size a recorded command line ran at (S when it gave none)."""
    found = re.search(r"--size[= ](\w+)", cmd)
    return found.group(1) if found else "S"


def render(results: dict) -> str:
    all_series = results["series"]
    cmd = results["command"]
    L = ["# Benchmarks", "",
         f"Measured with one command (size {size_of(cmd)}; the inputs come from `bench/scenarios.py`, generated "
         "when missing):", "",
         "```sh", cmd, "```", "",
         *([f"Completed or re-measured with: `{c}`" for c in dict.fromkeys(results.get("also_ran", []))] + [""]
           if results.get("also_ran") else []),
         f"Per-series results are kept in `{results['out_dir']}/series/`; rebuild this page from them without "
         f"measuring: `python bench/series.py --report-only --out {results['out_dir']}`. Every figure is in "
         f"`{results['json_path']}`. How each tool is driven and measured: `bench/README.md`.", "",
         f"Run: {results['started']} → {results['finished']}, {results['machine']}. ckstore snapshot "
         f"`{results['ckstore_snapshot']}` (sha256 of its .py files). Hot checkout = median of "
         f"{results['repeat']} runs; cold = after `sync` + `posix_fadvise(DONTNEED)` on every file of the tool's "
         "directory. Ratio = logical bytes of all versions / stored bytes after the last one. Sizes in KiB/MiB, "
         "throughput in GB/s (10⁹ B/s). The machine is shared and noisy: compare tools within a run.", ""]
    L += ["## Tools", "", "| tool | version | how |", "|---|---|---|"]
    for t, v in results["tools"].items():
        L.append(f"| {t} | {v.get('version') or ('not available: ' + v.get('reason', ''))} | {v['description']} |")
    L.append("")
    # headline
    L += ["## Headline: the mix series (v0, +1 dense step, +1 partial step, +LoRA r=8 in the same file)", "",
          "| tool | fp32 store ratio | bf16 store ratio | LoRA version costs fp32 / bf16 | v0 alone fp32 / bf16 |",
          "|---|---|---|---|---|"]
    tools_seen = sorted({t for s in all_series.values() for t in s["tools"]}, key=tool_rank)
    for t in tools_seen:
        f = tool_summary(all_series["mix-fp32"], t) if "mix-fp32" in all_series else None
        b = tool_summary(all_series["mix-bf16"], t) if "mix-bf16" in all_series else None
        if not f and not b:
            continue
        name = f"**{t}**" if t == "ckstore" else t
        L.append(f"| {name} | {fmt_r(f and f['ratio'])} | {fmt_r(b and b['ratio'])} | "
                 f"{fmt_b(f and f['added'][3])} / {fmt_b(b and b['added'][3])} | "
                 f"{fmt_r(f and f['v0_ratio'])} / {fmt_r(b and b['v0_ratio'])} |")
    L += ["", "For comparison, the figures seen earlier on this machine (shared/BENCHMARKS.md):", "",
          "| tool | fp32 store ratio | bf16 store ratio | LoRA version costs |", "|---|---|---|---|"]
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in PEERS_SEEN]
    L += ["", "## Targets (shared/BENCHMARKS.md), ckstore measured in this run", "",
          "| target | measured | met |", "|---|---|---|"]
    L += [f"| {r['target']} | {r['measured']} | {ck(r['ok'])} |" for r in results["targets"]]
    L += ["", "## Store ratio by series", ""]
    names = sorted(all_series, key=series_rank)
    L += ["| tool | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for t in tools_seen:
        cells = []
        for n in names:
            s = tool_summary(all_series[n], t)
            cells.append(fmt_r(s["ratio"]) if s else "–")
        if any(c != "–" for c in cells):
            L.append(f"| {t} | " + " | ".join(cells) + " |")
    L += ["", "## Per series", "",
          "Columns: ratio; bytes added by each version (+v0 is the first commit's store); commit median over the "
          "versions (wall / CPU s) and median throughput (logical bytes / wall); peak RSS; checkout of the oldest "
          "and newest version (hot median / cold); a no-op re-commit of the newest version (same directory again) "
          "and the bytes it added; every restored file of every version sha256-identical.", ""]
    for n in names:
        s = all_series[n]
        L += [f"### {n}", "", f"{len(s['versions'])} versions, logical {fmt_b(s['logical_total'])} "
              f"({' + '.join(fmt_b(v['logical']) for v in s['versions'])}); largest tensor "
              f"{fmt_b(s['largest_tensor'])}; inputs sha256 `{s['input_sha256']}`; measured {s['time']}.", ""]
        L += [f"- v{i}: {v['description']}" for i, v in enumerate(s["versions"])]
        if s.get("adapter"):
            a = s["adapter"]
            L.append(f"- LoRA adapter of v{a['version']} alone: {fmt_b(a['raw'])} raw, {fmt_b(a['zstd3'])} zstd -3"
                     + (f", {fmt_b(a['zipnn'])} ZipNN" if "zipnn" in a else ""))
        L.append("")
        L += series_table(s)
        L.append("")
    if results.get("losses"):
        L += ["## Where ckstore is behind a peer in this run", ""] + [f"- {x}" for x in results["losses"]] + [""]
    notes = BENCH / "analysis.md"  # hand-written reading of the figures (profiles), kept beside the generator
    if notes.exists():
        L += [notes.read_text().rstrip(), ""]
    return "\n".join(L) + "\n"


def losses(all_series: dict[str, dict]) -> list[str]:
    out = []
    for name, se in sorted(all_series.items()):
        s = tool_summary(se, "ckstore")
        if not s:
            continue
        for t in se["tools"]:
            p = tool_summary(se, t) if t != "ckstore" else None
            if not p:
                continue
            bits = []
            if p["ratio"] and s["ratio"] and p["ratio"] > s["ratio"]:
                bits.append(f"ratio {p['ratio']:.2f}× vs {s['ratio']:.2f}×")
            if t in ("borg", "restic", "restic-max", "dvc", "git-lfs", "zipnn", "zstd"):
                if p["commit_total"] < s["commit_total"]:
                    bits.append(f"commit total {p['commit_total']:.2f} s vs {s['commit_total']:.2f} s")
                for key, label in (("new_hot", "newest checkout hot"), ("new_cold", "newest checkout cold")):
                    if p[key] is not None and s[key] is not None and p[key] < s[key]:
                        bits.append(f"{label} {p[key]:.2f} s vs {s[key]:.2f} s")
            if bits:
                out.append(f"{name} — {t}: " + "; ".join(bits))
    return out


def build_report(args: argparse.Namespace, meta: dict) -> dict:
    all_series = {}
    for p in sorted((args.out / "series").glob("*.json")):
        s = json.loads(p.read_text())  # every series measured into this --out, by this run or an earlier one
        all_series[s["series"]] = s
    help_t = meta.get("help") or (json.loads((args.out / "help.json").read_text())
                                  if (args.out / "help.json").exists() else None)
    rel = lambda p: str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)  # noqa: E731
    results = {**meta, "series": all_series, "help": help_t, "json_path": rel(args.json.resolve()),
               "out_dir": rel(args.out),
               "targets": targets(all_series, help_t), "losses": losses(all_series),
               "summary": {n: {t: tool_summary(s, t) for t in s["tools"]} for n, s in all_series.items()}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, default=str)
    args.json.write_text(text)
    (args.out / "results.json").write_text(text)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(render(results))
    return results


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="S", choices=["S", "M"])
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="comma list, or all")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list, or all")
    ap.add_argument("--tools", default="all", help=f"comma list of {','.join(ALL_TOOLS)}, or all")
    ap.add_argument("--out", type=Path, default=BENCH / "out", help="per-series results and logs")
    ap.add_argument("--inputs", type=Path, default=None, help="series from scenarios.py (default /tmp/bench-<size>)")
    ap.add_argument("--work", type=Path, default=None, help="tool repositories (default /tmp/ckbench-work)")
    ap.add_argument("--envs", type=Path, default=DEFAULT_ENVS, help="venvs for DVC, ZipNN, git-theta")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks.json")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--repeat", type=int, default=3, help="hot checkouts of the oldest and newest version")
    ap.add_argument("--theta-scenarios", default="mix", help="series git-theta runs on (it is slow), or all")
    ap.add_argument("--ckstore-src", type=Path, default=ROOT, help="tree whose ckstore/ package is measured")
    ap.add_argument("--install", action="store_true", help="apt-get / pip the peers that are missing first")
    ap.add_argument("--resume", action="store_true", help="skip series already measured with this ckstore")
    ap.add_argument("--keep", action="store_true", help="keep the tool repositories")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from --out/series")
    args = ap.parse_args(argv)
    args.scenarios = ALL_SCENARIOS if args.scenarios == "all" else args.scenarios.split(",")
    args.dtypes = ALL_DTYPES if args.dtypes == "all" else args.dtypes.split(",")
    args.theta_scenarios = ALL_SCENARIOS if args.theta_scenarios == "all" else args.theta_scenarios.split(",")
    tools = ALL_TOOLS if args.tools == "all" else args.tools.split(",")
    for t in tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {', '.join(ALL_TOOLS)}")
    args.inputs = args.inputs or Path(f"/tmp/bench-{args.size.lower()}")
    args.work = (args.work or Path("/tmp/ckbench-work")).resolve()
    args.out = args.out.resolve()
    (args.out / "series").mkdir(parents=True, exist_ok=True)
    logf = open(args.out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    cmd_line = "python bench/series.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                      if a != "--report-only")
    meta_path = args.out / "meta.json"
    if args.report_only:
        meta = json.loads(meta_path.read_text())
        build_report(args, meta)
        log(f"report rebuilt: {args.md}, {args.json}")
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    if args.install:
        install_envs(args.envs, tools, log)
    reason = prepare_ckstore(args.ckstore_src, args.work)
    if reason:
        log(f"ckstore: {reason}")
    tool_info = {}
    for t in tools:
        why = TOOLS[t].unavailable(args.envs)
        tool_info[t] = {"description": TOOLS[t].description, "available": not why,
                        **({"reason": why} if why else {"version": TOOLS[t].version(args.envs) if t != "ckstore"
                            else f"ckstore snapshot {Ckstore.snapshot_hash}"})}
        log(f"{t}: {'available, ' + tool_info[t]['version'] if not why else 'not available: ' + why}")
    help_t = help_timing() if "ckstore" in tools else None
    if help_t:
        (args.out / "help.json").write_text(json.dumps(help_t))
        log(f"ckstore --help: median {help_t['median']:.3f} s")
    old_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta = {"command": cmd_line, "started": old_meta.get("started") if args.resume else None,
            "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
            "ckstore_snapshot": Ckstore.snapshot_hash, "repeat": args.repeat, "tools": tool_info, "help": help_t}
    meta["started"] = meta["started"] or time.strftime("%Y-%m-%d %H:%M:%S")
    measured = {f.stem.rpartition("-")[0] for f in (args.out / "series").glob("*.json")}
    partial_run = set(tools) < set(old_meta.get("tools", {})) or set(args.scenarios) < measured
    if old_meta and (args.resume or partial_run):  # adding tools or series to an earlier run: keep its identity
        meta.update(command=old_meta["command"], started=old_meta["started"],
                    also_ran=old_meta.get("also_ran", []) + [cmd_line], tools={**old_meta["tools"], **tool_info})
        if "ckstore" not in tools:
            meta.update(help=old_meta.get("help"), ckstore_snapshot=old_meta.get("ckstore_snapshot"))
            help_t = meta["help"]
        elif help_t and old_meta.get("help") and old_meta.get("ckstore_snapshot") == Ckstore.snapshot_hash:
            # --help timings of runs of the same code add up; another snapshot's timings are replaced
            runs = old_meta["help"]["runs"] + help_t["runs"]
            bare = old_meta["help"].get("python_runs", []) + help_t.get("python_runs", [])
            help_t = {**help_t, "runs": runs, "median": statistics.median(runs), "python_runs": bare}
            meta["help"] = help_t
    for sc in args.scenarios:
        for dt in args.dtypes:
            name = f"{sc}-{dt}"
            target = args.out / "series" / f"{name}.json"
            if args.resume and target.exists():
                prev = json.loads(target.read_text())
                if prev.get("ckstore_snapshot") == Ckstore.snapshot_hash and set(prev["tools"]) >= set(tools):
                    log(f"{name}: already measured, skipped (--resume)")
                    continue
            series_dir = args.inputs / name
            if not (series_dir / "series.json").exists():
                log(f"{name}: generating into {args.inputs}")
                r = subprocess.run([sys.executable, str(BENCH / "scenarios.py"), "--size", args.size, "--scenario", sc,
                                    "--dtype", dt, "--out", str(args.inputs)], capture_output=True, text=True)
                if r.returncode != 0 or not (series_dir / "series.json").exists():
                    log(f"{name}: could not generate: {r.stderr[-500:]}")
                    continue
            log(f"{name}: measuring {len(tools)} tools")
            res = measure_series(name, series_dir, tools, args, log)
            if target.exists():  # keep the other tools' figures of an earlier run on the same inputs
                prev = json.loads(target.read_text())
                if prev.get("input_sha256") == res["input_sha256"]:
                    res["tools"] = {**{t: r for t, r in prev["tools"].items() if t not in res["tools"]}, **res["tools"]}
                    if "ckstore" not in tools:
                        res["ckstore_snapshot"] = prev.get("ckstore_snapshot")
            target.write_text(json.dumps(res, indent=1))
            meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            meta_path.write_text(json.dumps(meta, indent=1))
            build_report(args, meta)  # the report grows as series finish
    end_help = help_timing() if "ckstore" in tools else None  # again at the end: the machine's load changes
    if help_t and end_help:
        runs = help_t["runs"] + end_help["runs"]
        help_t = {**help_t, "median": statistics.median(runs), "runs": runs, "median_start": help_t["median"],
                  "median_end": end_help["median"]}
        meta["help"] = help_t
        (args.out / "help.json").write_text(json.dumps(help_t))
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    meta_path.write_text(json.dumps(meta, indent=1))
    results = build_report(args, meta)
    log(f"done: {args.md}, {args.json}")
    for r in results["targets"]:
        log(f"  {ck(r['ok'])} {r['target']}: {r['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
