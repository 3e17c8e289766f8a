"""The `ckstore` command: each command parses its arguments, calls one API method and renders the result."""

from __future__ import annotations

from . import files, governance, history, lifecycle, refs, remote  # noqa: F401  (each registers its commands on `app`)
from . import lifecycle_remote  # noqa: F401  (archive, restore-archive)
from .app import app, main

__all__ = ["app", "main"]
