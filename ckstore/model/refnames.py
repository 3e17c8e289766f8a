"""Ref names: the namespaces (defined once), the rule for a valid name, and short names for display."""

from __future__ import annotations

import re

from ..errors import UsageError
from .text import is_utf8

HEADS = "refs/heads/"
TAGS = "refs/tags/"
REMOTES = "refs/remotes/"
ALIASES = "refs/aliases/"
NOTES = "refs/notes/"

_BAD_REF = re.compile(r"(^|/)\.|\.\.|[\x00-\x20\x7f~^:?*\[\\]|@\{|\.lock(/|$)|//|/$|^/|^$")


def check_ref_name(name: str) -> str:
    """`name` if git would accept it as a ref name (and it cannot escape refs/), else UsageError."""
    if _BAD_REF.search(name) or len(name) > 200 or not name.isprintable() or not is_utf8(name):
        raise UsageError(f"invalid ref name {name!r}", hint="use letters, digits, '-', '_', '.', and '/' between parts")
    return name


def branch_ref(name: str) -> str:
    """refs/heads/NAME, checked."""
    return HEADS + check_ref_name(name)


def tag_ref(name: str) -> str:
    """refs/tags/NAME, checked."""
    return TAGS + check_ref_name(name)


def alias_ref(name: str) -> str:
    """refs/aliases/NAME, checked."""
    return ALIASES + check_ref_name(name)


def notes_ref(ns: str) -> str:
    """refs/notes/NS, checked (one namespace: no "/")."""
    if "/" in ns:
        raise UsageError(f"invalid notes namespace {ns!r}", hint="one word, e.g. eval")
    return NOTES + check_ref_name(ns)


def remote_ref(remote: str, branch: str) -> str:
    """refs/remotes/REMOTE/BRANCH: where a fetch records a remote's branch."""
    return f"{REMOTES}{remote}/{branch}"


def short(ref: str) -> str:
    """The name users type: "main" for refs/heads/main, "tags/v1" for refs/tags/v1, "origin/main" for a remote's."""
    if ref.startswith(HEADS):
        return ref[len(HEADS):]
    return ref.removeprefix("refs/")


def candidates(name: str) -> list[str]:
    """The refs a revision name may mean, in the order they are tried (git's rules)."""
    out = [name] if name.startswith("refs/") else []
    return out + [HEADS + name, TAGS + name, ALIASES + name, REMOTES + name, "refs/" + name]
