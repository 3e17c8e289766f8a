"""Commands for reproducibility: probe, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import JsonOpt, app, emit, fail, given_path, info, open_repo

probe_app = typer.Typer(no_args_is_help=True, help="Canonical inputs and expected outputs kept with a commit.")
app.add_typer(probe_app, name="probe")


@probe_app.command("add")
def probe_add(rev: str = typer.Argument(..., help="The commit to probe."),
              inputs: Path = typer.Option(..., "--inputs", help="An .npz of named input arrays."),
              loader: str = typer.Option(..., "--loader", metavar="MODULE:FUNCTION",
                                         help="Called with the checkpoint directory; returns the model."),
              expected: Optional[Path] = typer.Option(None, "--expected", help="Expected outputs (.npz); default: "
                                                      "computed now in a fresh process."),
              atol: Optional[float] = typer.Option(None, "--atol"), rtol: Optional[float] = typer.Option(None, "--rtol"),
              as_json: bool = JsonOpt) -> None:
    """Keep inputs and expected outputs with a commit, without changing its id."""
    with open_repo() as repo:
        rec = repo.add_probe(rev, given_path(inputs), loader, expected=given_path(expected) if expected else None,
                             atol=atol, rtol=rtol)
    if as_json:
        return emit(rec)
    shapes = ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in rec["outputs"].items())
    info(f"probe on {rev}: {loader} -> {shapes}")


@probe_app.command("show")
def probe_show(rev: str = typer.Argument("HEAD"), as_json: bool = JsonOpt) -> None:
    """The probe of a commit."""
    with open_repo() as repo:
        rec = repo.probe(rev)
    if rec is None:
        fail(f"{rev} has no probe", hint=f"add one: `ckstore probe add {rev} --inputs FILE --loader MODULE:FUNCTION`")
    if as_json:
        return emit(rec)
    typer.echo(json.dumps(rec, indent=2, sort_keys=True, default=str))


@app.command()
def verify(rev: str = typer.Argument("HEAD", help="The commit to check."),
           resume: bool = typer.Option(False, "--resume", help="Check what a resume needs instead."),
           step_fn: Optional[str] = typer.Option(None, "--step-fn", metavar="MODULE:FUNCTION",
                                                 help="With --resume: replay steps up to --against."),
           against: Optional[str] = typer.Option(None, "--against", metavar="REV", help="The later commit."),
           atol: Optional[float] = typer.Option(None, "--atol"), rtol: Optional[float] = typer.Option(None, "--rtol"),
           as_json: bool = JsonOpt) -> None:
    """Reload a checkpoint in a fresh process and compare its outputs with its probe (exit 1 on any mismatch)."""
    with open_repo() as repo:
        result = (repo.verify_resume(rev, step_fn=step_fn, against=against, atol=atol, rtol=rtol) if resume
                  else repo.verify(rev, atol=atol, rtol=rtol))
    if as_json:
        emit(result)
    elif resume:
        for comp, where in result.components.items():
            typer.echo(f"  {'ok  ' if where else 'MISSING'}  {comp}" + (f": {where}" if where else ""))
        for c in result.replay:
            typer.echo(f"  {'pass' if c.passed else 'FAIL'}  replay {c.name}: {c.detail}")
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
        typer.echo(f"resume check of {result.commit[:12]}: {'pass' if result.passed else 'FAIL'}")
    else:
        for o in result.outputs:
            typer.echo(f"  {'pass' if o.passed else 'FAIL'}  {o.name}: {o.detail}")
        for d in result.drift:
            typer.echo(f"  drift  {d}")
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
        typer.echo(f"verify {result.commit[:12]} with {result.loader}: {'pass' if result.passed else 'FAIL'}")
    if not result.passed:
        raise typer.Exit(1)
