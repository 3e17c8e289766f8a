"""Commands that make and read history: init, commit, log, show, diff, find, best, lineage, revert, reset."""

from __future__ import annotations

import glob
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .app import (JsonLinesOpt, JsonOpt, QuietOpt, app, ask_passphrase, base_dir, emit, fail, given_path, info,
                  open_repo, progress, warn)

if TYPE_CHECKING:
    from ..results import CommitInfo


@app.command()
def init(directory: Path = typer.Argument(Path("."), help="Where to create the repository."),
         require: list[str] = typer.Option([], "--require", metavar="KEY:TYPE",
                                           help="Metadata every commit must carry, e.g. metrics.val_loss:number."),
         chunk_size: Optional[int] = typer.Option(None, help="Chunk size in bytes (default 1 MiB)."),
         encrypt: bool = typer.Option(False, "--encrypt",
                                      help="Encrypt everything stored (asks for a passphrase, or reads "
                                           "CKSTORE_PASSWORD / --password-file / --password-command)."),
         quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Create an empty repository."""
    from ..api import Repo
    from ..errors import UsageError
    from ..model.metadata import parse_requirements
    def no_terminal() -> str:    # asked only when the environment gives no passphrase either
        raise UsageError("--encrypt needs a passphrase", hint="set CKSTORE_PASSWORD (or give --password-file / "
                         "--password-command), or run it on a terminal")
    secret = (ask_passphrase("the new repository", twice=True) or no_terminal) if encrypt else None
    with Repo.init(base_dir() / directory, chunk_size=chunk_size, required=parse_requirements(require),
                   encrypt=secret) as repo:
        where = repo.dir
    if as_json:
        return emit({"path": str(where)})
    info(f"Initialized empty ckstore repository in {where}")


@app.command()
def commit(src: str = typer.Argument(..., help="A checkpoint file or directory."),
           message: str = typer.Option(..., "-m", "--message", help="What this checkpoint is."),
           branch: Optional[str] = typer.Option(None, "--branch", "-b", help="Branch to commit to (default HEAD's)."),
           tag: Optional[str] = typer.Option(None, "--tag", help="Also tag the new commit."),
           meta: list[str] = typer.Option([], "--meta", metavar="KEY=VALUE",
                                          help="Metadata, dotted keys allowed; KEY:=JSON types the value."),
           metric: list[str] = typer.Option([], "--metric", metavar="NAME=VALUE", help="A metric (a number)."),
           meta_file: Optional[Path] = typer.Option(None, "--meta-file", help="Metadata from JSON, YAML or TOML."),
           step: Optional[int] = typer.Option(None, "--step", help="Training step."),
           quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Snapshot a checkpoint as a new commit."""
    from ..api import read_meta_file
    from ..model import metadata
    from ..model.pretty import subject
    from ..model.progress import human_bytes
    meta_dict = read_meta_file(given_path(meta_file)) if meta_file else {}
    meta_dict = metadata.deep_merge(meta_dict, metadata.parse_assignments(meta))
    with open_repo() as repo:
        done = repo.commit(given_path(Path(src)), message, metrics=metadata.parse_assignments(metric, "--metric"),
                           meta=meta_dict, step=step, branch=branch, tag=tag, progress=progress())
    if as_json:
        return emit(done)
    info(f"[{done.branch} {done.id[:12]}] {subject(message)}")
    info(f" {done.files} files, {done.tensors} tensors, {human_bytes(done.logical_bytes)} logical, "
         f"{human_bytes(done.new_bytes)} new stored")


@app.command()
def log(rev: Optional[str] = typer.Argument(None, help="Where to start (default HEAD); A..B: what B has and A not."),
        n: Optional[int] = typer.Option(None, "-n", help="Show at most N commits."),
        oneline: bool = typer.Option(False, "--oneline", help="One line per commit."),
        graph: bool = typer.Option(False, "--graph", help="Draw the commit graph."),
        all_refs: bool = typer.Option(False, "--all", help="Start from every ref."),
        where: Optional[str] = typer.Option(None, "--where", metavar="EXPR",
                                            help="Only commits matching a query, e.g. 'metrics.loss < 0.3'."),
        fmt: Optional[str] = typer.Option(None, "--format", "--pretty", metavar="FORMAT",
                                          help="oneline, short, full (the default), json, or a template of "
                                               "%H %h %s %b %an %ae %ad %ar %at %d %D %p %P %n %%, %(step), "
                                               "%(metric:NAME), %(param:NAME), %(note:NS.KEY)."),
        metric: Optional[str] = typer.Option(None, "--metric", metavar="NAME",
                                             help="Each commit's value of NAME (a metric, or params.lr, "
                                                  "notes.eval.acc), then its sparkline, oldest to newest."),
        as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Show commit history, newest first."""
    from ..model.pretty import NAMED_FORMATS, compile_format
    as_json = as_json or fmt == "json"
    # compiled before the repository is read, so a bad placeholder fails at once, history or none
    template = None if fmt in (None, "full", "json") else compile_format(NAMED_FORMATS.get(fmt, fmt))
    with open_repo() as repo, closing(repo.iter_log(rev, n=n, all=all_refs, where=where)) as walk:
        if as_lines:
            return emit(walk, lines=True)
        entries = list(walk)
    if as_json:
        return emit(entries)
    from . import render
    if template is not None:
        render.render_formatted(entries, template, graph=graph, now=time.time())
    elif metric:
        render.render_metric_log(entries, metric, graph=graph)
    else:
        render.render_log(entries, oneline=oneline, graph=graph)
    if metric:
        _sparkline(metric, entries)


def _sparkline(metric: str, newest_first: list[CommitInfo]) -> None:
    """The sparkline footer of `log --metric` and `lineage --metric`, or a warning when no commit has the value."""
    from ..model.pretty import is_number
    from ..results import metric_value
    values = [metric_value(e, metric) for e in reversed(newest_first)]
    if not any(is_number(v) for v in values):
        return warn(f"no commit listed has a number for {metric}")
    from .render import render_sparkline
    render_sparkline(metric, values)


@app.command()
def show(rev: str = typer.Argument("HEAD", help="The revision to show (default HEAD)."),
         as_json: bool = JsonOpt) -> None:
    """Show a commit's metadata, files and tensors, and its logical vs stored bytes."""
    with open_repo() as repo:
        info = repo.show(rev)
    if as_json:
        return emit(info)
    from .render import render_show
    render_show(info)


@app.command()
def diff(a: str = typer.Argument(..., help="Older revision, or the one to compare with its parent; A..B works."),
         b: Optional[str] = typer.Argument(None, help="Newer revision (default: compare A with its first parent)."),
         stat: bool = typer.Option(False, "--stat", help="Only the summary and the changed names."),
         tensors: list[str] = typer.Option([], "--tensors", metavar="GLOB", help="Only tensors matching GLOB."),
         atol: float = typer.Option(0.0, "--atol", help="Changes within atol + rtol·|old| count as unchanged."),
         rtol: float = typer.Option(0.0, "--rtol", help="Relative tolerance (see --atol)."),
         exit_code: bool = typer.Option(False, "--exit-code", help="Exit 1 when the versions differ."),
         hist: Optional[str] = typer.Option(None, "--hist", metavar="TENSOR",
                                            help="Instead: both versions' value histograms of TENSOR, side by side."),
         as_json: bool = JsonOpt) -> None:
    """Compare two checkpoints tensor by tensor, and their metadata."""
    with open_repo() as repo:
        if hist is not None:
            from .render_hist import show_hists
            return show_hists(repo, repo.diff(a, b, tensors=[glob.escape(hist)]), hist, as_json)
        result = repo.diff(a, b, tensors=tensors or None, atol=atol, rtol=rtol)
    if as_json:
        emit(result)
    else:
        from .render import render_diff
        render_diff(result, stat=stat)
    if exit_code and result.differs:
        raise typer.Exit(1)


@app.command()
def find(expr: str = typer.Argument(..., help="e.g. 'metrics.val_loss < 0.3 and params.lr >= 1e-4'."),
         rev: Optional[str] = typer.Option(None, "--rev", help="Search what REV reaches (default: every ref)."),
         sort: Optional[str] = typer.Option(None, "--sort", metavar="KEY", help="Sort by KEY; '-KEY' descending."),
         limit: Optional[int] = typer.Option(None, "--limit", help="At most N results."),
         as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Find commits by their metadata: comparisons joined with and / or / not."""
    with open_repo() as repo:
        found = repo.find(expr, rev=rev, sort=sort, limit=limit)
        unknown = repo.unknown_keys(expr, rev=rev) if not found else {}
    for key, like in unknown.items():
        warn(f"no commit has {key}" + (f"; did you mean {', '.join(like)}?" if like else ""))
    if as_json or as_lines:
        return emit(found, lines=as_lines)
    from .render import render_log
    render_log(found, oneline=True, graph=False)


@app.command()
def best(metric: str = typer.Argument(..., help="Metric name, e.g. val_loss."),
         maximize: bool = typer.Option(False, "--max", help="Highest value wins (default: lowest)."),
         minimize: bool = typer.Option(False, "--min", help="Lowest value wins (the default)."),
         rev: str = typer.Option("HEAD", "--rev", help="Consider REV and its ancestors."),
         as_json: bool = JsonOpt) -> None:
    """The ancestor with the best value of a metric."""
    from ..errors import UsageError
    if maximize and minimize:
        raise UsageError("--min and --max exclude each other")
    with open_repo() as repo:
        found = repo.best(metric, mode="max" if maximize else "min", rev=rev)
    if found is None:
        fail(f"no commit reachable from {rev} has metric {metric!r}")
    if as_json:
        return emit(found)
    from ..results import metric_value
    typer.echo(f"{found.id[:12]} {metric}={metric_value(found, metric):.6g} {found.message}")


@app.command()
def lineage(rev: str = typer.Argument("HEAD"),
            metric: Optional[str] = typer.Option(None, "--metric",
                                                 help="Show this metric along the way, and its sparkline."),
            as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """The ancestry of a checkpoint (first parents), with a metric along it."""
    with open_repo() as repo:
        chain = repo.lineage(rev)
    if as_json or as_lines:
        return emit(chain, lines=as_lines)
    from .render import render_lineage
    render_lineage(chain, metric)
    if metric:
        _sparkline(metric, chain)


@app.command()
def revert(rev: str = typer.Argument(..., help="The checkpoint to go back to."),
           reason: str = typer.Option(..., "--reason", help="Why: kept in the commit and the audit log."),
           branch: Optional[str] = typer.Option(None, "--branch", "-b", help="Branch to add the commit to."),
           as_json: bool = JsonOpt) -> None:
    """Add a commit whose checkpoint is REV's, with the reason on record."""
    with open_repo() as repo:
        done = repo.revert(rev, reason, branch=branch)
    if as_json:
        return emit(done)
    info(f"[{done.branch} {done.id[:12]}] {done.message}")


@app.command()
def reset(branch: str = typer.Argument(..., help="Branch to move."),
          rev: str = typer.Argument(..., help="Where it should point."),
          reason: str = typer.Option(..., "--reason", help="Why: kept in the audit log."),
          force: bool = typer.Option(False, "--force", "-f", help="Allow commits to leave the branch."),
          quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Move a branch to another commit (tags never move)."""
    with open_repo() as repo:
        moved = repo.reset(branch, rev, reason, force=force)
    if as_json:
        return emit(moved)
    info(f"{branch}: {(moved.old or '-')[:12]} -> {moved.new[:12]}")
