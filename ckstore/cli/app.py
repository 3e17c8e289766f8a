"""The `ckstore` command's frame: the typer app, repository lookup, JSON output, and errors turned into exit codes."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # the library (numpy, lmdb, ...) is imported only when a command runs, so --help stays fast
    from ..api import Repo

app = typer.Typer(no_args_is_help=True, add_completion=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Version model checkpoints the way you version code.")
_state: dict[str, Any] = {"dir": None}

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"ckstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(directory: Optional[Path] = typer.Option(None, "-C", help="Run as if started in DIR.", metavar="DIR"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    _state["dir"] = directory


def open_repo() -> Repo:
    """The repository at -C DIR, CKSTORE_DIR or above the working directory."""
    from ..api import Repo
    directory = _state["dir"]
    if directory is not None and not directory.is_dir():
        # Without this check, a mistyped -C DIR silently walks up to whatever repository encloses it.
        from ..errors import UsageError
        raise UsageError(f"-C {directory}: no such directory")
    return Repo.open(directory)


def given_path(p: Path) -> Path:
    """A path given on the command line, relative to -C DIR when one was given ("as if started in DIR")."""
    return p if p.is_absolute() or _state["dir"] is None else _state["dir"] / p


def base_dir() -> Path:
    """-C DIR, or the working directory."""
    return _state["dir"] or Path(".")


def emit(value: Any) -> None:
    """Print `value` as JSON. Non-finite floats become null (JSON has no NaN), with a warning on stderr."""
    from ..results import json_safe
    data = value.to_dict() if hasattr(value, "to_dict") else value
    if isinstance(data, list):
        data = [v.to_dict() if hasattr(v, "to_dict") else v for v in data]
    safe = json_safe(data)
    if safe != data:
        typer.echo("warning: non-finite numbers (NaN, Infinity) are printed as null", err=True)
    typer.echo(json.dumps(safe, indent=2, default=str, allow_nan=False))


def progress() -> Any:
    """A progress bar on stderr that appears only for long work."""
    from .progress import DelayedProgress
    return DelayedProgress()


def main() -> None:
    """Entry point: library errors become one line and a hint (traceback only with CKSTORE_DEBUG=1)."""
    from ..allocator import tune
    from ..errors import CkstoreError
    tune()
    warnings.showwarning = _one_line_warning
    exits, aborts, usage = _parser_exceptions()
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except exits as exc:
        sys.exit(exc.exit_code)
    except usage as exc:
        if hasattr(exc, "show"):
            exc.show()
        else:
            typer.echo(f"Error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except aborts:
        sys.exit(130)
    except BrokenPipeError:  # `ckstore log | head -1`: the reader has all it wanted
        _quiet_stdout()
        sys.exit(0)
    except SystemExit as exc:
        # click turns EPIPE into exit 1 after wrapping stdout in its PacifyFlushWrapper; a closed pipe is no failure
        if exc.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _quiet_stdout()
            sys.exit(0)
        raise
    except CkstoreError as exc:
        if os.environ.get("CKSTORE_DEBUG") == "1":
            raise
        typer.echo(f"error: {exc}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, permissions, a vanished file: one line, never a traceback
        if os.environ.get("CKSTORE_DEBUG") == "1":
            raise
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        if exc.errno == 28:
            typer.echo("hint: free some space; the repository is unchanged and nothing half-written remains",
                       err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()


def _one_line_warning(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None,
                      line: str | None = None) -> None:
    # Library warnings (a rebuilt cache, say) are one line on stderr, like errors, not Python's two-line format.
    typer.echo(f"warning: {message}", err=True)


def _quiet_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail a second time.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _parser_exceptions() -> tuple[tuple, tuple, tuple]:
    """(exit, abort, usage-error) classes. Newer typer vendors click under its own names, older typer raises
    click's own: catch whichever are present (a clean install may have no `click` at all)."""
    exits: set[type] = {typer.Exit}
    aborts: set[type] = {typer.Abort}
    usage: set[type] = set()
    try:
        from typer._click.exceptions import ClickException
        usage.add(ClickException)
        return tuple(exits), tuple(aborts), tuple(usage)
    except ImportError:
        pass
    try:
        import click  # only for a typer that still raises click's own (importing it costs ~15 ms)
        exits.add(click.exceptions.Exit)
        aborts.add(click.exceptions.Abort)
        usage.add(click.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(usage)
