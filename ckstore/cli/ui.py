"""`ckstore ui`: serve the local web view of the repository until interrupted."""

from __future__ import annotations

from typing import Optional

import typer

from .app import app, open_repo


@app.command()
def ui(port: int = typer.Option(8471, "--port", "-p", help="Port to listen on (0: any free one)."),
       host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs a token."),
       token: Optional[str] = typer.Option(None, "--token", envvar="CKSTORE_UI_TOKEN",
                                           help="The token off loopback (default: a fresh random one)."),
       open_browser: bool = typer.Option(False, "--open", help="Open the view in a web browser.")) -> None:
    """Serve a read-only web view of history, metrics, commits, diffs and storage (Ctrl-C stops it)."""
    from ..ui.routes import Routes
    from ..ui.server import is_loopback, make_server
    with open_repo() as repo:
        server = make_server(Routes(repo), host, port, token)
        url = server.url
        typer.echo(f"ckstore ui: serving {repo.dir} at {url}", err=False)
        if not is_loopback(host):
            typer.echo(f"warning: listening on {host}: anyone who can reach it and has the token can read this "
                       "repository", err=True)
        if open_browser:
            import webbrowser
            webbrowser.open(url)
        import sys
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
