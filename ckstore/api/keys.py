"""The key verbs of `Repo`: the key files of an encrypted repository (list, add, remove, passwd), and making a
plain repository an encrypted one (`migrate_encrypt`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.repository import Repository
from ..errors import UsageError
from ..model.crypto import KeyFile
from ..model.progress import Progress
from ..storage.keys import KeyStore, Passphrase, new_key_file, resolve


@dataclass(frozen=True)
class KeyInfo:
    """One key file: its name (the BLAKE3 of its bytes), who made it and when, and whether it opened this
    repository now (`current`); `damaged` says why it cannot be read."""

    name: str
    label: str = ""
    created: float = 0.0
    host: str = ""
    user: str = ""
    current: bool = False
    damaged: str = ""


class Keys:
    """Mixed into `Repo` (which provides `engine`)."""

    engine: Repository

    def _keys(self) -> KeyStore:
        if not self.engine.store.scheme.encrypted:
            raise UsageError(f"repository {self.engine.root} is not encrypted: it has no keys",
                             hint="make an encrypted one with `ckstore init --encrypt`")
        return KeyStore(self.engine.dir)

    def _name(self, prefix: str) -> str:
        names = [n for n in self._keys().names() if n.startswith(prefix.lower())]
        if len(names) != 1:
            raise UsageError(f"{'no' if not names else 'more than one'} key file starts with {prefix!r}",
                             hint="see `ckstore key list`")
        return names[0]

    def key_list(self) -> list[KeyInfo]:
        """The key files, oldest first."""
        out = []
        for name, kf in self._keys().files().items():
            if isinstance(kf, KeyFile):
                out.append(KeyInfo(name, kf.label, kf.created, kf.host, kf.user, name == self.engine.key_name))
            else:
                out.append(KeyInfo(name, damaged=str(kf)))
        return sorted(out, key=lambda k: (k.created, k.name))

    def key_add(self, passphrase: Passphrase, *, label: str = "") -> str:
        """A new key file wrapping this repository's master key under another passphrase; its name. Push to share
        it with the remotes (clones of them then open with it too)."""
        store = self._keys()
        secret = passphrase if isinstance(passphrase, str) else resolve(passphrase, "the new key")
        return store.add(new_key_file(self.engine.store.scheme.keyring, secret, label))

    def key_remove(self, name: str) -> str:
        """Delete a key file (a unique prefix of its name will do), not the one this repository was opened with
        (`key passwd` replaces that one). Remotes keep their copy until deleted there."""
        full = self._name(name)
        if full == self.engine.key_name:
            raise UsageError(f"key file {full[:12]} opened this repository: it cannot remove itself",
                             hint="open with another key's passphrase, or use `ckstore key passwd`")
        self._keys().remove(full)
        return full

    def key_passwd(self, passphrase: Passphrase, *, label: str = "") -> str:
        """Replace the key file this repository was opened with by one under a new passphrase; the new name."""
        old = self.engine.key_name
        if old is None:
            raise UsageError("this repository was opened with its master key in hand, not a key file")
        new = self.key_add(passphrase, label=label or self._keys().read(old).label)
        self._keys().remove(old)
        self.engine.key_name = new
        return new

    def upgrade(self) -> tuple[int, int]:
        """Raise the repository to the newest format version this build writes, in place and crash-safe (only the
        config changes): (version before, version after), equal when it was the newest already."""
        from ..engine.migrate import upgrade
        return upgrade(self.engine)

    def migrate_encrypt(self, passphrase: Passphrase, *, keep_plain: bool = False, wait: float = 60.0,
                        progress: Progress | None = None):
        """Rewrite this plain repository in place as an encrypted one under `passphrase` (every id changes: it
        is keyed); waits up to `wait` s for running writers. Afterwards this Repo is the encrypted repository.
        Its remotes stay plain: push to a new one. `keep_plain`: leave the old files in `.ckstore-plain`.
        Returns a `MigrateResult`."""
        from ..engine.migrate import migrate_encrypt
        secret = passphrase if isinstance(passphrase, str) else resolve(passphrase, "the encrypted repository")
        result, root = migrate_encrypt(self.engine, secret, keep_plain=keep_plain, wait=wait, progress=progress)
        self.engine = Repository(root, passphrase=secret)
        return result
