"""ckstore.model.pretty: sparklines, git's relative dates, and `log --format` templates over a commit's JSON record."""

from __future__ import annotations

import math

import pytest

from ckstore.errors import UsageError
from ckstore.model.pretty import body, compile_format, relative_date, sparkline, subject

RECORD = {"id": "ab" * 32, "parents": ["cd" * 32, "ef" * 32], "message": "fine-tune\n\nlr 3e-4, 2 epochs\nseed 1\n",
          "author": "Ada Lovelace <ada@example.com>", "time": 1_700_000_000.0, "step": 500,
          "metrics": {"val_loss": 0.25, "val/acc": 0.9, "eval.top1": 0.5}, "params": {"optim": {"lr": 3e-4}},
          "refs": ["main", "tags/v1"], "notes": {"eval": {"mmlu": 0.61, "suite": {"v": 3}}}}


def render(template: str, record: dict = RECORD, now: float = 1_700_000_000.0) -> str:
    return compile_format(template)(record, now)


# ------------------------------------------------------------------------------------------------------- sparklines


def test_sparkline_spans_lowest_to_highest() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([10.0, 0.0, 5.0]) == "█▁▅"  # 5/10 of 7 levels rounds to the fifth bar
    assert sparkline([-1, 1]) == "▁█"


def test_sparkline_missing_values_are_spaces() -> None:
    assert sparkline([1, None, 3]) == "▁ █"
    assert sparkline([1, math.nan, math.inf, True, "x", 3]) == "▁    █"  # NaN, inf, bools and strings are no numbers
    assert sparkline([None, None]) == "  "
    assert sparkline([]) == ""


def test_sparkline_of_one_level_is_flat() -> None:
    assert sparkline([2, 2, 2]) == "▄▄▄"
    assert sparkline([None, 7]) == " ▄"


# --------------------------------------------------------------------------------------------------- relative dates


@pytest.mark.parametrize("ago, text", [
    (0, "0 seconds ago"), (1, "1 second ago"), (89, "89 seconds ago"), (90, "2 minutes ago"),
    (60 * 89, "89 minutes ago"), (3600 * 2, "2 hours ago"), (3600 * 35, "35 hours ago"),
    (86400 * 2, "2 days ago"), (86400 * 13, "13 days ago"), (86400 * 20, "3 weeks ago"),
    (86400 * 100, "3 months ago"), (86400 * 365, "1 year ago"), (86400 * 500, "1 year, 4 months ago"),
    (86400 * 365 * 7, "7 years ago"), (-60, "in the future"),
])
def test_relative_date_rounds_like_git(ago: int, text: str) -> None:
    assert relative_date(1_000_000_000.0 - ago, 1_000_000_000.0) == text


# ---------------------------------------------------------------------------------------------------------- formats


def test_git_placeholders() -> None:
    assert render("%H") == "ab" * 32
    assert render("%h") == "ab" * 6
    assert render("%s|%b") == "fine-tune|lr 3e-4, 2 epochs\nseed 1"
    assert render("%an|%ae") == "Ada Lovelace|ada@example.com"
    assert render("%at") == "1700000000"
    assert render("%ar", now=1_700_000_000.0 + 7200) == "2 hours ago"
    assert render("%d|%D") == " (main, tags/v1)|main, tags/v1"
    assert render("%p|%P") == f"{'cd' * 6} {'ef' * 6}|{'cd' * 32} {'ef' * 32}"
    assert render("a%nb%%c") == "a\nb%c"
    assert render("no placeholders") == "no placeholders"


def test_author_without_an_email_is_all_name() -> None:
    record = {**RECORD, "author": "tester@ci"}
    assert render("%an|%ae", record) == "tester@ci|"


def test_undecorated_commit_has_empty_decorations() -> None:
    record = {**RECORD, "refs": [], "parents": []}
    assert render("[%d][%D][%p]", record) == "[][][]"


def test_ckstore_placeholders() -> None:
    assert render("%(step)") == "500"
    assert render("%(metric:val_loss) %(metric:val/acc) %(metric:eval.top1)") == "0.25 0.9 0.5"
    assert render("%(param:optim.lr)") == "0.0003"
    assert render("%(param:optim)") == '{"lr": 0.0003}'
    assert render("%(note:eval.mmlu) %(note:eval.suite.v)") == "0.61 3"


def test_missing_values_print_as_nothing() -> None:
    record = {**RECORD, "step": None}
    assert render("[%(step)][%(metric:nope)][%(param:optim.beta)][%(note:eval.nope)][%(note:other.x)]",
                  record) == "[][][][][]"


def test_subject_and_body() -> None:
    assert subject("one\ntwo") == "one" and body("one\ntwo") == "two"
    assert subject("only") == "only" and body("only") == ""
    assert subject("") == ""


@pytest.mark.parametrize("template, named", [
    ("%x", "%x"), ("%h %Q", "%Q"), ("%a", "%a"), ("%(stepp)", "%(stepp)"), ("%(metric)", "%(metric)"),
    ("%(metric:)", "%(metric:)"), ("%(bogus:x)", "%(bogus:x)"), ("%(step", "%("),
])
def test_unknown_placeholder_is_named(template: str, named: str) -> None:
    with pytest.raises(UsageError) as err:
        compile_format(template)
    assert named in str(err.value), str(err.value)
    assert "unknown --format placeholder" in str(err.value)


def test_lone_percent_and_note_without_key_are_refused() -> None:
    with pytest.raises(UsageError, match="lone %"):
        compile_format("100%")
    with pytest.raises(UsageError, match="NS.KEY"):
        compile_format("%(note:eval)")
