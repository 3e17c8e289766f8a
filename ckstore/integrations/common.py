"""What the integrations share: opening a repository from a path, JSON-able parameters, host copies of tensors."""

from __future__ import annotations

import enum
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..api import Repo
from ..errors import AlreadyExists, UsageError

_SCALARS = (str, int, float, bool, type(None))


def open_or_init(repo_or_path: Repo | str | os.PathLike) -> tuple[Repo, bool]:
    """(repo, whether the caller owns it and must close it): a Repo is used as it is; a directory holding a
    repository is opened, any other directory gets a new repository."""
    if isinstance(repo_or_path, Repo):
        return repo_or_path, False
    path = Path(repo_or_path)
    if (path / ".ckstore" / "config").is_file():
        return Repo.open(path), True
    try:
        return Repo.init(path), True
    except AlreadyExists:  # another process (rank) created it meanwhile
        return Repo.open(path), True


def jsonable(value: Any, depth: int = 0) -> Any:
    """`value` with everything JSON cannot hold left out (objects, non-finite floats); None when nothing is left."""
    if depth > 16:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, dict):
        out = {str(k): jsonable(v, depth + 1) for k, v in value.items() if isinstance(k, (str, int))}
        return {k: v for k, v in out.items() if v is not None or value.get(k) is None}
    if isinstance(value, (list, tuple)):
        items = [jsonable(v, depth + 1) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    return None


def host_copy(value: Any, path: str = "") -> Any:
    """A copy of a nested state to commit later: every tensor copied to host memory now (so training may change
    the original right after), containers rebuilt, objects with `state_dict()` replaced by theirs. UsageError
    for a value no commit can hold, raised here on the caller's thread."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", copy=True)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        return np.array(value, copy=True)
    if isinstance(value, dict):
        return {k: host_copy(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [host_copy(v, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(host_copy(v, f"{path}.{i}") for i, v in enumerate(value))
    if isinstance(value, (*_SCALARS, bytes)):
        return value
    if callable(getattr(value, "state_dict", None)):
        return host_copy(value.state_dict(), path)
    raise UsageError(f"cannot checkpoint {path or 'the state'}: a {type(value).__name__}",
                     hint="give tensors, arrays, numbers, strings, lists, dicts or objects with state_dict()")
