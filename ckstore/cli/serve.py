"""`ckstore serve`: serve the remotes under a directory over HTTP(S); `serve token ...` and `serve audit` manage
who may use them and show what they did (docs/serve.md)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from .app import JsonOpt, app, emit, info, warn

DEFAULT_LISTEN = "127.0.0.1:8470"
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(?:/s)?$")


class _RunByDefault(TyperGroup):
    """`ckstore serve PATH ...` means `ckstore serve run PATH ...`: the group's first word is a command only when
    it names one (or asks for help)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # a click Context (typer may vendor click)
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


serve_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                        help="Serve remotes over HTTP(S) with scoped tokens: `ckstore serve PATH --listen HOST:PORT`.")
token_app = typer.Typer(no_args_is_help=True, help="Add, list and revoke the bearer tokens of a served directory.")
app.add_typer(serve_app, name="serve")
serve_app.add_typer(token_app, name="token")

StateOpt = typer.Option(..., "--state", envvar="CKSTORE_SERVE_ROOT", metavar="PATH",
                        help="The served directory (its tokens live in PATH/.ckstore-serve).")


def _rate(text: Optional[str]) -> float | None:
    if text is None:
        return None
    m = _RATE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"cannot read {text!r}: write requests per second, e.g. 50/s", param_hint="--rate")
    return float(m.group(1))


@serve_app.command("run")
def run(path: Path = typer.Argument(..., help="Directory whose subdirectories are the remotes served by name."),
        listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="HOST:PORT to listen on."),
        tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate (chain) to serve TLS with."),
        tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
        max_request_mib: float = typer.Option(64, "--max-request-mib", help="Largest request body, MiB (413 above)."),
        rate: Optional[str] = typer.Option(None, "--rate", help="Requests per second per token, e.g. 50/s "
                                                               "(429 with Retry-After above; default: no limit)."),
        as_json: bool = JsonOpt) -> None:
    """Serve every remote under PATH at https://HOST:PORT/NAME until interrupted (Ctrl-C shuts down gracefully)."""
    from ..model.urls import is_loopback
    from ..serve.app import MIB, ServeConfig
    from ..serve.server import check_root, parse_listen, serve_forever
    from ..serve.tokens import TokenStore, state_dir

    root = check_root(path)
    host, port = parse_listen(listen)
    if max_request_mib <= 0:
        raise typer.BadParameter("must be positive", param_hint="--max-request-mib")
    config = ServeConfig(root, max_request=int(max_request_mib * MIB), rate=_rate(rate))
    scheme = "https" if tls_cert else "http"
    if not TokenStore(state_dir(root)).tokens():
        warn(f"no tokens yet: every request will be refused; add one with `ckstore serve token add NAME --scope "
             f"admin --state {root}`")
    if not tls_cert and not is_loopback(host):
        warn(f"serving plain HTTP on {host}: tokens and checkpoints cross the network unencrypted; give --tls-cert "
             "and --tls-key")
    if as_json:
        emit({"url": f"{scheme}://{listen}", "root": str(root), "max_request": config.max_request,
              "rate": config.rate})
    else:
        info(f"ckstore serve: {root} at {scheme}://{listen}/NAME")
    sys.stdout.flush()
    serve_forever(config, host, port, str(tls_cert) if tls_cert else None, str(tls_key) if tls_key else None)


@token_app.command("add")
def token_add(name: str = typer.Argument(..., help="The token's name (shown in the audit log)."),
              scope: list[str] = typer.Option(..., "--scope", help="read, push:<ref glob> or admin (repeatable)."),
              repo: Optional[list[str]] = typer.Option(None, "--repo", help="Only this remote (repeatable; default: "
                                                                          "every remote under the directory)."),
              expires: Optional[str] = typer.Option(None, "--expires", help="Lifetime, e.g. 30d, 12h (default: "
                                                                            "none)."),
              state: Path = StateOpt, as_json: bool = JsonOpt) -> None:
    """Create a token and print its secret, once: only a hash of it is kept."""
    from ..serve.tokens import TokenStore, parse_duration, state_dir

    store = TokenStore(state_dir(state))
    token, secret = store.add(name, scope, repo, parse_duration(expires) if expires else None)
    if as_json:
        return emit({**token.public(), "secret": secret})
    typer.echo(secret)
    info(f"token {name} ({', '.join(token.scopes)}) added; the secret above is shown only now", err=True)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


@token_app.command("list")
def token_list(state: Path = StateOpt, as_json: bool = JsonOpt) -> None:
    """The tokens: name, scopes, remotes, expiry and whether revoked (never the secrets)."""
    from ..serve.tokens import TokenStore, state_dir

    tokens = [t.public() for t in TokenStore(state_dir(state)).tokens().values()]
    if as_json:
        return emit(tokens)
    for t in tokens:
        status = "revoked" if t["revoked"] else ("expired" if t["expires"] and t["expires"] <= time.time() else "live")
        typer.echo(f"{t['name']}\t{' '.join(t['scopes'])}\t{','.join(t['repos']) or '*'}\texpires {_when(t['expires'])}"
                   f"\t{status}")


@token_app.command("revoke")
def token_revoke(name: str = typer.Argument(..., help="The token to revoke."), state: Path = StateOpt,
                 as_json: bool = JsonOpt) -> None:
    """Revoke a token: refused (401) from the next request on."""
    from ..serve.tokens import TokenStore, state_dir

    token = TokenStore(state_dir(state)).revoke(name)
    return emit(token.public()) if as_json else info(f"token {name} revoked")


@serve_app.command("audit")
def audit(path: Path = typer.Argument(..., help="The served directory."), as_json: bool = JsonOpt) -> None:
    """Print the audit log: every write request, its token, address and result."""
    from ..serve.audit import read_audit
    from ..serve.tokens import state_dir

    entries: Any = read_audit(state_dir(path))
    if as_json:
        return emit(entries, lines=True)
    for e in entries:
        typer.echo(f"{_when(e.get('time'))}\t{e.get('token') or '-'}\t{e.get('addr') or '-'}\t{e.get('repo')}\t"
                   f"{e.get('op')}\t{e.get('key')}\t{e.get('size') if e.get('size') is not None else '-'}\t"
                   f"{e.get('result')}\t{e.get('detail', '')}")
