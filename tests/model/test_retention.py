"""Retention rules (pure): each rule, the ORing, branch tips, the resume rule of --keep-best, and refusals."""

import calendar

import pytest

from ckstore.errors import UsageError
from ckstore.model.retention import TIP, Candidate, Policy, decide, parse_duration

DAY = 86400.0
NOW = calendar.timegm((2026, 12, 1, 12, 0, 0))


def series(n, *, every=DAY, group="main", metric=None, tagged=()):
    """n commits, newest first at NOW, one every `every` seconds; the newest is the branch tip."""
    out = []
    for i in range(n):
        metrics = {"loss": metric[i]} if metric else {}
        out.append(Candidate(bytes([i]) * 32, NOW - i * every, metrics, (group,), tips=(group,) if i == 0 else (),
                             tagged=i in tagged))
    return out


def kept(cands):
    return [c.oid[0] for c in cands if c.reasons]


@pytest.mark.parametrize("text,seconds", [("7d", 7 * DAY), ("12h", 43200), ("90m", 5400), ("30s", 30),
                                          ("1w", 7 * DAY), ("2mo", 60 * DAY), ("1y6mo", 545 * DAY),
                                          ("1.5h", 5400), (" 3D ", 3 * DAY)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "7d3", "-1d", "1d 2h", "7 days"])
def test_bad_durations_are_refused(text):
    with pytest.raises(UsageError, match="cannot read duration"):
        parse_duration(text)


def test_keep_last():
    out = decide(series(10), Policy(keep_last=3), NOW)
    assert kept(out) == [0, 1, 2]
    assert out[0].reasons == ["last 3 of main", TIP]


def test_keep_within():
    assert kept(decide(series(10), Policy(keep_within=parse_duration("3d")), NOW)) == [0, 1, 2, 3]


def test_keep_daily_takes_the_newest_of_each_day():
    cands = series(12, every=DAY / 4)  # four commits a day
    # NOW is noon: 0 (12:00), 1 (06:00), 2 (00:00) are today; 3 (18:00) is the newest of the day before
    assert kept(decide(cands, Policy(keep_daily=2), NOW)) == [0, 3]


def test_keep_weekly_and_monthly():
    cands = series(70)
    assert len(kept(decide(cands, Policy(keep_weekly=4), NOW))) == 4
    assert len(kept(decide(series(70), Policy(keep_monthly=2), NOW))) == 2


def test_keep_best_keeps_the_latest_for_resume():
    losses = [0.9, 0.5, 0.1, 0.2, 0.8]  # the newest (index 0) is not among the best
    cands = series(5, metric=losses)
    cands[0].tips = ()  # not a branch tip here: the resume rule itself must keep it
    out = decide(cands, Policy(keep_best=2, metric="loss"), NOW)
    assert kept(out) == [0, 2, 3]
    assert out[0].reasons == ["latest of main (to resume)"]
    assert "best 1 by loss of main" in out[2].reasons


def test_keep_best_max_and_ties_prefer_newer():
    cands = series(4, metric=[0.5, 0.7, 0.7, 0.1])
    out = decide(cands, Policy(keep_best=1, metric="loss", mode="max"), NOW)
    assert "best 1 by loss of main" in out[1].reasons and not out[2].reasons


def test_rules_are_ored_and_tags_kept():
    out = decide(series(10, tagged=(7,)), Policy(keep_last=2, keep_within=parse_duration("4d")), NOW)
    assert kept(out) == [0, 1, 2, 3, 4, 7]
    assert kept(decide(series(10, tagged=(7,)), Policy(keep_last=2, keep_tagged=False), NOW)) == [0, 1]


def test_keep_ref_glob():
    cands = series(5)
    cands[3].refs = ("release/1.0",)
    assert kept(decide(cands, Policy(keep_refs=("release/*",), keep_last=1), NOW)) == [0, 3]


def test_groups_per_branch_or_none():
    def two_branches():
        a, b = series(4, group="a"), series(4, group="b", every=DAY * 1.5)
        for c in b:
            c.oid, c.time = b"\xff" + c.oid[1:], c.time - 3600
        return a + b
    per = decide(two_branches(), Policy(keep_last=2), NOW)
    assert sum(any(r.startswith("last 2 of") for r in c.reasons) for c in per) == 4  # two of each branch
    one = decide(two_branches(), Policy(keep_last=3, group_by="none"), NOW)
    by_rule = [c for c in one if "last 3" in c.reasons]
    assert [c.time for c in by_rule] == sorted((c.time for c in one), reverse=True)[:3]  # the newest 3 overall
    assert {c.groups[0] for c in one if c.reasons} == {"a", "b"}  # b's tip is still kept, as a tip


def test_empty_policy_refused():
    with pytest.raises(UsageError, match="empty retention policy"):
        decide(series(3), Policy(), NOW)
    with pytest.raises(UsageError, match="empty retention policy"):
        decide(series(3), Policy(keep_tagged=False), NOW)


def test_policy_keeping_nothing_by_its_own_rules_refused():
    with pytest.raises(UsageError, match="keeps no commit by its own rules"):
        decide(series(3, every=30 * DAY)[1:], Policy(keep_within=parse_duration("1d")), NOW)


def test_unknown_metric_refused():
    with pytest.raises(UsageError, match="no commit has a metric named 'acc'"):
        decide(series(3, metric=[1, 2, 3]), Policy(keep_best=1, metric="acc"), NOW)


@pytest.mark.parametrize("kwargs,match", [({"keep_last": -1}, "keep-last"), ({"keep_best": 2}, "needs --metric"),
                                          ({"metric": "x"}, "used with --keep-best"), ({"mode": "mid"}, "--min"),
                                          ({"group_by": "tag"}, "group-by"), ({"keep_within": float("nan")}, "")])
def test_bad_policies_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        Policy(**kwargs)


def test_policy_round_trips_through_its_dict():
    p = Policy(keep_last=5, keep_best=3, metric="val_loss", keep_refs=("release/*",), keep_within=7 * DAY)
    assert Policy.from_dict(p.to_dict()) == p
    assert p.describe() == "keep-last 5, keep-within 1w, keep-best 3 by val_loss (min), keep-ref release/*, keep-tagged"
    with pytest.raises(UsageError):
        Policy.from_dict({"keep_last": "5"})
