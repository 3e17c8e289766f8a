"""Key files of an encrypted repository (`keys/<id>`, the same on its remotes) and where a passphrase comes from.

Each key file wraps the one master key under its own passphrase (`model.crypto`); its name is the BLAKE3 of its
bytes, so two files never collide and a damaged one is seen. Unlocking tries every key file with the passphrase.
A passphrase comes from the caller, else `CKSTORE_PASSWORD`, `CKSTORE_PASSWORD_FILE` (its first line) or
`CKSTORE_PASSWORD_COMMAND` (its standard output's first line), as restic's RESTIC_PASSWORD* do.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Union

import blake3

from ..errors import UsageError
from ..fs.fileio import write_atomic
from ..model.crypto import KeyFile, Keyring, WrongPassphrase, unwrap, wrap

KEYS = "keys"
#: a passphrase, or a function asked for one when it is needed (a prompt)
Passphrase = Union[str, Callable[[], str], None]


def key_name(data: bytes) -> str:
    """The name of a key file: the BLAKE3 hex of its bytes."""
    return blake3.blake3(data).hexdigest()


def passphrase_from_env(env: dict | os._Environ = os.environ) -> str | None:
    """The passphrase the environment gives (CKSTORE_PASSWORD, _FILE or _COMMAND), or None."""
    if env.get("CKSTORE_PASSWORD"):
        return env["CKSTORE_PASSWORD"]
    if env.get("CKSTORE_PASSWORD_FILE"):
        path = os.path.expanduser(env["CKSTORE_PASSWORD_FILE"])
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the passphrase file {path}: {exc}") from None
    if env.get("CKSTORE_PASSWORD_COMMAND"):
        cmd = env["CKSTORE_PASSWORD_COMMAND"]
        try:
            out = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=60, check=False)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise UsageError(f"the passphrase command {cmd!r} failed: {exc}") from None
        if out.returncode != 0:
            raise UsageError(f"the passphrase command {cmd!r} exited with {out.returncode}: "
                             f"{out.stderr.strip()[:200]}")
        return out.stdout.splitlines()[0] if out.stdout else ""
    return None


def resolve(passphrase: Passphrase, what: str) -> str:
    """The passphrase: given, from the environment, or asked for; UsageError naming the ways when there is none."""
    if isinstance(passphrase, str):
        return passphrase
    got = passphrase_from_env()
    if got is not None:
        return got
    if callable(passphrase):
        return passphrase()
    raise UsageError(f"{what} is encrypted: its passphrase is needed",
                     hint="set CKSTORE_PASSWORD, CKSTORE_PASSWORD_FILE or CKSTORE_PASSWORD_COMMAND, or give "
                          "--password-file / --password-command (a terminal is asked)")


def new_key_file(keyring: Keyring, passphrase: str, label: str = "") -> KeyFile:
    """A key file for `keyring` under `passphrase`, labelled with this user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):       # no name for this uid (a container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return wrap(keyring, passphrase, label=label or f"{user}@{socket.gethostname()}", created=time.time(),
                host=socket.gethostname(), user=user)


class KeyStore:
    """The key files in a repository's `keys/` directory."""

    def __init__(self, repo_dir: Path) -> None:
        self.dir = repo_dir / KEYS
        self.tmp = repo_dir / "tmp"

    def names(self) -> list[str]:
        """The key files' names, sorted."""
        try:
            return sorted(p.name for p in self.dir.iterdir() if len(p.name) == 64 and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def read(self, name: str) -> KeyFile:
        """One key file, checked: it must hash to its name and parse (UsageError: damaged)."""
        try:
            data = (self.dir / name).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"no key file {name[:12]}", hint="see `ckstore key list`") from None
        return parse_key_file(name, data)

    def files(self) -> dict[str, KeyFile | UsageError]:
        """Every key file by name: parsed, or the error saying why it cannot be."""
        return parse_files(self.raw())

    def raw(self) -> dict[str, bytes]:
        """Every key file's bytes by name."""
        return {name: (self.dir / name).read_bytes() for name in self.names()}

    def add(self, key_file: KeyFile) -> str:
        """Write a key file; its name."""
        data = key_file.to_bytes()
        name = key_name(data)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / name, data, self.tmp, exclusive=True)
        return name

    def put_raw(self, name: str, data: bytes) -> None:
        """Write a key file's bytes received from elsewhere (a remote): refused unless they hash to `name` and
        parse."""
        parse_key_file(name, data)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / name, data, self.tmp)

    def remove(self, name: str) -> None:
        """Delete a key file (the caller keeps at least one that opens)."""
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            raise UsageError(f"no key file {name[:12]}", hint="see `ckstore key list`") from None

    def unlock(self, passphrase: str, key_id: str, what: str) -> tuple[Keyring, str]:
        """(the master key, the name of the key file that opened it); WrongPassphrase when none opens."""
        return unlock(self.files(), passphrase, key_id, what, where=str(self.dir))


def parse_key_file(name: str, data: bytes) -> KeyFile:
    """A key file's bytes, checked: they must hash to `name` and parse (UsageError: damaged)."""
    if key_name(data) != name:
        raise UsageError(f"key file {name[:12]} is damaged: it does not hash to its name")
    return KeyFile.from_bytes(data, f"key file {name[:12]}")


def parse_files(raw: dict[str, bytes]) -> dict[str, KeyFile | UsageError]:
    """Key files as bytes by name (this repository's, or a remote's), each parsed, or the error saying why not."""
    out: dict[str, KeyFile | UsageError] = {}
    for name, data in raw.items():
        try:
            out[name] = parse_key_file(name, data)
        except UsageError as exc:
            out[name] = exc
    return out


def unlock(files: dict[str, KeyFile | UsageError], passphrase: str, key_id: str, what: str,
           where: str) -> tuple[Keyring, str]:
    """Try each key file of the repository `key_id` with `passphrase`: (the master key, the file's name), or
    WrongPassphrase naming the damaged files (`where`: where the key files are, for the message)."""
    damaged = [n[:12] for n, kf in files.items() if isinstance(kf, UsageError)]
    for name, kf in files.items():
        if isinstance(kf, KeyFile) and kf.key_id == key_id:
            ring = unwrap(kf, passphrase)
            if ring is not None and ring.key_id == key_id:
                return ring, name
    if not files:
        raise WrongPassphrase(f"{what} is encrypted but has no key files ({where} is empty or missing)",
                              hint="restore keys/ from a backup or a remote of this repository")
    raise WrongPassphrase(f"wrong passphrase for {what}: no key file opens with it"
                          + (f" (damaged key files: {', '.join(damaged)})" if damaged else ""),
                          hint="check CKSTORE_PASSWORD / the passphrase file")
