"""views.history: which branch owns each commit, what a revision reaches, and JSON-ready output."""

from __future__ import annotations

import json

import numpy as np

from ckstore.views.history import history


def commit(repo, message: str, **kw) -> str:
    return repo.commit({"w": np.full(4, len(message), np.float32)}, message, capture_env=False, **kw).id


def test_the_checked_out_branch_owns_the_history_it_shares(repo) -> None:
    root = commit(repo, "root")
    repo.branch("aaa")  # sorts before main: without HEAD first it would own the root
    side = commit(repo, "side", branch="aaa")
    tip = commit(repo, "tip")
    view = history(repo)
    owners = {c["id"]: c["branch"] for c in view["commits"]}
    assert owners == {root: "main", tip: "main", side: "aaa"}
    assert view["refs"]["head"] == {"branch": "main"}
    json.dumps(view)  # every value is plain data


def test_a_revision_draws_only_what_it_reaches(repo) -> None:
    root = commit(repo, "root")
    repo.branch("side")
    side = commit(repo, "side", branch="side")
    tip = commit(repo, "tip")
    assert [c["id"] for c in history(repo, rev="side")["commits"]] == [side, root]
    assert [c["id"] for c in history(repo, rev="main")["commits"]] == [tip, root]
    assert {c["id"] for c in history(repo)["commits"]} == {root, side, tip}
    kept = history(repo, "message == 'side' or message == 'root'", rev="side")["commits"]
    assert [(c["id"], c["parents"]) for c in kept] == [(side, [root]), (root, [])]
