"""Commands for remotes: remote add/remove/list, push, fetch, pull, clone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from .app import JsonOpt, QuietOpt, app, ask_passphrase, emit, given_path, info, open_repo, progress, warn

remote_app = typer.Typer(no_args_is_help=True, help="Manage the remotes this repository pushes to and fetches from.")
app.add_typer(remote_app, name="remote")


EndpointOpt = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint (MinIO, SeaweedFS, R2).")
RegionOpt = typer.Option(None, "--region", help="S3 region.")
ProfileOpt = typer.Option(None, "--profile", help="AWS profile for S3 (default: AWS_PROFILE): static keys, "
                                                  "credential_process, SSO or assume-role (the last three need boto3).")
AllowHttpOpt = typer.Option(False, "--allow-http", help="Allow plain http:// to a host other than loopback "
                                                        "(credentials and data travel unencrypted).")
CaBundleOpt = typer.Option(None, "--ca-bundle", metavar="PEM", help="Trust these CA certificates too (https).")
SseOpt = typer.Option(None, "--sse", metavar="AES256|aws:kms|aws:kms:dsse",
                      help="S3 server-side encryption of every object written.")
SseKeyOpt = typer.Option(None, "--sse-kms-key-id", metavar="KEY", help="The KMS key for --sse aws:kms.")
TokenFileOpt = typer.Option(None, "--token-file", metavar="FILE",
                            help="A served remote's bearer token, read from this file (else CKSTORE_TOKEN).")


def _settings(endpoint_url: str | None, region: str | None, profile: str | None, allow_http: bool,
              ca_bundle: Path | None, sse: str | None, sse_kms_key_id: str | None,
              token_file: Path | None) -> dict[str, Any]:
    return {"endpoint_url": endpoint_url, "region": region, "profile": profile, "allow_http": allow_http,
            "ca_bundle": str(given_path(ca_bundle)) if ca_bundle else None, "sse": sse,
            "sse_kms_key_id": sse_kms_key_id, "token_file": str(given_path(token_file)) if token_file else None}


@remote_app.command("add")
def remote_add(name: str = typer.Argument(..., help="Short name, e.g. origin."),
               url: str = typer.Argument(..., help="A directory, file:///path, s3://bucket/prefix, "
                                                   "https://host:port/name (served) or memory://name."),
               endpoint_url: Optional[str] = EndpointOpt, region: Optional[str] = RegionOpt,
               profile: Optional[str] = ProfileOpt, allow_http: bool = AllowHttpOpt,
               ca_bundle: Optional[Path] = CaBundleOpt, sse: Optional[str] = SseOpt,
               sse_kms_key_id: Optional[str] = SseKeyOpt, token_file: Optional[Path] = TokenFileOpt,
               as_json: bool = JsonOpt) -> None:
    """Remember a remote under a name, with how to reach it."""
    with open_repo() as repo:
        spec = repo.remote_add(name, url, **_settings(endpoint_url, region, profile, allow_http, ca_bundle, sse,
                                                      sse_kms_key_id, token_file))
    return emit(spec) if as_json else info(f"added remote {spec.name}: {spec.url}")


@remote_app.command("remove")
def remote_remove(name: str = typer.Argument(..., help="The remote (or remote group) to forget."),
                  as_json: bool = JsonOpt) -> None:
    """Forget a remote and its remote-tracking refs, or a remote group (its members stay)."""
    with open_repo() as repo:
        is_group = name in repo.remote_groups()
        repo.remote_remove(name)
    if as_json:
        return emit({"removed": name, "group": is_group})
    info(f"removed remote {'group ' if is_group else ''}{name}")


@remote_app.command("add-group")
def remote_add_group(name: str = typer.Argument(..., help="The group's name, e.g. offsite."),
                     members: list[str] = typer.Argument(..., help="Remotes in the group."),
                     as_json: bool = JsonOpt) -> None:
    """A group of remotes: `push GROUP` pushes to each member, `fsck --remote GROUP` checks each."""
    with open_repo() as repo:
        repo.remote_add_group(name, members)
    return emit({"group": name, "members": members}) if as_json else info(f"added remote group {name}: "
                                                                          f"{' '.join(members)}")


@remote_app.command("set-min-replicas")
def remote_set_min_replicas(n: int = typer.Argument(..., help="Remotes each commit should be on (0: unset)."),
                            as_json: bool = JsonOpt) -> None:
    """How many remotes should hold each commit: `du --by remote` names the commits on fewer."""
    with open_repo() as repo:
        repo.set_min_replicas(n or None)
    return emit({"min_replicas": n or None}) if as_json else info(f"min replicas: {n or 'not set'}")


@remote_app.command("list")
def remote_list(as_json: bool = JsonOpt) -> None:
    """List the remotes and remote groups."""
    with open_repo() as repo:
        specs, groups, least = repo.remote_list(), repo.remote_groups(), repo.min_replicas()
    if as_json:
        return emit({"remotes": [s.to_dict() for s in specs], "groups": groups, "min_replicas": least})
    for s in specs:
        partial = "" if s.partial is None else f"  [partial: {s.describe_partial()}]"
        shown = {k: v for k, v in s.settings().items() if k != "endpoint_url"}
        extra = ", ".join(k.replace("_", "-") if v is True else f"{k.replace('_', '-')} {v}" for k, v in shown.items())
        typer.echo(f"{s.name}\t{s.url}" + (f"  (endpoint {s.endpoint_url})" if s.endpoint_url else "")
                   + (f"  [{extra}]" if extra else "") + partial)
    for name, members in sorted(groups.items()):
        typer.echo(f"{name}\tgroup: {' '.join(members)}")
    if least:
        typer.echo(f"min replicas: {least}")


def _sync_report(result: Any, as_json: bool, **extra: Any) -> None:
    """--json: the result; else each ref moved, the warnings, and the bytes moved vs the logical size."""
    if as_json:
        return emit({**result.to_dict(), **extra})
    for r in result.refs:
        info(f"  {r['status']:<10} {r['ref']}  {(r['old'] or '-')[:12]} -> {(r['new'] or '-')[:12]}")
    for w in result.warnings:
        warn(w)
    info(result.summary())


@app.command()
def push(remote: Optional[str] = typer.Argument(None, help="Remote name (default: origin)."),
         branches: Optional[list[str]] = typer.Argument(None, help="Branches to push (default: HEAD's)."),
         all_branches: bool = typer.Option(False, "--all", help="Push every branch."),
         tags: bool = typer.Option(False, "--tags", help="Push the tags too."),
         force: bool = typer.Option(False, "--force", "-f", help="Allow a non-fast-forward (audited)."),
         quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Upload branches (and tags) with their history and data to a remote."""
    with open_repo() as repo:
        result = repo.push(remote, branches or None, all=all_branches, tags=tags, force=force, progress=progress())
    if hasattr(result, "failures"):  # a remote group: each member's report; a failed member fails the command
        if as_json:
            emit(result)
        else:
            for r in result.results:
                info(f"{r.remote}:")
                _sync_report(r, False)
            for m, why in result.failures.items():
                typer.echo(f"error: push to {m} failed: {why}", err=True)
        if result.failures:
            raise typer.Exit(1)
        return
    _sync_report(result, as_json)


@app.command()
def fetch(remote: Optional[str] = typer.Argument(None, help="Remote name (default: origin)."),
          prune: bool = typer.Option(False, "--prune", "-p",
                                     help="Delete refs/remotes/REMOTE/* the remote no longer has (audited)."),
          quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Download a remote's new history; moves refs/remotes/REMOTE/*, never your branches."""
    with open_repo() as repo:
        result = repo.fetch(remote, prune=prune, progress=progress())
    _sync_report(result, as_json)


@app.command()
def pull(remote: Optional[str] = typer.Argument(None, help="Remote name (default: origin)."),
         branch: Optional[str] = typer.Argument(None, help="Branch to update (default: HEAD's)."),
         force: bool = typer.Option(False, "--force", "-f", help="Reset a diverged branch to the remote's (audited)."),
         merge: bool = typer.Option(False, "--merge", help="Join a diverged branch with a merge commit (ours)."),
         quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Fetch, then fast-forward a branch to the remote's."""
    with open_repo() as repo:
        result = repo.pull(remote, branch, force=force, merge=merge, progress=progress())
    _sync_report(result, as_json)


@app.command()
def clone(url: str = typer.Argument(..., help="A directory, file:///path, s3://bucket/prefix, https://host:port/name "
                                              "(served) or memory://name."),
          directory: Optional[Path] = typer.Argument(None, help="Where to create it (default: named after URL)."),
          filters: list[str] = typer.Option([], "--filter", metavar="tensors=GLOB",
                                            help="Partial clone: only these tensors' data; the rest on demand."),
          metadata_only: bool = typer.Option(False, "--metadata-only", help="History and manifests, no data."),
          depth: Optional[int] = typer.Option(None, "--depth", metavar="N",
                                              help="Only the newest N commits' data of each branch; older on demand."),
          endpoint_url: Optional[str] = EndpointOpt, region: Optional[str] = RegionOpt,
          profile: Optional[str] = ProfileOpt, allow_http: bool = AllowHttpOpt,
          ca_bundle: Optional[Path] = CaBundleOpt, sse: Optional[str] = SseOpt,
          sse_kms_key_id: Optional[str] = SseKeyOpt, token_file: Optional[Path] = TokenFileOpt,
          checkout: Optional[Path] = typer.Option(None, "--checkout", metavar="<path>",
                                                  help="Also write the checked-out branch's files there (a new "
                                                       "or empty directory) while the data arrives."),
          quiet: bool = QuietOpt, as_json: bool = JsonOpt) -> None:
    """Create a repository from a remote: history, branches and (unless partial) the data."""
    from ..api import clone as clone_repo
    from ..api import default_clone_dir
    with clone_repo(url, given_path(directory or Path(default_clone_dir(url))), filter=filters or None,
                    metadata_only=metadata_only, depth=depth,
                    **_settings(endpoint_url, region, profile, allow_http, ca_bundle, sse, sse_kms_key_id, token_file),
                    checkout=given_path(checkout) if checkout is not None else None,
                    passphrase=ask_passphrase(f"the remote {url}"),
                    progress=progress()) as repo:
        result, where = repo.last_transfer, str(repo.root)
        branch = repo.head_branch() if result.checked_out else None
    if not as_json:
        info(f"cloned {url} into {where}" + (f" (depth {depth}: older commits' data on demand)" if depth else ""))
        if result.checked_out:
            info(f"checked out {branch} into {result.checked_out}")
    _sync_report(result, as_json, path=where)
