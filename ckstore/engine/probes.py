"""Reproducibility probes: does a committed checkpoint still load and give the same outputs, in a fresh process?

A probe is a note in namespace `probes` on the commit (so its id never changes): the loader ("module:function"),
tolerances, the outputs' names, dtypes and shapes, the environment it was made in, and an attachment — a manifest
stored like a commit's, holding `inputs.npz` and `expected.npz` (gc keeps it: notes keep what they attach).
`verify` checks the commit out, runs the loader on the inputs in a fresh Python process (`engine.probe_runner`),
compares every output with the expected one within tolerances by dtype, reports the environment drift since the
probe was made, and records the verdict as a note in namespace `verify`.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import CkstoreError, UsageError
from ..model.objects import Manifest
from ..model.progress import NoProgress
from ..results.repro import OutputCheck, VerifyResult
from ..storage.audit import whoami
from .capture import capture_env
from .notes import NotesView, note_on
from .repository import Repository
from .restore import checkout

NS, VERDICTS = "probes", "verify"
TIMEOUT = 600.0
# (atol, rtol) by dtype: what bit-identical reloads give is 0; these absorb kernel and library changes
TOLERANCES = {"float64": (1e-10, 1e-7), "float32": (1e-6, 1e-5), "float16": (1e-3, 1e-2), "bfloat16": (1e-2, 1e-2)}


def run_runner(repo: Repository, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`engine.probe_runner ARGS` in a fresh Python process, in the repository's root (the user's project)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo.root), os.environ.get("PYTHONPATH")]))}
    try:
        return subprocess.run([sys.executable, "-m", "ckstore.engine.probe_runner", *args], cwd=repo.root, env=env,
                              capture_output=True, text=True, timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired:
        raise UsageError(f"the loader ran past {timeout:g} s and was stopped") from None


def materialize(repo: Repository, rev: bytes, dest: Path) -> Path:
    """Check commit `rev` out into `dest` (fetching chunks on demand for partial clones and archived commits)."""
    manifest = repo.manifest_of(rev)
    repo.ensure_chunks(manifest)
    checkout(repo.store, manifest, dest, repo.pool)
    return dest


def read_outputs(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of an outputs .npz (no pickle) and the dtypes the model produced them in."""
    import json
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    dtypes_file = path.with_suffix(".dtypes.json")
    return arrays, json.loads(dtypes_file.read_text()) if dtypes_file.exists() else {}


def run_loader(repo: Repository, rev: bytes, loader: str, inputs: Path, work: Path, timeout: float = TIMEOUT
               ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The outputs of `loader` on `inputs`, for the checkpoint of commit `rev`, from a fresh process."""
    ckpt = materialize(repo, rev, work / "checkpoint")
    out = work / "outputs.npz"
    done = run_runner(repo, ["run", loader, str(ckpt), str(inputs), str(out)], timeout)
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        raise UsageError(f"the loader {loader} failed on {rev.hex()[:12]}: " + (" | ".join(tail) or "no output"))
    return read_outputs(out)


def add_probe(repo: Repository, rev: str, inputs: Path, loader: str, *, expected: Path | None = None,
              atol: float | None = None, rtol: float | None = None, timeout: float = TIMEOUT) -> dict:
    """Store canonical inputs and the expected outputs (computed now from the checkpoint, or `expected`) with
    commit `rev`; returns the probe's record."""
    target = repo.resolve(rev)
    if ":" not in loader:
        raise UsageError(f"--loader {loader!r} must be MODULE:FUNCTION")
    for name, path in (("inputs", inputs), ("expected", expected)):
        if path is not None:
            try:
                with np.load(path, allow_pickle=False) as data:
                    data.files  # noqa: B018  (an .npz readable without pickle)
            except (OSError, ValueError) as exc:
                raise UsageError(f"--{name} {path}: not a readable .npz of arrays ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="ckstore-probe-") as tmp:
        work = Path(tmp)
        bundle = work / "bundle"
        bundle.mkdir()
        shutil.copyfile(inputs, bundle / "inputs.npz")
        if expected is None:
            outputs, dtypes = run_loader(repo, target, loader, bundle / "inputs.npz", work, timeout)
        else:
            outputs, dtypes = read_outputs(Path(expected))
        np.savez(bundle / "expected.npz", **outputs)
        from .history import snapshot
        with repo.writing("probe"):
            _, mid, _ = snapshot(repo, bundle, NoProgress(), None)
            record = {"attachment": mid.hex(), "loader": loader, "atol": atol, "rtol": rtol,
                      "outputs": {k: {"dtype": dtypes.get(k, str(v.dtype)), "shape": list(v.shape)}
                                  for k, v in outputs.items()},
                      "env": _env_summary(capture_env()), "made_by": whoami(), "made_at": time.time()}
            note_on(repo, target, {"probe": record}, ns=NS, message=f"probe with {loader}")
    return record


def probe_of(repo: Repository, view: NotesView, target: bytes) -> dict | None:
    """The newest probe of a commit (None: it has none)."""
    rec = view.of(target).get(NS, {}).get("probe")
    return rec if isinstance(rec, dict) and isinstance(rec.get("attachment"), str) else None


def verify(repo: Repository, view: NotesView, rev: str, *, atol: float | None = None, rtol: float | None = None,
           timeout: float = TIMEOUT, record: bool = True) -> VerifyResult:
    """Reload commit `rev` in a fresh process, run its probe, compare (see the module docstring)."""
    target = repo.resolve(rev)
    probe = probe_of(repo, view, target)
    if probe is None:
        raise UsageError(f"{rev} has no probe", hint="add one: `ckstore probe add REV --inputs X.npz --loader M:F`")
    result = VerifyResult(target.hex(), probe["loader"], drift=_drift(probe.get("env") or {},
                                                                      _env_summary(capture_env())))
    with tempfile.TemporaryDirectory(prefix="ckstore-verify-") as tmp:
        work = Path(tmp)
        bundle = work / "bundle"
        attachment = repo.store.get_object(bytes.fromhex(probe["attachment"]))
        if not isinstance(attachment, Manifest):
            raise UsageError(f"the probe's attachment {probe['attachment'][:12]} is not a manifest")
        repo.ensure_chunks(attachment)
        checkout(repo.store, attachment, bundle, repo.pool)
        expected, _ = read_outputs(bundle / "expected.npz")
        try:
            got, dtypes = run_loader(repo, target, probe["loader"], bundle / "inputs.npz", work, timeout)
        except CkstoreError as exc:
            result.error = str(exc)
            got, dtypes = {}, {}
    if result.error is None:
        for name in sorted(set(expected) | set(got)):
            want = probe.get("outputs", {}).get(name, {}).get("dtype") or str(expected.get(name, got.get(name)).dtype)
            result.outputs.append(compare(name, expected.get(name), got.get(name), dtypes.get(name, want), want,
                                          atol if atol is not None else probe.get("atol"),
                                          rtol if rtol is not None else probe.get("rtol")))
    result.passed = result.error is None and bool(result.outputs) and all(o.passed for o in result.outputs)
    if record:
        note_on(repo, target, {"verdict": {"passed": result.passed, "when": time.time(), "who": whoami(),
                                           "where": platform.node(), "error": result.error,
                                           "outputs": [o.to_dict() for o in result.outputs],
                                           "drift": result.drift}},
                ns=VERDICTS, message=f"verify: {'pass' if result.passed else 'FAIL'}")
    return result


def compare(name: str, expected: np.ndarray | None, got: np.ndarray | None, got_dtype: str, want_dtype: str,
            atol: float | None, rtol: float | None) -> OutputCheck:
    """One output against its expected value, within the tolerances (given, or by dtype)."""
    if expected is None:
        return OutputCheck(name, False, f"the model returned {name!r}, which the probe does not expect")
    if got is None:
        return OutputCheck(name, False, f"the model did not return {name!r}")
    if got.shape != expected.shape:
        return OutputCheck(name, False, f"shape {list(got.shape)}, expected {list(expected.shape)}")
    if got_dtype != want_dtype:
        return OutputCheck(name, False, f"dtype {got_dtype}, expected {want_dtype}")
    a_tol, r_tol = TOLERANCES.get(want_dtype, (0.0, 0.0))
    a_tol, r_tol = atol if atol is not None else a_tol, rtol if rtol is not None else r_tol
    if not np.issubdtype(expected.dtype, np.number) and expected.dtype != np.bool_:
        ok = bool(np.array_equal(got, expected))
        return OutputCheck(name, ok, "equal" if ok else "values differ", atol=a_tol, rtol=r_tol)
    g, e = got.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(g - e)
    nan_ok = bool(np.array_equal(np.isnan(g), np.isnan(e)))
    diff = np.where(np.isnan(diff), 0.0, diff)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)).max()) if diff.size else 0.0
    ok = nan_ok and bool(np.all(diff <= a_tol + r_tol * np.abs(np.nan_to_num(e))))
    detail = f"max abs {max_abs:.3g}, max rel {max_rel:.3g} (atol {a_tol:g}, rtol {r_tol:g})" + (
        "" if nan_ok else "; NaNs differ")
    return OutputCheck(name, ok, detail, max_abs, max_rel, a_tol, r_tol)


def _env_summary(env: dict) -> dict:
    keep = {k: env.get(k) for k in ("python", "platform", "machine", "cuda", "gpus") if k in env}
    keep["packages"] = dict(env.get("packages") or {})
    return keep


def _drift(then: dict, now: dict) -> list[str]:
    """What changed in the environment between the probe and now (Python, platform, versions, devices)."""
    out = []
    for key in ("python", "platform", "machine", "cuda", "gpus"):
        if then.get(key) != now.get(key) and (key in then or key in now):
            out.append(f"{key}: {then.get(key)} -> {now.get(key)}")
    a, b = then.get("packages") or {}, now.get("packages") or {}
    for pkg in sorted(set(a) | set(b)):
        if a.get(pkg) != b.get(pkg):
            out.append(f"{pkg}: {a.get(pkg, '-')} -> {b.get(pkg, '-')}")
    return out
