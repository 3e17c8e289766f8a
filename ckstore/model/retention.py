"""Retention policies: which commits to keep, and the rule that keeps each (pure; `engine.forget` applies them).

Rules are ORed, as restic's are: a commit is kept when any rule keeps it. Per group (a branch or remote-tracking
branch, or one group of everything): the newest N, those within a duration, the newest of each of the last N
hours/days/weeks/months/years, and the best K by a metric. Across groups: tagged commits (unless turned off) and
those refs matching a glob name, and with --keep-noted those with notes. The tip of every branch is always kept: the newest commit is what a resume needs
(a best-K rule alone would evict it, as users of other tools report), and deleting a branch is `branch -d`'s job.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(mo|[smhdwy])")
CALENDAR = ("hourly", "daily", "weekly", "monthly", "yearly")
TIP, TAGGED = "branch tip", "tagged"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "7d", "12h", "1y6mo", "90m", "30s" (m is minutes, mo months of 30 days)."""
    s = text.strip().lower()
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(f"cannot read duration {text!r}",
                         hint="use a number and a unit: s, m (minutes), h, d, w, mo (30 days), y; e.g. 7d, 12h, 1y6mo")
    return total


@dataclass(frozen=True)
class Policy:
    """A retention policy (every count 0 / empty means "this rule is not used")."""

    keep_last: int = 0
    keep_within: float = 0.0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_best: int = 0
    metric: str | None = None
    mode: str = "min"
    keep_tagged: bool = True
    keep_refs: tuple[str, ...] = ()
    group_by: str = "branch"
    keep_noted: bool = False

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
                     "keep_best"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number ≥ 0, not {v!r}")
        if not isinstance(self.keep_within, (int, float)) or not math.isfinite(self.keep_within) or \
                self.keep_within < 0:
            raise UsageError("--keep-within must be a duration ≥ 0")
        if self.mode not in ("min", "max"):
            raise UsageError(f"--keep-best ranks by --min or --max, not {self.mode!r}")
        if self.group_by not in ("branch", "none"):
            raise UsageError(f"--group-by is branch or none, not {self.group_by!r}")
        if self.keep_best and not self.metric:
            raise UsageError("--keep-best needs --metric NAME", hint="e.g. --keep-best 3 --metric val_loss --min")
        if self.metric and not self.keep_best:
            raise UsageError("--metric is used with --keep-best K")

    @property
    def empty(self) -> bool:
        """No rule that keeps anything by itself (keep-tagged alone does not count)."""
        return not (self.keep_last or self.keep_within or self.keep_best or self.keep_refs or self.keep_noted
                    or any(getattr(self, f"keep_{c}") for c in CALENDAR))

    def describe(self) -> str:
        """The policy in the words of its command-line options."""
        parts = [f"keep-last {self.keep_last}"] if self.keep_last else []
        if self.keep_within:
            parts.append(f"keep-within {_duration_text(self.keep_within)}")
        parts += [f"keep-{c} {getattr(self, f'keep_{c}')}" for c in CALENDAR if getattr(self, f"keep_{c}")]
        if self.keep_best:
            parts.append(f"keep-best {self.keep_best} by {self.metric} ({self.mode})")
        parts += [f"keep-ref {g}" for g in self.keep_refs]
        parts.append("keep-tagged" if self.keep_tagged else "no-keep-tagged")
        if self.keep_noted:
            parts.append("keep-noted")
        if self.group_by != "branch":
            parts.append(f"group-by {self.group_by}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        """The policy as the repository config stores it."""
        d = asdict(self)
        d["keep_refs"] = list(self.keep_refs)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Policy:
        """A policy from the config (UsageError if it is not one)."""
        if not isinstance(d, dict):
            raise UsageError("the saved retention policy is not a table")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "keep_refs" in known:
            known["keep_refs"] = tuple(known["keep_refs"] or ())
        try:
            return cls(**known)
        except TypeError as exc:
            raise UsageError(f"the saved retention policy is not valid: {exc}") from None


def _duration_text(seconds: float) -> str:
    for unit in ("y", "w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass
class Candidate:
    """A commit as a policy sees it: when, its metrics, the groups it belongs to, and the refs naming it."""

    oid: bytes
    time: float
    metrics: dict
    groups: tuple[str, ...]
    refs: tuple[str, ...] = ()        # short names of refs pointing at it (tags included)
    tips: tuple[str, ...] = ()        # branches (local or remote-tracking) whose tip it is
    tagged: bool = False
    reasons: list[str] = field(default_factory=list)
    noted: bool = False               # has notes (evaluations, reviews; signatures do not count)


def _bucket(t: float, period: str) -> tuple:
    tm = time.gmtime(t)
    if period == "hourly":
        return tm.tm_year, tm.tm_yday, tm.tm_hour
    if period == "daily":
        return tm.tm_year, tm.tm_yday
    if period == "weekly":
        iso = time.strftime("%G-%V", tm)
        return (iso,)
    if period == "monthly":
        return tm.tm_year, tm.tm_mon
    return (tm.tm_year,)


def _metric(c: Candidate, name: str) -> float | None:
    v = c.metrics.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def decide(candidates: list[Candidate], policy: Policy, now: float) -> list[Candidate]:
    """Fill each candidate's `reasons` (empty: dropped) and return them newest first. Refuses a policy with no
    rule, a --keep-best metric no commit has, and a policy whose own rules keep no commit at all."""
    if policy.empty:
        raise UsageError("an empty retention policy would drop every commit but the branch tips",
                         hint="give at least one rule: --keep-last N, --keep-within 7d, --keep-daily N, "
                              "--keep-best K --metric NAME, --keep-ref GLOB (or save one with --save)")
    cands = sorted(candidates, key=lambda c: (-c.time, c.oid))
    if policy.keep_best and not any(_metric(c, policy.metric) is not None for c in cands):
        raise UsageError(f"no commit has a metric named {policy.metric!r}, so --keep-best cannot rank them",
                         hint="`ckstore find` and `ckstore show` list the metrics commits have")
    groups: dict[str, list[Candidate]] = {}
    for c in cands:
        for g in (c.groups if policy.group_by == "branch" else ("all",)):
            groups.setdefault(g, []).append(c)
    for name, members in groups.items():
        _keep_group(name, members, policy, now)
    for c in cands:
        if c.tagged and policy.keep_tagged:
            c.reasons.append(TAGGED)
        if c.noted and policy.keep_noted:
            c.reasons.append("noted")
        for g in policy.keep_refs:
            hit = [r for r in c.refs if fnmatch.fnmatchcase(r, g)]
            if hit:
                c.reasons.append(f"ref {hit[0]} matches {g}")
    if not any(r != TIP for c in cands for r in c.reasons):
        raise UsageError(f"the policy ({policy.describe()}) keeps no commit by its own rules: every commit but the "
                         "branch tips would be dropped", hint="check the numbers and the durations; --dry-run shows "
                                                              "what a policy keeps")
    for c in cands:
        if c.tips:
            c.reasons.append(TIP)
        c.reasons[:] = list(dict.fromkeys(c.reasons))
    return cands


def _keep_group(name: str, members: list[Candidate], policy: Policy, now: float) -> None:
    """The per-group rules over `members` (newest first)."""
    label = "" if policy.group_by == "none" else f" of {name}"
    for c in members[:policy.keep_last]:
        c.reasons.append(f"last {policy.keep_last}{label}")
    if policy.keep_within:
        for c in members:
            if c.time >= now - policy.keep_within:
                c.reasons.append(f"within {_duration_text(policy.keep_within)}{label}")
    for period in CALENDAR:
        n = getattr(policy, f"keep_{period}")
        seen: list[tuple] = []
        for c in members:
            if len(seen) >= n:
                break
            b = _bucket(c.time, period)
            if not seen or seen[-1] != b:
                seen.append(b)
                c.reasons.append(f"{period} {len(seen)}{label}")
    if policy.keep_best:
        ranked = [c for c in members if _metric(c, policy.metric) is not None]
        sign = 1 if policy.mode == "min" else -1
        ranked.sort(key=lambda c: (sign * _metric(c, policy.metric), -c.time))
        for i, c in enumerate(ranked[:policy.keep_best], 1):
            c.reasons.append(f"best {i} by {policy.metric}{label}")
        if members and not members[0].tips:  # the newest of a group is what a resume needs
            members[0].reasons.append(f"latest{label} (to resume)")
