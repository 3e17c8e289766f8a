"""Resume checks: does a checkpoint hold what resuming training needs, and does a replay from it reach the next?

What a resume needs — model weights, optimizer state, scheduler state, the step, the RNG states — is looked for in
the commit's files (a Trainer `checkpoint-N/`: optimizer.pt, scheduler.pt, rng_state*.pth, trainer_state.json),
in its tensor names (a torch.save or Lightning dict: optimizer_states.0.state.0.exp_avg, ...) and in the key tree
of a committed state dict. With a step function, the checkpoint is resumed in a fresh process for the steps up
to a later commit, and the weights (and loss) it reaches are compared with that commit's.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import CkstoreError, UsageError
from ..results.repro import ResumeCheck
from .probes import compare, materialize, read_outputs, run_runner
from .repository import Repository
from .restore import file_pieces, read_tensor

PATTERNS = {  # component -> what names it in a file name, a tensor name or a state-dict key
    "optimizer": re.compile(r"optim|exp_avg|momentum_buffer", re.I),
    "scheduler": re.compile(r"sched", re.I),
    "rng": re.compile(r"rng|random_state|generator", re.I),
}
MODEL_FILES = re.compile(r"(model|weights|adapter)[^/]*\.(safetensors|bin|pt|pth)$|\.safetensors$", re.I)


def _keys(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield f"{prefix}{k}"
            yield from _keys(v, f"{prefix}{k}.")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _keys(v, f"{prefix}{i}.")


def components(repo: Repository, oid: bytes) -> dict[str, str | None]:
    """component -> where it was found (a file, tensor or key name), or None."""
    manifest = repo.manifest_of(oid)
    names = [f.path for f in manifest.files] + [t.name for t in manifest.tensors] + list(_keys(manifest.tree))
    found: dict[str, str | None] = {"model": None, "optimizer": None, "scheduler": None, "step": None, "rng": None}
    model = next((f.path for f in manifest.files if MODEL_FILES.search(f.path)), None)
    weights = [t.name for t in manifest.tensors if not any(p.search(t.name) for p in PATTERNS.values())]
    found["model"] = model or (f"tensor {weights[0]}" if weights else None)
    for comp, pat in PATTERNS.items():
        found[comp] = next((n for n in names if pat.search(n)), None)
    commit = repo.commit(oid)
    if commit.step is not None:
        found["step"] = f"commit step {commit.step}"
    else:
        found["step"] = next((n for n in names if re.search(r"(^|\.)(global_)?step$", n)), None)
    state = manifest.file("trainer_state.json")
    if state is not None and found["step"] is None:
        try:
            data = json.loads(b"".join(bytes(p) for p in file_pieces(repo.store, manifest, state, repo.pool)))
            if isinstance(data.get("global_step"), int):
                found["step"] = f"trainer_state.json global_step {data['global_step']}"
        except (ValueError, CkstoreError):
            pass
    return found


def check_resume(repo: Repository, rev: str, *, step_fn: str | None = None, against: str | None = None,
                 atol: float | None = None, rtol: float | None = None, timeout: float = 600.0) -> ResumeCheck:
    """What `rev` holds for a resume; with `step_fn` and `against`, replay the steps between them and compare."""
    oid = repo.resolve(rev)
    result = ResumeCheck(oid.hex(), components(repo, oid))
    if step_fn is not None:
        if against is None:
            raise UsageError("--step-fn needs --against REV (the later commit to reach)")
        later = repo.resolve(against)
        a, b = repo.commit(oid).step, repo.commit(later).step
        if a is None or b is None or b <= a:
            raise UsageError(f"{rev} and {against} need steps, the second after the first (they have {a} and {b})")
        with tempfile.TemporaryDirectory(prefix="ckstore-resume-") as tmp:
            work = Path(tmp)
            ckpt = materialize(repo, oid, work / "checkpoint")
            out = work / "replayed.npz"
            done = run_runner(repo, ["step", step_fn, str(ckpt), str(b - a), str(out)], timeout)
            if done.returncode != 0 or not out.exists():
                tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
                result.error = f"the step function {step_fn} failed: " + (" | ".join(tail) or "no output")
            else:
                got, dtypes = read_outputs(out)
                result.replay = _compare_with(repo, later, got, dtypes, atol, rtol)
    result.passed = not result.missing and result.error is None and all(c.passed for c in result.replay)
    return result


def _compare_with(repo: Repository, later: bytes, got: dict[str, np.ndarray], dtypes: dict[str, str],
                  atol: float | None, rtol: float | None) -> list:
    manifest = repo.manifest_of(later)
    by_name = {t.name: t for t in manifest.tensors}
    checks = []
    for name, value in sorted(got.items()):
        if name == "loss":
            want = repo.commit(later).metrics.get("loss")
            expected = np.asarray(want, dtype=value.dtype) if isinstance(want, (int, float)) else None
            checks.append(compare("loss", expected, value, str(value.dtype), str(value.dtype), atol, rtol)
                          if expected is not None else compare("loss", None, value, "", "", atol, rtol))
            continue
        entry = by_name.get(name)
        if entry is None:
            checks.append(compare(name, None, value, "", "", atol, rtol))
            continue
        repo.ensure_chunks(manifest, tensors=[entry])
        expected = read_tensor(repo.store, entry, repo.pool)
        checks.append(compare(name, expected, value, dtypes.get(name, str(value.dtype)), str(expected.dtype),
                              atol, rtol))
    return checks
