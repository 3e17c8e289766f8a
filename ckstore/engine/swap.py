"""The last step of `migrate --encrypt` (engine.migrate), and its recovery: the new repository, built in
`.ckstore-migrate/.ckstore` and marked READY, renamed to `.ckstore` after the old one was moved aside."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..fs.fileio import fsync_dir

DIRNAME = ".ckstore"
WORK, READY, PLAIN_COPY = ".ckstore-migrate", "READY", ".ckstore-plain"


def finish_migration(root: Path) -> bool:
    """Complete a migration interrupted between its two renames (True when it did)."""
    work = root / WORK
    if not (work / READY).is_file():
        return False
    if (root / DIRNAME).exists():
        if not (work / DIRNAME).exists():          # the second rename happened; only the marker is left
            shutil.rmtree(work, ignore_errors=True)
        return False
    os.rename(work / DIRNAME, root / DIRNAME)
    fsync_dir(root)
    shutil.rmtree(work, ignore_errors=True)
    return True
