"""`ckstore ui`: serve the local web view of the repository until interrupted."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .app import JsonOpt, app, open_repo, warn


@app.command()
def ui(port: int = typer.Option(8471, "--port", "-p", help="Port to listen on (0: any free one)."),
       host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs a token."),
       token: Optional[str] = typer.Option(None, "--token", envvar="CKSTORE_UI_TOKEN",
                                           help="A token every request must carry (default: none on loopback, a "
                                                "fresh random one elsewhere)."),
       open_browser: bool = typer.Option(False, "--open", help="Open the view in a web browser."),
       as_json: bool = JsonOpt) -> None:
    """Serve a read-only web view of history, metrics, commits, diffs and storage (Ctrl-C stops it)."""
    from ..ui.routes import Routes
    from ..ui.server import is_loopback, make_server
    with open_repo() as repo:
        server = make_server(Routes(repo), host, port, token)
        url = server.url
        if as_json:  # one line a script can read before it starts asking (the URL holds the token, if any)
            import json
            typer.echo(json.dumps({"url": url, "dir": str(repo.dir), "host": host,
                                   "port": server.server_address[1]}))
        else:
            typer.echo(f"ckstore ui: serving {repo.dir} at {url}")
        if not is_loopback(host):
            warn(f"listening on {host}: anyone who can reach it and has the token can read this repository")
        if open_browser:
            import webbrowser
            webbrowser.open(url)
        sys.stdout.flush()  # a script reading the URL must see it before the first request
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
