"""diff (tensor by tensor, against numpy), revert with a reason, reset, and their audit entries."""

import math

import ml_dtypes
import numpy as np
import pytest

from ckstore import Repo
from ckstore.errors import ProtectedRef, UsageError


@pytest.fixture
def repo(tmp_path):
    with Repo.init(tmp_path / "r", chunk_size=8192) as r:
        yield r


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_diff_statistics_match_numpy(repo, dtype):
    rng = np.random.default_rng(0)
    old = rng.standard_normal((64, 300)).astype(dtype)
    new = old.copy()
    new[10:12] = (new[10:12].astype(np.float32) * 1.5).astype(dtype)  # only a few chunks differ
    repo.commit({"w": old, "keep": np.ones(4, dtype), "gone": np.zeros(2, dtype)}, "a", metrics={"loss": 1.0},
                params={"lr": 0.1}, capture_env=False)
    repo.commit({"w": new, "keep": np.ones(4, dtype), "extra": np.zeros(3, dtype)}, "b", metrics={"loss": 0.75},
                params={"lr": 0.05}, capture_env=False)
    d = repo.diff("HEAD")
    assert d.tensors["added"] == ["extra"] and d.tensors["removed"] == ["gone"]
    assert d.tensors["unchanged"] == ["keep"]
    (w,) = d.tensors["changed"]
    a, b = old.astype(np.float64).ravel(), new.astype(np.float64).ravel()
    delta = b - a
    assert w["changed"] == int(np.sum(old.view(f"u{old.itemsize}") != new.view(f"u{old.itemsize}")))
    assert math.isclose(w["l2_delta"], np.linalg.norm(delta), rel_tol=1e-9)
    assert math.isclose(w["rel_l2"], np.linalg.norm(delta) / np.linalg.norm(a), rel_tol=1e-9)
    assert math.isclose(w["max_abs"], np.abs(delta).max(), rel_tol=1e-12)
    assert math.isclose(w["cosine"], a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel_tol=1e-7)
    assert d.metadata["metrics"]["loss"] == {"old": 1.0, "new": 0.75, "delta": -0.25}
    assert d.metadata["params"]["lr"] == {"old": 0.1, "new": 0.05}
    assert d.summary["stored_bytes_added"] > 0 and d.differs
    assert repo.diff("HEAD~1..HEAD").to_dict() == d.to_dict() == repo.diff("HEAD~1", "HEAD").to_dict()


def test_diff_shape_change_tolerance_and_glob(repo):
    w = np.arange(12, dtype=np.float32)
    repo.commit({"w": w, "v": w.copy()}, "a", capture_env=False)
    repo.commit({"w": w.reshape(3, 4), "v": w + 1e-7}, "b", capture_env=False)
    d = repo.diff("HEAD")
    by = {c["name"]: c for c in d.tensors["changed"]}
    assert by["w"]["comparable"] is False and by["w"]["shape"] == [[12], [3, 4]] and "shape" in by["w"]["note"]
    assert by["v"]["comparable"] is True
    tol = repo.diff("HEAD", atol=1e-5, tensors=["v"])
    assert tol.tensors["changed"] == [] and tol.tensors["unchanged"] == ["v"]


def test_diff_of_first_commit_lists_everything_added(repo):
    repo.commit({"w": np.ones(3, np.float32)}, "first", capture_env=False)
    d = repo.diff("HEAD")
    assert d.tensors["added"] == ["w"] and d.old == ""


def test_revert_records_reason_in_commit_and_audit(repo, tmp_path):
    repo.commit({"w": np.zeros(4, np.float32)}, "good", metrics={"loss": 0.1}, capture_env=False)
    good = repo.resolve("HEAD")
    repo.commit({"w": np.full(4, np.nan, np.float32)}, "diverged", metrics={"loss": float("nan")},
                capture_env=False)
    info = repo.revert(good, "loss went NaN at step 900")
    c = info.commit
    assert c.reverted_from.hex() == good and c.parents[0].hex() != good
    assert c.manifest == repo.engine.commit(bytes.fromhex(good)).manifest and c.metrics == {"loss": 0.1}
    assert "loss went NaN" in c.message and c.extra["revert_reason"] == "loss went NaN at step 900"
    last = repo.audit()[-1]
    assert last["action"] == "revert" and "loss went NaN" in last["message"] and last["new"] == info.id
    np.testing.assert_array_equal(repo.load()["w"], np.zeros(4, np.float32))
    assert not repo.diff(good, "HEAD").differs
    with pytest.raises(UsageError):
        repo.revert(good, "  ")


def test_reset_needs_force_to_drop_commits_and_never_moves_tags(repo):
    ids = [repo.commit({"w": np.full(2, i, np.float32)}, f"v{i}", capture_env=False).id for i in range(3)]
    repo.tag("v1", ids[1])
    with pytest.raises(ProtectedRef, match="drop 2"):
        repo.reset("main", ids[0], "bad run")
    assert repo.resolve("main") == ids[2]
    moved = repo.reset("main", ids[0], "bad run", force=True)
    assert (moved.old, moved.new) == (ids[2], ids[0])
    again = repo.reset("main", ids[1], "forward again")  # fast-forward: no force needed
    assert (again.old, again.new) == (ids[0], ids[1])
    with pytest.raises(ProtectedRef, match="tag"):
        repo.reset("v1", ids[0], "no")
    entries = [e for e in repo.audit() if e["action"] == "reset"]
    assert [e["message"] for e in entries] == ["bad run", "forward again"]


def test_fsck_reports_tampered_audit_log(repo):
    repo.commit({"w": np.ones(2, np.float32)}, "a", capture_env=False)
    repo.branch("b")
    assert repo.fsck().ok
    log = repo.dir / "logs/audit"
    log.write_text(log.read_text().replace('"action":"branch"', '"action":"brunch"'))
    report = repo.fsck()
    assert not report.ok and report.problems[0].kind == "audit"
