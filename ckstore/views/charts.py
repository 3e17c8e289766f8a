"""The three pictures as matplotlib figures, built from the views' data: metric curves, the per-layer change map
and the commit graph.

matplotlib is imported inside the functions: it is an optional extra (`ckstore[plot]`), so importing ckstore
never needs it (nor pays its import time) and its absence is one clear error (`draw.require_matplotlib`).
Figures are made with `Figure` directly, never through pyplot, so no display, backend choice or global figure
list is involved. Every element a reader looks for carries a `gid` (`series-LABEL`, `cell-TENSOR`,
`commit-ID`), which becomes its id in an SVG.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from . import lanes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
UNCHANGED = "#d9d9d9"  # grey: far from every colour of the viridis scale that changed tensors get
ADDED = "#c7e9c0"
REMOVED = "#fcbba1"
RESHAPED = "#fdd0a2"  # changed, but without element statistics (new shape or dtype, complex values)
NONFINITE = "#e7298a"  # changed with an infinite or NaN ‖Δ‖/‖old‖ (the old tensor's norm was 0 or NaN)
FILLS = {"unchanged": UNCHANGED, "added": ADDED, "removed": REMOVED, "reshaped": RESHAPED}
MARKS = {"added": "+", "removed": "−", "reshaped": "≠"}
AXIS_LABELS = {"step": "step", "time": "time", "index": "commit (oldest first)"}
OTHER = "(other)"  # the panel of tensors outside any numbered group


def palette(n: int) -> list[tuple[str, str]]:
    """n distinct (colour, line style) pairs: tab10's colours, then tab20's, then the same again dashed."""
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    styles = ("-", "--", ":", "-.")
    return [(cmap(i % cmap.N), styles[i // cmap.N % len(styles)]) for i in range(n)]


def figure(width_in: float, height_in: float, *, layout: str | None = None) -> Figure:
    """A figure of the given size in inches at DPI, drawn without pyplot."""
    from matplotlib.figure import Figure
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout=layout)


# ------------------------------------------------------------------------------------------------------ metric


def metric_chart(view: dict[str, Any], *, title: str | None = None,
                 size: tuple[int, int] | None = None) -> Figure:
    """One line per series of a `metrics.series` view, a marker at every commit, a legend of the labels."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import MaxNLocator
    w, h = size or (1000, 600)
    fig = figure(w / DPI, h / DPI, layout="constrained")
    ax = fig.add_subplot()
    lines = []
    for s, (colour, style) in zip(view["series"], palette(len(view["series"]))):
        xs: list[Any] = [p["x"] for p in s["points"]]
        if view["x"] == "time":
            xs = [datetime.fromtimestamp(t) for t in xs]  # local time, as `ckstore log` prints it
        line, = ax.plot(xs, [p["y"] for p in s["points"]], marker="o", markersize=4, linewidth=1.5, color=colour,
                        linestyle=style, gid=f"series-{s['label']}")
        lines.append(line)
    if view["x"] == "time":
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # handles given explicitly: matplotlib would leave out a label starting with "_" (a branch may be so named)
    ax.legend(lines, [s["label"] for s in view["series"]], title="branch" if view["by"] == "branch" else None,
              fontsize=8)
    ax.set_xlabel(AXIS_LABELS[view["x"]])
    ax.set_ylabel(view["name"])
    ax.set_title(title if title is not None else f"{view['name']} by {AXIS_LABELS[view['x']]}")
    ax.grid(alpha=0.3)
    return fig


# -------------------------------------------------------------------------------------------------------- heat

CELL = 0.3  # inches per cell unless a --size says otherwise
CHAR = 0.06  # inches per character of a 7-point label (an estimate: the layout is computed before drawing)
GAP = 0.3
TOP, BOTTOM, SIDE = 0.75, 1.0, 0.25  # title and panel names; colour bar and legend; left and right margins


def panels(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels of a `heat.heat` view: each group, then the other tensors as one row."""
    out = list(view["groups"])
    if view["other"]:
        out.append({"name": OTHER, "rows": [""], "cols": [c["name"] for c in view["other"]],
                    "cells": [list(view["other"])]})
    return out


def heat_chart(view: dict[str, Any], *, title: str, size: tuple[int, int] | None = None) -> Figure:
    """The change map: one panel per group (rows the layer index, columns the tensor suffix), each cell coloured
    by ‖Δ‖/‖old‖ on a log scale when changed, grey when unchanged, marked when added, removed or reshaped."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter
    ps = panels(view)
    if not ps:
        raise UsageError("neither revision has tensors: there is no change map to draw",
                         hint="`ckstore diff A B` lists the files that changed")
    cell, font, label_h, row_w, w_in, h_in = _heat_layout(ps, size)
    fig = figure(w_in, h_in)
    changed = [c["rel_l2"] for p in ps for r in p["cells"] for c in r
               if c and c["status"] == "changed" and math.isfinite(c["rel_l2"]) and c["rel_l2"] > 0]
    lo, hi = (min(changed), max(changed)) if changed else (1e-3, 1.0)
    norm = LogNorm(lo / 10, hi * 10) if lo == hi else LogNorm(lo, hi)  # relative changes span decades
    cmap = colormaps["viridis"]
    x = SIDE
    for p, rw in zip(ps, row_w):
        x += rw
        ax = fig.add_axes((x / w_in, (h_in - TOP - label_h - len(p["rows"]) * cell) / h_in,
                           len(p["cols"]) * cell / w_in, len(p["rows"]) * cell / h_in))
        _heat_panel(ax, p, cell, font, lambda v: cmap(norm(max(v, lo))))
        # names on one line above every panel's column labels (an axes title would sit at its own labels' height)
        fig.text((x - rw) / w_in, (h_in - TOP + 0.08) / h_in, p["name"], fontsize=8, va="bottom")
        x += len(p["cols"]) * cell + GAP
    cax = fig.add_axes((SIDE / w_in, 0.55 / h_in, min(3.0, w_in / 2 - SIDE) / w_in, 0.14 / h_in))
    bar = fig.colorbar(ScalarMappable(norm, cmap), cax=cax, orientation="horizontal")
    bar.set_label("‖Δ‖ / ‖old‖ of changed tensors", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.ax.xaxis.set_minor_formatter(NullFormatter())  # within a decade or two, minor labels pile onto each other
    statuses = {c["status"] for p in ps for r in p["cells"] for c in r if c}
    nonfinite = any(c and c["status"] == "changed" and not math.isfinite(c["rel_l2"])
                    for p in ps for r in p["cells"] for c in r)
    handles = [Patch(facecolor=FILLS[s], label=f"{MARKS.get(s, '')} {s}".strip()) for s in FILLS if s in statuses]
    if nonfinite:
        handles.append(Patch(facecolor=NONFINITE, label="‖Δ‖/‖old‖ not finite"))
    fig.legend(handles=handles, loc="lower right", bbox_to_anchor=(1 - SIDE / w_in, 0.3 / h_in), ncols=2,
               fontsize=7, frameon=False)
    fig.suptitle(title, x=SIDE / w_in, y=1 - 0.1 / h_in, ha="left", va="top", fontsize=10)
    return fig


def _heat_layout(ps: list[dict[str, Any]], size: tuple[int, int] | None) -> tuple[float, float, float, list[float],
                                                                                 float, float]:
    """(cell side, label font size, column label height, row label widths, figure width, height), in inches and
    points: cells of CELL inches unless --size or a very big model asks for smaller ones, labels shrinking with
    the cells so that neighbours do not overlap."""
    ncols, nrows = sum(len(p["cols"]) for p in ps), max(len(p["rows"]) for p in ps)
    longest_col = max(len(_short(c)) for p in ps for c in p["cols"])
    longest_rows = [max((len(r) for r in p["rows"]), default=0) for p in ps]
    cell = CELL
    for _ in range(4):  # smaller labels leave the cells a little more room: this settles in a few rounds
        font = max(2.0, min(7.0, cell * 72 * 0.75))
        char = CHAR * font / 7
        label_h, row_w = longest_col * char + 0.15, [n * char + 0.15 for n in longest_rows]
        fixed_w, fixed_h = 2 * SIDE + sum(row_w) + GAP * (len(ps) - 1), TOP + label_h + BOTTOM
        w_in, h_in = (size[0] / DPI, size[1] / DPI) if size else (150.0, 150.0)  # big models: within 150 inches
        cell = min(CELL if not size else math.inf, (w_in - fixed_w) / ncols, (h_in - fixed_h) / nrows)
    if cell < 0.02:
        raise UsageError(f"{nrows} rows and {ncols} columns of cells do not fit in {w_in * DPI:.0f}x{h_in * DPI:.0f} "
                         "pixels", hint="leave out --size to get a fitting size" if size else "")
    if not size:
        w_in, h_in = max(7.0, fixed_w + ncols * cell), fixed_h + nrows * cell
    return cell, font, label_h, row_w, w_in, h_in


def _heat_panel(ax: Any, panel: dict[str, Any], cell: float, font: float, colour: Any) -> None:
    """One group's cells on `ax`, data coordinates one unit per cell, row 0 at the top."""
    from matplotlib.patches import Rectangle
    nrows, ncols = len(panel["rows"]), len(panel["cols"])
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    mark_size = cell * 72 * 0.6
    for i, row in enumerate(panel["cells"]):
        for j, c in enumerate(row):
            if c is None:
                continue  # no tensor of this suffix in this layer: left blank
            if c["status"] == "changed":
                fill = colour(c["rel_l2"]) if math.isfinite(c["rel_l2"]) else NONFINITE
            else:
                fill = FILLS[c["status"]]
            # one patch per tensor (not one mesh per panel) so each carries its name as its SVG id
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=fill, edgecolor="white", linewidth=0.5,
                                   gid=f"cell-{c['name']}"))
            if c["status"] in MARKS and mark_size >= 5:
                ax.text(j + 0.5, i + 0.5, MARKS[c["status"]], ha="center", va="center", fontsize=mark_size)
    ax.set_xticks([j + 0.5 for j in range(ncols)], [_short(c) for c in panel["cols"]], rotation=90, fontsize=font)
    ax.set_yticks([i + 0.5 for i in range(nrows)], panel["rows"], fontsize=font)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False, length=0)
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")


def _short(label: str, n: int = 40) -> str:
    """A column label of at most n characters, keeping its end (the part that tells tensors apart)."""
    return label if len(label) <= n else "…" + label[-(n - 1):]


# ----------------------------------------------------------------------------------------------------- lineage

ROW, LANE, HEAD_ROOM = 0.3, 0.3, 0.5  # inches per commit row, per lane, and above the graph for the title
GREY = "#888888"
TAG_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "#fff3b0", "edgecolor": "#b59f00", "linewidth": 0.6}
ALIAS_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "#e5d8f5", "edgecolor": "#6a3d9a", "linewidth": 0.6}


def lineage_chart(view: dict[str, Any], *, title: str, size: tuple[int, int] | None = None,
                  limit: int | None = None) -> Figure:
    """The commit graph of a `history.history` view: a dot per commit in its lane (coloured by its branch), the
    lines to its parents, then its short id, branch, tag and alias labels and message; the newest `limit` rows."""
    rows = view["commits"][:limit] if limit is not None else view["commits"]
    if not rows:
        raise UsageError("there are no commits to draw", hint="commit a checkpoint first: `ckstore commit`")
    left_out = len(view["commits"]) - len(rows)
    width = lanes.width(rows)
    branches = sorted(view["refs"]["branches"])
    colours = {b: c for b, (c, _) in zip(branches, palette(len(branches)))}
    text_in = max(len(_row_text(r)) for r in rows) * CHAR * 1.2 + 0.5
    bottom = 0.2 + (0.3 if left_out else 0)
    if size:
        w_in, h_in = size[0] / DPI, size[1] / DPI
    else:
        w_in, h_in = min(40.0, max(7.0, SIDE + width * LANE + text_in)), HEAD_ROOM + len(rows) * ROW + bottom
    row_h = (h_in - HEAD_ROOM - bottom) / len(rows)
    if row_h < 0.05:  # only a --size can squeeze the rows this far
        raise UsageError(f"{len(rows)} commits do not fit in {w_in * DPI:.0f}x{h_in * DPI:.0f} pixels",
                         hint="draw fewer (-n N), or leave out --size")
    fig = figure(w_in, h_in)
    ax = fig.add_axes((0, bottom / h_in, 1, len(rows) * row_h / h_in))
    ax.axis("off")
    x0 = -0.5 - SIDE / LANE
    ax.set_xlim(x0, x0 + w_in / LANE)  # one data unit per lane, whatever the width
    ax.set_ylim(len(rows) - 0.5, -0.5)
    for i, r in enumerate(rows):
        colour = colours.get(r["branch"], GREY)
        _edges(ax, i, r, colour, colours, len(rows) - 0.5)
        ax.plot([r["col"]], [i], marker="o", markersize=7, color=colour, markeredgecolor="white", linestyle="none",
                zorder=3, gid=f"commit-{r['id']}")
        _labels(ax, width - 0.3, i, r, colours, view["refs"]["head"]["branch"])
    if left_out:
        fig.text(SIDE / w_in, 0.1 / h_in, f"… {left_out} older commits not shown", fontsize=8, color=GREY)
    fig.suptitle(title, x=SIDE / w_in, y=1 - 0.1 / h_in, ha="left", va="top", fontsize=10)
    return fig


def _edges(ax: Any, i: int, row: dict[str, Any], colour: Any, colours: dict[str, Any], bottom: int) -> None:
    """Draw row i's lines to its parents: to the parent's lane on the next row, then, for the line that opened
    the lane, straight down to the parent's row (or the last row drawn). A first parent's line has its child's
    colour, a merged-in parent's its own branch's."""
    for k, (a, b, end) in enumerate(row["edges"]):
        c = colour if k == 0 else colours.get(row["parent_branches"][k], GREY)
        ax.plot([a, b], [i, i + 1], color=c, linewidth=1.6, solid_capstyle="round", zorder=2)
        if end is not None and end > i + 1:
            ax.plot([b, b], [i + 1, min(end, bottom)], color=c, linewidth=1.6, solid_capstyle="round", zorder=2)


def _row_text(row: dict[str, Any]) -> str:
    """Everything written on a row, for estimating its width."""
    refs = row["branches"] + [f"tag: {t}" for t in row["tags"]] + [f"alias: {a}" for a in row["aliases"]]
    return "   ".join([row["id"][:12], *refs, _message(row)])


def _message(row: dict[str, Any], n: int = 80) -> str:
    m = row["message"]
    return m if len(m) <= n else m[:n - 1] + "…"


def _labels(ax: Any, x: float, i: int, row: dict[str, Any], colours: dict[str, Any], head: str) -> None:
    """The short id, then each label in its box, then the message, each placed after the one before; labels
    carry `ref-KIND-NAME` ids, the message `message-ID`."""
    prev = ax.text(x, i, row["id"][:12], va="center", fontsize=8, family="monospace", color="#555555")
    labels = [(f"HEAD → {b}" if b == head else b, f"ref-branch-{b}",
               {"boxstyle": "round,pad=0.2", "facecolor": colours.get(b, GREY), "edgecolor": "none"}, "white")
              for b in row["branches"]]
    labels += [(f"tag: {t}", f"ref-tag-{t}", TAG_BOX, "black") for t in row["tags"]]
    labels += [(f"alias: {a}", f"ref-alias-{a}", ALIAS_BOX, "black") for a in row["aliases"]]
    for text, gid, box, fg in labels + [(_message(row), f"message-{row['id']}", None, "black")]:
        prev = ax.annotate(text, xy=(1, 0.5), xycoords=prev, xytext=(7, 0), textcoords="offset points",
                           va="center", fontsize=8, color=fg, bbox=box, gid=gid)
