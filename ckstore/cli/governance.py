"""Commands for governance: note, alias, protect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import JsonLinesOpt, JsonOpt, QuietOpt, app, emit, given_path, info, open_repo

note_app = typer.Typer(no_args_is_help=True, help="Data about a commit added after it was made (evaluations, "
                                                   "reviews); the commit's id never changes.")
alias_app = typer.Typer(no_args_is_help=True, help="Movable names (champion, staging) with a full history.")
app.add_typer(note_app, name="note")
app.add_typer(alias_app, name="alias")

NsOpt = typer.Option("default", "--ns", help="Notes namespace, e.g. eval.")


@note_app.command("add")
def note_add(rev: str = typer.Argument(..., help="The commit the note is about."),
             values: list[str] = typer.Argument(None, metavar="KEY=VALUE...", help="Values; KEY:=JSON types one."),
             ns: str = NsOpt,
             json_file: Optional[Path] = typer.Option(None, "--json-file", metavar="FILE",
                                                      help="Values from a JSON file (an object)."),
             message: str = typer.Option("", "-m", "--message", help="Why, or where the values come from."),
             as_json: bool = JsonOpt) -> None:
    """Attach values to a commit: `ckstore note add HEAD --ns eval mmlu=0.62 -m "harness v3"`."""
    from ..errors import UsageError
    from ..model import metadata
    data = {}
    if json_file:
        try:
            data = json.loads(given_path(json_file).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {json_file}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{json_file} must hold a JSON object")
    data = metadata.deep_merge(data, metadata.parse_assignments(values or []))
    with open_repo() as repo:
        note = repo.note_add(rev, data, ns=ns, message=message)
    if as_json:
        return emit(note)
    info(f"noted {note.target[:12]} in {note.ns}: {json.dumps(note.data, sort_keys=True)}")


@note_app.command("show")
def note_show(rev: str = typer.Argument("HEAD", help="The commit."),
              ns: Optional[str] = typer.Option(None, "--ns", help="Only this namespace."),
              as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Every note on a commit, oldest first, with who added it and when."""
    with open_repo() as repo:
        found = repo.notes(rev, ns=ns)
    if as_json or as_lines:
        return emit(found, lines=as_lines)
    from .render import when
    for n in found:
        typer.echo(f"{when(n.time)}  {n.author}  [{n.ns}] {json.dumps(n.data, sort_keys=True)}"
                   + (f"  {n.message}" if n.message else ""))


@note_app.command("list")
def note_list(ns: Optional[str] = typer.Option(None, "--ns", help="Only this namespace."),
              as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Every noted commit with its merged notes."""
    with open_repo() as repo:
        found = repo.noted(ns=ns)
    if as_lines:
        return emit(({"id": oid, "notes": spaces} for oid, spaces in found.items()), lines=True)
    if as_json:
        return emit(found)
    for oid, spaces in found.items():
        typer.echo(f"{oid[:12]}  " + "  ".join(f"{k}: {json.dumps(v, sort_keys=True)}" for k, v in spaces.items()))


@alias_app.command("set")
def alias_set(name: str = typer.Argument(..., help="The alias, e.g. champion."),
              rev: str = typer.Argument(..., help="What it names from now on."),
              reason: str = typer.Option(..., "--reason", help="Why: kept in its history."),
              expect: Optional[str] = typer.Option(None, "--expect", metavar="REV",
                                                   help="Move only if the alias still names REV."),
              as_json: bool = JsonOpt) -> None:
    """Point an alias at a commit (compare-and-swap; a protected alias moves only through promote)."""
    with open_repo() as repo:
        move = repo.alias_set(name, rev, reason, expected=expect)
    if as_json:
        return emit(move)
    info(f"{name}: {(move.old or '-')[:12]} -> {move.new[:12]}")


@alias_app.command("delete")
def alias_delete(name: str = typer.Argument(...), reason: str = typer.Option(..., "--reason"),
                 as_json: bool = JsonOpt) -> None:
    """Delete an alias (its history stays)."""
    with open_repo() as repo:
        move = repo.alias_delete(name, reason)
    if as_json:
        return emit(move)
    info(f"deleted alias {name} (was {(move.old or '-')[:12]})")


@alias_app.command("list")
def alias_list(as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Every alias and what it names."""
    with open_repo() as repo:
        found = repo.aliases()
    if as_json or as_lines:
        return emit(found, lines=as_lines)
    from .render import when
    for a in found:
        typer.echo(f"{a.name:<20} {a.id[:12]}  {when(a.last.time)}  {a.last.author}: {a.last.reason}")


@alias_app.command("history")
def alias_history(name: str = typer.Argument(...), as_json: bool = JsonOpt, as_lines: bool = JsonLinesOpt) -> None:
    """Every move of an alias, newest first: who, when, from, to, why."""
    with open_repo() as repo:
        moves = repo.alias_history(name)
    if as_json or as_lines:
        return emit(moves, lines=as_lines)
    from .render import when
    for i, m in enumerate(moves):
        typer.echo(f"{name}@{{{i}}}  {when(m.time)}  {m.author}  {m.action:<8} {(m.old or '-')[:12]} -> "
                   f"{(m.new or 'deleted')[:12]}  {m.reason}")


@app.command()
def protect(ref: Optional[str] = typer.Argument(None, help="A ref or glob (a bare name is a branch)."),
            no_delete: bool = typer.Option(False, "--no-delete", help="Refuse deleting it."),
            ff_only: bool = typer.Option(False, "--ff-only", help="Refuse moves that drop its history."),
            require_checks: bool = typer.Option(False, "--require-checks",
                                                help="Moves only through `ckstore promote` with passing checks."),
            remove: bool = typer.Option(False, "--remove", help="Remove the rule for REF."),
            remote: Optional[str] = typer.Option(None, "--remote", metavar="NAME",
                                                 help="Put the rule in that remote's config: it binds every pusher."),
            as_json: bool = JsonOpt) -> None:
    """Protect refs: rules kept in the repository config, enforced by every command here and by push."""
    with open_repo() as repo:
        if ref and remove:
            repo.unprotect(ref)
            return emit({"unprotected": ref}) if as_json else info(f"unprotected {ref}")
        if ref:
            rule = repo.protect(ref, no_delete=no_delete, ff_only=ff_only, require_checks=require_checks,
                                remote=remote)
            return emit(rule) if as_json else info(f"protected {rule.pattern}: {', '.join(rule.flags)}")
        rules = repo.protections()
    if as_json:
        return emit(rules)
    for r in rules:
        typer.echo(f"{r.pattern:<32} {', '.join(r.flags)}")


def _render_promotion(result) -> None:
    for c in result.checks:
        first, _, rest = c.detail.partition("\n")
        typer.echo(f"  {'pass' if c.passed else 'FAIL'}  {c.name}: {first}")
        for line in rest.splitlines()[-5:]:
            typer.echo(f"        {line}")
    if result.dry_run:
        verdict = "would move" if result.passed else "would be refused"
    else:
        verdict = "moved" if result.moved else "refused" + (f": {result.error}" if result.error else "")
    typer.echo(f"{result.action} {result.candidate[:12]} to {result.alias} "
               f"(was {(result.current or '-')[:12]}): {verdict}")


@app.command()
def promote(rev: str = typer.Argument(..., help="The candidate."),
            to: str = typer.Option(..., "--to", metavar="ALIAS", help="The alias to move, e.g. champion."),
            reason: str = typer.Option(..., "--reason", help="Why: kept in the alias history and the evidence."),
            check: list[str] = typer.Option([], "--check", metavar="NAME",
                                            help="verify, or a hook named in the config (governance.checks)."),
            gate: list[str] = typer.Option([], "--gate", metavar="EXPR",
                                           help="e.g. 'metrics.val_loss <= current.metrics.val_loss'."),
            timeout: float = typer.Option(600.0, "--timeout", help="Seconds a hook may run."),
            dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Run the checks, move nothing."),
            as_json: bool = JsonOpt) -> None:
    """Move an alias to REV only if every check and gate passes; the evidence is noted on REV either way."""
    with open_repo() as repo:
        result = repo.promote(rev, to, reason, checks=check, gates=gate, dry_run=dry_run, timeout=timeout)
    if as_json:
        emit(result)
    else:
        _render_promotion(result)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def rollback(alias: str = typer.Argument(..., help="The alias to move back."),
             reason: str = typer.Option(..., "--reason", help="Why: kept in the alias history and the audit log."),
             to: Optional[str] = typer.Option(None, "--to", metavar="REV", help="Where to (default: the previous "
                                              "holder)."),
             steps: int = typer.Option(1, "--steps", metavar="N", help="N holders back in the alias history."),
             force: bool = typer.Option(False, "--force", help="Skip the checks (audited as forced)."),
             dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show the candidate and what changes."),
             as_json: bool = JsonOpt) -> None:
    """Move an alias back to an earlier holder: shows what changes, re-runs the checks, records the reason."""
    with open_repo() as repo:
        current = repo.resolve(alias)
        target = repo.resolve(to) if to else repo.resolve(f"{alias}@{{{steps}}}")
        change = repo.diff(current, target)
        result = repo.rollback(alias, reason, to=to, steps=steps, force=force, dry_run=dry_run)
    if as_json:
        return emit({"diff": change.to_dict(), "result": result.to_dict()})
    summary = ", ".join(f"{k} {v}" for k, v in change.summary.items())
    typer.echo(f"{alias}: {current[:12]} -> {target[:12]}" + (f"  ({summary})" if summary else ""))
    for name, delta in change.metadata.get("metrics", {}).items():
        typer.echo(f"  metrics.{name}: {delta}")
    _render_promotion(result)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def describe(rev: str = typer.Argument("HEAD"), as_json: bool = JsonOpt) -> None:
    """Name a commit by the nearest alias or tag behind it: champion-3-g1a2b3c4 (usable as a revision)."""
    with open_repo() as repo:
        name = repo.describe(rev)
    return emit({"rev": rev, "name": name}) if as_json else typer.echo(name)


@app.command("parse-name")
def parse_name(name: str = typer.Argument(..., help="An artifact name (config governance.name_template) or a "
                                                    "describe name."),
               as_json: bool = JsonOpt) -> None:
    """Split a name into its fields and say which commit it names."""
    with open_repo() as repo:
        fields = repo.parse_name(name)
    if as_json:
        return emit(fields)
    for k, v in fields.items():
        typer.echo(f"{k}: {v}")


@app.command("name-template")
def name_template(template: Optional[str] = typer.Argument(None, help='e.g. "{model}-{branch}-v{n}-{phase}".'),
                  remove: bool = typer.Option(False, "--remove", help="Remove the template."),
                  as_json: bool = JsonOpt) -> None:
    """Set the artifact name template that `show` prints and revisions accept."""
    with open_repo() as repo:
        if remove or template:
            repo.set_name_template(None if remove else template)
        now = repo.config.governance.get("name_template")
    return emit({"name_template": now}) if as_json else typer.echo(now or "(no name template)")


@app.command()
def merge(other: str = typer.Argument(..., help="The branch (or revision) to join in."),
          message: Optional[str] = typer.Option(None, "-m", "--message", help="The merge commit's message."),
          take: str = typer.Option("ours", "--take", metavar="ours|theirs|REV",
                                   help="Whose checkpoint the merge commit holds."),
          quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Join another line of history with a two-parent commit (a checkpoint cannot be blended: pick one)."""
    with open_repo() as repo:
        done = repo.merge(other, take=take, message=message)
    if as_json:
        return emit(done)
    info(f"{done.status}: {done.id[:12]}" + (f" {done.commit.message}" if done.commit is not None else ""))


@app.command()
def signing(key: Optional[str] = typer.Option(None, "--key", help="SSH private key to sign with."),
            signer: Optional[str] = typer.Option(None, "--signer", help="The principal to sign as (an e-mail)."),
            allowed_signers: Optional[str] = typer.Option(None, "--allowed-signers", metavar="FILE",
                                                          help="Who may sign: 'PRINCIPAL KEYTYPE KEY' lines."),
            require: Optional[bool] = typer.Option(None, "--require/--no-require",
                                                   help="Unsigned commits and audit entries are problems."),
            as_json: bool = JsonOpt) -> None:
    """Sign commits, tags, alias moves and audit entries with an SSH key (ssh-keygen -Y), and verify them."""
    with open_repo() as repo:
        settings = repo.configure_signing(key=key, signer=signer, allowed_signers=allowed_signers, require=require)
    if as_json:
        return emit(settings)
    for k, v in settings.items():
        typer.echo(f"{k}: {v if v is not None else '-'}")
