"""A push in its own process, stopped at a file barrier: `python remote_race_worker.py REPO URL ENDPOINT BRANCH
BARRIER_DIR MODE`. MODE "before-ref": wait before the branch's compare-and-swap (the push has chosen what the
remote already has); "none": push straight through. Exit 0 on success; the error on stderr otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ckstore  # noqa: E402
from ckstore.sync.push import push  # noqa: E402

from remote_helpers import Barrier, transport  # noqa: E402


def main() -> int:
    repo_dir, url, endpoint, branch, barrier, mode = sys.argv[1:7]
    opts = {"endpoint_url": endpoint} if endpoint != "-" else {}
    inner = transport(url, opts)
    t = inner if mode == "none" else Barrier(inner, Path(barrier), lambda op, key: op == "put" and
                                              key == f"refs/heads/{branch}")
    with ckstore.Repo.open(repo_dir) as repo:
        result = push(repo.engine, "origin", [branch], transport=t)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
