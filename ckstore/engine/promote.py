"""Gated promotion and staged rollback: an alias moves only when every check passes, with the evidence on record.

Checks are `verify` (every file of the candidate reads back and hashes to its manifest), gates (`model.gates`:
comparisons with numbers or with the current holder's values) and hook commands from the config
(`governance.checks.NAME = "command"`; exit 0 passes; the candidate, the current holder, the alias and the
repository are in the environment as CKSTORE_CANDIDATE, CKSTORE_CURRENT, CKSTORE_ALIAS and CKSTORE_REPO; a hook
running past its timeout fails). The alias then moves by compare-and-swap against the holder the checks saw, so a
move that landed meanwhile makes the promotion fail instead of overwriting it. Each attempt — passed or refused —
leaves a note in namespace `promotion` on the candidate with every check's result and output tail.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field

from ..errors import CkstoreError, UsageError
from ..model.gates import evaluate, parse_gate
from ..model.refnames import ALIASES
from ..results.governance import CheckResult, PromotionResult
from .aliases import check_alias_name, holder_of, move_alias
from .notes import add_note
from .protect import check_move, rule_for
from .repository import Repository
from .restore import file_pieces

HOOK_TIMEOUT = 600.0
TAIL = 2000
EVIDENCE_NS = "promotion"


@dataclass
class Plan:
    """What a promotion will check: built-in checks, hook commands (name -> command) and gates."""

    checks: list[str] = field(default_factory=list)
    gates: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        """No check at all."""
        return not self.checks and not self.gates


def promote(repo: Repository, rev: str, alias: str, reason: str, plan: Plan, *, dry_run: bool = False,
            action: str = "promote", timeout: float = HOOK_TIMEOUT, records: dict | None = None) -> PromotionResult:
    """Run `plan` on `rev` against `alias`'s current holder; move the alias only if all pass (not with dry_run).
    `records(oid) -> dict`: a commit's record (CommitInfo.to_dict, with notes), for the gates."""
    if not reason or not reason.strip():
        raise UsageError(f"{action} needs a reason", hint="pass --reason TEXT")
    check_alias_name(repo, alias)
    gates = [parse_gate(g) for g in plan.gates]  # a gate that does not parse stops everything before it runs
    hooks = repo.config.governance.get("checks") or {}
    for name in plan.checks:
        if name != "verify" and name not in hooks:
            raise UsageError(f"unknown check {name!r}", hint=f"built in: verify; in the config: "
                                                             f"{', '.join(sorted(hooks)) or 'none'}")
    ref = ALIASES + alias
    rule = rule_for(repo.config.protect, ref)
    if rule is not None and rule.require_checks and plan.empty():
        raise UsageError(f"{ref} is protected: a promotion to it needs at least one check",
                         hint="add --check verify, --check NAME or --gate EXPR")
    candidate = repo.resolve(rev)
    expected = repo.refs.read(ref)
    current = holder_of(repo, expected)
    result = PromotionResult(alias, candidate.hex(), current.hex() if current else None, dry_run=dry_run,
                             action=action, reason=reason)
    for name in plan.checks:
        result.checks.append(_verify(repo, candidate) if name == "verify" else
                             _hook(repo, name, hooks[name], candidate, current, alias, timeout))
    get = records or (lambda oid: {})
    cand_rec, cur_rec = get(candidate), get(current) if current else None
    for gate in gates:
        g = evaluate(gate, cand_rec, cur_rec)
        result.checks.append(CheckResult(f"gate {g.gate}", g.passed, g.detail, 0.0))
    result.passed = all(c.passed for c in result.checks)
    if dry_run:
        return result
    if result.passed:
        try:
            move_alias(repo, alias, candidate.hex(), reason, action=action, expected=expected,
                       guard=lambda old, new: check_move(repo, ref, old, new, checked=True))
            result.moved = True
        except CkstoreError as exc:
            result.passed, result.error = False, str(exc)
    _record(repo, result)
    return result


def _verify(repo: Repository, candidate: bytes) -> CheckResult:
    """Every file of the candidate read back through its chunks and checked against its whole-file hash."""
    start = time.perf_counter()
    manifest = repo.manifest_of(candidate)
    try:
        repo.ensure_chunks(manifest)
        for recipe in manifest.files:
            for _ in file_pieces(repo.store, manifest, recipe, repo.pool):
                pass
    except CkstoreError as exc:
        return CheckResult("verify", False, str(exc), time.perf_counter() - start)
    n = len(manifest.files)
    return CheckResult("verify", True, f"{n} file{'s' * (n != 1)} read back byte-identical",
                       time.perf_counter() - start)


def _hook(repo: Repository, name: str, command: str, candidate: bytes, current: bytes | None, alias: str,
          timeout: float) -> CheckResult:
    """Run a configured check command (the repository owner's own config; never a remote's)."""
    env = {**os.environ, "CKSTORE_CANDIDATE": candidate.hex(), "CKSTORE_CURRENT": current.hex() if current else "",
           "CKSTORE_ALIAS": alias, "CKSTORE_REPO": str(repo.root)}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, shell=True, env=env, cwd=repo.root, capture_output=True, text=True,
                              timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or "")[-TAIL:] if isinstance(exc.stdout, str) else ""
        return CheckResult(name, False, f"timed out after {timeout:g} s\n{tail}".strip(), time.perf_counter() - start)
    output = (done.stdout + done.stderr)[-TAIL:]
    verdict = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
    return CheckResult(name, done.returncode == 0, f"{verdict}\n{output}".strip(), time.perf_counter() - start)


def _record(repo: Repository, result: PromotionResult) -> None:
    """The evidence, as a note on the candidate; a refusal is audited too."""
    data = {"alias": result.alias, "action": result.action, "passed": result.passed, "moved": result.moved,
            "current": result.current, "reason": result.reason,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail, "seconds": round(c.seconds, 3)}
                       for c in result.checks]}
    if result.error:
        data["error"] = result.error
    add_note(repo, result.candidate, data, ns=EVIDENCE_NS,
             message=f"{result.action} to {result.alias}: {'moved' if result.moved else 'refused'}")
    if not result.moved:
        failed = ", ".join(c.name for c in result.checks if not c.passed) or result.error or "?"
        repo.refs.audit.append(f"{result.action}-refused", ALIASES + result.alias, None, None,
                               f"{result.candidate}: {failed}: {result.reason}")


def rollback_target(repo: Repository, alias: str, *, to: str | None = None, steps: int = 1) -> bytes:
    """Where a rollback of `alias` goes: `to`, or the holder `steps` moves back in its history."""
    if to is not None:
        return repo.resolve(to)
    if steps < 1:
        raise UsageError("--steps counts back from 1")
    return repo.alias_holder(alias, steps)


def last_checks(repo: Repository, notes: list, alias: str) -> list[str]:
    """The non-gate checks of the last passing promotion of a commit to `alias`, from its evidence notes
    (`notes`: the commit's NoteEntry list); ["verify"] when there is none."""
    for entry in reversed(notes):
        data = entry.note.data
        if entry.note.ns == EVIDENCE_NS and data.get("alias") == alias and data.get("moved"):
            names = [c.get("name") for c in data.get("checks", []) if isinstance(c, dict)]
            kept = [n for n in names if isinstance(n, str) and not n.startswith("gate ")]
            hooks = repo.config.governance.get("checks") or {}
            return [n for n in kept if n == "verify" or n in hooks] or ["verify"]
    return ["verify"]


def force_move(repo: Repository, alias: str, target: bytes, reason: str, action: str) -> PromotionResult:
    """Move an alias without checks (`rollback --force`): audited as such."""
    ref = ALIASES + alias
    expected = repo.refs.read(ref)
    current = holder_of(repo, expected)
    move_alias(repo, alias, target.hex(), reason, action=f"{action}-forced", expected=expected,
               guard=lambda old, new: check_move(repo, ref, old, new, checked=True))
    return PromotionResult(alias, target.hex(), current.hex() if current else None, passed=True, moved=True,
                           action=f"{action}-forced", reason=reason)
