"""Encryption of a repository: the master key, what it seals, the names it keys, and the key files that hold it.

A repository's **master key** is 64 random bytes, never stored in the clear. From it HKDF-SHA256 derives
  * the sealing key: AES-256-GCM (from `cryptography`, AES-NI: 8 GB/s per core here, without the GIL),
  * the naming key: BLAKE3 in keyed mode, so a stored name says nothing about the content it names.
A sealed item is `VERSION (1) | nonce (12, random) | ciphertext | tag (16)`: 29 bytes more than the plaintext,
compressed before it is sealed. The associated data binds it to its place (`ad`): a kind and the item's name, so
a frame, object or ref moved to another name fails to open instead of being believed. Random 96-bit nonces stay
safe for 2^32 seals under one key (NIST SP 800-38D); a repository of 1 MiB chunks reaches that at 4 PiB.

A **key file** wraps the master key under a passphrase through scrypt (memory-hard; in the standard library,
parameters recorded in the file), as restic's do: several key files may wrap the same master key, each with its
own passphrase. Nothing here touches files: `storage/keys.py` stores them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import blake3

from ..errors import CkstoreError, CorruptObject, UsageError

VERSION = 1
NONCE, TAG = 12, 16
OVERHEAD = 1 + NONCE + TAG
MASTER_BYTES = 64
CIPHER = "aes-256-gcm"
NAMES = "blake3-keyed"
#: scrypt's cost: 2^16 × 8 × 128 bytes = 64 MiB and ~0.25 s here per try, the same for an attacker's guesses
SCRYPT = {"n": 1 << 16, "r": 8, "p": 1}
MAX_SCRYPT_N = 1 << 22           # a key file asking for more memory than 4 GiB is refused, not obeyed


class WrongPassphrase(CkstoreError):
    """Raised when no key file of the repository opens with the passphrase given."""

    exit_code = 3


class NoCryptography(UsageError):
    """Raised when an encrypted repository is opened without the `cryptography` package."""


def _aesgcm():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise NoCryptography("this repository is encrypted and needs the `cryptography` package",
                             hint="pip install 'ckstore[encrypt]'") from None
    return AESGCM


def _hkdf(master: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"ckstore repository keys", info=info).derive(master)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text).encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise UsageError(f"{what} is not base64") from None


class Keyring:
    """The keys one master key gives: `seal`/`open` for payloads, `name` for stored names."""

    def __init__(self, master: bytes) -> None:
        if len(master) != MASTER_BYTES:
            raise UsageError(f"a master key is {MASTER_BYTES} bytes, not {len(master)}")
        self.master = master
        self._aead = _aesgcm()(_hkdf(master, b"seal"))
        self._name_key = _hkdf(master, b"name")
        #: a short public check value: which master key this is, without revealing it (key files name it)
        self.key_id = blake3.blake3(b"ckstore key id", key=_hkdf(master, b"id")).hexdigest()[:16]

    @classmethod
    def generate(cls) -> Keyring:
        """A new random master key."""
        return cls(secrets.token_bytes(MASTER_BYTES))

    def seal(self, plaintext: bytes | memoryview, ad: bytes) -> bytes:
        """`plaintext` encrypted and authenticated, bound to `ad` (a kind and the item's name)."""
        nonce = secrets.token_bytes(NONCE)
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, bytes(plaintext), ad)

    def open(self, sealed: bytes | memoryview, ad: bytes, what: str = "item", name: str = "?") -> bytes:
        """The plaintext of `sealed`; CorruptObject naming `what`/`name` if it was altered, moved to another
        name (`ad`), or sealed under another key — nothing decrypted wrongly is ever returned."""
        from cryptography.exceptions import InvalidTag
        view = memoryview(sealed)
        if len(view) < OVERHEAD or view[0] != VERSION:
            raise CorruptObject(what, name, "?", detail="not a sealed item of this format")
        try:
            return self._aead.decrypt(bytes(view[1:1 + NONCE]), bytes(view[1 + NONCE:]), ad)
        except InvalidTag:
            raise CorruptObject(what, name, "?", detail="fails authentication (altered, moved, or sealed under "
                                                        "another key)") from None

    def name(self, kind: bytes, ident: bytes) -> bytes:
        """The stored name of an item: BLAKE3 keyed with the naming key, over its kind and id (32 bytes)."""
        return blake3.blake3(kind + b"\0" + ident, key=self._name_key).digest()


# ---------------------------------------------------------------------------------------------------- key files

@dataclass(frozen=True)
class KeyFile:
    """One key file: the master key wrapped under a passphrase, with who made it and when (not secret)."""

    label: str
    created: float
    host: str
    user: str
    kdf: dict
    salt: bytes
    wrapped: bytes
    key_id: str

    def to_bytes(self) -> bytes:
        """The file's JSON bytes."""
        body = {"version": VERSION, "label": self.label, "created": self.created, "host": self.host,
                "user": self.user, "kdf": self.kdf, "salt": _b64(self.salt), "cipher": CIPHER,
                "data": _b64(self.wrapped), "key_id": self.key_id}
        return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "key file") -> KeyFile:
        """Parse and check a key file; UsageError naming what is wrong (a damaged key file)."""
        try:
            d = json.loads(data)
        except ValueError:
            raise UsageError(f"{what} is damaged: not JSON") from None
        if not isinstance(d, dict) or d.get("version") != VERSION or d.get("cipher") != CIPHER:
            raise UsageError(f"{what} is damaged or of an unknown version")
        kdf = d.get("kdf")
        if not (isinstance(kdf, dict) and kdf.get("name") == "scrypt"
                and all(type(kdf.get(k)) is int and kdf[k] >= 1 for k in ("n", "r", "p"))
                and kdf["n"] <= MAX_SCRYPT_N and kdf["n"] & (kdf["n"] - 1) == 0 and kdf["r"] * kdf["p"] < 1 << 12):
            raise UsageError(f"{what} has bad scrypt parameters: {kdf!r}")
        fields = {k: d.get(k) for k in ("label", "host", "user", "key_id")}
        if not all(isinstance(v, str) for v in fields.values()) or not isinstance(d.get("created"), (int, float)):
            raise UsageError(f"{what} is damaged: a field has the wrong type")
        return cls(fields["label"], float(d["created"]), fields["host"], fields["user"], kdf,
                   _unb64(d.get("salt"), f"{what}: salt"), _unb64(d.get("data"), f"{what}: data"), fields["key_id"])


def _kek(passphrase: str, kdf: dict, salt: bytes) -> bytes:
    n, r, p = kdf["n"], kdf["r"], kdf["p"]
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=130 * n * r * p + (1 << 20),
                          dklen=32)


def wrap(keyring: Keyring, passphrase: str, *, label: str, created: float, host: str, user: str,
         kdf: dict | None = None) -> KeyFile:
    """A new key file holding `keyring`'s master key under `passphrase` (scrypt with a fresh salt)."""
    if not passphrase:
        raise UsageError("an empty passphrase protects nothing", hint="choose a passphrase")
    params = {"name": "scrypt", **(kdf or SCRYPT)}
    salt = secrets.token_bytes(32)
    aead = _aesgcm()(_kek(passphrase, params, salt))
    nonce = secrets.token_bytes(NONCE)
    wrapped = bytes([VERSION]) + nonce + aead.encrypt(nonce, keyring.master, b"ckstore key file")
    return KeyFile(label, created, host, user, params, salt, wrapped, keyring.key_id)


def unwrap(key_file: KeyFile, passphrase: str) -> Keyring | None:
    """The keyring `key_file` holds, or None when `passphrase` is not its passphrase."""
    w = key_file.wrapped
    if len(w) != OVERHEAD + MASTER_BYTES or w[0] != VERSION:
        return None
    aead = _aesgcm()(_kek(passphrase, key_file.kdf, key_file.salt))
    from cryptography.exceptions import InvalidTag
    try:
        master = aead.decrypt(w[1:1 + NONCE], w[1 + NONCE:], b"ckstore key file")
    except InvalidTag:
        return None
    return Keyring(master)


# ---------------------------------------------------------------------------------------------------- schemes

def hash_bytes(data: Any) -> bytes:
    """BLAKE3-256 of a bytes-like object: the ids of a plain repository, pack names, file hashes."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO if len(data) > (1 << 22) else 1).digest()


class Scheme:
    """How one repository names and stores content. The plain scheme: ids are BLAKE3-256 of the bytes, frames and
    objects are stored as encoded. `Sealed(keyring)`: ids are BLAKE3 keyed by the repository's naming key (so an
    id tells nothing about the bytes to anyone without the key, and dedup still works inside the repository and
    its remotes), and every frame and object is sealed to its id."""

    encrypted = False

    def chunk_id(self, data: Any) -> bytes:
        """The id of a chunk's raw bytes (any buffer)."""
        return hash_bytes(data)

    def object_id(self, encoded: bytes) -> bytes:
        """The id of an encoded object (its type tag and canonical msgpack)."""
        return hash_bytes(encoded)

    def hasher(self) -> Any:
        """A streaming hasher whose digest is `chunk_id` of what it was fed."""
        return blake3.blake3()

    def seal_frame(self, chunk: bytes, frame: bytes | memoryview) -> bytes | memoryview:
        """A frame as stored."""
        return frame

    def open_frame(self, chunk: bytes, stored: bytes | memoryview) -> bytes | memoryview:
        """A stored frame as the codec reads it; CorruptObject if it is not `chunk`'s."""
        return stored

    def seal_object(self, oid: bytes, data: bytes) -> bytes:
        """An object file's bytes from its compressed encoding."""
        return data

    def open_object(self, oid: bytes, stored: bytes) -> bytes:
        """The compressed encoding from an object file's bytes; CorruptObject if it is not `oid`'s."""
        return stored

    def seal_cache(self, key: bytes, value: bytes) -> bytes:
        """A local cache value as written (the commit and stat caches hold metadata and small files' bytes)."""
        return value

    def ref_bytes(self, name: str, oid: bytes, seq: int) -> bytes:
        """A ref file's bytes: the id in hex (`seq` is kept only by a sealed ref)."""
        return (oid.hex() + "\n").encode()

    def ref_value(self, name: str, data: bytes) -> tuple[bytes, int] | None:
        """(id, sequence number) a ref file holds; None when it holds neither a hex id nor a sealed ref."""
        text = data.strip()
        if len(text) != 64:
            return None
        try:
            oid = bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
        return (oid, 0) if len(oid) == 32 else None

    def open_cache(self, key: bytes, stored: bytes) -> bytes | None:
        """A cache value as read, or None when it does not open (a cache miss, never an error)."""
        return stored


PLAIN = Scheme()


class Sealed(Scheme):
    """The scheme of an encrypted repository (see the module docstring)."""

    encrypted = True

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._id_key = _hkdf(keyring.master, b"ids")

    def chunk_id(self, data: Any) -> bytes:
        """Keyed BLAKE3 of the raw bytes."""
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        return blake3.blake3(data, key=self._id_key,
                             max_threads=blake3.blake3.AUTO if n > (1 << 22) else 1).digest()

    def hasher(self) -> Any:
        """A streaming keyed BLAKE3."""
        return blake3.blake3(key=self._id_key)

    def object_id(self, encoded: bytes) -> bytes:
        """Keyed BLAKE3 of the encoded object."""
        return blake3.blake3(encoded, key=self._id_key).digest()

    def seal_frame(self, chunk: bytes, frame: bytes | memoryview) -> bytes:
        """The frame sealed to its chunk id."""
        return self.keyring.seal(frame, b"frame\0" + chunk)

    def open_frame(self, chunk: bytes, stored: bytes | memoryview) -> bytes:
        """The frame, if it opens under this key as `chunk`'s."""
        return self.keyring.open(stored, b"frame\0" + chunk, "chunk", chunk.hex())

    def seal_object(self, oid: bytes, data: bytes) -> bytes:
        """The object's compressed encoding sealed to its id."""
        return self.keyring.seal(data, b"object\0" + oid)

    def open_object(self, oid: bytes, stored: bytes) -> bytes:
        """The compressed encoding, if it opens as `oid`'s."""
        return self.keyring.open(stored, b"object\0" + oid, "object", oid.hex())

    def seal_cache(self, key: bytes, value: bytes) -> bytes:
        """The value sealed to its cache key."""
        return self.keyring.seal(value, b"cache\0" + key)

    def open_cache(self, key: bytes, stored: bytes) -> bytes | None:
        """The value, or None if it does not open."""
        try:
            return self.keyring.open(stored, b"cache\0" + key)
        except CorruptObject:
            return None

    def ref_bytes(self, name: str, oid: bytes, seq: int) -> bytes:
        """`sealed:` and base64 of the id and its sequence number, sealed to the ref's name: a ref file moved to
        another name does not open, and an older one shows by its lower number (a replay)."""
        body = oid + seq.to_bytes(8, "big")
        return b"sealed:" + base64.b64encode(self.keyring.seal(body, b"ref\0" + name.encode())) + b"\n"

    def ref_value(self, name: str, data: bytes) -> tuple[bytes, int] | None:
        """(id, sequence number) of a sealed ref; None for anything else (a plain hex ref is refused too: in an
        encrypted repository it could be anyone's). CorruptObject when it does not open as `name`'s."""
        text = data.strip()
        if not text.startswith(b"sealed:"):
            return None
        try:
            sealed = base64.b64decode(text[7:], validate=True)
        except ValueError:
            return None
        body = self.keyring.open(sealed, b"ref\0" + name.encode(), "ref", name)
        if len(body) != 40:
            return None
        return body[:32], int.from_bytes(body[32:], "big")
