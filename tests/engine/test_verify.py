"""Reproducibility probes and verify, and resume checks, with a real model in a real fresh process (numpy MLP)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from ckstore import Repo
from ckstore.errors import UsageError
from conftest import make_safetensors

LOADER = textwrap.dedent('''
    import numpy as np
    from pathlib import Path
    from safetensors.numpy import load_file

    def load(ckpt):
        w = load_file(str(Path(ckpt) / "model.safetensors"))
        def model(x):
            h = np.tanh(x @ w["w1"])
            return {"logits": h @ w["w2"], "hidden": h}
        return model

    def broken(ckpt):
        raise RuntimeError("cannot build the model")

    def wrong_shape(ckpt):
        return lambda x: {"logits": np.zeros((1, 1), np.float32), "hidden": np.zeros((1, 1), np.float32)}

    def step(ckpt, steps):  # "training": each step adds 0.01 to w1
        w = load_file(str(Path(ckpt) / "model.safetensors"))
        return {"w1": w["w1"] + np.float32(0.01) * steps, "loss": np.float64(1.0 / (1 + steps))}
''')


@pytest.fixture
def repo(tmp_path):
    r = Repo.init(tmp_path / "repo")
    (r.root / "mymodel.py").write_text(LOADER)  # the user's project code, next to the repository
    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((8, 16)).astype(np.float32), "w2": rng.standard_normal((16, 4)).astype(np.float32)}
    d = tmp_path / "ckpt"
    make_safetensors(d / "model.safetensors", w)
    r.commit(d, "base", step=0, metrics={"loss": 1.0})
    np.savez(tmp_path / "inputs.npz", x=rng.standard_normal((5, 8)).astype(np.float32))
    yield r, w, d, tmp_path
    r.close()


def test_verify_passes_on_the_committed_checkpoint(repo):
    r, _, _, tmp = repo
    head = r.resolve("HEAD")
    rec = r.add_probe("HEAD", tmp / "inputs.npz", "mymodel:load")
    assert rec["outputs"] == {"hidden": {"dtype": "float32", "shape": [5, 16]},
                              "logits": {"dtype": "float32", "shape": [5, 4]}}
    assert r.resolve("HEAD") == head
    result = r.verify("HEAD")
    assert result.passed and [o.name for o in result.outputs] == ["hidden", "logits"]
    assert all(o.max_abs == 0.0 for o in result.outputs)  # the same bytes give the same outputs
    assert r.notes("HEAD", ns="verify")[-1].data["verdict"]["passed"] is True
    assert r.fsck(read_data=True).ok


def test_a_changed_weight_with_the_same_probe_fails_naming_the_output(repo):
    r, w, d, tmp = repo
    expected = tmp / "expected.npz"
    # the original's outputs, then w2 changed and re-committed with the same probe (inputs and expected outputs)
    from ckstore.engine.probes import run_loader
    outs, _ = run_loader(r.engine, r.engine.resolve("HEAD"), "mymodel:load", tmp / "inputs.npz", tmp / "w0")
    np.savez(expected, **outs)
    w2 = dict(w, w2=w["w2"] + np.float32(0.5))
    make_safetensors(d / "model.safetensors", w2)
    r.commit(d, "changed head", step=1)
    r.add_probe("HEAD", tmp / "inputs.npz", "mymodel:load", expected=expected)
    result = r.verify("HEAD")
    assert not result.passed
    verdict = {o.name: o.passed for o in result.outputs}
    assert verdict == {"hidden": True, "logits": False}  # w2 only changes the logits
    cli = subprocess.run([shutil.which("ckstore"), "-C", str(r.root), "verify", "HEAD"], capture_output=True, text=True)
    assert cli.returncode == 1 and "FAIL  logits" in cli.stdout


def test_loader_failures_are_a_failing_verdict(repo):
    r, _, _, tmp = repo
    r.add_probe("HEAD", tmp / "inputs.npz", "mymodel:load")
    probe = r.probe("HEAD")
    with pytest.raises(UsageError, match="cannot build the model"):
        r.add_probe("HEAD", tmp / "inputs.npz", "mymodel:broken")
    r.note_add("HEAD", {"probe": {**probe, "loader": "mymodel:wrong_shape"}}, ns="probes")
    result = r.verify("HEAD")
    assert not result.passed and "shape [1, 1], expected" in result.outputs[0].detail
    r.note_add("HEAD", {"probe": {**probe, "loader": "mymodel:broken"}}, ns="probes")
    result = r.verify("HEAD")
    assert not result.passed and "cannot build the model" in result.error
    with pytest.raises(UsageError, match="MODULE:FUNCTION"):
        r.add_probe("HEAD", tmp / "inputs.npz", "mymodel")
    (tmp / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(UsageError, match="not a readable .npz"):
        r.add_probe("HEAD", tmp / "bad.npz", "mymodel:load")


def test_drift_is_reported(repo):
    r, _, _, tmp = repo
    r.add_probe("HEAD", tmp / "inputs.npz", "mymodel:load")
    probe = r.probe("HEAD")
    old_env = {**probe["env"], "python": "3.9.0", "packages": {**probe["env"]["packages"], "numpy": "1.0.0"}}
    r.note_add("HEAD", {"probe": {**probe, "env": old_env}}, ns="probes")
    result = r.verify("HEAD")
    assert result.passed and any(d.startswith("python: 3.9.0 -> ") for d in result.drift)
    assert any(d.startswith("numpy: 1.0.0 -> ") for d in result.drift)


def test_gc_keeps_the_probe_attachment(repo):
    r, _, _, tmp = repo
    r.add_probe("HEAD", tmp / "inputs.npz", "mymodel:load")
    r.gc(now=True)
    assert r.verify("HEAD").passed and r.fsck(read_data=True).ok


def test_resume_check_flags_a_checkpoint_without_rng_state(repo, tmp_path):
    r, w, d, _ = repo
    full = tmp_path / "full"
    make_safetensors(full / "model.safetensors", w)
    (full / "optimizer.pt").write_bytes(b"opaque optimizer state")
    (full / "scheduler.pt").write_bytes(b"opaque scheduler state")
    (full / "rng_state.pth").write_bytes(b"opaque rng state")
    (full / "trainer_state.json").write_text('{"global_step": 10}')
    r.commit(full, "complete", step=10, metrics={"loss": 0.5})
    ok = r.verify_resume("HEAD")
    assert ok.passed and ok.components["rng"] == "rng_state.pth"
    (full / "rng_state.pth").unlink()
    r.commit(full, "no rng", step=10)
    missing = r.verify_resume("HEAD")
    assert not missing.passed and missing.missing == ["rng"]
    cli = subprocess.run([shutil.which("ckstore"), "-C", str(r.root), "verify", "--resume", "HEAD"],
                         capture_output=True, text=True)
    assert cli.returncode == 1 and "MISSING  rng" in cli.stdout


def test_resume_replay_reaches_the_later_commit(repo):
    r, w, d, _ = repo
    later = dict(w, w1=w["w1"] + np.float32(0.01) * 5)
    make_safetensors(d / "model.safetensors", later)
    (d / "rng_state.pth").write_bytes(b"x")
    (d / "optimizer.pt").write_bytes(b"x")
    (d / "scheduler.pt").write_bytes(b"x")
    r.commit(d, "five steps later", step=5, metrics={"loss": 1.0 / 6})
    result = r.verify_resume("HEAD~1", step_fn="mymodel:step", against="HEAD")
    assert [c.name for c in result.replay] == ["loss", "w1"] and all(c.passed for c in result.replay)
    assert result.missing == ["optimizer", "scheduler", "rng"]  # the base itself was saved without them
    with pytest.raises(UsageError, match="need steps"):
        r.verify_resume("HEAD", step_fn="mymodel:step", against="HEAD~1")
