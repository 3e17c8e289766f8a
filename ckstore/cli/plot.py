"""Commands that draw pictures without a browser: plot metric, plot diff, plot lineage (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .app import JsonOpt, app, base_dir, emit, given_path, open_repo

if TYPE_CHECKING:
    from ..views.draw import Picture

plot_app = typer.Typer(no_args_is_help=True,
                       help="Draw metric curves, change maps and the commit graph as PNG, SVG or PDF files "
                            "(needs the plot extra: pip install 'ckstore[plot]').")
app.add_typer(plot_app, name="plot")

OutOpt = typer.Option(None, "-o", "--output", metavar="FILE",
                      help="Where to write; the suffix picks the format: .png, .svg or .pdf (default: a .png here).")
TitleOpt = typer.Option(None, "--title", metavar="TEXT", help="The picture's title.")
SizeOpt = typer.Option(None, "--size", metavar="WxH", help="Size in pixels at 100 dpi, e.g. 1200x800.")


@plot_app.command("metric")
def plot_metric(name: str = typer.Argument(..., help="A metric (val_loss) or a note or params field (notes.eval.acc)."),
                by: str = typer.Option("branch", "--by", help="branch: a line per branch; none: one for all commits."),
                x: str = typer.Option("step", "--x", help="step, time or index (commit order)."),
                out: Optional[Path] = OutOpt, title: Optional[str] = TitleOpt, size: Optional[str] = SizeOpt,
                as_json: bool = JsonOpt) -> None:
    """A metric's curve: one line per branch, a marker at every commit."""
    from ..views import draw
    path = _where(out, draw.default_name("metric", name))
    with open_repo() as repo:
        done = draw.plot_metric(repo, name, path, by=by, x=x, title=title, size=draw.parse_size(size))
    _report(done, as_json)


@plot_app.command("diff")
def plot_diff(a: str = typer.Argument(..., help="Older revision, or the one to compare with its parent; A..B works."),
              b: Optional[str] = typer.Argument(None, help="Newer revision."),
              out: Optional[Path] = OutOpt, title: Optional[str] = TitleOpt, size: Optional[str] = SizeOpt,
              as_json: bool = JsonOpt) -> None:
    """The per-layer change map of a diff: ‖Δ‖/‖old‖ per tensor, layers as rows, added and removed marked."""
    from ..views import draw
    path = _where(out, draw.default_name("diff", *([a, b] if b else [a])))
    with open_repo() as repo:
        done = draw.plot_diff(repo, a, b, path, title=title, size=draw.parse_size(size))
    _report(done, as_json)


@plot_app.command("lineage")
def plot_lineage(rev: Optional[str] = typer.Argument(None, help="Draw what REV reaches (default HEAD)."),
                 all_refs: bool = typer.Option(False, "--all", help="Draw what every ref reaches."),
                 limit: Optional[int] = typer.Option(None, "-n", "--max-count", metavar="N",
                                                     help="Only the newest N commits."),
                 out: Optional[Path] = OutOpt, title: Optional[str] = TitleOpt, size: Optional[str] = SizeOpt,
                 as_json: bool = JsonOpt) -> None:
    """The commit graph: lanes, a dot per commit, short ids, messages, branch, tag and alias labels."""
    from ..errors import UsageError
    from ..views import draw
    if rev is not None and all_refs:
        raise UsageError("give a revision or --all, not both")
    start = None if all_refs else rev or "HEAD"
    path = _where(out, draw.default_name("lineage", start or "all"))
    with open_repo() as repo:
        done = draw.plot_lineage(repo, path, rev=start, limit=limit, title=title, size=draw.parse_size(size))
    _report(done, as_json)


def _where(out: Optional[Path], default: str) -> Path:
    """-o FILE (relative to -C DIR), or the default name in -C DIR or the working directory."""
    return given_path(out) if out is not None else base_dir() / default


def _report(done: Picture, as_json: bool) -> None:
    if as_json:
        return emit(done)
    from ..model.progress import human_bytes
    unit = {"metric": "points", "diff": "tensors", "lineage": ""}[done.kind]
    shown = ", ".join(f"{label} {n} {unit}" if unit else f"{n} {label}" for label, n in done.points.items())
    typer.echo(f"wrote {done.path} ({done.format}, {human_bytes(done.bytes)}; {shown})")
