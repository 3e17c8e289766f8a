"""Pure checks that a stored path or a remote key is a safe relative name (one validator for both)."""

from __future__ import annotations

import re

from ..errors import UnsafePath

MAX_PATH = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESERVED = frozenset({".ckstore", ".git"})


def problem(path: object, *, max_bytes: int, reserved: frozenset[str] = frozenset(),
            max_component: int | None = None, controls: bool = False) -> str | None:
    """Why `path` is not a safe relative "/"-separated name, or None. The one validator behind checkout paths
    (check_path) and remote keys (transport.base.check_key): empty, NUL, too long, absolute or drive paths,
    backslashes, "", "." and ".." components, and, as asked, control characters, over-long components and
    reserved components (compared case-insensitively)."""
    if not isinstance(path, str) or not path:
        return "it is empty" if isinstance(path, str) else f"it is a {type(path).__name__}, not a str"
    if "\0" in path:
        return "it contains a NUL byte"
    if controls and _CONTROL.search(path):
        return "it contains a control character"
    if len(path.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"it is longer than {max_bytes} bytes"
    if path.startswith("/") or _DRIVE.match(path):
        return "it is absolute"
    if "\\" in path:
        return "it contains a backslash"
    parts = path.split("/")
    if max_component is not None and max(len(p.encode("utf-8", "surrogatepass")) for p in parts) > max_component:
        return f"a component is longer than {max_component} bytes"
    bad = [p for p in parts if p in ("", ".", "..") or p.lower() in reserved]
    if bad:
        return "it has an empty component" if bad[0] == "" else f"it has a {bad[0]!r} component"
    return None


def check_path(path: str) -> str:
    """Return `path` if it is relative, "/"-separated and stays inside its destination; else raise UnsafePath."""
    why = problem(path, max_bytes=MAX_PATH, reserved=_RESERVED, max_component=255)
    if why:
        raise UnsafePath(f"refusing path {str(path)[:200]!r}: {why}",
                         hint="the checkpoint names a file outside its directory")
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
