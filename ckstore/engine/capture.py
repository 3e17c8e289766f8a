"""Capture from outside the model: the environment a checkpoint was made in, metadata files on disk, and what a
Hugging Face Trainer checkpoint directory (`trainer_state.json`) says about itself."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidMetadata
from ..model.metadata import parse_meta_text


def read_meta_file(path: str | os.PathLike) -> dict:
    """Metadata from a JSON, YAML or TOML file (by extension); the top level must be a mapping."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidMetadata(f"cannot read metadata file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_meta_text(text, p.name)


# -- Trainer checkpoint directories -------------------------------------------------------------------------------

TRAINER_STATE = "trainer_state.json"
MAX_TRAINER_STATE = 64 << 20  # a long run's log_history is a few MB; anything bigger is not a Trainer's file
_NOT_METRICS = {"step", "epoch"}


def trainer_metadata(state: Any, where: str = TRAINER_STATE) -> dict:
    """Step, metrics and Trainer facts from a parsed `trainer_state.json`: {"step", "metrics", "trainer"}.
    Metrics are the latest value of every number `log_history` logged (train and eval) at or before the global
    step; "trainer" holds epoch, best_metric and best_model_checkpoint. InvalidMetadata for a file of another
    shape."""
    def bad(what: str) -> InvalidMetadata:
        return InvalidMetadata(f"{where}: {what}", hint="give --step and --metric to commit without reading it")

    if not isinstance(state, dict):
        raise bad("the top level is not a JSON object")
    step = state.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise bad(f"global_step must be a non-negative integer, not {step!r}")
    history = state.get("log_history", [])
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise bad("log_history must be a list of objects")
    metrics: dict[str, float | int] = {}
    for entry in history:
        at = entry.get("step", 0)
        if isinstance(at, (int, float)) and not isinstance(at, bool) and at > step:
            continue  # logged after this checkpoint (a state copied from a later one)
        for key, value in entry.items():
            if (key not in _NOT_METRICS and isinstance(key, str) and isinstance(value, (int, float))
                    and not isinstance(value, bool) and not (isinstance(value, float) and math.isinf(value))):
                metrics[key] = value
    trainer = {k: state[k] for k in ("epoch", "best_metric", "best_model_checkpoint")
               if isinstance(state.get(k), (int, float, str)) and not isinstance(state.get(k), bool)}
    if isinstance(trainer.get("best_model_checkpoint"), str):  # a path on the training machine: keep its name
        trainer["best_model_checkpoint"] = os.path.basename(trainer["best_model_checkpoint"].rstrip("/\\"))
    return {"step": step, "metrics": metrics, "trainer": trainer}


def read_trainer_state(directory: str | os.PathLike) -> dict | None:
    """`trainer_metadata` of `directory/trainer_state.json`, or None when there is no such file."""
    path = Path(directory) / TRAINER_STATE
    if not path.is_file():
        return None
    where = f"{path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TRAINER_STATE + 1)
    except OSError as exc:
        raise InvalidMetadata(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(raw) > MAX_TRAINER_STATE:
        raise InvalidMetadata(f"{where} is over {MAX_TRAINER_STATE >> 20} MiB: not a Trainer state file",
                              hint="give --step and --metric to commit without reading it")
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidMetadata(f"{where} is not valid JSON: {str(exc)[:200]}",
                              hint="give --step and --metric to commit without reading it") from None
    return trainer_metadata(state, where)


def checkpoint_record(src: Any, record: dict) -> dict:
    """`record` (metadata split into sections) completed from what a checkpoint directory says about itself: a
    Trainer `checkpoint-N/` directory's `trainer_state.json` gives the step, the metrics and extra.trainer (best
    metric, best checkpoint, epoch) wherever the user gave none. The file is read only when something is missing."""
    if isinstance(src, dict) or not isinstance(src, (str, os.PathLike)):
        return record
    wants = record.get("step") is None or not record.get("metrics") or "trainer" not in record.get("extra", {})
    if not wants or not Path(src).is_dir():
        return record
    found = read_trainer_state(src)
    if found is None:
        return record
    out = {**record, "extra": dict(record.get("extra", {}))}
    if out.get("step") is None:
        out["step"] = found["step"]
    if not out.get("metrics"):
        out["metrics"] = found["metrics"]
    if found["trainer"] and "trainer" not in out["extra"]:
        out["extra"]["trainer"] = found["trainer"]
    return out


# -- the environment ----------------------------------------------------------------------------------------------

_PACKAGES = ("numpy", "torch", "transformers", "peft", "accelerate", "tokenizers", "lightning", "pytorch-lightning",
             "safetensors", "jax", "ckstore")


def capture_env() -> dict:
    """What produced this checkpoint: interpreter, platform, library versions, the GPUs when torch is loaded, and
    the git state of the training script's repository."""
    env: dict = {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count() or 0,
        "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else [],
    }
    from importlib import metadata as importlib_metadata  # ~20 ms to import: only when a commit is made

    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    env["packages"] = versions
    torch = sys.modules.get("torch")  # never import torch just to ask about GPUs
    if torch is not None:
        env.update(_gpus(torch))
    git = _git_state(script_dir())
    if git:
        env["git"] = git
    return env


def _gpus(torch: Any) -> dict:
    try:
        out: dict = {"cuda": bool(torch.cuda.is_available())}
        if out["cuda"]:
            out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            out["cuda_version"] = getattr(torch.version, "cuda", None) or ""
            driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], None)
            if driver:
                out["gpu_driver"] = driver.splitlines()[0].strip()
        return out
    except Exception:  # a broken CUDA setup must not block a commit
        return {"cuda": False}


def script_dir() -> Path:
    """The directory of the program being run (the training script: `__main__`'s file, else sys.argv[0]); the
    working directory for ckstore's own command line, an interactive session or `python -c`."""
    main = sys.modules.get("__main__")
    candidates = [getattr(main, "__file__", None), sys.argv[0] if sys.argv else None]
    for c in candidates:
        if c and os.path.basename(c) not in ("ckstore", "-c", "") and os.path.isfile(c):
            spec = getattr(main, "__spec__", None)
            if spec is not None and (spec.name or "").startswith("ckstore"):
                break  # python -m ckstore.cli: the user's repository is where they stand
            return Path(c).resolve().parent
    return Path.cwd()


_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def _run(cmd: list[str], cwd: Path | None, timeout: float = 5) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_state(where: Path) -> dict | None:
    """Commit, dirty flag (tracked files) and remote URL (credentials removed) of the git work tree at `where`."""
    commit = _run(["git", "-C", str(where), "rev-parse", "HEAD"], None)
    if not commit:
        return None
    dirty = _run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"], None, timeout=10)
    out: dict = {"commit": commit, "dirty": bool(dirty)}
    remotes = (_run(["git", "-C", str(where), "remote"], None) or "").split()
    if remotes:
        name = "origin" if "origin" in remotes else remotes[0]
        url = _run(["git", "-C", str(where), "remote", "get-url", name], None)
        if url:
            out["remote"] = _USERINFO.sub(r"\1", url)
    top = _run(["git", "-C", str(where), "rev-parse", "--show-toplevel"], None)
    if top:
        out["root"] = os.path.basename(top)
    return out
