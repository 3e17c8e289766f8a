"""Pictures as files: a metric's curves, a diff's change map or the commit graph, drawn by `charts` from the views'
data and written all-or-nothing as PNG, SVG or PDF (`ckstore plot`)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..fs.fileio import write_atomic
from . import charts, heat, history, metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..api import Repo

FORMATS = ("png", "svg", "pdf")
RASTER_LIMIT = 1 << 16  # Agg cannot draw an image this many pixels wide or high
# No creation date in the file: the same repository draws the same bytes (and SVG ids are salted alike)
METADATA: dict[str, dict[str, Any]] = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


@dataclass(frozen=True, slots=True)
class Picture:
    """A picture written: where, its format and size in bytes, what it shows, and its points per series."""

    path: str
    format: str
    bytes: int
    kind: str  # "metric", "diff" or "lineage"
    points: dict[str, int] = field(default_factory=dict)  # series label (line, panel) -> points (commits, cells)

    def to_dict(self) -> dict[str, Any]:
        """The picture as `--json` prints it."""
        return {"path": self.path, "format": self.format, "bytes": self.bytes, "kind": self.kind,
                "series": len(self.points), "points": dict(self.points)}


def format_of(path: Path) -> str:
    """The picture format a file name asks for by its suffix."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"{path.name}: unknown picture format {path.suffix or '(no suffix)'!r}",
                         hint=f"end the file name with {', '.join('.' + f for f in FORMATS)}")
    return fmt


def parse_size(text: str | None) -> tuple[int, int] | None:
    """"WxH" in pixels (at charts.DPI) as (W, H); None for None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or not all(16 <= int(v) < RASTER_LIMIT for v in m.groups()):
        raise UsageError(f"size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x800",
                         hint=f"each from 16 to {RASTER_LIMIT - 1}")
    return int(m[1]), int(m[2])


def default_name(kind: str, *parts: str) -> str:
    """The file a picture gets when none is named: "metric-val_loss.png" (unsafe characters become "_")."""
    return "-".join([kind, *(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts)]) + ".png"


def require_matplotlib() -> None:
    """Raise UsageError, with the extra to install, when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("drawing pictures needs matplotlib, which is not installed",
                         hint="pip install 'ckstore[plot]'") from None


def save(fig: Figure, path: Path, fmt: str) -> int:
    """Render `fig` in memory, then write it under `path` all-or-nothing (a temporary file in the same directory,
    renamed): a failure never leaves a half-written picture. Returns the bytes written."""
    import matplotlib
    w, h = fig.get_size_inches() * fig.dpi
    if fmt == "png" and max(w, h) >= RASTER_LIMIT:
        raise UsageError(f"a {w:.0f}x{h:.0f} picture is too large for PNG (at most {RASTER_LIMIT - 1} pixels a side)",
                         hint="write .svg or .pdf instead, or draw less (lineage: -n N)")
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "ckstore", "svg.fonttype": "path"}):
        fig.savefig(buf, format=fmt, dpi=charts.DPI, metadata=METADATA[fmt])
    data = buf.getbuffer()
    write_atomic(path, data, path.parent, mode=0o666)  # a file for the user: their umask, not 0600
    return len(data)


def plot_metric(repo: Repo, name: str, out: Path, *, by: str = "branch", x: str = "step", title: str | None = None,
                size: tuple[int, int] | None = None) -> Picture:
    """Draw `metrics.series(repo, name, by=, x=)` into `out`: one line per branch, a marker at every commit."""
    fmt = _prepare(out)
    view = metrics.series(repo, name, by=by, x=x)
    metrics.require_points(repo, view)
    fig = charts.metric_chart(view, title=title, size=size)
    return Picture(str(out), fmt, save(fig, out, fmt), "metric",
                   {s["label"]: len(s["points"]) for s in view["series"]})


def plot_diff(repo: Repo, a: str, b: str | None, out: Path, *, title: str | None = None,
              size: tuple[int, int] | None = None) -> Picture:
    """Draw the per-layer change map of `repo.diff(a, b)` into `out` (b None: `a` against its first parent)."""
    fmt = _prepare(out)
    d = repo.diff(a, b).to_dict()
    view = heat.heat(d)
    if title is None:
        title = f"{d['old'][:12] or '(nothing)'} → {d['new'][:12]}: change per tensor"
    fig = charts.heat_chart(view, title=title, size=size)
    cells = {p["name"]: sum(c is not None for r in p["cells"] for c in r) for p in charts.panels(view)}
    return Picture(str(out), fmt, save(fig, out, fmt), "diff", cells)


def plot_lineage(repo: Repo, out: Path, *, rev: str | None = "HEAD", limit: int | None = None,
                 title: str | None = None, size: tuple[int, int] | None = None) -> Picture:
    """Draw the commit graph of what `rev` reaches (None: every ref) into `out`, the newest `limit` commits."""
    fmt = _prepare(out)
    if limit is not None and limit < 1:
        raise UsageError(f"-n {limit}: draw at least one commit")
    view = history.history(repo, rev=rev)
    shown = min(len(view["commits"]), limit) if limit is not None else len(view["commits"])
    fig = charts.lineage_chart(view, title=title if title is not None else f"history of {rev or 'every ref'}",
                               size=size, limit=limit)
    return Picture(str(out), fmt, save(fig, out, fmt), "lineage", {"commits": shown})


def _prepare(out: Path) -> str:
    """Check what no drawing can fix before any work: the format asked for, and matplotlib being there."""
    fmt = format_of(out)
    require_matplotlib()
    return fmt
