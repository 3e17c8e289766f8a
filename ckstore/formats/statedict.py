"""In-memory state dicts: flattened into one synthetic safetensors file plus a tree that restores the nesting."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from ..errors import UsageError
from . import safetensors
from .base import DTYPES, ScannedFile, Span, TensorInfo, dtype_name

STATE_FILE = "state.safetensors"
MAX_DEPTH = 64  # containers nested deeper are refused: real state dicts nest a few levels
MIN_INT, MAX_INT = -(1 << 63), (1 << 64) - 1  # what msgpack can store
_TORCH_VIEW = {"bfloat16": "int16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8", "float8_e8m0fnu": "uint8"}


def _is_torch(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_to_numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name in _TORCH_VIEW:  # numpy has no such dtype: reinterpret the bits through ml_dtypes
        target = {"bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
                  "float8_e8m0fnu": "F8_E8M0"}[name]
        return t.view(getattr(__import__("torch"), _TORCH_VIEW[name])).numpy().view(DTYPES[target])
    return t.numpy()


def _as_array(value: Any) -> tuple[np.ndarray, str] | None:
    if _is_torch(value):
        return _torch_to_numpy(value), "torch"
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value), "numpy"
    return None


def _where(path: list[str]) -> str:
    return ascii(".".join(path)) if path else "the top level"


def _check_scalar(value: Any, path: list[str], what: str = "string") -> None:
    """Refuse what no manifest can store: strings that are not valid UTF-8, integers beyond msgpack's range."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"state dict {what} {ascii(value)} at {_where(path)} is not valid UTF-8 "
                             "(a lone surrogate)") from None
    elif isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        raise UsageError(f"state dict integer {what if what != 'string' else 'value'} at {_where(path)} is out of "
                         "range: it must lie within -2**63 .. 2**64-1", hint="store it as a string or a float")


def flatten(state: dict) -> tuple[list[tuple[str, np.ndarray]], Any]:
    """(tensors named by dotted key path, tree) for a nested dict of tensors, containers and plain scalars.
    UsageError for what cannot be stored: containers nested over MAX_DEPTH, keys or strings that are not valid
    UTF-8, integers outside -2**63 .. 2**64-1 — all found before anything is written."""
    tensors: list[tuple[str, np.ndarray]] = []
    names: set[str] = set()

    def enc(value: Any, path: list[str]) -> Any:
        if len(path) > MAX_DEPTH:
            raise UsageError(f"state dict nests deeper than {MAX_DEPTH} levels at {_where(path[:8])}...",
                             hint="flatten the structure before committing it")
        arr = _as_array(value)
        if arr is not None:
            name = ".".join(path) or "tensor"
            if name in names:
                raise UsageError(f"two tensors flatten to the same name {ascii(name)}")
            names.add(name)
            data = arr[0] if arr[0].flags.c_contiguous else arr[0].copy()  # keeps 0-d shapes
            if data.dtype.byteorder == ">":
                data = data.astype(data.dtype.newbyteorder("<"))
            try:
                dtype_name(data.dtype)
            except ValueError:
                raise UsageError(f"tensor {ascii(name)} has unsupported dtype {data.dtype}") from None
            tensors.append((name, data))
            return {"x": name, "k": arr[1]}
        if isinstance(value, dict):
            for k in value:
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise UsageError(f"state dict key {ascii(k)} at {_where(path)} must be a string or int")
                _check_scalar(k, path, "key")
            return {"m": [[k, enc(v, path + [str(k)])] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            return {"l" if isinstance(value, list) else "t": [enc(v, path + [str(i)]) for i, v in enumerate(value)]}
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            _check_scalar(value, path)
            return {"v": value}
        raise UsageError(f"state dict value at {_where(path)} has unsupported type {type(value).__name__}",
                         hint="commit tensors, numbers, strings, lists and dicts")

    if not isinstance(state, dict):
        raise UsageError("a state dict must be a dict")
    return tensors, enc(state, [])


def unflatten(tree: Any, tensor: Callable[[str, str], Any]) -> Any:
    """Rebuild the nested value; `tensor(name, kind)` supplies each tensor leaf."""
    if "x" in tree:
        return tensor(tree["x"], tree["k"])
    if "m" in tree:
        return {k: unflatten(v, tensor) for k, v in tree["m"]}
    if "l" in tree:
        return [unflatten(v, tensor) for v in tree["l"]]
    if "t" in tree:
        return tuple(unflatten(v, tensor) for v in tree["t"])
    return tree["v"]


def scan_state(tensors: list[tuple[str, np.ndarray]]) -> ScannedFile:
    """The synthetic safetensors file: header inline, then each tensor's bytes as a zero-copy span."""
    header = safetensors.build_header([(n, dtype_name(a.dtype), a.shape, a.nbytes) for n, a in tensors])
    spans = [Span(0, memoryview(header))]
    pos = len(header)
    for name, arr in tensors:
        view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.nbytes else memoryview(b"")
        spans.append(Span(pos, view, TensorInfo(name, dtype_name(arr.dtype), tuple(arr.shape))))
        pos += arr.nbytes
    return ScannedFile(STATE_FILE, pos, tuple(spans))
