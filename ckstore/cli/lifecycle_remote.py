"""Commands for the cold tier: archive and restore-archive."""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOpt, app, emit, info, open_repo, progress


@app.command()
def archive(revs: Optional[list[str]] = typer.Argument(None, help="Commits: REV or A..B (several allowed)."),
            older_than: Optional[str] = typer.Option(None, "--older-than", metavar="DURATION",
                                                     help="Every commit older than this (30d, 12h, 1y6mo)."),
            to: str = typer.Option(..., "--to", metavar="REMOTE", help="The cold remote."),
            as_json: bool = JsonOpt) -> None:
    """Move the chunks only these commits use to a cold remote, verified there; checkout fetches them back on
    demand, and the next `ckstore gc` frees them here."""
    with open_repo() as repo:
        result = repo.archive(revs or None, older_than=older_than, to=to, progress=progress())
    if as_json:
        return emit(result)
    info(result.summary())


@app.command("restore-archive")
def restore_archive(revs: list[str] = typer.Argument(..., help="Archived commits: REV or A..B."),
                    as_json: bool = JsonOpt) -> None:
    """Bring the chunks of archived commits back from their cold remote and keep them here again."""
    with open_repo() as repo:
        result = repo.restore_archive(revs, progress=progress())
    if as_json:
        return emit(result)
    info(result.summary())
