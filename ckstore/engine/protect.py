"""Protected refs: rules in the repository config that forced moves, deletions and unchecked moves must obey.

A rule names a ref (or a glob: `refs/heads/release/*`; a bare name means the branch) and any of: `no_delete`,
`ff_only` (the new value must contain the old one), `require_checks` (moves only through `promote`, whose checks
passed). Rules are checked under the ref's lock, right before it moves, by every command that moves refs here;
a remote's config carries the rules its pushers obey.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ..errors import ProtectedRef, UsageError
from ..model import graph
from ..model.refnames import HEADS, check_ref_name
from .repository import Repository

FLAGS = ("no_delete", "ff_only", "require_checks")


@dataclass(frozen=True)
class Rule:
    """One protection rule."""

    pattern: str
    no_delete: bool = False
    ff_only: bool = False
    require_checks: bool = False

    def describe(self) -> str:
        """The rule's flags in words."""
        words = {"no_delete": "no deletion", "ff_only": "fast-forward only", "require_checks": "checked moves only"}
        return ", ".join(words[f] for f in FLAGS if getattr(self, f)) or "no flags"


def full_pattern(name: str) -> str:
    """A rule's ref pattern: names under refs/ as they are, a bare name as a branch."""
    check_ref_name(name.replace("*", "x").replace("?", "x"))
    return name if name.startswith("refs/") else HEADS + name


def rules(protect: dict) -> list[Rule]:
    """The rules of a config's `protect` table (UsageError for a malformed one)."""
    out = []
    for pattern, flags in sorted(protect.items()):
        if not isinstance(flags, dict) or not all(isinstance(flags.get(f, False), bool) for f in FLAGS):
            raise UsageError(f"protection rule {pattern!r} is malformed", hint=f"flags are booleans: {FLAGS}")
        out.append(Rule(pattern, *(flags.get(f, False) for f in FLAGS)))
    return out


def rule_for(protect: dict, ref: str) -> Rule | None:
    """The rules matching `ref`, combined (a flag set by any rule holds)."""
    hits = [r for r in rules(protect) if fnmatch.fnmatchcase(ref, r.pattern)]
    if not hits:
        return None
    return Rule(" + ".join(r.pattern for r in hits), *(any(getattr(r, f) for r in hits) for f in FLAGS))


def check_move(repo: Repository, ref: str, old: bytes | None, new: bytes | None, *, checked: bool = False,
               protect: dict | None = None) -> None:
    """ProtectedRef, naming the rule, if moving `ref` from `old` to `new` (None: deleting it) breaks a rule.
    `checked`: the move is a promotion whose checks all passed."""
    rule = rule_for(repo.config.protect if protect is None else protect, ref)
    if rule is None:
        return
    if new is None and old is not None and rule.no_delete:
        raise ProtectedRef(f"{ref} is protected ({rule.describe()}): it may not be deleted",
                           hint=f"the rule {rule.pattern!r} is in the repository config (`ckstore protect --list`)")
    if new is not None and old is not None and rule.ff_only and not graph.is_ancestor(old, new, repo.parents):
        raise ProtectedRef(f"{ref} is protected ({rule.describe()}): {new.hex()[:12]} does not contain "
                           f"{old.hex()[:12]}", hint="only moves that keep its history are allowed")
    if rule.require_checks and not checked:
        raise ProtectedRef(f"{ref} is protected ({rule.describe()}): it moves only through `ckstore promote` "
                           "with passing checks", hint="run `ckstore promote REV --to NAME --check ... --reason ...`")
