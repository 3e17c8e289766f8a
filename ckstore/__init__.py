"""ckstore: Git-style, content-addressed version control for ML model checkpoints."""

from __future__ import annotations

from typing import Any

__all__ = ["CommitInfo", "Repo", "ShowInfo", "clone", "errors"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The library pulls in numpy and LMDB; import it on first use so `ckstore --help` stays fast.
    if name in ("Repo", "CommitInfo", "ShowInfo", "clone"):
        from . import api
        return getattr(api, name)
    if name == "errors":
        from . import errors
        return errors
    raise AttributeError(name)
