"""The peers of bench/series.py, one module each, by the name --tools takes."""

from __future__ import annotations

from .base import Ctx, Tool
from .borg import Borg
from .ckstore import Ckstore, CkstoreEncrypted, CkstoreRepack
from .copy import Copy
from .dvc import Dvc
from .git_lfs import GitLfs
from .git_theta import GitTheta
from .restic import Restic, ResticMax
from .zipnn import Zipnn
from .zstd import Zstd

TOOLS: dict[str, type[Tool]] = {t.name: t for t in (Ckstore, CkstoreRepack, CkstoreEncrypted, Restic, ResticMax, Borg, Dvc, GitLfs, GitTheta, Zstd,
                                                     Zipnn, Copy)}
ALL_TOOLS = list(TOOLS)

__all__ = ["ALL_TOOLS", "TOOLS", "Ctx", "Tool", "Ckstore"]
