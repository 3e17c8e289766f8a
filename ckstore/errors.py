"""Every error ckstore raises, one tree under CkstoreError; each class knows the CLI's exit code for it.

    CkstoreError                    base (exit 1); .hint says what the user can do about it
    ├── UsageError                  bad arguments to an API call or command (exit 2; subclasses exit 1)
    │   ├── InvalidMetadata         metadata fails the repository's schema or cannot be parsed
    │   ├── UnsafePath              a path that would escape or clobber its destination
    │   └── QuerySyntaxError        a metadata query that does not parse (.column, caret in the message)
    ├── RepositoryError
    │   ├── NotARepository          no .ckstore found
    │   ├── UnsupportedFormat       config names a format/version/hash this build does not read
    │   ├── AlreadyExists           init over an existing repository, checkout over files
    │   ├── IncompleteClone         a clone that did not finish (.url): run the same clone again
    │   ├── ChangeNotDurable        a ref moved but its directory could not be synced (disk full, I/O error)
    │   └── LockTimeout             a lock (ref, audit log, remotes) held by a live process for too long
    ├── RevisionError
    │   ├── UnknownRevision         nothing by that name
    │   └── AmbiguousRevision       an id prefix matching several objects
    ├── RefError
    │   ├── RefConflict             compare-and-swap lost: the ref moved
    │   ├── ProtectedRef            deleting the current branch, unmerged work, a reset that drops commits
    │   ├── NonFastForward          a push or pull that would drop the other side's commits
    │   └── RemoteRefMoved          the remote's ref moved during a push: fetch and retry
    ├── MalformedCheckpoint         an input file that does not parse as its format
    ├── IntegrityError
    │   ├── CorruptObject           bytes whose hash is not their id (expected, got)
    │   ├── MissingObject           an object or chunk that should be there and is not
    │   └── DamagedRef              a ref, HEAD or audit file that does not parse (.ref, .path)
    └── RemoteError                 a remote (directory, S3 bucket) failed an operation; .url, .key
        ├── RemoteNotFound          no such key on the remote
        ├── RemotePreconditionFailed  a conditional write lost: the key exists, or its etag moved
        ├── RemoteUnavailable       network down, timeout, 5xx, a key lock held too long: transient
        ├── RemoteAccessDenied      credentials missing or wrong, or not permitted
        └── RemoteBucketMissing     the bucket (or the remote's root directory) does not exist

    CacheRebuilt (a UserWarning)    the LMDB cache was damaged and has been rebuilt from the packs
"""

from __future__ import annotations


class CkstoreError(Exception):
    """Base class of every error ckstore raises on purpose."""

    hint: str = ""
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class UsageError(CkstoreError):
    """Bad arguments."""

    exit_code = 2


class InvalidMetadata(UsageError):
    """Commit metadata that fails the schema or cannot be parsed."""

    exit_code = 1  # the input is at fault, not the command line


class UnsafePath(UsageError):
    """A path that would write outside its destination or into a control directory."""

    exit_code = 1


class RepositoryError(CkstoreError):
    """Problems with the repository itself."""


class NotARepository(RepositoryError):
    """Raised when no .ckstore directory is found here, in a parent, or at CKSTORE_DIR."""

    hint = "run `ckstore init` first, or point at one with -C DIR or CKSTORE_DIR"


class UnsupportedFormat(RepositoryError):
    """Raised when a config (local or remote) names a format, version or hash this build does not read."""

    hint = "upgrade ckstore to read this repository"


class AlreadyExists(RepositoryError):
    """Raised by init over a repository, checkout into a non-empty directory, or a taken branch, tag or remote name."""


class IncompleteClone(RepositoryError):
    """Raised when a repository is a clone that did not finish (killed, or lost its connection); `.url` is its
    remote. The same `ckstore clone URL DIR` command finishes it."""

    def __init__(self, message: str, url: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.url = url


class ChangeNotDurable(RepositoryError):
    """Raised when a ref moved but its directory could not be synced: the change is made, not yet safe."""

    hint = "free some space (or check the disk), then run `ckstore fsck`: the change was made"


class LockTimeout(RepositoryError):
    """Raised when a lock (a ref, the audit log, remotes.json) stays held by a live process past CKSTORE_LOCK_WAIT."""


class RevisionError(CkstoreError):
    """Base class of errors about naming a revision."""


class UnknownRevision(RevisionError):
    """Raised when a revision names nothing: no such branch, tag or id, or a ~N/^N beyond the history."""

    hint = "see `ckstore log`, `ckstore branch` and `ckstore tag` for valid revisions"


class AmbiguousRevision(RevisionError):
    """Raised when an id prefix matches several objects."""

    hint = "give more hex digits of the id"


class RefError(CkstoreError):
    """Base class of errors about moving refs."""


class RefConflict(RefError):
    """A compare-and-swap found another value than expected."""

    def __init__(self, ref: str, expected: str | None, actual: str | None, *, hint: str = "") -> None:
        super().__init__(f"{ref} moved: expected {expected or 'nothing'}, found {actual or 'nothing'}", hint=hint)
        self.ref, self.expected, self.actual = ref, expected, actual


class ProtectedRef(RefError):
    """Raised for deleting the current branch or unmerged work, moving a tag, or a reset that drops commits."""


class NonFastForward(RefError):
    """Raised when a push or pull would drop the other side's commits."""

    hint = "fetch (or pull) first and build on the remote's commits, or pass --force to overwrite them"


class RemoteRefMoved(RefError):
    """Raised when the remote's ref moved during a push: fetch and retry."""

    hint = "fetch and retry"


class MalformedCheckpoint(CkstoreError):
    """An input file that claims a format it does not follow."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", hint="the file is damaged or not in the format its name says")
        self.path, self.reason = path, reason


class IntegrityError(CkstoreError):
    """Base class of damage found in the repository's stored data."""

    hint = "run `ckstore fsck --read-data` to list every damaged object"


class CorruptObject(IntegrityError):
    """Raised when stored bytes do not hash to their id or do not decode (.what, .expected, .got)."""

    def __init__(self, what: str, expected: str, got: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(f"corrupt {what} {expected}: content hashes to {got}{extra}")
        self.what, self.expected, self.got, self.detail = what, expected, got, detail


class MissingObject(IntegrityError):
    """Raised when an object, chunk, manifest or pack that should be there is not (.what, .oid)."""

    def __init__(self, what: str, oid: str) -> None:
        super().__init__(f"missing {what} {oid}")
        self.what, self.oid = what, oid


class DamagedRef(IntegrityError):
    """A ref, HEAD or audit-log file whose bytes do not parse: damage, never a lost race or a bad argument."""

    def __init__(self, ref: str, detail: str, *, hint: str = "") -> None:
        super().__init__(f"damaged {ref}: {detail}", hint=hint or "run `ckstore fsck`; the audit log "
                         "(`ckstore audit`) names the ref's last good value")
        self.ref, self.detail = ref, detail


class RemoteError(CkstoreError):
    """A transport operation failed; `url` names the remote and `key` the object, when known."""

    def __init__(self, message: str, *, url: str | None = None, key: str | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.url, self.key = url, key


class RemoteNotFound(RemoteError):
    """The key does not exist on the remote."""


class RemotePreconditionFailed(RemoteError):
    """`put(if_absent=True)` found the key, or `put(if_match=...)` found another etag (or no key)."""


class RemoteUnavailable(RemoteError):
    """Transient: connection refused, timeout, server error, or a key locked by another writer."""

    hint = "check the network and the remote's address, then retry"


class RemoteAccessDenied(RemoteError):
    """Raised when the remote's credentials are missing or wrong, or do not permit the operation."""

    hint = "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and their permissions"


class RemoteBucketMissing(RemoteError):
    """Raised when the remote's bucket (or root directory) does not exist."""

    hint = "create the bucket (or directory) first, or fix the remote's URL"


class QuerySyntaxError(UsageError):
    """A metadata query (ckstore.query) that does not parse; .column is 1-based, the message has a caret line."""

    hint = 'queries look like: metrics.val_loss < 0.3 and params.lr >= 1e-4 and data.version == "v3"'
    exit_code = 1

    def __init__(self, message: str, *, column: int | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.column = column


class CacheRebuilt(UserWarning):
    """Not an error: the LMDB cache was found damaged, set aside and rebuilt from the packs (a warning)."""
