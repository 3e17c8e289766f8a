"""ckstore: Git-style, content-addressed version control for ML model checkpoints.

    import ckstore
    with ckstore.Repo.open() as repo:
        info = repo.commit("out/checkpoint-500", message="warmup", metrics={"val_loss": 0.41})

`Repo` (ckstore.api) is the whole API; its verbs return the typed values of ckstore.results; every error is a
ckstore.errors.CkstoreError. Training loops: `ckstore.Checkpointer`, `ckstore.snapshot` and the framework
integrations in ckstore.integrations (transformers, lightning, dcp).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AuditEntry", "BranchInfo", "Checkpointer", "CommitInfo", "CommitResult", "Diff", "DuReport", "FileInfo",
           "ForgetResult", "FsckReport", "GcResult", "Policy", "Repo", "ResetResult", "ShowInfo", "SyncResult",
           "TagInfo", "clone", "errors", "snapshot"]
__version__ = "0.1.0"

_API = {"Repo", "clone", "Policy"}
_RESULTS = set(__all__) - _API - {"Checkpointer", "snapshot", "errors"}


def __getattr__(name: str) -> Any:
    # The library pulls in numpy and LMDB; import it on first use so `ckstore --help` stays fast.
    if name in _API:
        from . import api
        return getattr(api, name)
    if name == "Checkpointer":
        from .integrations.loop import Checkpointer
        return Checkpointer
    if name == "snapshot":
        from .integrations.snapshot import snapshot
        return snapshot
    if name in _RESULTS:
        from . import results
        return getattr(results, name)
    if name == "errors":
        from . import errors
        return errors
    raise AttributeError(f"module 'ckstore' has no attribute {name!r}")
