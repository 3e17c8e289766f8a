"""ckstore itself, run from a snapshot of the ckstore/ package (so edits during a run do not mix versions)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..measure import Step, ToolError, apparent_bytes, load, run, tree_digest
from .base import Tool


class Ckstore(Tool):
    name = "ckstore"
    description = "ckstore CLI (this repository), `commit DIR -m vN`, `checkout ID -o DIR`"
    launcher: Path | None = None  # set up by prepare_ckstore()
    snapshot_hash = ""

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if cls.launcher else "ckstore snapshot not prepared"

    @classmethod
    def cmd(cls, *args: Any) -> list[str]:
        return [sys.executable, str(cls.launcher), *map(str, args)]

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


class CkstoreRepack(Ckstore):
    """ckstore as above, with `ckstore repack` after the last commit: each branch tip full frames, older versions
    deltas against newer ones, so the newest checkout decodes one frame per chunk."""

    name = "ckstore-repack"
    description = ("ckstore as above, then `ckstore repack` and `ckstore gc --now` once after the last commit "
                   "(tips as full frames; gc deletes the old packs at once instead of after its grace period)")

    def maintain(self, step: Step) -> bool:
        self.sh(step, self.cmd("-C", self.repo, "repack", "--json"))
        self.sh(step, self.cmd("-C", self.repo, "gc", "--now", "--json"))
        return True


class CkstoreEncrypted(Ckstore):
    """ckstore with `init --encrypt`: keyed ids, every frame, object and ref sealed with AES-256-GCM. Each command
    opens the repository through its key file (scrypt, 64 MiB, the default cost), as a user's would."""

    name = "ckstore-encrypted"
    description = ("ckstore `init --encrypt` (passphrase from CKSTORE_PASSWORD; each command pays the key file's "
                   "scrypt), then as ckstore")
    PASSPHRASE = "benchmark passphrase"

    def sh(self, step: Step, cmd: list, cwd: Path | None = None):
        return step.add(run(cmd, cwd=cwd, env={**self.ctx.env, "CKSTORE_PASSWORD": self.PASSPHRASE}))

    def init(self) -> None:
        self.repo.mkdir(parents=True)
        self.sh(Step(), self.cmd("init", "--encrypt", self.repo))


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
            run(Ckstore.cmd("init", f"{tmp}/r"))
            run(Ckstore.cmd("-C", f"{tmp}/r", "commit", f"{tmp}/in", "-m", "smoke"))
            run(Ckstore.cmd("-C", f"{tmp}/r", "checkout", "HEAD", "-o", f"{tmp}/out"))
        except ToolError as e:
            Ckstore.launcher = None
            return f"the ckstore tree does not run: {e}"[:600]
    return None


def help_timing(n: int = 10) -> dict | None:
    """`ckstore --help` n times through the snapshot launcher, beside `python -c pass` timed the same way."""
    if not Ckstore.launcher:
        return None
    times = [run(Ckstore.cmd("--help")).wall for _ in range(n)]
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


def merge_help(old: dict, new: dict, end: bool = False) -> dict:
    """--help timings of two runs of the same code, added up; with end, new is the end-of-run timing."""
    runs = old["runs"] + new["runs"]
    if end:
        return {**old, "median": statistics.median(runs), "runs": runs, "median_start": old["median"],
                "median_end": new["median"]}
    bare = old.get("python_runs", []) + new.get("python_runs", [])
    return {**new, "runs": runs, "median": statistics.median(runs), "python_runs": bare}
