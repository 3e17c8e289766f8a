"""Subprocess helper for the gc race tests (T12; not a test module).

    python gc_worker.py committer REPO SRCDIR ROUNDS BARRIERS
        Each round: commit SRCDIR/v<r % 2>.safetensors, then commit v<(r - 1) % 2> again, which dedups against the
        chunks of the commit before (which the collector's forget has just dropped, so its gc finds them
        unreferenced). After each commit, check it out and compare it with its source byte for byte. Prints
        "ok <round> <id>" per commit, exits 1 on any mismatch.
    python gc_worker.py collector REPO ROUNDS BARRIERS
        Each round: forget --keep-last 1, then gc with no grace period (free-running: at least ROUNDS rounds, and
        on until the committer is done).

BARRIERS is a directory for rendezvous files, or "-" to run free. With barriers each round lines up the worst
moments: the collector forgets after the first commit and marks; then, in even rounds, the committer finds a
dropped chunk stored (and decides not to write it) and the sweep starts right then; in odd rounds the whole second
commit lands between the collector's mark and its sweep, which must re-read the roots. A side waits for the other
with a bound (the other may be blocked on a lease, as it should be).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def arrive(barriers: Path, mine: str, theirs: str, timeout: float = 3.0) -> None:
    """Say `mine` happened; wait (bounded) for `theirs` (the other side may be blocked on our lease: it may
    never come, and then we go on)."""
    (barriers / mine).touch()
    deadline = time.monotonic() + timeout
    while not (barriers / theirs).exists() and time.monotonic() < deadline:
        time.sleep(0.002)


def _wait(b: Path | None, name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while b is not None and not (b / name).exists() and time.monotonic() < deadline:
        time.sleep(0.002)


def _touch(b: Path | None, name: str) -> None:
    if b is not None:
        (b / name).touch()


def committer(repo_dir: str, src: str, rounds: int, barriers: str) -> int:
    from ckstore import Repo
    from ckstore.storage.store import Store

    b = Path(barriers) if barriers != "-" else None
    state = {"armed": False, "round": 0}
    has = Store.has_chunk

    def has_chunk(self, chunk):  # the moment a commit decides not to write a chunk it found stored
        found = has(self, chunk)
        if found and state["armed"]:
            state["armed"] = False
            arrive(b, f"dedup-{state['round']}", f"sweep-{state['round']}")
        return found
    Store.has_chunk = has_chunk
    with Repo.open(repo_dir) as repo:
        for r in range(rounds):
            state["round"] = r
            for k, version in enumerate((r % 2, (r - 1) % 2)):
                if k == 1:
                    _wait(b, f"marked-{r}")
                    state["armed"] = b is not None and r % 2 == 0
                f = Path(src) / f"v{version}.safetensors"
                if r % 2 == 0:  # a new mtime: the commit hashes the file (odd rounds dedup through the stat cache)
                    os.utime(f)
                done = repo.commit(f, f"c{r}.{k}", metrics={"round": r})
                state["armed"] = False
                _touch(b, f"first-{r}" if k == 0 else f"committed-{r}")
                out = Path(tempfile.mkdtemp(prefix="co-", dir=Path(repo_dir).parent))
                repo.checkout(done.id, out / "x")
                same = filecmp.cmp(out / "x" / f.name, f, shallow=False)
                shutil.rmtree(out)
                if not same:
                    print(f"MISMATCH {r} {done.id}", flush=True)
                    return 1
                print(f"ok {r} {done.id}", flush=True)
    (Path(repo_dir).parent / "committer-done").touch()
    return 0


def collector(repo_dir: str, rounds: int, barriers: str) -> int:
    from ckstore import Repo
    from ckstore.engine import gc as gc_module
    from ckstore.errors import LockTimeout, UsageError
    from ckstore.model.retention import Policy

    b = Path(barriers) if barriers != "-" else None
    state = {"round": 0}
    mark = gc_module.mark

    def mark_then_wait(repo, start, **kw):  # after the first mark: let the committer act, then sweep
        reach = mark(repo, start, **kw)
        r = state["round"]
        if b is not None and not kw.get("into"):
            _touch(b, f"marked-{r}")
            if r % 2 == 0:
                _wait(b, f"dedup-{r}")
                _touch(b, f"sweep-{r}")  # the sweep now waits for the committer's lease
            else:
                _wait(b, f"committed-{r}")
        return reach
    gc_module.mark = mark_then_wait
    stop = Path(repo_dir).parent / "committer-done"
    with Repo.open(repo_dir) as repo:
        r = 0
        while r < rounds or (b is None and not stop.exists()):  # free-running: race the committer to its end
            state["round"] = r
            r += 1
            _wait(b, f"first-{state['round']}")
            try:
                repo.forget(Policy(keep_last=1))
            except UsageError:
                pass
            try:
                repo.gc(grace=0, wait=10)
            except LockTimeout:
                pass
            if b is not None:
                _wait(b, f"committed-{state['round']}")  # the round is over when the second commit has landed
    print("collector done", flush=True)
    return 0


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "committer":
        sys.exit(committer(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
    sys.exit(collector(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
