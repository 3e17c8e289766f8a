"""`diff --hist`: one tensor's value histograms in two commits, drawn side by side with block characters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from ..errors import UsageError
from ..model import stats
from ..model.diff import Diff
from .app import emit

BAR = 28  # cells per bar: two sides, the labels and the counts fit 100 columns
EIGHTHS = " ▏▎▍▌▋▊▉"


@dataclass(frozen=True, slots=True)
class Side:
    """One commit's view of the tensor: the commit id, its statistics, and whether they were computed now from
    the data (stored statistics from before histograms)."""

    commit: str
    stats: dict
    computed: bool

    def to_dict(self) -> dict:
        """The JSON form: commit, computed, and count, zeros, nan, inf, hist and hist_of (the elements the bins
        were counted over; null for a tensor that has no statistics, such as a complex one)."""
        h = stats.histogram(self.stats)
        return {"commit": self.commit, "computed": self.computed,
                **{k: self.stats.get(k) for k in ("count", "zeros", "nan", "inf", "hist")},
                "hist_of": h[2] if h else None}


def show_hists(repo: Any, d: Diff, name: str, as_json: bool) -> None:
    """Print tensor `name`'s histograms in the two commits of diff `d` (JSON with `as_json`); UsageError when
    neither commit has the tensor."""
    old, new = (_side(repo, commit, name) if commit else None for commit in (d.old, d.new))
    if old is None and new is None:
        where = f"{d.old[:12]} or {d.new[:12]}" if d.old else d.new[:12]
        raise UsageError(f"no tensor named {name!r} in {where}", hint="see `ckstore show REV` for the tensor names")
    if as_json:
        return emit({"tensor": name, "edges": stats.hist_edges(), "old": old and old.to_dict(),
                     "new": new and new.to_dict()})
    render_hists(name, d, old, new)


def _side(repo: Any, commit: str, name: str) -> Side | None:
    """The tensor's statistics in `commit` (None when it has no such tensor); stale ones are computed again from
    the tensor's data, read through the API as any reader would."""
    found = repo.tensor_stats(commit, name)
    return None if found is None else Side(commit, *found)


def _change(d: Diff, name: str) -> str:
    """What the diff says of the tensor, in one line."""
    t = d.tensors
    if name in t["added"] or name in t["removed"]:
        return "added" if name in t["added"] else "removed"
    c = next((c for c in t["changed"] if c["name"] == name), None)
    if c is None:
        return "unchanged"
    if not c.get("comparable"):
        return f"changed: {c.get('note', '')}"
    cosine = "-" if c["cosine"] is None else f"{c['cosine']:.6g}"
    return f"changed: {c['frac_changed']:.1%} of elements, ‖Δ‖/‖old‖ {c['rel_l2']:.4g}, cosine {cosine}"


def sample_note(count: int, hist_of: int) -> str:
    """How the bins were counted when they are a sample, e.g. "bins over a 1-in-4 sample of 1,048,576 elements
    (262,144 sampled)"; "" when they are over every element."""
    if not hist_of or hist_of >= count:
        return ""
    return f"bins over a 1-in-{count / hist_of:.3g} sample of {count:,} elements ({hist_of:,} sampled)"


def bin_label(i: int) -> str:
    """Bin `i` as its sign and range of magnitudes, e.g. "-[2^-4, 2^-3)"; the outer and middle bins open-ended."""
    k = i - stats.OCTAVES if i >= stats.OCTAVES else stats.OCTAVES - 1 - i  # octave from the lowest magnitude
    lo, hi = stats.HIST_LOW + k, stats.HIST_LOW + k + 1
    span = ("(0" if k == 0 else f"[2^{lo}") + ", " + ("∞)" if k == stats.OCTAVES - 1 else f"2^{hi})")
    return ("+" if i >= stats.OCTAVES else "-") + span


def bar(fraction: float) -> str:
    """A bar `fraction` (0..1) of BAR cells long, in eighths of a cell, padded to BAR."""
    eighths = round(max(0.0, min(1.0, fraction)) * BAR * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[rest] if rest else "")).ljust(BAR)


def render_hists(name: str, d: Diff, old: Side | None, new: Side | None) -> None:
    """The two histograms as rows of bins (those between the first and last occupied), bars scaled to each side's
    share of its binned elements so versions of different sizes compare; then zeros, NaN, Inf and element counts."""
    typer.echo(f"{name}: value histograms, {d.old[:12] or '(nothing)'} → {d.new[:12]}")
    for label, commit, side in (("old", d.old, old), ("new", d.new, new)):
        if side is None and commit:
            typer.echo(f"  not in {label} {commit[:12]}")
        elif side is not None and side.computed:
            typer.echo(f"  {label} {commit[:12]}: computed from the data (its statistics predate histograms)")
    typer.echo(f"  {_change(d, name)}")
    sides = [s for s in (old, new) if s is not None]
    hists = [stats.histogram(s.stats) for s in sides]
    if any(h is None for h in hists):
        typer.echo("  no histogram: complex tensors, and block-quantized ones other than Q8_0 and Q4_0, have no "
                   "element statistics")
        return
    for side, h in zip(sides, hists):
        if note := sample_note(side.stats.get("count") or 0, h[2]):
            typer.echo(f"  {'old' if side is old else 'new'} {side.commit[:12]}: {note}")
    counts = [h[1] for h in hists]
    shares = [[n / (sum(c) or 1) for n in c] for c in counts]
    occupied = [i for i in range(stats.HIST_BINS) if any(c[i] for c in counts)]
    peak = max((sh[i] for sh in shares for i in occupied), default=1.0)
    row = lambda label, cells: typer.echo((f"{label:<16}" + "".join(cells)).rstrip())  # noqa: E731
    row("sign, |value|", (f"  {s.commit[:12]:<{BAR}} {'':>11}" for s in sides))
    for i in range(occupied[0], occupied[-1] + 1) if occupied else ():
        row(bin_label(i), (f"  {bar(sh[i] / peak)} {c[i]:>11,}" for c, sh in zip(counts, shares)))
    if not occupied:
        typer.echo("  (no finite nonzero values)")
    for label, key in (("zeros", "zeros"), ("NaN", "nan"), ("Inf", "inf"), ("elements", "count")):
        row(label, (f"  {'':<{BAR}} {s.stats.get(key, 0):>11,}" for s in sides))
