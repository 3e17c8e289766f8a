"""Lane layout of a commit graph for drawing: a column per commit and the lines to its parents.

Pure: the input is commits newest first with their parents; the output gives every row its dot's column and
one edge per parent: [from_col, to_col, end_row]. A renderer draws the edge from the dot to `to_col` on the next
row and, when `end_row` is given, straight down that lane to the parent's dot on row `end_row` — so a branch is
one line however many rows it passes, and nothing is sent per passing lane per row. `end_row` is None where the
lane was already open (a second child joining it) or the parent is not among the rows.
"""

from __future__ import annotations

from typing import Iterable


def layout(rows: Iterable[tuple[str, list[str]]]) -> list[dict]:
    """For (id, parents) newest first: [{"col": c, "edges": [[from_col, to_col, end_row | None], ...]}] per
    row, lanes reused as soon as they close, like `git log --graph`. A commit's first parent keeps its lane."""
    lanes: list[str | None] = []  # the commit each open lane is waiting for
    out: list[dict] = []
    waiting: dict[str, list[list]] = {}  # parent id -> edges whose end_row is that parent's row
    for index, (oid, parents) in enumerate(rows):
        for edge in waiting.pop(oid, ()):
            edge[2] = index
        if oid in lanes:
            col = lanes.index(oid)
        else:  # a tip: the first free lane
            col = lanes.index(None) if None in lanes else len(lanes)
            if col == len(lanes):
                lanes.append(None)
        lanes[col] = None
        edges: list[list] = []
        for k, p in enumerate(parents):
            if p in lanes:  # a lane already waits for that parent: join it
                edges.append([col, lanes.index(p), None])
                continue
            if k == 0:
                target = col
            else:
                target = lanes.index(None) if None in lanes else len(lanes)
                if target == len(lanes):
                    lanes.append(None)
            lanes[target] = p
            edge = [col, target, None]
            waiting.setdefault(p, []).append(edge)
            edges.append(edge)
        while lanes and lanes[-1] is None:
            lanes.pop()
        out.append({"col": col, "edges": edges})
    return out


def width(layout_rows: list[dict]) -> int:
    """The number of columns the layout uses."""
    return 1 + max((max([r["col"], *(e[1] for e in r["edges"])]) for r in layout_rows), default=0)
