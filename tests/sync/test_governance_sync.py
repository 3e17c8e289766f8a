"""Notes, aliases, remote protection rules and audit anchors across clones (directory and S3 remotes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ckstore import Policy, Repo, clone
from ckstore.errors import ProtectedRef
from conftest import make_safetensors
from remote_helpers import make_remote
from s3servers import moto_endpoint  # noqa: F401  (fixture)


@pytest.fixture(params=["directory", "s3-moto"])
def pair(request, tmp_path, monkeypatch):
    url, opts = make_remote(request, tmp_path, monkeypatch, request.param)
    a = Repo.init(tmp_path / "a")
    rng = np.random.default_rng(0)
    for i in range(3):
        f = make_safetensors(tmp_path / f"m{i}.safetensors", {"w": rng.standard_normal(2000).astype(np.float32)})
        a.commit(f, f"c{i}", metrics={"val_loss": [0.9, 0.5, 0.4][i]})
    a.remote_add("origin", url, **opts)
    a.push("origin")
    b = clone(url, tmp_path / "b", **opts)
    yield a, b, tmp_path
    a.close()
    b.close()


def test_notes_from_two_clones_both_survive(pair):
    a, b, _ = pair
    head = a.resolve("HEAD")
    a.note_add("HEAD", {"mmlu": 0.61}, ns="eval", message="from a")
    b.note_add("HEAD", {"gsm8k": 0.40}, ns="eval", message="from b")
    b.note_add("HEAD~1", {"ok": True}, ns="review")
    a.push("origin")
    b.push("origin")  # the remote's notes are merged in first: b's push carries both
    a.pull("origin")
    for repo in (a, b):
        if repo is b:
            b.pull("origin")
        assert repo.log(n=1)[0].notes["eval"] == {"mmlu": 0.61, "gsm8k": 0.40}
        assert repo.log(n=2)[1].notes == {"review": {"ok": True}}
        assert {n.message for n in repo.notes(head, ns="eval")} == {"from a", "from b"}
        assert repo.fsck(read_data=True).ok


def test_aliases_travel_with_their_history(pair):
    a, b, _ = pair
    a.alias_set("champion", "HEAD~1", "first")
    a.alias_set("champion", "HEAD", "better")
    a.push("origin")
    b.fetch("origin")
    assert b.resolve("champion") == a.resolve("HEAD") and b.resolve("champion@{1}") == a.resolve("HEAD~1")
    assert [h.reason for h in b.alias_history("champion")] == ["better", "first"]
    b.alias_set("champion", "HEAD~2", "b rolls back")
    a.alias_set("champion", "HEAD~1", "a moves too")
    a.push("origin")
    pushed = b.push("origin")
    assert any("moved since this clone saw it" in w for w in pushed.warnings)  # exactly one wins
    b.fetch("origin")
    assert any("kept ours" in w for w in b.last_transfer.warnings) or b.resolve("champion") == a.resolve("HEAD~1")


def test_the_remotes_rules_bind_pushers(pair):
    a, b, _ = pair
    a.protect("refs/aliases/champion", require_checks=True, remote="origin")
    a.protect("main", ff_only=True, remote="origin")
    b.alias_set("champion", "HEAD", "no checks here")  # b's own config does not protect it
    with pytest.raises(ProtectedRef, match="protected on the remote"):
        b.push("origin")
    b.alias_delete("champion", "undo")
    a.promote("HEAD", "champion", "checked", checks=["verify"])
    a.push("origin")  # a promotion is a checked move: accepted
    b.reset("main", "HEAD~1", "rewrite", force=True)
    b.commit(a.engine.root.parent / "m0.safetensors", "diverged")
    with pytest.raises(ProtectedRef, match="fast-forward only"):
        b.push("origin", force=True)


def test_a_rewritten_audit_log_is_detected_against_the_remote(pair):
    a, _, _ = pair
    a.note_add("HEAD", {"x": 1})
    a.push("origin")
    assert a.verify_audit_against("origin") == []
    log = a.dir / "logs" / "audit"
    lines = log.read_text().splitlines()
    rewritten = []
    from ckstore.storage.audit import GENESIS, entry_hash
    prev = GENESIS
    for line in lines[:-2]:  # drop the last two entries and recompute the chain: locally consistent
        e = json.loads(line)
        e.pop("hash")
        e["prev"] = prev
        h = entry_hash(e)
        rewritten.append(json.dumps({**e, "hash": h}, sort_keys=True, separators=(",", ":")))
        prev = h
    log.write_text("\n".join(rewritten) + "\n")
    assert a.engine.refs.audit.verify() == []  # the chain alone cannot tell
    problems = a.verify_audit_against("origin")
    assert problems and "gone" in problems[0]


def test_the_loser_of_a_push_race_merges_instead_of_resetting(pair):
    a, b, tmp = pair
    a.commit(tmp / "m0.safetensors", "a's work")
    b.commit(tmp / "m1.safetensors", "b's work")
    a.push("origin")
    from ckstore.errors import NonFastForward
    with pytest.raises(NonFastForward):
        b.push("origin")
    b.pull("origin", merge=True)
    head = b.log(n=1)[0]
    assert len(head.parents) == 2 and b.manifest("HEAD") == b.manifest("HEAD^1")  # our checkpoint, both parents
    b.push("origin")
    a.pull("origin")
    assert a.resolve("HEAD") == b.resolve("HEAD") and a.fsck(read_data=True).ok


def test_remote_gc_keeps_aliases_notes_and_every_alias_holder(pair):
    a, b, tmp = pair
    a.alias_set("champion", "HEAD~2", "old champion")
    a.alias_set("champion", "HEAD", "new champion")
    a.note_add("HEAD~1", {"acc": 0.7}, ns="eval")
    a.push("origin")
    a.forget_remote("origin", Policy(keep_last=1))
    a.gc_remote("origin", now=True)
    spec = a.remote_list()[0]
    fresh = clone(spec.url, tmp / "fresh", **spec.transport_options())
    with fresh:
        assert fresh.resolve("champion@{1}") == a.resolve("HEAD~2")  # the old holder survived the remote gc
        fresh.checkout("champion@{1}", tmp / "old")
        assert [h.reason for h in fresh.alias_history("champion")] == ["new champion", "old champion"]
        # the note survives as the notes history it is, though the commit it is about was dropped and swept
        assert fresh.noted(ns="eval") == {a.resolve("HEAD~1"): {"eval": {"acc": 0.7}}}
        assert fresh.fsck(read_data=True).ok
