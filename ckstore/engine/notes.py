"""Notes: data about a commit added after the fact (an evaluation that arrives days later), without changing its id.

Each namespace `refs/notes/NS` heads a history of Note objects: every addition names the head before it, so who
added what and when is kept, and two clones' additions merge by union (a merge note with both heads as parents).
The view of a commit's notes applies every note of the namespace in time order, later keys replacing earlier ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..errors import RefConflict, UsageError
from ..model import metadata
from ..model.objects import Note
from ..model.refnames import NOTES, notes_ref
from ..storage.audit import whoami
from .repository import Repository

DEFAULT_NS = "default"


@dataclass(frozen=True)
class NoteEntry:
    """One note as `note show` lists it."""

    id: bytes
    note: Note


def add_note(repo: Repository, rev: str, data: dict, *, ns: str = DEFAULT_NS, message: str = "") -> tuple[bytes, Note]:
    """Attach `data` to the commit `rev` names, in namespace `ns` (compare-and-swap on refs/notes/NS, audited)."""
    if not data and not message:
        raise UsageError("a note needs data (key=value or --json FILE) or a message (-m)")
    metadata.check_encodable({"data": data, "message": message, "ns": ns}, "note")
    return note_on(repo, repo.resolve(rev), data, ns=ns, message=message)


def note_on(repo: Repository, target: bytes, data: dict, *, ns: str, message: str = "") -> tuple[bytes, Note]:
    """Attach `data` to the object `target` (a commit, or an alias move or tag a signature vouches for)."""
    ref = notes_ref(ns)
    with repo.writing("note"), repo.refs.locked(ref) as (current, set_ref):
        note = Note(target, ns, data, message, whoami(), time.time(), (current,) if current else ())
        oid = repo.store.put_object(note)
        set_ref(oid, "note", f"{ns} on {target.hex()}" + (f": {message}" if message else ""))
    return oid, note


def merge_heads(repo: Repository, ns: str, other: bytes, *, expected: bytes | None) -> bytes:
    """Join another clone's notes history of `ns` to ours (a merge note with both heads as parents); returns the
    new head. `expected`: our head as the caller read it (RefConflict if it moved)."""
    ref = notes_ref(ns)
    with repo.refs.locked(ref) as (current, set_ref):
        if current != expected:
            raise RefConflict(ref, expected.hex() if expected else None, current.hex() if current else None)
        if current is None or current == other or other in note_history(repo, current):
            head = current or other
        elif current in note_history(repo, other):
            head = other
        else:
            head = repo.store.put_object(Note(None, ns, {}, "merge", whoami(), time.time(), (current, other)))
        if head != current:
            set_ref(head, "note-merge", f"{ns}: joined {other.hex()}")
    return head


def note_history(repo: Repository, head: bytes) -> dict[bytes, Note]:
    """Every note object a namespace head reaches."""
    out: dict[bytes, Note] = {}
    stack = [head]
    while stack:
        oid = stack.pop()
        if oid in out:
            continue
        note = repo.store.get_object(oid)
        if not isinstance(note, Note):
            raise UsageError(f"notes history leads to a {type(note).__name__.lower()} ({oid.hex()[:12]}), not a note")
        out[oid] = note
        stack.extend(note.parents)
    return out


class NotesView:
    """Every namespace's notes, merged per commit; read once per set of heads (a log asks for every commit)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._key: tuple | None = None
        self._by_commit: dict[bytes, dict[str, dict]] = {}
        self._entries: dict[bytes, list[NoteEntry]] = {}

    def _load(self) -> None:
        # Cheap to ask per commit (a log asks for every one): each namespace is a file directly in refs/notes/,
        # replaced by rename, so its inode changes whenever a note is added here or merged from a fetch.
        stamp = _stamp(self.repo.dir / NOTES) if hasattr(self.repo, "dir") else None  # a remote view: fixed
        if self._key is not None and self._key[0] == stamp:
            return
        heads = self.repo.refs.list(NOTES)
        key = (stamp, tuple(sorted(heads.items())))
        if key == self._key:
            return
        by_commit: dict[bytes, dict[str, dict]] = {}
        entries: dict[bytes, list[NoteEntry]] = {}
        for ref, head in heads.items():
            notes = note_history(self.repo, head)
            for oid, note in sorted(notes.items(), key=lambda item: (item[1].time, item[0])):
                if note.target is None:
                    continue
                by_commit.setdefault(note.target, {}).setdefault(ref.removeprefix(NOTES), {}).update(note.data)
                entries.setdefault(note.target, []).append(NoteEntry(oid, note))
        self._key, self._by_commit, self._entries = key, by_commit, entries

    def of(self, commit: bytes) -> dict[str, dict]:
        """{namespace: merged data} for a commit ({} when it has no notes)."""
        self._load()
        return self._by_commit.get(commit, {})

    def by_commit(self) -> dict[bytes, dict[str, dict]]:
        """{commit: {namespace: merged data}} for every noted commit, from one look at the notes refs (a walk
        over many commits asks this once instead of `of` per commit)."""
        self._load()
        return self._by_commit

    def entries(self, commit: bytes) -> list[NoteEntry]:
        """Every note on a commit, oldest first, with who added it and when."""
        self._load()
        return self._entries.get(commit, [])

    def noted(self) -> set[bytes]:
        """The commits that have notes."""
        self._load()
        return set(self._by_commit)


def _stamp(notes_dir) -> tuple | None:
    """(name, inode, mtime) of each namespace file: what changes when any notes ref moves."""
    try:
        with os.scandir(notes_dir) as it:
            return tuple(sorted((e.name, e.inode(), e.stat().st_mtime_ns) for e in it))
    except FileNotFoundError:
        return None
