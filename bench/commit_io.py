"""System calls of one `ckstore commit`, counted with strace: how often the new commit's object file is opened,
how many ref files and directory listings resolving revisions costs, and the total of file-system calls.

    python bench/commit_io.py [--src DIR]... [--out docs/commit-io.json]

Each --src is a ckstore source tree (default: this one); pass an older checkout beside it to compare
(`git worktree add /tmp/ck-old <rev>`). Needs `strace` (Debian package strace).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CALLS = "openat,stat,newfstatat,statx,lstat,getdents64"


def write_checkpoint(path: Path, seed: int) -> None:
    """A small safetensors file (8 tensors of 256×256 fp32) written by hand: no dependency beyond numpy."""
    rng = np.random.default_rng(seed)
    tensors = {f"layer{i}.weight": rng.standard_normal((256, 256)).astype(np.float32) for i in range(8)}
    header, offset = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for t in tensors.values():
            f.write(t.tobytes())


def ckstore(src: Path, args: list[str], cwd: Path, trace: Path | None = None) -> str:
    """Run `ckstore ARGS` from source tree `src` (optionally under strace) and return its standard output."""
    env = {**os.environ, "PYTHONPATH": str(src), "CKSTORE_AUTHOR": "bench <bench@example.com>"}
    cmd = [sys.executable, "-c", "import sys; from ckstore.cli import main; sys.argv[0] = 'ckstore'; main()", *args]
    if trace is not None:
        cmd = ["strace", "-f", "-qq", "-e", f"trace={CALLS}", "-o", str(trace), *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def count(trace: Path, repo: Path, commit_id: str) -> dict:
    """What the trace of one commit shows."""
    lines = trace.read_text().splitlines()
    obj = f"objects/{commit_id[:2]}/{commit_id[2:]}"
    opened = [ln for ln in lines if "openat(" in ln and obj in ln and "O_CREAT" not in ln]
    listed = [ln for ln in lines if "openat(" in ln and "O_DIRECTORY" in ln and "/.ckstore/objects/" in ln]
    refs = [ln for ln in lines if "openat(" in ln and "/.ckstore/refs/" in ln]
    repo_calls = [ln for ln in lines if str(repo / ".ckstore") in ln]
    return {"opens of the new commit object": len(opened), "objects/ directory opens (fsyncs, listings)": len(listed),
            "ref file opens": len(refs), "file-system calls inside .ckstore": len(repo_calls)}


def measure(src: Path, work: Path) -> dict:
    """Init, commit v0, then trace the commit of v1 (what users run at every save)."""
    repo = work / "repo"
    repo.mkdir(parents=True)
    ckstore(src, ["init"], repo)
    write_checkpoint(work / "v0.safetensors", 0)
    write_checkpoint(work / "v1.safetensors", 1)
    ckstore(src, ["commit", str(work / "v0.safetensors"), "-m", "v0"], repo)
    trace = work / "commit.strace"
    ckstore(src, ["commit", str(work / "v1.safetensors"), "-m", "v1"], repo, trace)
    head = ckstore(src, ["log", "-n", "1", "--json"], repo)
    commit_id = json.loads(head)[0]["id"]
    return {"source": str(src), "revision": git_rev(src), **count(trace, repo.resolve(), commit_id)}


def git_rev(src: Path) -> str:
    """The commit a source tree is at (or "?")."""
    r = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    """Measure each source tree, print a table, optionally write the figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", type=Path, help="a ckstore source tree (repeatable)")
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    if not shutil.which("strace"):
        print("strace not found (apt-get install strace)", file=sys.stderr)
        return 2
    rows = []
    for src in args.src or [ROOT]:
        with tempfile.TemporaryDirectory(prefix="ck-commit-io-") as tmp:
            rows.append(measure(src.resolve(), Path(tmp)))
    keys = [k for k in rows[0] if k not in ("source",)]
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
