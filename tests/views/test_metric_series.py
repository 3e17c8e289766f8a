"""views.metrics: the error that says why a curve would be empty, naming what can be plotted."""

from __future__ import annotations

import numpy as np
import pytest

from ckstore.errors import UsageError
from ckstore.views.metrics import require_points, series


@pytest.fixture
def runs(repo):
    w = {"w": np.zeros(4, np.float32)}
    repo.commit(w, "a", metrics={"val_loss": 1.0, "acc": 0.5}, capture_env=False)  # no step
    repo.note_add("HEAD", {"mmlu": 0.4}, ns="eval")
    return repo


def test_a_plottable_name_passes(runs) -> None:
    view = series(runs, "val_loss", x="index")
    require_points(runs, view)
    assert [len(s["points"]) for s in view["series"]] == [1]


@pytest.mark.parametrize("name, message, hint", [
    ("val_los", "no commit has a numeric 'val_los'; did you mean val_loss?", "plottable: acc, val_loss, notes.eval"),
    ("metrics.val_los", "did you mean metrics.val_loss", "plottable: acc, val_loss, notes.eval.mmlu"),
    ("notes.eval.mmlx", "did you mean notes.eval.mmlu?", "plottable:"),
])
def test_an_unknown_name_suggests_known_ones(runs, name: str, message: str, hint: str) -> None:
    with pytest.raises(UsageError) as e:
        require_points(runs, series(runs, name, x="index"))
    assert message in str(e.value) and hint in e.value.hint
    assert e.value.exit_code == 2


def test_a_known_name_without_points_on_the_axis_says_so(runs) -> None:
    with pytest.raises(UsageError, match="no commit with 'val_loss' has a step") as e:
        require_points(runs, series(runs, "val_loss"))
    assert "--x index" in e.value.hint


def test_a_known_name_off_every_branch_says_so(runs) -> None:
    runs.tag("only-tag")
    runs.commit({"w": np.ones(4, np.float32)}, "b", metrics={"lr": 0.1}, branch="gone", capture_env=False)
    runs.tag("keep", "gone")
    runs.delete_branch("gone", force=True)
    with pytest.raises(UsageError, match="no branch's first-parent history has 'lr'") as e:
        require_points(runs, series(runs, "lr", x="index"))
    assert "--by none" in e.value.hint
    assert [len(s["points"]) for s in series(runs, "lr", by="none", x="index")["series"]] == [1]


def test_an_empty_repository_says_there_is_nothing_yet(repo) -> None:
    with pytest.raises(UsageError, match="no commit has a numeric 'loss'") as e:
        require_points(repo, series(repo, "loss"))
    assert e.value.hint == "no commit has a metric or numeric note yet"
