"""Pure checks that a stored path is safe to write under a destination directory."""

from __future__ import annotations

import re

from ..errors import UnsafePath

MAX_PATH = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
_FORBIDDEN_PARTS = {"", ".", "..", ".ckstore", ".git"}


def check_path(path: str) -> str:
    """Return `path` if it is relative, "/"-separated and stays inside its destination; else raise UnsafePath."""
    why = None
    if not isinstance(path, str) or not path:
        why = "it is empty"
    elif "\0" in path:
        why = "it contains a NUL byte"
    elif len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        why = f"it is longer than {MAX_PATH} bytes"
    elif path.startswith("/") or _DRIVE.match(path):
        why = "it is absolute"
    elif "\\" in path:
        why = "it contains a backslash"
    elif max(len(p.encode("utf-8", "surrogatepass")) for p in path.split("/")) > 255:
        why = "a component is longer than 255 bytes"
    else:
        bad = [p for p in path.split("/") if p in _FORBIDDEN_PARTS or p.lower() in (".ckstore", ".git")]
        if bad:
            why = f"it has a {bad[0]!r} component"
    if why:
        raise UnsafePath(f"refusing path {path[:200]!r}: {why}", hint="the checkpoint names a file outside its directory")
    return path


def check_paths(paths: list[str]) -> None:
    """Every path safe, and no two equal once case is folded (they would collide on some filesystems)."""
    seen: dict[str, str] = {}
    prefixes: set[str] = set()
    for p in paths:
        check_path(p)
        key = p.casefold()
        if key in seen:
            raise UnsafePath(f"paths {seen[key]!r} and {p!r} collide on case-insensitive filesystems")
        seen[key] = p
        parts = key.split("/")
        prefixes.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = prefixes & set(seen)
    if clash:
        name = seen[next(iter(clash))]
        raise UnsafePath(f"path {name!r} is both a file and a directory")
