"""Gated promotion, staged rollback, describe and artifact names, on real repositories and real hook processes."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from ckstore import Repo
from ckstore.errors import ProtectedRef, UnknownRevision, UsageError
from conftest import make_safetensors


@pytest.fixture
def repo(tmp_path):
    r = Repo.init(tmp_path / "repo")
    rng = np.random.default_rng(0)
    for i, loss in enumerate([0.9, 0.5, 0.6, 0.4]):
        f = make_safetensors(tmp_path / f"m{i}.safetensors", {"w": rng.standard_normal(5000).astype(np.float32)})
        r.commit(f, f"c{i}", metrics={"val_loss": loss}, step=i * 100, meta={"extra": {"model": "mlp"}})
    r.protect("refs/aliases/champion", require_checks=True)
    yield r
    r.close()


def hooks(repo: Repo, **checks: str) -> None:
    cfg = repo.engine.config
    repo._save_config(replace(cfg, governance={**cfg.governance, "checks": checks}))


GATE = ["metrics.val_loss <= current.metrics.val_loss"]


def test_a_regression_is_refused_and_the_next_better_one_moves(repo):
    first = repo.promote("HEAD~2", "champion", "baseline", checks=["verify"], gates=GATE)  # c1, 0.5
    assert first.moved and repo.resolve("champion") == repo.resolve("HEAD~2")
    worse = repo.promote("HEAD~1", "champion", "try c2", gates=GATE)  # 0.6 > 0.5
    assert not worse.moved and not worse.passed
    assert worse.checks[0].name == f"gate {GATE[0]}" and "FAIL" in worse.checks[0].detail
    assert repo.resolve("champion") == repo.resolve("HEAD~2")
    better = repo.promote("HEAD", "champion", "c3 beats it", gates=GATE, checks=["verify"])
    assert better.moved and repo.resolve("champion") == repo.resolve("HEAD")
    evidence = repo.notes("HEAD~1", ns="promotion")  # refusals are on record too
    assert evidence[-1].data["moved"] is False and evidence[-1].data["checks"][0]["passed"] is False
    assert any(e.action == "promote-refused" for e in repo.audit())
    assert [h.action for h in repo.alias_history("champion")] == ["promote", "promote"]


def test_rollback_restores_the_previous_holder_with_the_reason(repo):
    repo.promote("HEAD~2", "champion", "baseline", checks=["verify"])
    repo.promote("HEAD", "champion", "newer", checks=["verify"])
    dry = repo.rollback("champion", "preview", dry_run=True)
    assert dry.passed and not dry.moved and repo.resolve("champion") == repo.resolve("HEAD")
    done = repo.rollback("champion", "latency regression in prod")
    assert done.moved and [c.name for c in done.checks] == ["verify"]  # the checks of its own promotion
    assert repo.resolve("champion") == repo.resolve("HEAD~2")
    last = repo.alias_history("champion")[0]
    assert (last.action, last.reason) == ("rollback", "latency regression in prod")
    assert any(e.action == "alias-rollback" and "latency regression" in e.message for e in repo.audit())
    forced = repo.rollback("champion", "emergency", to="HEAD~3", force=True)
    assert forced.moved and forced.checks == [] and repo.alias_history("champion")[0].action == "rollback-forced"


def test_hooks_get_the_candidate_and_can_fail_or_hang(repo, tmp_path):
    log = tmp_path / "hook.log"
    hooks(repo, env=f'{sys.executable} -c "import os; open(r\'{log}\', \'w\').write(os.environ[\'CKSTORE_CANDIDATE\'] '
                    f'+ \' \' + os.environ[\'CKSTORE_ALIAS\'])"',
          fails=f'{sys.executable} -c "import sys; print(\'accuracy too low\'); sys.exit(3)"',
          hangs=f'{sys.executable} -c "import time; time.sleep(30)"')
    ok = repo.promote("HEAD", "champion", "hooked", checks=["env"])
    assert ok.moved and log.read_text() == f"{repo.resolve('HEAD')} champion"
    bad = repo.promote("HEAD~1", "champion", "x", checks=["fails"])
    assert not bad.moved and "exit 3" in bad.checks[0].detail and "accuracy too low" in bad.checks[0].detail
    slow = repo.promote("HEAD~1", "champion", "x", checks=["hangs"], timeout=0.5)
    assert not slow.moved and "timed out after 0.5 s" in slow.checks[0].detail
    assert repo.resolve("champion") == repo.resolve("HEAD")


def test_promotion_errors_change_nothing(repo):
    with pytest.raises(UsageError, match="needs at least one check"):
        repo.promote("HEAD", "champion", "no checks")
    with pytest.raises(UsageError, match="cannot read gate"):
        repo.promote("HEAD", "champion", "x", gates=["val_loss is small"])
    with pytest.raises(UsageError, match="unknown check 'nope'"):
        repo.promote("HEAD", "champion", "x", checks=["nope"])
    with pytest.raises(UsageError, match="reason"):
        repo.promote("HEAD", "champion", "", checks=["verify"])
    missing = repo.promote("HEAD", "champion", "x", gates=["metrics.acc >= 0.7"])
    assert not missing.moved and "has no number for metrics.acc" in missing.checks[0].detail
    with pytest.raises(ProtectedRef):
        repo.alias_set("champion", "HEAD", "around the gate")
    assert repo.aliases() == [] and not repo.notes("HEAD", ns="champion")


def test_describe_and_names_resolve(repo):
    repo.tag("v1", "HEAD~3")
    assert repo.describe("HEAD~3") == "v1"
    name = repo.describe("HEAD")
    assert name == f"v1-3-g{repo.resolve('HEAD')[:8]}" and repo.resolve(name) == repo.resolve("HEAD")
    repo.promote("HEAD~1", "champion", "x", checks=["verify"])
    assert repo.describe("HEAD").startswith("champion-1-g")  # aliases are preferred to tags
    repo.set_name_template("{model}-{branch}-v{n}")
    assert repo.show("HEAD~1").name == "mlp-main-v3"
    assert repo.resolve("mlp-main-v3") == repo.resolve("HEAD~1")
    fields = repo.parse_name("mlp-main-v3")
    assert fields["model"] == "mlp" and fields["n"] == "3" and fields["commit"] == repo.resolve("HEAD~1")
    with pytest.raises(UsageError, match="not a describe name"):
        repo.parse_name("something-else")
    with pytest.raises(UsageError, match="plain field name"):
        repo.set_name_template("{model!r}-x")
    with pytest.raises(UnknownRevision):
        repo.resolve("mlp-main-v9")
