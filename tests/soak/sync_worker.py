"""Subprocess helper for tests/soak/test_soak_sync.py (not a test module).

    python sync_worker.py push|pull REPO
        open REPO, print "ready", push (or pull) main to/from origin, print "done <seconds> <steps before> <steps after>".
        With CKSTORE_CRASH_AT=N in the environment the process dies at the N-th durable I/O step.
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    from ckstore import Repo
    from ckstore.fs import fileio

    op, path = sys.argv[1], sys.argv[2]
    with Repo.open(path) as repo:
        print("ready", flush=True)
        before = fileio._steps
        t0 = time.monotonic()
        if op == "push":
            repo.push("origin", ["main"])
        else:
            repo.pull("origin", "main")
        elapsed = time.monotonic() - t0
    print(f"done {elapsed:.4f} {before} {fileio._steps}", flush=True)


if __name__ == "__main__":
    main()
