"""Text for people, computed without I/O: dates, relative dates, sparklines and `log --format` templates."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from ..errors import UsageError
from .metadata import lookup

BARS = "▁▂▃▄▅▆▇█"
SHORT_ID = 12

# git's --format names that mean something here; "full" (the default view) and "json" are the CLI's own renderers.
NAMED_FORMATS = {"oneline": "%H %s", "short": "commit %H%d%nAuthor: %an%n%n    %s%n"}


def when(ts: float) -> str:
    """A Unix timestamp (seconds) as local time, "YYYY-MM-DD HH:MM:SS +zzzz"."""
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _ago(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def relative_date(ts: float, now: float) -> str:
    """How long before `now` `ts` was, rounded the way git's %ar rounds: "5 minutes ago", "2 years, 3 months ago"."""
    s = round(now - ts)
    if s < 0:
        return "in the future"
    if s < 90:
        return _ago(s, "second") + " ago"
    minutes = (s + 30) // 60
    if minutes < 90:
        return _ago(minutes, "minute") + " ago"
    hours = (minutes + 30) // 60
    if hours < 36:
        return _ago(hours, "hour") + " ago"
    days = (hours + 12) // 24
    if days < 14:
        return _ago(days, "day") + " ago"
    if days < 70:
        return _ago((days + 3) // 7, "week") + " ago"
    if days < 365:
        return _ago((days + 15) // 30, "month") + " ago"
    if days < 1825:  # under five years, with the months
        years, months = divmod((days * 12 * 2 + 365) // (365 * 2), 12)
        return f"{_ago(years, 'year')}, {_ago(months, 'month')} ago" if months else _ago(years, "year") + " ago"
    return _ago((days + 183) // 365, "year") + " ago"


def is_number(value: Any) -> bool:
    """A finite int or float (bools are not numbers here, NaN and infinities are missing values)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sparkline(values: Sequence[Any]) -> str:
    """One bar per value, ▁ at the lowest to █ at the highest; a value that is not a finite number is a space."""
    nums = [v for v in values if is_number(v)]
    lo, hi = (min(nums), max(nums)) if nums else (0.0, 0.0)
    out = []
    for v in values:
        if not is_number(v):
            out.append(" ")
        elif hi == lo:
            out.append(BARS[3])  # one level: a flat line in the middle, so no value looks like a low or a peak
        else:
            out.append(BARS[round((v - lo) / (hi - lo) * (len(BARS) - 1))])
    return "".join(out)


def value_text(value: Any) -> str:
    """A metadata value as a format placeholder prints it: strings as they are, nothing for a missing value,
    anything else as JSON (0.25, true, [1, 2])."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _name_email(author: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*(.*?)\s*<([^<>]*)>\s*", author)
    return (m.group(1), m.group(2)) if m else (author, "")


def subject(message: str) -> str:
    """A commit message's first line: what one-line views show."""
    return message.partition("\n")[0]


def body(message: str) -> str:
    """A commit message after its first line, without the blank lines around it."""
    return message.partition("\n")[2].strip("\n")


def _decorations(record: dict) -> str:
    return ", ".join(record.get("refs") or ())


_Field = Callable[[dict, float], str]

_FIELDS: dict[str, _Field] = {
    "H": lambda r, now: r["id"],
    "h": lambda r, now: r["id"][:SHORT_ID],
    "s": lambda r, now: subject(r["message"]),
    "b": lambda r, now: body(r["message"]),
    "an": lambda r, now: _name_email(r["author"])[0],
    "ae": lambda r, now: _name_email(r["author"])[1],
    "ad": lambda r, now: when(r["time"]),
    "ar": lambda r, now: relative_date(r["time"], now),
    "at": lambda r, now: str(int(r["time"])),
    "d": lambda r, now: f" ({_decorations(r)})" if r.get("refs") else "",
    "D": lambda r, now: _decorations(r),
    "p": lambda r, now: " ".join(p[:SHORT_ID] for p in r["parents"]),
    "P": lambda r, now: " ".join(r["parents"]),
    "n": lambda r, now: "\n",
    "%": lambda r, now: "%",
}


def _metric(name: str) -> _Field:
    def get(r: dict, now: float) -> str:
        metrics = r.get("metrics") or {}
        return value_text(metrics[name] if name in metrics else lookup(metrics, name)[1])  # "val/loss", "eval.acc"
    return get


def _section(section: str, name: str) -> _Field:
    return lambda r, now: value_text(lookup(r.get(section) or {}, name)[1])


_KEYED = {"metric": _metric, "param": lambda name: _section("params", name),
          "note": lambda name: _section("notes", name)}


def _placeholder(text: str) -> _Field:
    """The field a `%(...)` placeholder names; UsageError naming it when it is not one."""
    if text == "%(step)":
        return lambda r, now: value_text(r.get("step"))
    kind, sep, name = text[2:-1].partition(":")
    if kind in _KEYED and sep and name:
        if kind == "note" and "." not in name:
            raise UsageError(f"--format placeholder {text} needs a namespace and a key: %(note:NS.KEY)")
        return _KEYED[kind](name)
    raise UsageError(f"unknown --format placeholder {text}",
                     hint="known: %(step), %(metric:NAME), %(param:NAME), %(note:NS.KEY)")


_TOKEN = re.compile(r"%(\([^()]*\)|an|ae|ad|ar|at|.)?", re.S)
_KNOWN = "%H %h %s %b %an %ae %ad %ar %at %d %D %p %P %n %% %(step) %(metric:NAME) %(param:NAME) %(note:NS.KEY)"


def compile_format(template: str) -> Callable[[dict, float], str]:
    """A `log --format` template as a function of (a commit's JSON record, now in Unix seconds) -> its text.

    git's placeholders (%H %h %s %b %an %ae %ad %ar %at %d %D %p %P %n %%) and ckstore's %(step), %(metric:NAME),
    %(param:NAME) and %(note:NS.KEY), NAME a dotted key; a missing value prints as nothing. An unknown placeholder
    is a UsageError naming it, raised here, before any commit is read."""
    parts: list[str | _Field] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        parts.append(template[pos:m.start()])
        pos = m.end()
        code = m.group(1)
        if code is None:
            raise UsageError("--format ends in a lone %", hint="write %% for a percent sign")
        if code.startswith("("):
            parts.append(_placeholder(m.group(0)))
        elif code in _FIELDS:
            parts.append(_FIELDS[code])
        else:
            raise UsageError(f"unknown --format placeholder %{code}", hint=f"known: {_KNOWN}")
    parts.append(template[pos:])
    return lambda record, now: "".join(p if isinstance(p, str) else p(record, now) for p in parts)
