"""Commands for names: branch, switch, tag, audit."""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonLinesOpt, JsonOpt, QuietOpt, app, emit, fail, info, open_repo, warn


@app.command()
def branch(name: Optional[str] = typer.Argument(None, help="Branch to create."),
           rev: str = typer.Argument("HEAD", help="Where it starts."),
           delete: Optional[str] = typer.Option(None, "-d", "--delete", metavar="NAME",
                                                help="Delete a branch whose commits another ref keeps."),
           force_delete: Optional[str] = typer.Option(None, "-D", metavar="NAME",
                                                      help="Delete a branch even if its commits are on no other ref."),
           force: bool = typer.Option(False, "--force", "-f", help="Move an existing branch."),
           quiet: bool = QuietOpt, as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """List, create or delete branches."""
    with open_repo() as repo:
        if delete or force_delete:
            gone = delete or force_delete
            old = repo.delete_branch(gone, force=bool(force_delete))
            return emit({"deleted": gone, "was": old}) if as_json else info(f"deleted branch {gone} (was {old[:12]})")
        if name:
            b = repo.branch(name, rev, force=force)
            return emit(b) if as_json else info(f"branch {b.name} at {b.id[:12]}")
        branches = repo.branches()
    if as_json or as_lines:
        return emit(branches, lines=as_lines)
    for b in branches:
        typer.echo(f"{'*' if b.current else ' '} {b.name:<24} {b.id[:12]}")


@app.command()
def switch(name: str = typer.Argument(..., help="Branch that new commits go to."),
           quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Point HEAD at another branch."""
    with open_repo() as repo:
        repo.switch(name)
    return emit({"head": name}) if as_json else info(f"switched to {name}")


@app.command()
def tag(name: Optional[str] = typer.Argument(None, help="Tag to create."),
        rev: str = typer.Argument("HEAD", help="What it marks."),
        message: Optional[str] = typer.Option(None, "-m", "--message", help="Annotate the tag."),
        delete: Optional[str] = typer.Option(None, "-d", "--delete", metavar="NAME", help="Delete a tag."),
        as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """List, create or delete tags. Tags never move."""
    with open_repo() as repo:
        if delete:
            old = repo.delete_tag(delete)
            return emit({"deleted": delete, "was": old}) if as_json else info(f"deleted tag {delete} (was {old[:12]})")
        if name:
            oid = repo.tag(name, rev, message=message)
            from ..results import TagInfo
            return emit(TagInfo(name, oid, message or "")) if as_json else info(f"tag {name} at {oid[:12]}")
        tags = repo.tags()
    if as_json or as_lines:
        return emit(tags, lines=as_lines)
    for t in tags:
        typer.echo(f"{t.name:<24} {t.id[:12]} {t.message}")


@app.command()
def audit(verify: bool = typer.Option(False, "--verify", help="Check the chain and every signature; exit 1 on "
                                                              "any problem."),
          remote: list[str] = typer.Option([], "--remote", metavar="NAME",
                                           help="With --verify: also against the audit heads NAME recorded."),
          as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Show the audit log of ref changes: who, when, old, new, why (a broken chain is always warned about)."""
    with open_repo() as repo:
        entries = repo.audit()
        problems = repo.verify_signatures() if verify else repo.audit_problems()
        for name in remote if verify else []:
            problems += repo.verify_audit_against(name)
    for p in problems:
        warn(str(p))
    if as_json or as_lines:
        emit(entries, lines=as_lines)
    else:
        from .render import render_audit
        render_audit(entries)
    if verify and problems:
        fail(f"audit: {len(problems)} problems")
    if verify:
        info("audit: verified", err=True)
