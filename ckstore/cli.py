"""The `ckstore` command: parse arguments, call the library, render the result. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # the library (numpy, lmdb, ...) is imported only when a command runs, so --help stays fast
    from .repo import Repo

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Version model checkpoints the way you version code.")
_state: dict[str, Any] = {"dir": None}

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.callback()
def _root(directory: Optional[Path] = typer.Option(None, "-C", help="Run as if started in DIR.",
                                                   metavar="DIR")) -> None:
    _state["dir"] = directory


def _repo() -> Repo:
    from .repo import Repo
    directory = _state["dir"]
    if directory is not None and not directory.is_dir():
        # Without this check, a mistyped -C DIR silently walks up to whatever repository encloses it.
        from .errors import UsageError
        raise UsageError(f"-C {directory}: no such directory")
    return Repo.open(directory)


def _path(p: Path) -> Path:
    """A path given on the command line, relative to -C DIR when one was given ("as if started in DIR")."""
    return p if p.is_absolute() or _state["dir"] is None else _state["dir"] / p


def _emit(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _progress() -> Any:
    from .progress import DelayedProgress
    return DelayedProgress()


@app.command()
def init(directory: Path = typer.Argument(Path("."), help="Where to create the repository."),
         require: list[str] = typer.Option([], "--require", metavar="KEY:TYPE",
                                           help="Metadata every commit must carry, e.g. metrics.val_loss:number."),
         chunk_size: Optional[int] = typer.Option(None, help="Chunk size in bytes (default 1 MiB).")) -> None:
    """Create an empty repository."""
    from .errors import UsageError
    from .repo import Repo
    required = {}
    for item in require:
        key, sep, kind = item.rpartition(":")
        if not sep or not key:
            raise UsageError(f"--require {item!r} is not KEY:TYPE")
        required[key] = kind
    target = (_state["dir"] or Path(".")) / directory
    with Repo.init(target, chunk_size=chunk_size, required=required) as repo:
        typer.echo(f"Initialized empty ckstore repository in {repo.dir}")


@app.command()
def commit(src: str = typer.Argument(..., help="A checkpoint file or directory."),
           message: str = typer.Option(..., "-m", "--message", help="What this checkpoint is."),
           branch: Optional[str] = typer.Option(None, "--branch", "-b", help="Branch to commit to (default HEAD's)."),
           tag: Optional[str] = typer.Option(None, "--tag", help="Also tag the new commit."),
           meta: list[str] = typer.Option([], "--meta", metavar="KEY=VALUE", help="Metadata, dotted keys allowed."),
           metric: list[str] = typer.Option([], "--metric", metavar="NAME=VALUE", help="A metric (a number)."),
           meta_file: Optional[Path] = typer.Option(None, "--meta-file", help="Metadata from JSON, YAML or TOML."),
           step: Optional[int] = typer.Option(None, "--step", help="Training step."),
           as_json: bool = JsonOpt) -> None:
    """Snapshot a checkpoint as a new commit."""
    from . import metadata
    meta_dict = metadata.load_meta_file(_path(meta_file)) if meta_file else {}
    meta_dict = metadata.deep_merge(meta_dict, metadata.parse_assignments(meta))
    metrics = metadata.parse_assignments(metric, "--metric")
    with _repo() as repo:
        target_branch = branch or repo.head_branch()
        info = repo.commit(_path(Path(src)), message, metrics=metrics, meta=meta_dict, step=step, branch=branch,
                           tag=tag, progress=_progress())
        shown = repo.show(info.id)
    if as_json:
        return _emit({**info.to_dict(), "logical_bytes": shown.logical_bytes, "new_bytes": shown.new_bytes})
    from .progress import human_bytes
    typer.echo(f"[{target_branch} {info.id[:12]}] {message}")
    typer.echo(f" {len(shown.manifest.files)} files, {len(shown.manifest.tensors)} tensors, "
               f"{human_bytes(shown.logical_bytes)} logical, {human_bytes(shown.new_bytes)} new stored")


@app.command()
def log(rev: Optional[str] = typer.Argument(None, help="Where to start (default HEAD)."),
        n: Optional[int] = typer.Option(None, "-n", help="Show at most N commits."),
        oneline: bool = typer.Option(False, "--oneline", help="One line per commit."),
        graph: bool = typer.Option(False, "--graph", help="Draw the commit graph."),
        all_refs: bool = typer.Option(False, "--all", help="Start from every ref."),
        where: Optional[str] = typer.Option(None, "--where", metavar="EXPR",
                                            help="Only commits matching a query, e.g. 'metrics.loss < 0.3'."),
        as_json: bool = JsonOpt) -> None:
    """Show commit history, newest first."""
    with _repo() as repo:
        entries = repo.log(rev, n=n, all=all_refs, where=where)
    if as_json:
        return _emit([e.to_dict() for e in entries])
    from .render import render_log
    render_log(entries, oneline=oneline, graph=graph)


@app.command()
def show(rev: str = typer.Argument("HEAD", help="The revision to show (default HEAD)."),
         as_json: bool = JsonOpt) -> None:
    """Show a commit's metadata, files and tensors, and its logical vs stored bytes."""
    with _repo() as repo:
        info = repo.show(rev)
    if as_json:
        return _emit(info.to_dict())
    from .render import render_show
    render_show(info)


@app.command()
def checkout(rev: str = typer.Argument(..., help="The revision to check out."),
             output: Path = typer.Option(..., "-o", "--output", help="Destination directory."),
             include: list[str] = typer.Option([], "--include", metavar="GLOB", help="Only matching paths."),
             force: bool = typer.Option(False, "--force", "-f", help="Write into a non-empty directory."),
             as_json: bool = JsonOpt) -> None:
    """Write a commit's files, byte-identical, into a directory."""
    with _repo() as repo:
        files = repo.checkout(rev, _path(output), include=include or None, force=force, progress=_progress())
    if as_json:
        return _emit({"rev": rev, "output": str(output), "files": files})
    typer.echo(f"checked out {len(files)} files into {output}")


@app.command()
def branch(name: Optional[str] = typer.Argument(None, help="Branch to create."),
           rev: str = typer.Argument("HEAD", help="Where it starts."),
           delete: Optional[str] = typer.Option(None, "-d", "--delete", metavar="NAME", help="Delete a branch."),
           force: bool = typer.Option(False, "--force", "-f", help="Move an existing branch."),
           as_json: bool = JsonOpt) -> None:
    """List, create or delete branches."""
    with _repo() as repo:
        if delete:
            repo.delete_branch(delete)
            return typer.echo(f"deleted branch {delete}")
        if name:
            b = repo.branch(name, rev, force=force)
            return typer.echo(f"branch {b.name} at {b.id[:12]}")
        branches = repo.branches()
    if as_json:
        return _emit([{"name": b.name, "id": b.id, "current": b.current} for b in branches])
    for b in branches:
        typer.echo(f"{'*' if b.current else ' '} {b.name:<24} {b.id[:12]}")


@app.command()
def switch(name: str = typer.Argument(..., help="Branch that new commits go to.")) -> None:
    """Point HEAD at another branch."""
    with _repo() as repo:
        repo.switch(name)
    typer.echo(f"switched to {name}")


@app.command()
def tag(name: Optional[str] = typer.Argument(None, help="Tag to create."),
        rev: str = typer.Argument("HEAD", help="What it marks."),
        message: Optional[str] = typer.Option(None, "-m", "--message", help="Annotate the tag."),
        delete: Optional[str] = typer.Option(None, "-d", "--delete", metavar="NAME", help="Delete a tag."),
        as_json: bool = JsonOpt) -> None:
    """List, create or delete tags. Tags never move."""
    with _repo() as repo:
        if delete:
            repo.delete_tag(delete)
            return typer.echo(f"deleted tag {delete}")
        if name:
            oid = repo.tag(name, rev, message=message)
            return typer.echo(f"tag {name} at {oid[:12]}")
        tags = repo.tags()
    if as_json:
        return _emit(tags)
    for t in tags:
        typer.echo(f"{t['name']:<24} {t['id'][:12]} {t['message']}")


@app.command()
def ls(rev: str = typer.Argument("HEAD", help="The revision to list (default HEAD)."),
       as_json: bool = JsonOpt) -> None:
    """List the files of a commit."""
    with _repo() as repo:
        files = repo.ls(rev)
    if as_json:
        return _emit(files)
    for f in files:
        typer.echo(f"{f['size']:>14}  {f['path']}")


@app.command()
def cat(rev: str = typer.Argument(..., help="The revision to read from."),
        path: str = typer.Argument(..., help="File path inside the commit.")) -> None:
    """Write one committed file to standard output."""
    out = sys.stdout.buffer
    with _repo() as repo:
        for piece in repo.cat(rev, path):
            out.write(piece)
    out.flush()


@app.command()
def fsck(read_data: bool = typer.Option(False, "--read-data", help="Decode and hash every chunk."),
         reindex: bool = typer.Option(False, "--reindex", help="Rebuild the LMDB index from the .idx files."),
         as_json: bool = JsonOpt) -> None:
    """Verify the repository; exits 1 and names every damaged object."""
    with _repo() as repo:
        report = repo.fsck(read_data=read_data, reindex=reindex, progress=_progress())
    if as_json:
        _emit(report.to_dict())
    else:
        for p in report.problems:
            typer.echo(f"error: {p}", err=True)
        typer.echo(f"{report.packs} packs, {report.chunks} chunks, {report.objects} objects, {report.commits} "
                   f"commits, {report.refs} refs: {'ok' if report.ok else f'{len(report.problems)} problems'}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def audit(as_json: bool = JsonOpt) -> None:
    """Show the audit log of ref changes: who, when, old, new, why."""
    with _repo() as repo:
        entries = repo.audit()
    if as_json:
        return _emit(entries)
    from .render import render_audit
    render_audit(entries)


@app.command()
def demo() -> None:
    """Build a small model's checkpoint series in a temporary repository and walk through it."""
    from .demo import run
    run(typer.echo)


@app.command()
def diff(a: str = typer.Argument(..., help="Older revision, or the one to compare with its parent; A..B works."),
         b: Optional[str] = typer.Argument(None, help="Newer revision (default: compare A with its first parent)."),
         stat: bool = typer.Option(False, "--stat", help="Only the summary and the changed names."),
         tensors: list[str] = typer.Option([], "--tensors", metavar="GLOB", help="Only tensors matching GLOB."),
         atol: float = typer.Option(0.0, "--atol", help="Changes within atol + rtol·|old| count as unchanged."),
         rtol: float = typer.Option(0.0, "--rtol", help="Relative tolerance (see --atol)."),
         exit_code: bool = typer.Option(False, "--exit-code", help="Exit 1 when the versions differ."),
         as_json: bool = JsonOpt) -> None:
    """Compare two checkpoints tensor by tensor, and their metadata."""
    with _repo() as repo:
        result = repo.diff(a, b, tensors=tensors or None, atol=atol, rtol=rtol)
    if as_json:
        _emit(result.to_dict())
    else:
        from .render import render_diff
        render_diff(result, stat=stat)
    if exit_code and result.differs:
        raise typer.Exit(1)


@app.command()
def revert(rev: str = typer.Argument(..., help="The checkpoint to go back to."),
           reason: str = typer.Option(..., "--reason", help="Why: kept in the commit and the audit log."),
           branch: Optional[str] = typer.Option(None, "--branch", "-b", help="Branch to add the commit to."),
           as_json: bool = JsonOpt) -> None:
    """Add a commit whose checkpoint is REV's, with the reason on record."""
    with _repo() as repo:
        info = repo.revert(rev, reason, branch=branch)
    if as_json:
        return _emit(info.to_dict())
    typer.echo(f"[{branch or 'HEAD'} {info.id[:12]}] {info.message}")


@app.command()
def reset(branch: str = typer.Argument(..., help="Branch to move."),
          rev: str = typer.Argument(..., help="Where it should point."),
          reason: str = typer.Option(..., "--reason", help="Why: kept in the audit log."),
          force: bool = typer.Option(False, "--force", "-f", help="Allow commits to leave the branch."),
          as_json: bool = JsonOpt) -> None:
    """Move a branch to another commit (tags never move)."""
    with _repo() as repo:
        old, new = repo.reset(branch, rev, reason, force=force)
    if as_json:
        return _emit({"branch": branch, "old": old, "new": new})
    typer.echo(f"{branch}: {(old or '-')[:12]} -> {new[:12]}")


@app.command()
def find(expr: str = typer.Argument(..., help="e.g. 'metrics.val_loss < 0.3 and params.lr >= 1e-4'."),
         rev: Optional[str] = typer.Option(None, "--rev", help="Search what REV reaches (default: every ref)."),
         sort: Optional[str] = typer.Option(None, "--sort", metavar="KEY", help="Sort by KEY; '-KEY' descending."),
         limit: Optional[int] = typer.Option(None, "--limit", help="At most N results."),
         as_json: bool = JsonOpt) -> None:
    """Find commits by their metadata: comparisons joined with and / or / not."""
    with _repo() as repo:
        found = repo.find(expr, rev=rev, sort=sort, limit=limit)
    if as_json:
        return _emit([e.to_dict() for e in found])
    from .render import render_log
    render_log(found, oneline=True, graph=False)


@app.command()
def best(metric: str = typer.Argument(..., help="Metric name, e.g. val_loss."),
         maximize: bool = typer.Option(False, "--max", help="Highest value wins (default: lowest)."),
         minimize: bool = typer.Option(False, "--min", help="Lowest value wins (the default)."),
         rev: str = typer.Option("HEAD", "--rev", help="Consider REV and its ancestors."),
         as_json: bool = JsonOpt) -> None:
    """The ancestor with the best value of a metric."""
    from .errors import UsageError
    if maximize and minimize:
        raise UsageError("--min and --max exclude each other")
    with _repo() as repo:
        found = repo.best(metric, mode="max" if maximize else "min", rev=rev)
    if found is None:
        typer.echo(f"no commit reachable from {rev} has metric {metric!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        return _emit(found.to_dict())
    typer.echo(f"{found.id[:12]} {metric}={found.metrics[metric]:.6g} {found.message}")


@app.command()
def lineage(rev: str = typer.Argument("HEAD"),
            metric: Optional[str] = typer.Option(None, "--metric", help="Show this metric along the way."),
            as_json: bool = JsonOpt) -> None:
    """The ancestry of a checkpoint (first parents), with a metric along it."""
    with _repo() as repo:
        chain = repo.lineage(rev)
    if as_json:
        return _emit([e.to_dict() for e in chain])
    for e in chain:
        value = e.metrics.get(metric) if metric else None
        shown = f"{metric}={value:.6g}  " if isinstance(value, (int, float)) else ""
        step = f"step {e.step:>7}  " if e.step is not None else ""
        typer.echo(f"{e.id[:12]}  {step}{shown}{e.message}")


remote_app = typer.Typer(no_args_is_help=True, help="Manage the remotes this repository pushes to and fetches from.")
app.add_typer(remote_app, name="remote")


@remote_app.command("add")
def remote_add(name: str = typer.Argument(..., help="Short name, e.g. origin."),
               url: str = typer.Argument(..., help="A directory, file:///path, s3://bucket/prefix or memory://name."),
               endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url",
                                                          help="S3-compatible endpoint (MinIO, SeaweedFS, R2)."),
               region: Optional[str] = typer.Option(None, "--region", help="S3 region.")) -> None:
    """Remember a remote under a name."""
    with _repo() as repo:
        spec = repo.remote_add(name, url, endpoint_url=endpoint_url, region=region)
    typer.echo(f"added remote {spec.name}: {spec.url}")


@remote_app.command("remove")
def remote_remove(name: str = typer.Argument(..., help="The remote to forget.")) -> None:
    """Forget a remote and its remote-tracking refs."""
    with _repo() as repo:
        repo.remote_remove(name)
    typer.echo(f"removed remote {name}")


@remote_app.command("list")
def remote_list(as_json: bool = JsonOpt) -> None:
    """List the remotes."""
    with _repo() as repo:
        specs = repo.remote_list()
    if as_json:
        return _emit([s.to_dict() for s in specs])
    for s in specs:
        partial = "" if s.partial is None else f"  [partial: {', '.join(s.partial['tensors']) or 'metadata only'}]"
        typer.echo(f"{s.name}\t{s.url}" + (f"  (endpoint {s.endpoint_url})" if s.endpoint_url else "") + partial)


def _sync_report(result: Any, as_json: bool, **extra: Any) -> None:
    """--json: the result; else each ref moved, the warnings, and the bytes moved vs the logical size."""
    if as_json:
        return _emit({**result.to_dict(), **extra})
    for r in result.refs:
        typer.echo(f"  {r['status']:<10} {r['ref']}  {(r['old'] or '-')[:12]} -> {r['new'][:12]}")
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(result.summary())


@app.command()
def push(remote: Optional[str] = typer.Argument(None, help="Remote name (default: origin)."),
         branches: Optional[list[str]] = typer.Argument(None, help="Branches to push (default: HEAD's)."),
         all_branches: bool = typer.Option(False, "--all", help="Push every branch."),
         tags: bool = typer.Option(False, "--tags", help="Push the tags too."),
         force: bool = typer.Option(False, "--force", "-f", help="Allow a non-fast-forward (audited)."),
         as_json: bool = JsonOpt) -> None:
    """Upload branches (and tags) with their history and data to a remote."""
    with _repo() as repo:
        result = repo.push(remote, branches or None, all=all_branches, tags=tags, force=force, progress=_progress())
    _sync_report(result, as_json)


@app.command()
def fetch(remote: Optional[str] = typer.Argument(None, help="Remote name (default: origin)."),
          as_json: bool = JsonOpt) -> None:
    """Download a remote's new history; moves refs/remotes/REMOTE/*, never your branches."""
    with _repo() as repo:
        result = repo.fetch(remote, progress=_progress())
    _sync_report(result, as_json)


@app.command()
def pull(remote: Optional[str] = typer.Argument(None, help="Remote name (default: origin)."),
         branch: Optional[str] = typer.Argument(None, help="Branch to update (default: HEAD's)."),
         force: bool = typer.Option(False, "--force", "-f", help="Reset a diverged branch to the remote's (audited)."),
         as_json: bool = JsonOpt) -> None:
    """Fetch, then fast-forward a branch to the remote's."""
    with _repo() as repo:
        result = repo.pull(remote, branch, force=force, progress=_progress())
    _sync_report(result, as_json)


@app.command()
def clone(url: str = typer.Argument(..., help="A directory, file:///path, s3://bucket/prefix or memory://name."),
          directory: Optional[Path] = typer.Argument(None, help="Where to create it (default: named after URL)."),
          filters: list[str] = typer.Option([], "--filter", metavar="tensors=GLOB",
                                            help="Partial clone: only these tensors' data; the rest on demand."),
          metadata_only: bool = typer.Option(False, "--metadata-only", help="History and manifests, no data."),
          endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint."),
          region: Optional[str] = typer.Option(None, "--region", help="S3 region."),
          as_json: bool = JsonOpt) -> None:
    """Create a repository from a remote: history, branches and (unless partial) the data."""
    from .remote.sync import default_clone_dir
    from .repo import clone as clone_repo
    with clone_repo(url, _path(directory or Path(default_clone_dir(url))), filter=filters or None,
                    metadata_only=metadata_only, endpoint_url=endpoint_url, region=region,
                    progress=_progress()) as repo:
        result, where = repo.last_transfer, str(repo.root)
    if not as_json:
        typer.echo(f"cloned {url} into {where}")
    _sync_report(result, as_json, path=where)


def main() -> None:
    """Entry point: library errors become one line and a hint (traceback only with CKSTORE_DEBUG=1)."""
    from .allocator import tune
    from .errors import CkstoreError
    tune()
    exits, aborts, usage = _parser_exceptions()
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except exits as exc:
        sys.exit(exc.exit_code)
    except usage as exc:
        if hasattr(exc, "show"):
            exc.show()
        else:
            typer.echo(f"Error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except aborts:
        sys.exit(130)
    except CkstoreError as exc:
        if os.environ.get("CKSTORE_DEBUG") == "1":
            raise
        typer.echo(f"error: {exc}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        sys.exit(2 if _is_usage(exc) else 1)
    except OSError as exc:  # disk full, permissions, a vanished file: one line, never a traceback
        if os.environ.get("CKSTORE_DEBUG") == "1":
            raise
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        if exc.errno == 28:
            typer.echo("hint: free some space; the repository is unchanged and nothing half-written remains",
                       err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _parser_exceptions() -> tuple[tuple, tuple, tuple]:
    """(exit, abort, usage-error) classes. Newer typer vendors click under its own names, older typer raises
    click's own: catch whichever are present (a clean install may have no `click` at all)."""
    exits: set[type] = {typer.Exit}
    aborts: set[type] = {typer.Abort}
    usage: set[type] = set()
    try:
        from typer._click.exceptions import ClickException
        usage.add(ClickException)
        return tuple(exits), tuple(aborts), tuple(usage)
    except ImportError:
        pass
    try:
        import click  # only for a typer that still raises click's own (importing it costs ~15 ms)
        exits.add(click.exceptions.Exit)
        aborts.add(click.exceptions.Abort)
        usage.add(click.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(usage)


def _is_usage(exc: Exception) -> bool:
    from .errors import UsageError
    return type(exc) is UsageError  # subclasses (bad metadata, unsafe paths) are failures of the input, exit 1
