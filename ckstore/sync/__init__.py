"""Sync: move history between a repository and a remote transport (push, fetch, pull, clone, on-demand chunks)."""

from __future__ import annotations

from .fetch import fetch, fetch_with
from .pull import clone, default_clone_dir, pull, remote_remove
from .push import push
from .select import manifest_chunks, parse_filter
from ..results import SyncResult

__all__ = ["SyncResult", "clone", "default_clone_dir", "fetch", "fetch_with", "manifest_chunks",
           "parse_filter", "pull", "push", "remote_remove"]
