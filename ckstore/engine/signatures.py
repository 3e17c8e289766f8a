"""Signatures on commits, tags, alias moves and audit entries, and their verification.

Objects are vouched for by notes in namespace `signatures` (a note names the object; its data holds the kind, the
signer and the SSH signature over "ckstore KIND ID"), so signing changes no id and travels with the notes. Audit
entries carry their signature in the entry itself, over "ckstore audit SEQ HASH" (`storage.audit`). Verifying
checks the audit chain, every signature against the allowed signers file, and, with
`governance.require_signatures`, that every commit the refs reach and every entry is signed.
"""

from __future__ import annotations

from ..model import graph
from ..storage.audit import signed_text
from ..storage.signing import allowed_signers_from, verify
from .notes import NotesView, note_on
from .repository import Repository

NS = "signatures"


def object_text(kind: str, oid: bytes) -> str:
    """What an object's signature covers."""
    return f"ckstore {kind} {oid.hex()}"


def sign_object(repo: Repository, oid: bytes, kind: str) -> bool:
    """Sign an object when the config names a signing key; True if it was signed."""
    signer = repo.refs.audit.signer
    if signer is None:
        return False
    note_on(repo, oid, {"kind": kind, "signer": signer.principal, "sig": signer.sign(object_text(kind, oid))},
            ns=NS, message=f"{kind} signed by {signer.principal}")
    return True


def check(repo: Repository, view: NotesView) -> list[str]:
    """Every problem with the audit chain and the signatures (empty: all is well)."""
    problems = list(repo.refs.audit.verify())
    gov = repo.config.governance
    allowed = allowed_signers_from(gov, repo.root)
    required = bool(gov.get("require_signatures"))
    entries = repo.refs.audit.entries()
    signed_any = any(e.sig for e in entries)
    if (signed_any or required) and allowed is None:
        return problems + ["signatures: governance.allowed_signers is not set, so no signature can be checked"]
    for e in entries:
        if e.sig:
            why = verify(signed_text(e.seq, e.hash), e.sig, e.signer or "", allowed)
            if why:
                problems.append(f"audit entry {e.seq}: signature of {e.signer!r} rejected: {why}")
        elif required:
            problems.append(f"audit entry {e.seq} ({e.action} {e.ref}) is not signed")
    signed: set[bytes] = set()
    for oid in view.noted():
        for entry in view.entries(oid):
            if entry.note.ns != NS:
                continue
            data = entry.note.data
            why = verify(object_text(str(data.get("kind")), oid), str(data.get("sig", "")), str(data.get("signer", "")),
                         allowed) if allowed else "no allowed signers"
            if why:
                problems.append(f"{data.get('kind')} {oid.hex()[:12]}: signature of {data.get('signer')!r} "
                                f"rejected: {why}")
            else:
                signed.add(oid)
    if required:
        for name, tip in repo.commit_refs().items():
            for c in graph.ancestors(tip, repo.parents):
                if c not in signed:
                    problems.append(f"commit {c.hex()[:12]} (reached from {name}) is not signed")
                    signed.add(c)
    return problems
