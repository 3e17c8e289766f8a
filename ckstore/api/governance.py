"""The governance verbs of `Repo`: notes, aliases with history, protected refs."""

from __future__ import annotations

from dataclasses import replace

from ..engine import aliases as alias_rules
from ..engine import notes as note_rules
from ..engine import promote as promotion
from ..engine import signatures
from ..engine.protect import FLAGS, check_move, full_pattern, rules
from ..engine.repository import Repository
from ..errors import RefConflict, UnknownRevision, UsageError
from ..model.refnames import ALIASES
from ..storage.signing import signer_from
from ..results import AliasInfo, AliasMoveInfo, MergeResult, NoteInfo, PromotionResult, ProtectionInfo


class Governance:
    """Mixed into `Repo` (which provides `engine`)."""

    engine: Repository
    _notes_view: note_rules.NotesView | None = None

    @property
    def notes_view(self) -> note_rules.NotesView:
        """Every namespace's notes, merged per commit (read again when a notes ref moved)."""
        if self._notes_view is None:
            self._notes_view = note_rules.NotesView(self.engine)
        return self._notes_view

    # -- notes ----------------------------------------------------------------------------------------------------

    def note_add(self, rev: str, data: dict | None = None, *, ns: str = note_rules.DEFAULT_NS,
                 message: str = "") -> NoteInfo:
        """Attach data (an evaluation, a review) to commit `rev` in namespace `ns`; the commit's id never
        changes. Later notes replace earlier values key by key."""
        oid, note = note_rules.add_note(self.engine, rev, data or {}, ns=ns, message=message)
        return NoteInfo.of(oid, note)

    def notes(self, rev: str = "HEAD", *, ns: str | None = None) -> list[NoteInfo]:
        """Every note on commit `rev` (or only namespace `ns`), oldest first, with who added it and when."""
        target = self.engine.resolve(rev)
        return [NoteInfo.of(e.id, e.note) for e in self.notes_view.entries(target) if ns in (None, e.note.ns)]

    def noted(self, *, ns: str | None = None) -> dict[str, dict]:
        """{commit id: {namespace: merged data}} of every noted commit."""
        out = {}
        for oid in sorted(self.notes_view.noted()):
            data = {k: v for k, v in self.notes_view.of(oid).items() if ns in (None, k)}
            if data:
                out[oid.hex()] = data
        return out

    # -- aliases --------------------------------------------------------------------------------------------------

    def alias_set(self, name: str, rev: str, reason: str, *, expected: str | None = None) -> AliasMoveInfo:
        """Point alias `name` at `rev` with a reason (refused for a protected alias that requires checks: use
        promote). `expected`: the holder you saw (hex id); another move since then raises RefConflict."""
        ref = ALIASES + name
        guard = lambda old, new: check_move(self.engine, ref, old, new)  # noqa: E731
        oid, move = alias_rules.move_alias(self.engine, name, rev, reason, guard=guard,
                                           **self._expected(name, expected))
        self.sign(oid.hex(), "alias")
        return AliasMoveInfo.of(oid, move, self._holder(move.previous))

    def alias_delete(self, name: str, reason: str) -> AliasMoveInfo:
        """Delete alias `name` (one more move, to nothing: its history stays)."""
        ref = ALIASES + name
        oid, move = alias_rules.move_alias(self.engine, name, None, reason, action="delete",
                                           guard=lambda old, new: check_move(self.engine, ref, old, new))
        self.sign(oid.hex(), "alias")
        return AliasMoveInfo.of(oid, move, self._holder(move.previous))

    def aliases(self) -> list[AliasInfo]:
        """Every alias that names a commit, with its newest move."""
        return [AliasInfo(name, move.target.hex(), AliasMoveInfo.of(oid, move, self._holder(move.previous)))
                for name, (oid, move) in sorted(alias_rules.aliases(self.engine).items())]

    def alias_history(self, name: str) -> list[AliasMoveInfo]:
        """Every move of alias `name`, newest first: who, when, from, to, why."""
        moves = self.engine.alias_moves(name)
        if not moves:
            raise UnknownRevision(f"there is no alias {name!r}")
        return [AliasMoveInfo.of(oid, move, moves[i + 1][1].target if i + 1 < len(moves) else None)
                for i, (oid, move) in enumerate(moves)]

    def _holder(self, move_id: bytes | None) -> bytes | None:
        return alias_rules.holder_of(self.engine, move_id)

    def _expected(self, name: str, expected: str | None) -> dict:
        if expected is None:
            return {}
        current = self.engine.refs.read(ALIASES + name)
        if self._holder(current) != self.engine.resolve(expected):
            raise RefConflict(ALIASES + name, expected, self._holder(current).hex() if current else None)
        return {"expected": current}

    # -- promotion ------------------------------------------------------------------------------------------------

    def promote(self, rev: str, to: str, reason: str, *, checks: list[str] | None = None,
                gates: list[str] | None = None, dry_run: bool = False,
                timeout: float = promotion.HOOK_TIMEOUT) -> PromotionResult:
        """Move alias `to` to `rev` only if every check (`verify`, hooks from the config) and gate (e.g.
        'metrics.val_loss <= current.metrics.val_loss') passes; the evidence is noted on `rev` either way."""
        plan = promotion.Plan(list(checks or []), list(gates or []))
        return self._signed_move(promotion.promote(self.engine, rev, to, reason, plan, dry_run=dry_run,
                                                   timeout=timeout, records=lambda oid: self._info(oid).to_dict()))

    def _signed_move(self, result: PromotionResult) -> PromotionResult:
        if result.moved:
            self.sign(self.engine.refs.read(ALIASES + result.alias).hex(), "alias")
        return result

    def rollback(self, alias: str, reason: str, *, to: str | None = None, steps: int = 1, force: bool = False,
                 dry_run: bool = False, timeout: float = promotion.HOOK_TIMEOUT) -> PromotionResult:
        """Move `alias` back (`steps` holders back in its history, or `to` a revision), re-running the checks
        of the target's last promotion to it (`verify` if none); `force` skips them (audited as forced)."""
        target = promotion.rollback_target(self.engine, alias, to=to, steps=steps)
        if force and not dry_run:
            if not reason or not reason.strip():
                raise UsageError("rollback needs a reason", hint="pass --reason TEXT")
            return self._signed_move(promotion.force_move(self.engine, alias, target, reason, "rollback"))
        plan = promotion.Plan(promotion.last_checks(self.engine, self.notes_view.entries(target), alias))
        return self._signed_move(promotion.promote(self.engine, target.hex(), alias, reason, plan, dry_run=dry_run,
                                                   action="rollback", timeout=timeout,
                                                   records=lambda oid: self._info(oid).to_dict()))

    # -- merge --------------------------------------------------------------------------------------------------

    def merge(self, other: str, *, take: str = "ours", message: str | None = None,
              branch: str | None = None) -> MergeResult:
        """Join `other` into `branch` (default HEAD's) with a two-parent commit whose checkpoint comes from
        `take` ("ours", "theirs" or a revision); fast-forwards when the branch is behind."""
        from ..engine.history import merge
        oid, commit, status = merge(self.engine, other, take=take, message=message, branch=branch)
        if commit is not None:
            self.sign(oid.hex(), "commit")
        return MergeResult(status, oid.hex(), self._info(oid) if commit is not None else None)

    # -- signatures -------------------------------------------------------------------------------------------

    def sign(self, oid: str, kind: str) -> bool:
        """Sign an object (commit, tag, alias move) when a signing key is configured; True if it was."""
        return signatures.sign_object(self.engine, bytes.fromhex(oid), kind)

    def verify_signatures(self) -> list[str]:
        """Problems with the audit chain and every signature (against governance.allowed_signers); with
        governance.require_signatures, every unsigned commit and entry too. Empty: all verified."""
        return signatures.check(self.engine, self.notes_view)

    def verify_audit_against(self, remote: str) -> list[str]:
        """Problems of the local audit log against the heads `remote` recorded at each push (write-once): a log
        cut or rewritten below one of them is named."""
        from ..sync.governance import on_remote, verify_anchors
        return on_remote(self.engine, remote, lambda r: verify_anchors(self.engine, r))

    def audit_problems(self) -> list[str]:
        """Problems of the audit log's hash chain alone (what `audit` warns about before showing it)."""
        return self.engine.refs.audit.verify()

    def configure_signing(self, *, key: str | None = None, signer: str | None = None,
                          allowed_signers: str | None = None, require: bool | None = None) -> dict:
        """Set the SSH key to sign with, the principal, the allowed signers file and whether unsigned commits and
        entries are problems; returns the signing settings."""
        cfg = self.engine.config
        gov = dict(cfg.governance)
        for k, v in (("signing_key", key), ("signer", signer), ("allowed_signers", allowed_signers),
                     ("require_signatures", require)):
            if v is not None:
                gov[k] = v
        self._save_config(replace(cfg, governance=gov))
        self.engine.refs.audit.signer = signer_from(gov, self.engine.root)
        return {k: gov.get(k) for k in ("signing_key", "signer", "allowed_signers", "require_signatures")}

    # -- names --------------------------------------------------------------------------------------------------

    def describe(self, rev: str = "HEAD") -> str:
        """`champion-3-g1a2b3c4`: the nearest alias or tag behind `rev`, the distance and the id (usable as a
        revision)."""
        return self.engine.describe(self.engine.resolve(rev))

    def set_name_template(self, template: str | None) -> None:
        """Set (None: remove) the artifact name template, e.g. "{model}-{branch}-v{n}-{phase}-{kind}": fields are
        branch, n (the branch version), id, step, or metadata keys (extra, data, params, metrics; or dotted)."""
        from ..model.naming import template_fields
        cfg = self.engine.config
        rest = {k: v for k, v in cfg.governance.items() if k != "name_template"}
        if template is not None:
            template_fields(template)
            rest["name_template"] = template
        self._save_config(replace(cfg, governance=rest))

    def parse_name(self, name: str) -> dict:
        """The fields of an artifact name (or a describe name), and the commit it names."""
        from ..model.naming import parse, parse_described
        template = self.engine.config.governance.get("name_template")
        described = parse_described(name)
        fields: dict | None = ({"name": described[0], "distance": described[1], "id": described[2]}
                               if described else parse(template, name) if template else None)
        if fields is None:
            raise UsageError(f"{name!r} is not a describe name" + (f" nor a name of the template {template!r}"
                                                                  if template else " (no name template is set)"))
        try:
            fields["commit"] = self.engine.resolve(name).hex()
        except UnknownRevision as exc:
            fields["commit"], fields["error"] = None, str(exc)
        return fields

    # -- protection -----------------------------------------------------------------------------------------------

    def protect(self, ref: str, *, no_delete: bool = False, ff_only: bool = False,
                require_checks: bool = False, remote: str | None = None) -> ProtectionInfo:
        """Protect `ref` (a bare name is a branch; globs allowed): refuse deletes, non-fast-forward moves or
        unchecked moves, locally and on push. With `remote`, the rule goes into that remote's config, where it
        binds every pusher."""
        if not (no_delete or ff_only or require_checks):
            raise UsageError("say what to protect against: --no-delete, --ff-only, --require-checks")
        pattern = full_pattern(ref)
        cfg = self.engine.config
        flags = {f: v for f, v in zip(FLAGS, (no_delete, ff_only, require_checks)) if v}
        if remote is not None:
            from ..sync.governance import on_remote, set_remote_protect
            on_remote(self.engine, remote, lambda r: set_remote_protect(r, pattern, flags))
            self.engine.refs.audit.append("protect", pattern, None, None, f"on {remote}: {', '.join(sorted(flags))}")
            return ProtectionInfo(pattern, sorted(flags))
        self._save_config(replace(cfg, protect={**cfg.protect, pattern: flags}))
        self.engine.refs.audit.append("protect", pattern, None, None, ", ".join(sorted(flags)))
        return ProtectionInfo(pattern, sorted(flags))

    def unprotect(self, ref: str) -> None:
        """Remove the protection rule of `ref` (audited)."""
        pattern = full_pattern(ref)
        cfg = self.engine.config
        if pattern not in cfg.protect:
            raise UnknownRevision(f"no protection rule for {pattern}")
        self._save_config(replace(cfg, protect={k: v for k, v in cfg.protect.items() if k != pattern}))
        self.engine.refs.audit.append("unprotect", pattern, None, None, "protection rule removed")

    def protections(self) -> list[ProtectionInfo]:
        """The protection rules of the repository."""
        return [ProtectionInfo(r.pattern, [f for f in FLAGS if getattr(r, f)]) for r in rules(self.engine.config.protect)]

