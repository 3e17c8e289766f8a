"""The `ckstore` command's frame: the typer app, repository lookup, output (JSON, JSON lines, --quiet, warnings),
and errors turned into exit codes."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer

if TYPE_CHECKING:  # the library (numpy, lmdb, ...) is imported only when a command runs, so --help stays fast
    from ..api import Repo

app = typer.Typer(no_args_is_help=True, add_completion=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Version model checkpoints the way you version code.")
# One command's settings: -C DIR, and whether --json/--json-lines or -q was given (set while its options parse).
_state: dict[str, Any] = {"dir": None, "json": False, "quiet": False, "nan_warned": False}


def _json_mode(value: bool) -> bool:
    if value:
        _state["json"] = True
    return value


def _quiet_mode(value: bool) -> bool:
    if value:
        _state["quiet"] = True
    return value


JsonOpt = typer.Option(False, "--json", callback=_json_mode, help="Print machine-readable JSON.")
JsonLinesOpt = typer.Option(False, "--json-lines", callback=_json_mode,
                            help="Print one JSON object per line (NDJSON), each as soon as it is known.")
QuietOpt = typer.Option(False, "-q", "--quiet", callback=_quiet_mode,
                        help="Print only errors and the data asked for: no progress or informational lines.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"ckstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(directory: Optional[Path] = typer.Option(None, "-C", help="Run as if started in DIR.", metavar="DIR"),
          quiet: bool = QuietOpt,
          password_file: Optional[Path] = typer.Option(None, "--password-file", metavar="FILE",
                                                       help="An encrypted repository's passphrase: the first line "
                                                            "of FILE (or set CKSTORE_PASSWORD_FILE)."),
          password_command: Optional[str] = typer.Option(None, "--password-command", metavar="CMD",
                                                         help="An encrypted repository's passphrase: the first "
                                                              "line CMD prints (or CKSTORE_PASSWORD_COMMAND)."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    # The root runs before the command's options parse (their callbacks set json and quiet).
    _state.update(dir=directory, json=False, quiet=quiet, nan_warned=False)
    # the passphrase options are the environment variables' (library and CLI read one place); they win over it
    for var, value in (("CKSTORE_PASSWORD_FILE", password_file), ("CKSTORE_PASSWORD_COMMAND", password_command)):
        if value is not None:
            os.environ.pop("CKSTORE_PASSWORD", None)
            os.environ[var] = str(value)


def open_repo() -> Repo:
    """The repository at -C DIR, CKSTORE_DIR or above the working directory."""
    from ..api import Repo
    directory = _state["dir"]
    if directory is not None and not directory.is_dir():
        # Without this check, a mistyped -C DIR silently walks up to whatever repository encloses it.
        from ..errors import UsageError
        raise UsageError(f"-C {directory}: no such directory")
    return Repo.open(directory, passphrase=ask_passphrase("the repository"))


def ask_passphrase(what: str, *, twice: bool = False) -> Any:
    """A function asking the terminal for a passphrase (`twice`: a new one, typed again), or None when standard
    input is not a terminal (scripts give CKSTORE_PASSWORD* or --password-file/--password-command)."""
    if not sys.stdin.isatty():
        return None

    def ask() -> str:
        import getpass
        first = getpass.getpass(f"passphrase for {what}: ")
        if twice and getpass.getpass("again: ") != first:
            from ..errors import UsageError
            raise UsageError("the passphrases did not match")
        return first
    return ask


def given_path(p: Path) -> Path:
    """A path given on the command line, relative to -C DIR when one was given ("as if started in DIR")."""
    return p if p.is_absolute() or _state["dir"] is None else _state["dir"] / p


def base_dir() -> Path:
    """-C DIR, or the working directory."""
    return _state["dir"] or Path(".")


def emit(value: Any, *, lines: bool = False) -> None:
    """Print `value` as JSON; with `lines`, `value` is an iterable and each item is printed as one line of JSON the
    moment it arrives (NDJSON, for --json-lines). Non-finite floats become null (JSON has no NaN), with a warning."""
    if not lines:
        return typer.echo(json.dumps(_json_ready(value), indent=2, default=str, allow_nan=False))
    for item in value:
        typer.echo(json.dumps(_json_ready(item), default=str, allow_nan=False))  # echo flushes: a reader sees it now


def _json_ready(value: Any) -> Any:
    from ..results import json_safe
    data = value.to_dict() if hasattr(value, "to_dict") else value
    if isinstance(data, list):
        data = [v.to_dict() if hasattr(v, "to_dict") else v for v in data]
    safe = json_safe(data)
    if safe != data and not _state["nan_warned"]:  # NaN != NaN: any non-finite number makes them differ
        _state["nan_warned"] = True  # once per command, not once per line
        warn("non-finite numbers (NaN, Infinity) are printed as null")
    return safe


def info(message: str, *, err: bool = False) -> None:
    """An informational line (what a command did): not printed under --quiet, nor on stderr in JSON mode."""
    if not (_state["quiet"] or (err and _state["json"])):
        typer.echo(message, err=err)


def is_quiet() -> bool:
    """Whether -q / --quiet was given (to the command or before it)."""
    return bool(_state["quiet"])


def warn(message: str) -> None:
    """A warning on stderr: `warning: MESSAGE`, or {"warning": MESSAGE} as one line in JSON mode."""
    if _state["json"]:
        typer.echo(json.dumps({"warning": message}), err=True)
    else:
        typer.echo(f"warning: {message}", err=True)


def fail(message: str, *, hint: str = "", code: int = 1) -> NoReturn:
    """End the command with an error on stderr (as main() prints library errors) and exit `code`."""
    _error(message, hint, code, _state["json"])
    raise typer.Exit(code)


def _error(message: str, hint: str | None, code: int, as_json: bool) -> None:
    """`error:` and `hint:` lines, or in JSON mode one line {"error", "hint", "code"}."""
    if as_json:
        typer.echo(json.dumps({"error": message, "hint": hint or None, "code": code}), err=True)
        return
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)


def _json_requested(argv: list[str]) -> bool:
    """--json or --json-lines on the command line (before a `--`): then even an error found before the command
    runs, such as a misspelt option, is reported as JSON."""
    args = argv[:argv.index("--")] if "--" in argv else argv
    return "--json" in args or "--json-lines" in args


def progress() -> Any:
    """Progress on stderr for long work: a bar on a terminal, a line every few seconds elsewhere; none under -q."""
    if _state["quiet"]:
        from ..model.progress import NoProgress
        return NoProgress()
    from .progress import DelayedProgress
    return DelayedProgress(as_json=_state["json"])


def main() -> None:
    """Entry point: library errors become one line and a hint (traceback only with CKSTORE_DEBUG=1)."""
    from ..allocator import tune
    from ..errors import CkstoreError
    tune()
    warnings.showwarning = _one_line_warning
    exits, aborts, usage = _parser_exceptions()
    as_json = _json_requested(sys.argv[1:])
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except exits as exc:
        sys.exit(exc.exit_code)
    except usage as exc:
        code = getattr(exc, "exit_code", 2)
        if as_json:
            ctx = getattr(exc, "ctx", None)
            _error(exc.format_message(), f"see '{ctx.command_path} --help'" if ctx else None, code, True)
        elif hasattr(exc, "show"):
            exc.show()
        else:
            typer.echo(f"Error: {exc}", err=True)
        sys.exit(code)
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
        _error(str(exc), exc.hint, exc.exit_code, as_json or _state["json"])
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, permissions, a vanished file: one line, never a traceback
        if os.environ.get("CKSTORE_DEBUG") == "1":
            raise
        where = f": {exc.filename}" if exc.filename else ""
        full = "free some space; the repository is unchanged and nothing half-written remains"
        hint = full if exc.errno == errno.ENOSPC else None
        _error(f"{exc.strerror or exc}{where}", hint, 1, as_json or _state["json"])
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
    warn(str(message))


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
