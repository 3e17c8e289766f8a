"""Notes, aliases with history, version names and protected refs, on real repositories."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ckstore import Repo
from ckstore.errors import AlreadyExists, ProtectedRef, RefConflict, UnknownRevision, UsageError
from ckstore.model.retention import Policy
from conftest import make_safetensors


@pytest.fixture
def repo(tmp_path):
    r = Repo.init(tmp_path / "repo")
    rng = np.random.default_rng(0)
    for i in range(4):
        f = make_safetensors(tmp_path / f"m{i}.safetensors", {"w": rng.standard_normal(5000).astype(np.float32)})
        r.commit(f, f"c{i}", metrics={"val_loss": [0.9, 0.5, 0.6, 0.4][i]}, step=i)
    yield r
    r.close()


def test_notes_keep_the_id_and_merge_per_key(repo):
    head = repo.resolve("HEAD")
    repo.note_add("HEAD", {"mmlu": 0.61, "harness": "v2"}, ns="eval", message="first run")
    repo.note_add("HEAD", {"mmlu": 0.64}, ns="eval")
    repo.note_add("HEAD~2", {"ok": True}, ns="review")
    assert repo.resolve("HEAD") == head  # the commit is unchanged
    info = repo.log(n=1)[0]
    assert info.notes == {"eval": {"mmlu": 0.64, "harness": "v2"}}
    history = repo.notes("HEAD")
    assert [n.data for n in history] == [{"mmlu": 0.61, "harness": "v2"}, {"mmlu": 0.64}]
    assert history[0].message == "first run" and history[0].author
    assert [c.message for c in repo.find("notes.eval.mmlu > 0.6")] == ["c3"]
    assert repo.best("notes.eval.mmlu", mode="max").message == "c3"
    assert set(repo.noted()) == {head, repo.resolve("HEAD~2")}
    assert [e.action for e in repo.audit()][-3:] == ["note"] * 3
    assert repo.fsck(read_data=True).ok


def test_note_errors(repo):
    with pytest.raises(UnknownRevision):
        repo.note_add("nosuch", {"a": 1})
    with pytest.raises(UsageError, match="needs data"):
        repo.note_add("HEAD", {})
    with pytest.raises(UsageError, match="namespace"):
        repo.note_add("HEAD", {"a": 1}, ns="a/b")
    assert not (repo.dir / "refs" / "notes").exists() or not list((repo.dir / "refs" / "notes").iterdir())


def test_notes_keep_nothing_alive_but_their_own_history(repo):
    repo.note_add("HEAD~1", {"acc": 0.5}, ns="eval")
    repo.forget(Policy(keep_last=1))
    repo.gc(now=True)
    assert [c.message for c in repo.log()] == ["c3"]
    assert repo.fsck(read_data=True).ok  # the note on a gc'd commit is still a readable history
    assert len(list((repo.dir / "objects").rglob("*"))) > 0


def test_alias_history_and_revisions(repo):
    repo.alias_set("champion", "HEAD~2", "first candidate")
    repo.alias_set("champion", "HEAD", "better val_loss")
    assert repo.resolve("champion") == repo.resolve("HEAD")
    assert repo.resolve("champion@{1}") == repo.resolve("HEAD~2")
    assert repo.resolve("champion@{0}~1") == repo.resolve("HEAD~1")
    history = repo.alias_history("champion")
    assert [(h.old, h.new, h.reason) for h in history] == [
        (repo.resolve("HEAD~2"), repo.resolve("HEAD"), "better val_loss"), (None, repo.resolve("HEAD~2"), "first candidate")]
    with pytest.raises(UnknownRevision, match="moved only 1 times"):
        repo.resolve("champion@{2}")
    assert [a.name for a in repo.aliases()] == ["champion"]
    repo.alias_delete("champion", "retired")
    with pytest.raises(UnknownRevision, match="deleted"):
        repo.resolve("champion")
    assert repo.aliases() == [] and len(repo.alias_history("champion")) == 3
    assert repo.fsck(read_data=True).ok


def test_alias_names_and_reasons_are_checked(repo):
    with pytest.raises(AlreadyExists, match="is a branch"):
        repo.alias_set("main", "HEAD", "x")
    repo.tag("v1", "HEAD")
    with pytest.raises(AlreadyExists, match="is a tag"):
        repo.alias_set("v1", "HEAD", "x")
    with pytest.raises(UsageError, match="reason"):
        repo.alias_set("champion", "HEAD", " ")
    with pytest.raises(UsageError, match="reserved"):
        repo.alias_set("latest", "HEAD", "x")
    with pytest.raises(UnknownRevision):
        repo.alias_delete("nosuch", "x")


def test_alias_compare_and_swap(repo):
    repo.alias_set("staging", "HEAD~1", "a")
    with pytest.raises(RefConflict):
        repo.alias_set("staging", "HEAD", "b", expected=repo.resolve("HEAD~3"))
    repo.alias_set("staging", "HEAD", "b", expected=repo.resolve("HEAD~1"))
    assert repo.resolve("staging") == repo.resolve("HEAD")


RACE = """
import sys
from ckstore import Repo
from ckstore.errors import RefConflict
with Repo.open(sys.argv[1]) as repo:
    try:
        repo.alias_set("champion", sys.argv[2], "race", expected=sys.argv[3])
        print("won")
    except RefConflict:
        print("lost")
"""


def test_two_processes_moving_one_alias_one_wins(repo):
    repo.alias_set("champion", "HEAD~3", "start")
    start = repo.resolve("HEAD~3")
    for _ in range(5):
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(repo.root), rev, start], stdout=subprocess.PIPE,
                                  text=True) for rev in ("HEAD", "HEAD~1")]
        outs = sorted(p.communicate()[0].strip() for p in procs)
        assert outs == ["lost", "won"], outs
        repo.alias_set("champion", start, "reset for the next round")


def test_versions_and_latest(repo):
    assert repo.resolve("main@v1") == repo.resolve("HEAD~3")
    assert repo.resolve("main@v4") == repo.resolve("HEAD") == repo.resolve("latest") == repo.resolve("main@latest")
    with pytest.raises(UnknownRevision, match="has 4 versions"):
        repo.resolve("main@v5")
    repo.forget(Policy(keep_last=1, keep_best=1, metric="val_loss"))
    repo.gc(now=True)
    assert repo.resolve("main@v4") == repo.resolve("HEAD")  # numbers never change after retention
    with pytest.raises(UnknownRevision, match="dropped by retention"):
        repo.resolve("main@v2")


def test_protected_refs(repo):
    repo.branch("exp", "HEAD~1")
    repo.protect("main", no_delete=True, ff_only=True)
    with pytest.raises(ProtectedRef, match="fast-forward only"):
        repo.reset("main", "HEAD~2", "undo", force=True)
    with pytest.raises(ProtectedRef, match="fast-forward only"):
        repo.branch("main", "exp", force=True)
    repo.protect("exp", no_delete=True)
    with pytest.raises(ProtectedRef, match="may not be deleted"):
        repo.delete_branch("exp", force=True)
    repo.protect("refs/aliases/champion", require_checks=True)
    with pytest.raises(ProtectedRef, match="promote"):
        repo.alias_set("champion", "HEAD", "unchecked")
    repo.protect("refs/tags/release/*", no_delete=True)
    repo.tag("release/1", "HEAD")
    with pytest.raises(ProtectedRef, match="may not be deleted"):
        repo.delete_tag("release/1")
    assert [p.pattern for p in repo.protections()] == ["refs/aliases/champion", "refs/heads/exp", "refs/heads/main",
                                                       "refs/tags/release/*"]
    repo.unprotect("exp")
    repo.delete_branch("exp", force=True)
    assert any(e.action == "protect" for e in repo.audit()) and any(e.action == "unprotect" for e in repo.audit())
    with Repo.open(repo.root) as again:
        assert again.fsck().ok  # the rules are in the checksummed config
    with pytest.raises(UsageError, match="say what"):
        repo.protect("main")


def test_merge_records_both_parents(repo, tmp_path):
    rng = np.random.default_rng(7)
    repo.branch("exp", "HEAD~1")
    f = make_safetensors(tmp_path / "exp.safetensors", {"w": rng.standard_normal(5000).astype(np.float32)})
    exp = repo.commit(f, "exp work", branch="exp", metrics={"val_loss": 0.3})
    main = repo.resolve("main")
    done = repo.merge("exp", take="theirs")
    assert done.status == "merged" and done.commit.parents == [main, exp.id]
    assert repo.manifest("HEAD") == repo.manifest("exp") and repo.show("HEAD").commit.metrics == {"val_loss": 0.3}
    assert repo.merge("exp").status == "up-to-date"
    assert {c.id for c in repo.log()} >= {main, exp.id}
    repo.branch("behind", "HEAD~1")
    repo.switch("behind")
    assert repo.merge("main").status == "fast-forward" and repo.resolve("behind") == repo.resolve("main")
    repo.switch("main")
    repo.protect("main", ff_only=True)
    repo.branch("side", "HEAD~2")
    repo.commit(f, "side", branch="side")
    merged = repo.merge("side")  # a merge keeps main's history: allowed under --ff-only
    assert merged.status == "merged" and repo.fsck(read_data=True).ok


def test_keep_noted_keeps_evaluated_commits(repo):
    repo.note_add("HEAD~2", {"mmlu": 0.6}, ns="eval")
    repo.forget(Policy(keep_last=1, keep_noted=True))
    assert [c.message for c in repo.log()] == ["c3", "c1"]


def test_gc_keeps_every_alias_holder_even_one_retention_dropped(repo, tmp_path):
    repo.alias_set("champion", "HEAD~3", "first")
    repo.alias_set("champion", "HEAD", "second")
    repo.forget(Policy(keep_last=1, keep_tagged=False))  # drops HEAD~3 from history
    repo.gc(now=True)
    repo.checkout("champion@{1}", tmp_path / "old")  # the old holder's data is still there
    assert repo.fsck(read_data=True).ok
