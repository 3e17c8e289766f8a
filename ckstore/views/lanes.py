"""Lane layout of a commit graph for drawing: a column per commit and the line segments to the next row.

Pure: the input is commits newest first with their parents; the output says, for every row, where its dot goes
and which lines leave it downwards, so a renderer draws row i's segments from y(i) to y(i+1) without knowing
the graph.
"""

from __future__ import annotations

from typing import Iterable


def layout(rows: Iterable[tuple[str, list[str]]]) -> list[dict]:
    """For (id, parents) newest first: [{"col": c, "edges": [[from_col, to_col, kind], ...]}] per row, where an
    edge leaves this row at from_col and reaches the next row at to_col; kind is "parent" (from the commit's
    dot) or "pass" (a lane going by). Lanes close as soon as they are joined, like `git log --graph`."""
    lanes: list[str | None] = []
    out = []
    for oid, parents in rows:
        if oid in lanes:
            col = lanes.index(oid)
            for i, lane in enumerate(lanes):  # other lanes waiting for this commit join it here: the lines
                if lane == oid and i != col:  # that reached them from the row above bend to this dot instead
                    lanes[i] = None
                    for e in out[-1]["edges"] if out else ():
                        if e[1] == i:
                            e[1] = col
        else:
            col = lanes.index(None) if None in lanes else len(lanes)
            if col == len(lanes):
                lanes.append(None)
        before = list(lanes)
        lanes[col] = None
        targets: list[int] = []
        for k, p in enumerate(parents):
            if p in lanes:
                targets.append(lanes.index(p))  # a lane already waits for that parent: merge into it
            elif k == 0:
                lanes[col] = p
                targets.append(col)
            else:
                j = lanes.index(None) if None in lanes else len(lanes)
                if j == len(lanes):
                    lanes.append(None)
                lanes[j] = p
                targets.append(j)
        edges = [[col, t, "parent"] for t in targets]
        edges += [[i, i, "pass"] for i, lane in enumerate(before) if lane is not None and i != col]
        while lanes and lanes[-1] is None:
            lanes.pop()
        out.append({"col": col, "edges": edges})
    return out


def width(layout_rows: list[dict]) -> int:
    """The number of columns the layout uses."""
    return 1 + max((max([r["col"], *(max(e[0], e[1]) for e in r["edges"])]) for r in layout_rows), default=0)
