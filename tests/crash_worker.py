"""Subprocess helper for tests/test_reliability.py (not a test module).

    python crash_worker.py commit REPO SRC MESSAGE [BRANCH]
        open REPO, print "ready", commit SRC, print "done <seconds> <commit id> <steps before> <steps after>".
        With CKSTORE_CRASH_AT=N in the environment the process dies at the N-th durable I/O step.
    python crash_worker.py writer REPO BRANCH WID COUNT SRCROOT
        COUNT commits of fresh small checkpoints (SRCROOT/<BRANCH-flat>-w<WID>-<i>/) to BRANCH.
    python crash_worker.py reader REPO STOPFILE SRCROOT
        until STOPFILE exists: check out HEAD into a fresh directory and compare it with the source its commit
        message names; prints "reads <n>" at the end, exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import safetensors.numpy as stnp


def make_checkpoint(dest: Path, seed: int, *, scale: int = 1, shared_seed: int | None = None) -> Path:
    """A small model directory: two safetensors shards and a config; `scale` multiplies tensor sizes.

    With `shared_seed`, the embedding tensor comes from that seed instead (dedup against another checkpoint)."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    emb_rng = np.random.default_rng(shared_seed if shared_seed is not None else seed + 10_000)
    shard1 = {"embed.weight": emb_rng.standard_normal((64 * scale, 1024), dtype=np.float32)}
    shard2 = {
        "layer.0.w": rng.standard_normal((128 * scale, 512), dtype=np.float32),
        "layer.0.b": rng.standard_normal((1024,), dtype=np.float32),
        "layer.1.w": rng.standard_normal((64 * scale, 1024)).astype(np.float16),
        "step": np.array([seed], dtype=np.int64),
    }
    stnp.save_file(shard1, str(dest / "model-00001-of-00002.safetensors"), metadata={"format": "np"})
    stnp.save_file(shard2, str(dest / "model-00002-of-00002.safetensors"), metadata={"format": "np"})
    (dest / "config.json").write_text(json.dumps({"seed": seed, "hidden": 1024}, indent=1) + "\n")
    return dest


def tree_bytes(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() or p.is_symlink():
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _commit(repo_path: str, src: str, message: str, branch: str | None) -> None:
    from ckstore import Repo
    from ckstore.fs import fileio

    with Repo.open(repo_path) as repo:
        print("ready", flush=True)
        before = fileio._steps
        t0 = time.monotonic()
        info = repo.commit(src, message, branch=branch, capture_env=False)
        elapsed = time.monotonic() - t0
    print(f"done {elapsed:.4f} {info.id} {before} {fileio._steps}", flush=True)


def _writer(repo_path: str, branch: str, wid: int, count: int, srcroot: str) -> None:
    from ckstore import Repo

    flat = branch.replace("/", "_")
    with Repo.open(repo_path) as repo:
        for i in range(count):
            name = f"{flat}-w{wid}-{i}"
            src = make_checkpoint(Path(srcroot) / name, seed=zlib.crc32(name.encode()), scale=1)
            repo.commit(src, name, branch=branch, capture_env=False)
    print(f"wrote {count}", flush=True)


def _reader(repo_path: str, stopfile: str, srcroot: str) -> int:
    from ckstore import Repo
    from ckstore.errors import UnknownRevision

    reads = 0
    work = Path(tempfile.mkdtemp(prefix="ckreader-"))
    try:
        with Repo.open(repo_path) as repo:
            while not os.path.exists(stopfile):
                try:
                    cid = repo.resolve("HEAD")
                except UnknownRevision:
                    time.sleep(0.01)
                    continue
                message = repo.log(cid, n=1)[0].message
                dest = work / f"co{reads}"
                repo.checkout(cid, dest)
                want = tree_bytes(Path(srcroot) / message)
                got = tree_bytes(dest)
                if got != want:
                    print(f"MISMATCH at {cid} ({message}): {sorted(got)} vs {sorted(want)}", flush=True)
                    return 1
                shutil.rmtree(dest)
                reads += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"reads {reads}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "commit":
        _commit(argv[1], argv[2], argv[3], argv[4] if len(argv) > 4 else None)
        return 0
    if cmd == "writer":
        _writer(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5])
        return 0
    if cmd == "reader":
        return _reader(argv[1], argv[2], argv[3])
    raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
