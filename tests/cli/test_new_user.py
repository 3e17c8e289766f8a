"""What a new user ran into, each now fixed: metadata typing, NaN metrics and JSON, piped output, warnings for
queries and include patterns that match nothing, unmerged branch deletion, re-created tags, revert's branch,
`ckstore log | head -1`, --version, shell completion, `log A..B`, 0-d tensors through torch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ckstore import Repo
from conftest import make_safetensors

ENV = {**os.environ, "CKSTORE_AUTHOR": "new user <new@example.com>"}
for _var in ("CKSTORE_DIR", "CKSTORE_DEBUG"):
    ENV.pop(_var, None)


def run(*args: object, cwd: Path, ok: bool = True, shell_tail: str = "") -> subprocess.CompletedProcess:
    """`ckstore ARGS` as a user types it (a real process); `shell_tail` pipes it on, e.g. "| head -1"."""
    cmd = " ".join(["ckstore", *(_quote(a) for a in args)]) + (f" {shell_tail}; exit ${{PIPESTATUS[0]}}"
                                                              if shell_tail else "")
    r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _quote(a: object) -> str:
    import shlex
    return shlex.quote(str(a))


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    run("init", cwd=tmp_path)
    return tmp_path


def commit(repo_dir: Path, seed: int, *extra: object) -> dict:
    f = make_safetensors(repo_dir / f"ck{seed}" / "model.safetensors",
                         {"weight": np.full((4, 4), seed, np.float32), "bias": np.zeros(4, np.float32)})
    return json.loads(run("commit", f, "-m", f"c{seed}", "--json", *extra, cwd=repo_dir).stdout)


def test_meta_values_that_are_not_canonical_numbers_stay_strings(repo_dir: Path) -> None:
    done = commit(repo_dir, 1, "--meta", "data.version=1.10", "--meta", "data.id=0123456", "--meta",
                  "params.lr=3e-4", "--meta", "params.epochs=5", "--meta", "params.scale=1.0",
                  "--meta", "params.layers:=[1, 2]", "--meta", "data.tag:=\"7\"")
    assert done["meta"]["data"] == {"version": "1.10", "id": "0123456", "tag": "7"}
    assert done["params"] == {"lr": 3e-4, "epochs": 5, "scale": 1.0, "layers": [1, 2]}
    r = run("commit", repo_dir / "ck1", "-m", "x", "--meta", "k:={bad", cwd=repo_dir, ok=False)
    assert r.returncode == 1 and "is not JSON" in r.stderr


def test_nan_metric_is_accepted_and_json_stays_valid(repo_dir: Path) -> None:
    commit(repo_dir, 1, "--metric", "loss=nan", "--metric", "acc=0.5")
    r = run("log", "--json", cwd=repo_dir)
    assert "NaN" not in r.stdout
    assert json.loads(r.stdout)[0]["metrics"] == {"loss": None, "acc": 0.5}
    assert "printed as null" in r.stderr
    with Repo.open(repo_dir) as repo:  # the API keeps the real value
        assert np.isnan(repo.log()[0].metrics["loss"])


def test_piped_tables_keep_long_names_whole(repo_dir: Path) -> None:
    name = "model.layers.31.self_attn.q_proj.lora_A.default.weight_with_a_long_suffix"
    f = make_safetensors(repo_dir / "long.safetensors", {name: np.ones((2, 2), np.float32)})
    run("commit", f, "-m", "long", cwd=repo_dir)
    assert name in run("show", cwd=repo_dir, shell_tail="| cat").stdout


def test_find_warns_about_keys_no_commit_has(repo_dir: Path) -> None:
    commit(repo_dir, 1, "--metric", "val_loss=0.3")
    r = run("find", "metrics.val_los < 1", cwd=repo_dir)
    assert r.stdout == "" and "no commit has metrics.val_los; did you mean metrics.val_loss?" in r.stderr
    assert "warning" not in run("find", "metrics.val_loss < 1", cwd=repo_dir).stderr


def test_checkout_include_matching_nothing_is_an_error(repo_dir: Path) -> None:
    commit(repo_dir, 1)
    r = run("checkout", "HEAD", "-o", "out", "--include", "*.bin", cwd=repo_dir, ok=False)
    assert r.returncode == 2 and "matches no file" in r.stderr and "model.safetensors" in r.stderr
    assert not (repo_dir / "out").exists()


def test_branch_delete_refuses_unmerged_work_without_capital_d(repo_dir: Path) -> None:
    commit(repo_dir, 1)
    run("branch", "exp", cwd=repo_dir)
    commit(repo_dir, 2, "--branch", "exp")
    r = run("branch", "-d", "exp", cwd=repo_dir, ok=False)
    assert r.returncode == 1 and "no other branch or tag reaches" in r.stderr and "branch -D exp" in r.stderr
    assert "exp" in run("branch", cwd=repo_dir).stdout
    assert run("branch", "-D", "exp", cwd=repo_dir).stdout.startswith("deleted branch exp (was ")
    assert "exp" not in run("branch", cwd=repo_dir).stdout


def test_a_recreated_tag_is_audited_with_both_ids(repo_dir: Path) -> None:
    first = commit(repo_dir, 1)["id"]
    second = commit(repo_dir, 2)["id"]
    run("tag", "best", first, cwd=repo_dir)
    run("tag", "-d", "best", cwd=repo_dir)
    run("tag", "best", second, cwd=repo_dir)
    last = json.loads(run("audit", "--json", cwd=repo_dir).stdout)[-1]
    assert last["action"] == "tag-recreate" and last["old"] is None and last["new"] == second
    assert first in last["message"] and second in last["message"]
    assert "tag-recreate" in run("audit", cwd=repo_dir).stdout


def test_revert_names_the_branch(repo_dir: Path) -> None:
    first = commit(repo_dir, 1)["id"]
    commit(repo_dir, 2)
    assert run("revert", first, "--reason", "spike", cwd=repo_dir).stdout.startswith("[main ")


def test_log_into_a_closed_pipe_succeeds(repo_dir: Path) -> None:
    for seed in range(3):
        commit(repo_dir, seed)
    for args in (["log"], ["log", "--oneline"], ["ls"], ["show"]):
        r = run(*args, cwd=repo_dir, shell_tail="| head -1")
        assert r.stdout.count("\n") == 1 and r.stderr == "", (args, r.stderr)


def test_version_and_completion(tmp_path: Path) -> None:
    from ckstore import __version__
    assert run("--version", cwd=tmp_path).stdout.strip() == f"ckstore {__version__}"
    env = {**ENV, "_CKSTORE_COMPLETE": "complete_bash", "COMP_WORDS": "ckstore chec", "COMP_CWORD": "1"}
    r = subprocess.run(["ckstore"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["checkout"]
    assert "complete" in run("--show-completion", "bash", cwd=tmp_path).stdout


def test_log_range_shows_what_b_has_and_a_not(repo_dir: Path) -> None:
    ids = [commit(repo_dir, seed)["id"] for seed in range(4)]
    got = [e["id"] for e in json.loads(run("log", f"{ids[1]}..{ids[3]}", "--json", cwd=repo_dir).stdout)]
    assert got == [ids[3], ids[2]]
    assert json.loads(run("log", f"{ids[3]}..{ids[1]}", "--json", cwd=repo_dir).stdout) == []


def test_zero_dim_tensors_load_as_zero_dim_torch_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with Repo.init(tmp_path) as repo:
        repo.commit({"step": np.array(7, np.int64), "lr": np.array(0.5, np.float32), "w": np.ones(3, np.float32)},
                    "0-d", capture_env=False)
        got = repo.load(framework="torch")
    assert got["step"].shape == torch.Size([]) and got["step"].item() == 7
    assert got["lr"].shape == torch.Size([]) and got["w"].shape == torch.Size([3])
