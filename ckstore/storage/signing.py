"""SSH signatures (`ssh-keygen -Y sign|verify`, as git's `gpg.format=ssh`): who vouches for an id or an entry.

What is signed is always a short text naming what it vouches for — "ckstore commit <id>", "ckstore audit <seq>
<hash>" — so a signature cannot be moved to another object or entry; ids are BLAKE3 of the content, so signing
the id signs the content. Verification is against an `allowed_signers` file (one "PRINCIPAL KEYTYPE KEY" line per
signer, as git's); a signature by a key not listed there, or over other bytes, is rejected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

NAMESPACE = "ckstore"
TIMEOUT = 30.0


@dataclass(frozen=True)
class Signer:
    """A private key and the principal it signs as."""

    key: Path
    principal: str

    def sign(self, text: str) -> str:
        """The armored SSH signature of `text`."""
        done = _run(["-Y", "sign", "-f", str(self.key), "-n", NAMESPACE], text.encode())
        if done.returncode != 0:
            raise UsageError(f"signing with {self.key} failed: {done.stderr.decode(errors='replace').strip()}",
                             hint="check governance.signing_key (an SSH private key without a passphrase, or one "
                                  "an ssh-agent holds)")
        return done.stdout.decode()


def verify(text: str, signature: str, principal: str, allowed_signers: Path) -> str | None:
    """None when `signature` is `principal`'s over `text` and the key is in `allowed_signers`; else why not."""
    if not allowed_signers.is_file():
        return f"allowed signers file {allowed_signers} is missing"
    with tempfile.NamedTemporaryFile("w", suffix=".sig", delete=False) as f:
        f.write(signature)
        sig_path = f.name
    try:
        done = _run(["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE, "-s", sig_path],
                    text.encode())
    finally:
        os.unlink(sig_path)
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    return said[-1] if said else "signature rejected"


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess:
    tool = shutil.which("ssh-keygen")
    if tool is None:
        raise UsageError("signatures need ssh-keygen (OpenSSH 8.2 or later)", hint="install openssh-client")
    try:
        return subprocess.run([tool, *args], input=data, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise UsageError(f"ssh-keygen did not answer within {TIMEOUT:g} s (a key with a passphrase?)") from None


def signer_from(governance: dict, root: Path) -> Signer | None:
    """The signer the config (or CKSTORE_SIGNING_KEY) names, or None when nothing is signed."""
    key = os.environ.get("CKSTORE_SIGNING_KEY") or governance.get("signing_key")
    if not key:
        return None
    principal = os.environ.get("CKSTORE_SIGNER") or governance.get("signer")
    if not principal:
        raise UsageError("governance.signing_key is set but not governance.signer (the principal to sign as)")
    return Signer(_path(key, root), principal)


def allowed_signers_from(governance: dict, root: Path) -> Path | None:
    """The allowed signers file the config names (relative paths are relative to the repository root)."""
    value = os.environ.get("CKSTORE_ALLOWED_SIGNERS") or governance.get("allowed_signers")
    return _path(value, root) if value else None


def _path(value: str, root: Path) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else root / p
