"""The governance verbs of `Repo`: notes, aliases with history, protected refs."""

from __future__ import annotations

from dataclasses import replace

from ..engine import aliases as alias_rules
from ..engine import notes as note_rules
from ..engine.protect import FLAGS, check_move, full_pattern, rules
from ..engine.repository import Repository
from ..errors import RefConflict, UnknownRevision, UsageError
from ..model.refnames import ALIASES
from ..results import AliasInfo, AliasMoveInfo, NoteInfo, ProtectionInfo


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
        return AliasMoveInfo.of(oid, move, self._holder(move.previous))

    def alias_delete(self, name: str, reason: str) -> AliasMoveInfo:
        """Delete alias `name` (one more move, to nothing: its history stays)."""
        ref = ALIASES + name
        oid, move = alias_rules.move_alias(self.engine, name, None, reason, action="delete",
                                           guard=lambda old, new: check_move(self.engine, ref, old, new))
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

    # -- protection -----------------------------------------------------------------------------------------------

    def protect(self, ref: str, *, no_delete: bool = False, ff_only: bool = False,
                require_checks: bool = False) -> ProtectionInfo:
        """Protect `ref` (a bare name is a branch; globs allowed): refuse deletes, non-fast-forward moves or
        unchecked moves, locally and on push."""
        if not (no_delete or ff_only or require_checks):
            raise UsageError("say what to protect against: --no-delete, --ff-only, --require-checks")
        pattern = full_pattern(ref)
        cfg = self.engine.config
        flags = {f: v for f, v in zip(FLAGS, (no_delete, ff_only, require_checks)) if v}
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

