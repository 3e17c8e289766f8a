"""Commands for files and integrity: checkout, ls, cat, fsck, and the demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .app import JsonLinesOpt, JsonOpt, QuietOpt, app, emit, given_path, info, open_repo, progress


@app.command()
def checkout(rev: str = typer.Argument(..., help="The revision to check out."),
             output: Path = typer.Option(..., "-o", "--output", help="Destination directory."),
             include: list[str] = typer.Option([], "--include", metavar="GLOB", help="Only matching paths."),
             exclude: list[str] = typer.Option([], "--exclude", metavar="GLOB", help="Leave matching paths out."),
             force: bool = typer.Option(False, "--force", "-f", help="Write into a non-empty directory."),
             quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Write a commit's files, byte-identical, into a directory."""
    with open_repo() as repo:
        files = repo.checkout(rev, given_path(output), include=include or None, exclude=exclude or None,
                              force=force, progress=progress())
    if as_json:
        return emit({"rev": rev, "output": str(output), "files": files})
    info(f"checked out {len(files)} files into {output}")


@app.command()
def ls(rev: str = typer.Argument("HEAD", help="The revision to list (default HEAD)."),
       as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """List the files of a commit."""
    with open_repo() as repo:
        files = repo.ls(rev)
    if as_json or as_lines:
        return emit(files, lines=as_lines)
    for f in files:
        typer.echo(f"{f.size:>14}  {f.path}")


@app.command()
def cat(rev: str = typer.Argument(..., help="The revision to read from."),
        path: str = typer.Argument(..., help="File path inside the commit.")) -> None:
    """Write one committed file to standard output."""
    out = sys.stdout.buffer
    with open_repo() as repo:
        for piece in repo.cat(rev, path):
            out.write(piece)
    out.flush()


@app.command()
def fsck(read_data: bool = typer.Option(False, "--read-data", help="Decode and hash every chunk; check caches."),
         reindex: bool = typer.Option(False, "--reindex", help="Rebuild the LMDB index from the .idx files."),
         repair: bool = typer.Option(False, "--repair",
                                     help="Rebuild caches, salvage and quarantine damage (re-fetch it with --from)."),
         source: Optional[str] = typer.Option(None, "--from", metavar="REMOTE",
                                              help="With --repair: fetch what is missing from REMOTE."),
         remote: Optional[str] = typer.Option(None, "--remote", metavar="NAME", help="Check a remote instead."),
         audit_remote: list[str] = typer.Option([], "--audit-remote", metavar="NAME",
                                                help="Also check the audit log against the heads NAME recorded."),
         as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Verify the repository; exits 1 and names every damaged object (--repair: and mends what it can)."""
    from ..errors import UsageError
    if source and not repair:
        raise UsageError("--from needs --repair")
    if remote and (repair or reindex):
        raise UsageError("--remote checks a remote; --repair and --reindex work on this repository")
    with open_repo() as repo:
        if repair:
            done = repo.repair(source=source, progress=progress())
            report = done.after
        else:
            report = repo.fsck(read_data=read_data, reindex=reindex, remote=remote, progress=progress())
            for name in audit_remote:  # a rewrite of the whole log is seen only against a copy kept elsewhere
                from ..results import Problem
                report.problems += [Problem("audit", name, p) for p in repo.verify_audit_against(name)]
    if as_lines:
        emit(report.problems, lines=True)
    elif as_json:
        emit(done if repair else report)
    else:
        if repair:
            from .render import render_repair
            render_repair(done)
        for p in report.problems:
            typer.echo(f"error: {p}", err=True)
        typer.echo(f"{report.packs} packs, {report.chunks} chunks, {report.objects} objects, {report.commits} "
                   f"commits, {report.refs} refs: {'ok' if report.ok else f'{len(report.problems)} problems'}")
        if report.affected:
            typer.echo(f"{len(report.affected)} commits cannot be read whole: {', '.join(report.affected[:8])}",
                       err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Build a small model's checkpoint series in a temporary repository and walk through it."""
    from .demo import run
    run(typer.echo)
