"""ckstore.Checkpointer: copies on the caller's thread, commits in order in the background, surfaces errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.integrations.loop import CommitFailed


def test_saves_commit_in_order_from_copies_taken_at_save(tmp_path: Path) -> None:
    w = np.zeros(1000, dtype=np.float32)
    with ckstore.Checkpointer(tmp_path / "r", branch="run", keep=ckstore.Policy(keep_last=2)) as ckpt:
        futures = []
        for step in range(4):
            w[:] = step
            futures.append(ckpt.save({"w": w, "step": step}, step=step, metrics={"loss": 1.0 / (step + 1)}))
            w[:] = -1  # training goes on mutating the array right after save()
        results = [f.result() for f in futures]
    assert [r.branch for r in results] == ["run"] * 4
    with ckstore.Repo.open(tmp_path / "r") as repo:
        log = repo.log("run")
        assert [c.step for c in log] == [3, 2]  # in order, and the policy kept the last two
        assert float(repo.load("run")["w"][0]) == 3.0 and float(repo.load("run~1")["w"][0]) == 2.0


def test_torch_tensors_are_copied_and_errors_surface_on_the_next_save(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    ckpt = ckstore.Checkpointer(tmp_path / "r")
    before = model.weight.detach().clone()
    ckpt.save({"model": model}, step=1).result()
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(ckstore.errors.UsageError, match="cannot checkpoint opt"):
        ckpt.save({"opt": object()}, step=2)  # refused on the caller's thread
    bad = ckpt.save({"w": torch.ones(2)}, step=3, metrics={"loss": "high"})  # not a number: the commit fails
    try:
        later = ckpt.save({"w": torch.ones(2)}, step=4)
    except CommitFailed as exc:  # the failure came first: reported by this very save, which queued nothing
        assert "commit of step 3 failed" in str(exc)
        later = None
    with pytest.raises(ckstore.errors.CkstoreError):
        bad.result()
    if later is not None:
        with pytest.raises(CommitFailed, match="before it failed"):
            later.result()  # queued behind the failure: skipped, not committed out of order
        with pytest.raises(CommitFailed, match="commit of step 3 failed"):
            ckpt.save({"w": torch.ones(2)}, step=5)
    ckpt.save({"w": torch.ones(2)}, step=6).result()  # reported once; saving goes on
    ckpt.close()
    with ckstore.Repo.open(tmp_path / "r") as repo:
        assert [c.step for c in repo.log()] == [6, 1]
        assert torch.equal(repo.load("HEAD~1", framework="torch")["model"]["weight"], before)
