"""Commands for the repository's lifecycle: forget (retention), gc, repack and du."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from .app import JsonLinesOpt, JsonOpt, QuietOpt, app, emit, info, is_quiet, open_repo, progress

if TYPE_CHECKING:
    from ..model.retention import Policy

RemoteOpt = typer.Option(None, "--remote", metavar="NAME", help="Work on a remote instead of this repository.")


def _seconds(text: Optional[str], default: float) -> float:
    from ..model.retention import parse_duration
    return default if text is None else parse_duration(text)


@app.command()
def forget(keep_last: int = typer.Option(0, "--keep-last", metavar="N", help="Keep the newest N per group."),
           keep_within: Optional[str] = typer.Option(None, "--keep-within", metavar="DURATION",
                                                     help="Keep what is younger than DURATION (7d, 12h, 1y6mo)."),
           keep_hourly: int = typer.Option(0, "--keep-hourly", metavar="N", help="Newest of each of N hours."),
           keep_daily: int = typer.Option(0, "--keep-daily", metavar="N", help="Newest of each of N days."),
           keep_weekly: int = typer.Option(0, "--keep-weekly", metavar="N", help="Newest of each of N weeks."),
           keep_monthly: int = typer.Option(0, "--keep-monthly", metavar="N", help="Newest of each of N months."),
           keep_yearly: int = typer.Option(0, "--keep-yearly", metavar="N", help="Newest of each of N years."),
           keep_best: int = typer.Option(0, "--keep-best", metavar="K",
                                         help="Keep the best K by --metric (the latest is kept too, to resume)."),
           metric: Optional[str] = typer.Option(None, "--metric", metavar="NAME", help="Metric for --keep-best."),
           maximize: bool = typer.Option(False, "--max", help="Higher is better for --keep-best."),
           minimize: bool = typer.Option(False, "--min", help="Lower is better (the default)."),
           keep_tagged: bool = typer.Option(True, "--keep-tagged/--no-keep-tagged",
                                            help="Keep every tagged commit (on by default)."),
           keep_noted: bool = typer.Option(False, "--keep-noted", help="Keep every commit with notes."),
           keep_ref: list[str] = typer.Option([], "--keep-ref", metavar="GLOB", help="Keep what refs matching GLOB "
                                              "name (e.g. 'release/*')."),
           group_by: str = typer.Option("branch", "--group-by", help="branch: rules per branch; none: one group."),
           dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would be kept and dropped."),
           save: bool = typer.Option(False, "--save", help="Save the policy in the repository config."),
           auto: bool = typer.Option(False, "--auto", help="With --save: apply it after every commit."),
           remote: Optional[str] = RemoteOpt,
           as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Apply a retention policy: drop the commits no rule keeps (gc then frees their bytes). Rules are ORed;
    branch tips are always kept. With no rule, the policy saved with --save is applied."""
    from ..errors import UsageError
    from ..model.retention import Policy
    if maximize and minimize:
        raise UsageError("--min and --max exclude each other")
    if auto and not save:
        raise UsageError("--auto is saved with the policy: add --save")
    given = Policy(keep_last, _seconds(keep_within, 0.0), keep_hourly, keep_daily, keep_weekly, keep_monthly,
                   keep_yearly, keep_best, metric, "max" if maximize else "min", keep_tagged, tuple(keep_ref),
                   group_by, keep_noted)
    policy: Policy | None = None if given.empty and given == _unset(given) else given
    with open_repo() as repo:
        if remote:
            if policy is None:
                raise UsageError("forget --remote needs a policy on the command line")
            result = repo.forget_remote(remote, policy, dry_run=dry_run)
        else:
            result = repo.forget(policy, dry_run=dry_run, save=save, auto=auto)
    if as_json or as_lines:
        return emit(result.commits if as_lines else result, lines=as_lines)
    if is_quiet() and not dry_run:  # what a dry run would do is the data asked for; what was done is information
        return
    from .render import render_forget
    render_forget(result)


def _unset(p: Policy) -> Policy:
    from ..model.retention import Policy
    return Policy(group_by=p.group_by)


@app.command()
def gc(grace: Optional[str] = typer.Option(None, "--grace", metavar="DURATION",
                                           help="Keep young unreferenced data and tombstones this long (default 1h)."),
       now: bool = typer.Option(False, "--now", help="No grace period (refused while a commit or fetch runs)."),
       dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would be swept."),
       wait: float = typer.Option(30.0, "--wait", metavar="SECONDS", help="How long to wait for running writers."),
       max_unused: float = typer.Option(0.10, "--max-unused", metavar="FRACTION",
                                        help="Rewrite packs with more garbage than this (0.10 = 10%)."),
       no_repack: bool = typer.Option(False, "--no-repack", help="Only sweep whole packs; rewrite none."),
       remote: Optional[str] = RemoteOpt,
       quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Free the bytes nothing needs: unreferenced packs and objects go to tombstones, tombstones older than the
    grace period are deleted, partly-garbage packs are rewritten. Never touches what a ref, a recent ref change
    or a running writer needs."""
    seconds = _seconds(grace, 3600.0)
    with open_repo() as repo:
        if remote:
            result = repo.gc_remote(remote, grace=seconds, now=now, dry_run=dry_run)
        else:
            result = repo.gc(grace=seconds, now=now, dry_run=dry_run, wait=wait,
                             max_unused=None if no_repack else max_unused, progress=progress())
    if as_json:
        return emit(result)
    say = typer.echo if dry_run else info  # what a dry run would do is the data asked for
    say(result.summary())
    if result.repacked:
        from ..model.progress import human_bytes
        say(f"repacked {result.repacked} packs ({human_bytes(result.repack_freed)} of garbage in them)")
    if dry_run and result.partly_garbage:
        say(f"{len(result.partly_garbage)} packs are partly garbage (repack rewrites those over --max-unused)")


@app.command()
def repack(max_unused: float = typer.Option(0.10, "--max-unused", metavar="FRACTION",
                                            help="Rewrite packs with more garbage than this."),
           invert: bool = typer.Option(True, "--invert/--no-invert",
                                       help="Store each branch tip whole and older versions as deltas against it."),
           quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Rewrite packs: drop their garbage, merge small ones, and keep the newest versions whole (fastest to
    check out)."""
    with open_repo() as repo:
        result = repo.repack(max_unused=max_unused, invert=invert, progress=progress())
    if as_json:
        return emit(result)
    info(result.summary())


@app.command()
def du(revs: list[str] = typer.Argument(None, help="Commits to account for (default: every kept commit)."),
       by: str = typer.Option("commit", "--by", help="commit, branch, tag or remote."),
       set_price: list[str] = typer.Option([], "--set-price", metavar="TIER=USD",
                                           help="Save a price per GiB-month (tier: local, or a remote's name)."),
       as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Storage accounting: logical bytes, stored bytes, bytes unique to each item (what dropping it frees) and
    shared; the totals add up to the bytes on disk."""
    from ..model import metadata
    with open_repo() as repo:
        if set_price:
            repo.set_prices(metadata.parse_assignments(set_price, "--set-price"))
        report = repo.du(revs or None, by=by)
    if as_json or as_lines:
        return emit(report.rows if as_lines else report, lines=as_lines)
    from .render import render_du
    render_du(report)
