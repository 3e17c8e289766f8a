"""Commands for the key files of an encrypted repository (key list, add, remove, passwd), and `migrate --encrypt`."""

from __future__ import annotations

import dataclasses
import datetime

import typer

from .app import JsonOpt, app, ask_passphrase, emit, info, open_repo, progress

key_app = typer.Typer(no_args_is_help=True, help="The passphrases (key files) of an encrypted repository.")
app.add_typer(key_app, name="key")


def _new_passphrase(required: bool = True) -> object:
    """A new passphrase: asked twice on a terminal, else CKSTORE_NEW_PASSWORD (scripts). Not `required`: None
    then, and the library takes CKSTORE_PASSWORD* (or says how to give one)."""
    import os
    from ..errors import UsageError
    asked = ask_passphrase("the new key", twice=True)
    if asked is not None:
        return asked
    if os.environ.get("CKSTORE_NEW_PASSWORD"):
        return os.environ["CKSTORE_NEW_PASSWORD"]
    if not required:
        return None
    raise UsageError("a new passphrase is needed", hint="run it on a terminal, or set CKSTORE_NEW_PASSWORD")


@key_app.command("list")
def key_list(as_json: bool = JsonOpt) -> None:
    """The key files: name, label, who made it and when; * marks the one that opened the repository."""
    with open_repo() as repo:
        keys = repo.key_list()
    if as_json:
        return emit([dataclasses.asdict(k) for k in keys])
    for k in keys:
        if k.damaged:
            typer.echo(f"  {k.name[:12]}  damaged: {k.damaged}")
            continue
        when = datetime.datetime.fromtimestamp(k.created).strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{'*' if k.current else ' '} {k.name[:12]}  {when}  {k.user}@{k.host}  {k.label}")


@key_app.command("add")
def key_add(label: str = typer.Option("", "--label", help="What this key is for (default user@host)."),
            as_json: bool = JsonOpt) -> None:
    """Add a passphrase: a new key file for the same master key (push to share it with remotes)."""
    with open_repo() as repo:
        name = repo.key_add(_new_passphrase(), label=label)
    return emit({"added": name}) if as_json else info(f"added key {name[:12]}")


@key_app.command("remove")
def key_remove(name: str = typer.Argument(..., help="The key file (a unique prefix of its name)."),
               as_json: bool = JsonOpt) -> None:
    """Remove a key file (not the one opening the repository now; remotes keep their copy until removed there)."""
    with open_repo() as repo:
        full = repo.key_remove(name)
    return emit({"removed": full}) if as_json else info(f"removed key {full[:12]}")


@key_app.command("passwd")
def key_passwd(as_json: bool = JsonOpt) -> None:
    """Change the passphrase of the key file that opens the repository (a new key file replaces it)."""
    with open_repo() as repo:
        name = repo.key_passwd(_new_passphrase())
    return emit({"key": name}) if as_json else info(f"passphrase changed: key {name[:12]}")


@app.command()
def migrate(encrypt: bool = typer.Option(False, "--encrypt", help="Make this plain repository an encrypted one."),
            keep_plain: bool = typer.Option(False, "--keep-plain",
                                            help="Keep the old plain files in .ckstore-plain (default: deleted)."),
            wait: float = typer.Option(60.0, "--wait", metavar="SECONDS", help="How long to wait for running "
                                                                               "writers."),
            as_json: bool = JsonOpt) -> None:
    """Upgrade the repository to the newest format version, in place (only its config changes; older ckstore
    builds then refuse it). `--encrypt` also makes a plain one encrypted, in place (every id changes; its remotes
    stay plain, so push to a new remote)."""
    if not encrypt:
        with open_repo() as repo:
            before, after = repo.upgrade()
            encrypted = bool(repo.config.encryption)
        if as_json:
            return emit({"version": after, "from": before, "migrated": after != before})
        hint = "" if encrypted else " (`--encrypt` makes it an encrypted repository)"
        if after == before:
            return info(f"repository format version {after} is the newest this ckstore writes: nothing to migrate"
                        + hint)
        return info(f"upgraded from format version {before} to {after}: opaque runs are now cut by content"
                    + hint)
    with open_repo() as repo:
        result = repo.migrate_encrypt(_new_passphrase(required=False), keep_plain=keep_plain, wait=wait,
                                      progress=progress())
    if as_json:
        return emit(dataclasses.asdict(result))
    info(f"encrypted: {result.chunks} chunks, {result.objects} objects, {result.refs} refs rewritten; "
         f"{result.stored_before / 2**20:.1f} MiB before, {result.stored_after / 2**20:.1f} MiB after")
    if result.kept_plain:
        info(f"the plain files are kept in {result.kept_plain}: delete them when done")
    info("its remotes are plain: push to a new remote (ckstore remote add NAME URL)")

