"""The encryption core: seal/open bound to a place, keyed names, key files under scrypt."""

from __future__ import annotations

import base64
import json

import pytest

pytest.importorskip("cryptography")

from ckstore.errors import CorruptObject, UsageError  # noqa: E402
from ckstore.model import crypto  # noqa: E402

FAST = {"n": 1 << 10, "r": 8, "p": 1}     # cheap scrypt for tests; the default is 2^16


def test_seal_round_trip_and_every_flipped_bit_is_caught():
    ring = crypto.Keyring.generate()
    plain = bytes(range(256)) * 4
    sealed = ring.seal(plain, b"frame\0abc")
    assert len(sealed) == len(plain) + crypto.OVERHEAD and plain not in sealed
    assert ring.open(sealed, b"frame\0abc") == plain
    assert ring.seal(plain, b"frame\0abc") != sealed                      # a fresh nonce every time
    for i in range(len(sealed)):
        for bit in (0, 7):
            bad = bytearray(sealed)
            bad[i] ^= 1 << bit
            with pytest.raises(CorruptObject):
                ring.open(bytes(bad), b"frame\0abc")
    with pytest.raises(CorruptObject, match="moved"):
        ring.open(sealed, b"frame\0abd")                                 # another place
    with pytest.raises(CorruptObject):
        crypto.Keyring.generate().open(sealed, b"frame\0abc")            # another key
    with pytest.raises(CorruptObject, match="not a sealed item"):
        ring.open(sealed[:20], b"frame\0abc")


def test_names_are_keyed():
    a, b = crypto.Keyring.generate(), crypto.Keyring.generate()
    oid = bytes(32)
    assert a.name(b"object", oid) == a.name(b"object", oid) != b.name(b"object", oid)
    assert a.name(b"object", oid) != a.name(b"chunk", oid)
    assert crypto.Keyring(a.master).name(b"object", oid) == a.name(b"object", oid)
    assert a.key_id == crypto.Keyring(a.master).key_id != b.key_id


def test_key_file_wraps_the_master_key():
    ring = crypto.Keyring.generate()
    kf = crypto.wrap(ring, "correct horse", label="laptop", created=1.0, host="h", user="u", kdf=FAST)
    data = kf.to_bytes()
    assert ring.master not in data and b"correct horse" not in data
    parsed = crypto.KeyFile.from_bytes(data)
    assert parsed == kf
    assert crypto.unwrap(parsed, "correct horse").master == ring.master
    assert crypto.unwrap(parsed, "wrong") is None
    other = crypto.wrap(ring, "second", label="ci", created=2.0, host="h", user="u", kdf=FAST)
    assert other.salt != kf.salt and crypto.unwrap(other, "second").master == ring.master
    with pytest.raises(UsageError, match="empty passphrase"):
        crypto.wrap(ring, "", label="x", created=0, host="h", user="u", kdf=FAST)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(kdf={"name": "scrypt", "n": 1 << 30, "r": 8, "p": 1}),     # 128 GiB of scrypt: refused
    lambda d: d.update(kdf={"name": "scrypt", "n": 1000, "r": 8, "p": 1}),        # not a power of two
    lambda d: d.update(kdf={"name": "pbkdf2", "n": 1024, "r": 8, "p": 1}),
    lambda d: d.update(version=9),
    lambda d: d.update(salt="***"),
    lambda d: d.update(created="yesterday"),
])
def test_damaged_key_files_are_refused(edit):
    kf = crypto.wrap(crypto.Keyring.generate(), "pw", label="x", created=0, host="h", user="u", kdf=FAST)
    d = json.loads(kf.to_bytes())
    edit(d)
    with pytest.raises(UsageError):
        crypto.KeyFile.from_bytes(json.dumps(d).encode())


def test_tampered_wrapped_key_does_not_open():
    kf = crypto.wrap(crypto.Keyring.generate(), "pw", label="x", created=0, host="h", user="u", kdf=FAST)
    d = json.loads(kf.to_bytes())
    raw = bytearray(base64.b64decode(d["data"]))
    raw[-1] ^= 1
    d["data"] = base64.b64encode(bytes(raw)).decode()
    assert crypto.unwrap(crypto.KeyFile.from_bytes(json.dumps(d).encode()), "pw") is None
    with pytest.raises(UsageError, match="not JSON"):
        crypto.KeyFile.from_bytes(b"\xff garbage")
