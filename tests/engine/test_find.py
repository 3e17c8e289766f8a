"""Queries over the DAG: find, log --where, best and lineage, through the API and the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ckstore import Repo
from ckstore.cli import app
from ckstore.errors import QuerySyntaxError


@pytest.fixture
def repo(tmp_path):
    with Repo.init(tmp_path / "r") as r:
        runs = [(0.9, 3e-4, "v1", "warmup"), (0.5, 3e-4, "v2", "epoch 1"), (0.31, 1e-4, "v3", "epoch 2"),
                (0.45, 1e-5, "v3", "lora r=8")]
        for i, (loss, lr, data, msg) in enumerate(runs):
            r.commit({"w": np.full(4, i, np.float32)}, msg, metrics={"val_loss": loss}, params={"lr": lr},
                     meta={"data": {"version": data}}, step=(i + 1) * 500, capture_env=False)
        r.branch("side", "HEAD~2")
        r.commit({"w": np.zeros(4, np.float32)}, "side experiment", metrics={"val_loss": 0.2, "acc": 0.9},
                 branch="side", capture_env=False)
        yield r


def messages(entries):
    return [e.message for e in entries]


def test_find_over_all_refs_and_one_rev(repo):
    assert messages(repo.find("metrics.val_loss < 0.35")) == ["side experiment", "epoch 2"]
    assert messages(repo.find("metrics.val_loss < 0.35", rev="main")) == ["epoch 2"]
    assert messages(repo.find('data.version == "v3" and params.lr >= 1e-4')) == ["epoch 2"]
    assert messages(repo.find("step > 1000 and not message ~ \"LORA\"")) == ["epoch 2"]
    assert messages(repo.find("metrics.acc > 0")) == ["side experiment"]  # missing key: no match, no error


def test_find_sort_and_limit(repo):
    assert messages(repo.find("metrics.val_loss >= 0", sort="metrics.val_loss", limit=2)) == ["side experiment",
                                                                                          "epoch 2"]
    assert messages(repo.find("metrics.val_loss >= 0", sort="-step"))[-1] == "side experiment"  # missing last
    assert messages(repo.find("step >= 0", sort="-step", limit=1)) == ["lora r=8"]


def test_log_where_best_and_lineage(repo):
    assert messages(repo.log(where="metrics.val_loss > 0.4")) == ["lora r=8", "epoch 1", "warmup"]
    assert repo.best("val_loss").message == "epoch 2"
    assert repo.best("val_loss", mode="max").message == "warmup"
    assert repo.best("val_loss", rev="side").message == "side experiment"
    assert repo.best("nothing") is None
    assert messages(repo.lineage("side")) == ["side experiment", "epoch 1", "warmup"]


def test_bad_queries_are_clear(repo):
    with pytest.raises(QuerySyntaxError, match="column"):
        repo.find("metrics.val_loss <")
    with pytest.raises(QuerySyntaxError):
        repo.find("__import__('os').system('x')")


def test_cli_find_best_lineage(repo, monkeypatch):
    monkeypatch.chdir(repo.root)
    run = CliRunner().invoke
    r = run(app, ["find", "metrics.val_loss < 0.35", "--json"])
    assert r.exit_code == 0, r.output
    found = json.loads(r.output)
    assert [e["message"] for e in found] == ["side experiment", "epoch 2"]
    assert {"id", "parents", "message", "metrics", "params", "meta"} <= set(found[0])
    r = run(app, ["best", "val_loss", "--rev", "main"])
    assert r.exit_code == 0 and "epoch 2" in r.output
    r = run(app, ["lineage", "main", "--metric", "val_loss"])
    assert r.exit_code == 0 and r.output.count("\n") == 5 and "val_loss=0.31" in r.output
    assert r.output.splitlines()[-1].startswith("val_loss  █▃▁▃  min 0.31  max 0.9  last 0.45")  # the sparkline
    r = run(app, ["log", "--where", "step == 1000", "--json"])
    assert [e["message"] for e in json.loads(r.output)] == ["epoch 1"]
