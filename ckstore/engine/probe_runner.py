"""The fresh process a reproducibility probe runs in: `python -m ckstore.engine.probe_runner MODE ...`.

    run LOADER CHECKPOINT_DIR INPUTS.npz OUTPUTS.npz
        import LOADER ("module:function"), call it with the checkpoint directory to get a model, call the model with
        the inputs (keyword arrays), save what it returns (a mapping, one array, or a sequence) to OUTPUTS.npz.
    step STEP_FN CHECKPOINT_DIR STEPS OUTPUTS.npz
        call STEP_FN(checkpoint_dir, steps) (a resume replaying STEPS training steps) and save the mapping of
        arrays it returns (weights, and a "loss" if it gives one).

The loader and step function are the user's own code, run in their project (the repository root is on sys.path
and the working directory); the checkpoint is whatever the repository verified byte for byte. Arrays are saved
with numpy only (no pickle); torch tensors are converted (bfloat16 to float32, with their dtype recorded).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np


def _function(spec: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"error: {spec!r} is not MODULE:FUNCTION")
    return getattr(importlib.import_module(module), name)


def _array(value) -> tuple[np.ndarray, str]:
    """A numpy array of a returned value, and the dtype the model produced it in."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        t = value.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype == "bfloat16":
            t = t.float()
        return t.numpy(), dtype
    arr = np.asarray(value)
    return arr, str(arr.dtype)


def _named(result) -> dict:
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return {f"output_{i}": v for i, v in enumerate(result)}
    return {"output": result}


def _save(result, out: Path) -> None:
    arrays, dtypes = {}, {}
    for name, value in _named(result).items():
        arrays[name], dtypes[name] = _array(value)
    np.savez(out, **arrays)
    out.with_suffix(".dtypes.json").write_text(json.dumps(dtypes))


def main(argv: list[str]) -> int:
    """Entry point (see the module docstring)."""
    mode, fn, ckpt = argv[0], argv[1], argv[2]
    sys.path.insert(0, ".")
    if mode == "run":
        with np.load(argv[3], allow_pickle=False) as data:
            inputs = {k: data[k] for k in data.files}
        model = _function(fn)(ckpt)
        _save(model(**inputs), Path(argv[4]))
    elif mode == "step":
        _save(_function(fn)(ckpt, int(argv[3])), Path(argv[4]))
    else:
        raise SystemExit(f"error: unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
