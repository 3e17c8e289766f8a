"""The `ckstore` command: each command parses its arguments, calls one API method and renders the result."""

from __future__ import annotations

# each registers its commands on `app`
from . import files, governance, history, lifecycle, refs, remote, repro  # noqa: F401
from . import plot  # noqa: F401  (plot metric, plot diff, plot lineage)
from . import lifecycle_remote  # noqa: F401  (archive, restore-archive)
from . import ui  # noqa: F401  (the web view)
from . import serve  # noqa: F401  (the served remote: serve, serve token, serve audit)
from . import keys  # noqa: F401  (key list, add, remove, passwd)
from .app import app, main

__all__ = ["app", "main"]
