"""Encrypted repositories: keyed ids, sealed frames, objects and refs, key files; pushed to a directory remote, to
S3 (moto in server mode) and to a served remote, and cloned back. Every store is searched for the plaintext: a
tensor's bytes, the BLAKE3 id of its chunk, the commit message and the file name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest

pytest.importorskip("cryptography")

import ckstore  # noqa: E402
from ckstore.errors import (CorruptObject, DamagedRef, RemoteError, UnsupportedFormat, UsageError)  # noqa: E402
from ckstore.model.crypto import WrongPassphrase  # noqa: E402
from conftest import make_safetensors, run_cli  # noqa: E402
from s3servers import BUCKET, s3_env  # noqa: E402

PASS = "correct horse battery staple"
MESSAGE = "secret-run-7431 step one"
FILENAME = "patient-model.safetensors"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch):
    """scrypt at 2^10 for speed (the default 2^16 costs 0.25 s per try); no passphrase from the environment."""
    from ckstore.model import crypto
    monkeypatch.setattr(crypto, "SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    for var in ("CKSTORE_PASSWORD", "CKSTORE_PASSWORD_FILE", "CKSTORE_PASSWORD_COMMAND"):
        monkeypatch.delenv(var, raising=False)


def _weights(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((256, 512)).astype(np.float32), "b": rng.standard_normal(512).astype(np.float32)}


def _encrypted_repo(tmp_path: Path) -> tuple[ckstore.Repo, Path, dict]:
    src = tmp_path / "src"
    tensors = _weights()
    make_safetensors(src / FILENAME, tensors)
    repo = ckstore.Repo.init(tmp_path / "repo", encrypt=PASS)
    repo.commit(src, MESSAGE, capture_env=False)
    tensors["w"][:4] += 1.0                       # a second version: delta frames too
    make_safetensors(src / FILENAME, tensors)
    repo.commit(src, "second", capture_env=False)
    return repo, src, tensors


def _secrets(tensors: dict) -> dict[str, bytes]:
    w = tensors["w"].tobytes()
    return {"tensor bytes": w[4096:4160], "chunk id": blake3.blake3(w[:1 << 20]).digest(),
            "chunk id (hex)": blake3.blake3(w[:1 << 20]).hexdigest().encode(), "message": MESSAGE.encode(),
            "file name": FILENAME.encode()}


def _assert_no_plaintext(blobs: dict[str, bytes], tensors: dict) -> None:
    assert blobs, "nothing to search"
    for what, needle in _secrets(tensors).items():
        found = [k for k, v in blobs.items() if needle in v]
        assert not found, f"{what} in the clear in {found[:3]}"


def _files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not any(part in skip for part in p.relative_to(root).parts)}


def test_local_repository_holds_no_plaintext_and_reads_back(tmp_path):
    repo, src, tensors = _encrypted_repo(tmp_path)
    repo.checkout("HEAD", tmp_path / "out")
    assert (tmp_path / "out" / FILENAME).read_bytes() == (src / FILENAME).read_bytes()
    repo.close()
    # the audit log records ref moves with their messages: it is the one file left in the clear (docs/design.md)
    _assert_no_plaintext(_files(tmp_path / "repo" / ".ckstore", skip=("audit",)), tensors)
    assert (tmp_path / "repo" / ".ckstore" / "refs" / "heads" / "main").read_bytes().startswith(b"sealed:")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        ckstore.Repo.open(tmp_path / "repo", passphrase="guess")
    with pytest.raises(UsageError, match="is encrypted: its passphrase is needed"):
        ckstore.Repo.open(tmp_path / "repo")
    again = ckstore.Repo.open(tmp_path / "repo", passphrase=PASS)
    assert [c.commit.message for c in again.log()] == ["second", MESSAGE]
    again.close()


def test_passphrase_from_the_environment(tmp_path, monkeypatch):
    repo, _, _ = _encrypted_repo(tmp_path)
    repo.close()
    monkeypatch.setenv("CKSTORE_PASSWORD", PASS)
    ckstore.Repo.open(tmp_path / "repo").close()
    monkeypatch.delenv("CKSTORE_PASSWORD")
    (tmp_path / "pw").write_text(PASS + "\n")
    monkeypatch.setenv("CKSTORE_PASSWORD_FILE", str(tmp_path / "pw"))
    ckstore.Repo.open(tmp_path / "repo").close()
    monkeypatch.delenv("CKSTORE_PASSWORD_FILE")
    monkeypatch.setenv("CKSTORE_PASSWORD_COMMAND", f"{sys.executable} -c \"print('{PASS}')\"")
    ckstore.Repo.open(tmp_path / "repo").close()
    monkeypatch.setenv("CKSTORE_PASSWORD_COMMAND", f"{sys.executable} -c \"import sys; sys.exit(3)\"")
    with pytest.raises(UsageError, match="exited with 3"):
        ckstore.Repo.open(tmp_path / "repo")


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_anywhere_is_caught(tmp_path):
    repo, src, _ = _encrypted_repo(tmp_path)
    repo.close()
    ck = tmp_path / "repo" / ".ckstore"
    pristine = tmp_path / "pristine"
    shutil.copytree(ck, pristine)

    def fresh() -> None:
        shutil.rmtree(ck)
        shutil.copytree(pristine, ck)
        shutil.rmtree(ck / "cache", ignore_errors=True)          # no cached copy to hide the damage

    fresh()
    for pack in (ck / "packs").rglob("*.pack"):
        _flip(pack, 200)                                        # inside each pack's first frame's ciphertext
    with ckstore.Repo.open(tmp_path / "repo", passphrase=PASS) as r:
        with pytest.raises(CorruptObject):
            r.checkout("HEAD~1", tmp_path / "o1")
    assert not (tmp_path / "o1" / FILENAME).exists()
    fresh()
    obj = sorted((p for p in (ck / "objects").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)[-1]
    _flip(obj, len(obj.read_bytes()) // 2)
    with ckstore.Repo.open(tmp_path / "repo", passphrase=PASS) as r:
        with pytest.raises(CorruptObject, match="fails authentication"):
            for info in r.log():
                r.show(info.id)
    fresh()
    ref = ck / "refs" / "heads" / "main"
    text = bytearray(ref.read_bytes())
    text[20] = ord("A") if text[20] != ord("A") else ord("B")    # one base64 letter of the sealed ref
    ref.write_bytes(bytes(text))
    with ckstore.Repo.open(tmp_path / "repo", passphrase=PASS) as r:
        with pytest.raises(DamagedRef, match="does not open"):
            r.log()
    fresh()
    (ck / "refs" / "heads" / "copy").write_bytes((ck / "refs" / "heads" / "main").read_bytes())  # moved
    with ckstore.Repo.open(tmp_path / "repo", passphrase=PASS) as r:
        with pytest.raises(DamagedRef, match="does not open"):
            r.log("copy")
    fresh()
    key = next((ck / "keys").iterdir())
    _flip(key, 40)
    with pytest.raises(WrongPassphrase, match=f"damaged key files: {key.name[:12]}"):
        ckstore.Repo.open(tmp_path / "repo", passphrase=PASS)
    fresh()
    shutil.rmtree(ck / "keys")
    with pytest.raises(WrongPassphrase, match="has no key files"):
        ckstore.Repo.open(tmp_path / "repo", passphrase=PASS)


# ------------------------------------------------------------------------------------------------ remotes

def _round_trip(tmp_path: Path, repo: ckstore.Repo, url: str, src: Path, **settings) -> None:
    repo.remote_add("origin", url, **settings)
    repo.push("origin")
    with pytest.raises(UsageError, match="is encrypted: its passphrase is needed"):
        ckstore.clone(url, tmp_path / "refused", **settings)
    with pytest.raises(WrongPassphrase):
        ckstore.clone(url, tmp_path / "refused", passphrase="guess", **settings)
    assert not (tmp_path / "refused").exists()
    with ckstore.clone(url, tmp_path / "copy", passphrase=PASS, checkout=tmp_path / "files", **settings) as c:
        assert [i.commit.message for i in c.log()] == ["second", MESSAGE]
        assert c.engine.store.scheme.encrypted
        c.checkout("HEAD~1", tmp_path / "older")
    assert (tmp_path / "files" / FILENAME).read_bytes() == (src / FILENAME).read_bytes()
    first = make_safetensors(tmp_path / "first" / FILENAME, _weights())     # the first commit's file, again
    assert (tmp_path / "older" / FILENAME).read_bytes() == first.read_bytes()


def test_directory_remote(tmp_path):
    repo, src, tensors = _encrypted_repo(tmp_path)
    _round_trip(tmp_path, repo, str(tmp_path / "remote"), src)
    remote = _files(tmp_path / "remote")
    assert any(k.startswith("keys/") for k in remote) and any(k.startswith("packs/") for k in remote)
    _assert_no_plaintext(remote, tensors)
    repo.close()


def test_s3_remote(tmp_path, monkeypatch, moto_endpoint):
    boto3 = pytest.importorskip("boto3")
    s3_env(monkeypatch, tmp_path, moto_endpoint)
    repo, src, tensors = _encrypted_repo(tmp_path)
    _round_trip(tmp_path, repo, f"s3://{BUCKET}/encrypted", src)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="encrypted/")["Contents"]]
    _assert_no_plaintext({k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}, tensors)
    repo.close()


def test_served_remote(tmp_path):
    pytest.importorskip("uvicorn")
    from serve.conftest import start
    served = start(tmp_path / "served")
    try:
        repo, src, tensors = _encrypted_repo(tmp_path)
        token = tmp_path / "token"
        token.write_text(served.admin)
        _round_trip(tmp_path, repo, served.url("team"), src, token_file=str(token))
        _assert_no_plaintext(_files(tmp_path / "served" / "team"), tensors)
        repo.close()
    finally:
        served.server.stop()


def test_replayed_or_moved_remote_ref_is_refused(tmp_path):
    repo, src, tensors = _encrypted_repo(tmp_path)
    url = tmp_path / "remote"
    repo.remote_add("origin", str(url))
    repo.push("origin")
    old = (url / "refs" / "heads" / "main").read_bytes()
    clone = ckstore.clone(str(url), tmp_path / "copy", passphrase=PASS)
    tensors["b"] += 1
    make_safetensors(src / FILENAME, tensors)
    repo.commit(src, "third", capture_env=False)
    repo.push("origin")
    clone.fetch("origin")                                    # sees the newer value
    current = (url / "refs" / "heads" / "main").read_bytes()
    (url / "refs" / "heads" / "main").write_bytes(old)      # someone with write access puts the old one back
    with pytest.raises(RemoteError, match="replayed old value"):
        clone.fetch("origin")
    assert clone.engine.refs.read("refs/remotes/origin/main") == repo.engine.refs.read("refs/heads/main")
    (url / "refs" / "heads" / "main").write_bytes(current)
    (url / "refs" / "heads" / "other").write_bytes(current)  # a sealed ref under another name
    with pytest.raises(RemoteError, match="refs/heads/other does not open"):
        clone.fetch("origin")
    clone.close()
    repo.close()


def test_plain_and_encrypted_do_not_mix(tmp_path):
    repo, _, _ = _encrypted_repo(tmp_path)
    plain = ckstore.Repo.init(tmp_path / "plain")
    plain.commit(_weights(9), "plain", capture_env=False)
    plain.remote_add("origin", str(tmp_path / "plain-remote"))
    plain.push("origin")
    repo.remote_add("p", str(tmp_path / "plain-remote"))
    with pytest.raises(UnsupportedFormat, match="this repository is encrypted and the remote"):
        repo.push("p")
    repo.remote_add("e", str(tmp_path / "enc-remote"))
    repo.push("e")
    plain.remote_add("e", str(tmp_path / "enc-remote"))
    with pytest.raises(UnsupportedFormat, match="is an encrypted repository and this one is not"):
        plain.fetch("e")
    other = ckstore.Repo.init(tmp_path / "other", encrypt="another")
    other.commit(_weights(5), "other", capture_env=False)
    other.remote_add("e", str(tmp_path / "enc-remote"))
    with pytest.raises(UnsupportedFormat, match="another master key"):
        other.push("e")
    for r in (repo, plain, other):
        r.close()


def test_an_older_ckstore_refuses_an_encrypted_repository(tmp_path):
    """The release before encryption, run from its own git checkout, on an encrypted repository."""
    root = Path(__file__).resolve().parents[2]
    old = tmp_path / "old-ckstore"
    got = subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(old), "00f8d02"],
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"no git history here: {got.stderr.strip()[:200]}")
    try:
        repo, _, _ = _encrypted_repo(tmp_path)
        repo.close()
        run = subprocess.run([sys.executable, "-c", "import sys; from ckstore import Repo; Repo.open(sys.argv[1])",
                              str(tmp_path / "repo")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(old)}, cwd=tmp_path)
        assert run.returncode != 0
        assert "repository format version 3 is not supported" in run.stderr, run.stderr[-500:]
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(old)], capture_output=True)


# ------------------------------------------------------------------------------------------------ keys

def test_key_files_add_remove_passwd(tmp_path):
    repo, src, _ = _encrypted_repo(tmp_path)
    first = repo.engine.key_name
    second = repo.key_add("second passphrase", label="ci")
    listed = repo.key_list()
    assert [k.name for k in listed] == [first, second] and [k.current for k in listed] == [True, False]
    assert listed[1].label == "ci"
    with pytest.raises(UsageError, match="cannot remove itself"):
        repo.key_remove(first[:8])
    repo.remote_add("origin", str(tmp_path / "remote"))
    repo.push("origin")                                   # the new key file goes with it
    repo.close()
    with ckstore.clone(str(tmp_path / "remote"), tmp_path / "copy", passphrase="second passphrase") as c:
        assert c.log()[0].commit.message == "second"
    with ckstore.Repo.open(tmp_path / "repo", passphrase="second passphrase") as r:
        assert r.engine.key_name == second
        r.key_remove(first[:10])
        new = r.key_passwd("third passphrase")
        assert [k.name for k in r.key_list()] == [new]
    for old in (PASS, "second passphrase"):
        with pytest.raises(WrongPassphrase):
            ckstore.Repo.open(tmp_path / "repo", passphrase=old)
    ckstore.Repo.open(tmp_path / "repo", passphrase="third passphrase").close()
    plain = ckstore.Repo.init(tmp_path / "plain")
    with pytest.raises(UsageError, match="not encrypted"):
        plain.key_list()
    plain.close()


def test_cli_init_encrypt_and_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@ci")
    make_safetensors(tmp_path / "src" / FILENAME, _weights())

    def run(*args: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, *args)

    code, _, err = run("init", "--encrypt")
    assert code != 0 and "--encrypt needs a passphrase" in err
    assert not (tmp_path / ".ckstore").exists()
    monkeypatch.setenv("CKSTORE_PASSWORD", PASS)
    assert run("init", "--encrypt")[0] == 0
    assert run("commit", "src", "-m", MESSAGE)[0] == 0
    monkeypatch.delenv("CKSTORE_PASSWORD")
    code, _, err = run("log", "--oneline")
    assert code != 0 and "its passphrase is needed" in err and "Traceback" not in err
    (tmp_path / "pw").write_text("nope\n")
    code, _, err = run("--password-file", str(tmp_path / "pw"), "log")
    assert code == 3 and "wrong passphrase" in err
    (tmp_path / "pw").write_text(PASS + "\n")
    code, out, _ = run("--password-file", str(tmp_path / "pw"), "log", "--oneline")
    assert code == 0 and MESSAGE in out
    monkeypatch.setenv("CKSTORE_NEW_PASSWORD", "for the ci runner")
    assert run("--password-file", str(tmp_path / "pw"), "key", "add", "--label", "ci")[0] == 0
    code, out, _ = run("--password-file", str(tmp_path / "pw"), "key", "list", "--json")
    import json
    keys = json.loads(out)
    assert code == 0 and len(keys) == 2 and sum(k["current"] for k in keys) == 1
    assert {k["label"] for k in keys} >= {"ci"}
    monkeypatch.setenv("CKSTORE_PASSWORD", "for the ci runner")
    assert run("log", "--oneline")[0] == 0


# ------------------------------------------------------------------------------------------------ migrate

def _plain_repo_with_history(tmp_path: Path) -> tuple[ckstore.Repo, Path, list[bytes]]:
    src = tmp_path / "src"
    tensors = _weights()
    repo = ckstore.Repo.init(tmp_path / "repo")
    files = []
    for i in range(3):
        tensors["w"][i] += 1.0
        make_safetensors(src / FILENAME, tensors)
        (src / "notes.txt").write_text(f"run {i}\n")
        repo.commit(src, MESSAGE if i == 0 else f"v{i}", capture_env=False)
        files.append((src / FILENAME).read_bytes())
    repo.tag("best", "HEAD~1")
    repo.branch("exp", "HEAD~2")
    return repo, src, files


def test_migrate_encrypt_in_place(tmp_path):
    repo, src, files = _plain_repo_with_history(tmp_path)
    before = [i.commit.message for i in repo.log()]
    result = repo.migrate_encrypt(PASS)
    assert result.chunks > 0 and result.objects >= 6 and result.refs == 3
    assert repo.engine.store.scheme.encrypted
    assert [i.commit.message for i in repo.log()] == before
    repo.close()
    ck = tmp_path / "repo" / ".ckstore"
    assert not (tmp_path / "repo" / ".ckstore-plain").exists() and not (tmp_path / "repo" / ".ckstore-migrate").exists()
    tensors = _weights()
    tensors["w"][0] += 1.0
    _assert_no_plaintext(_files(ck, skip=("audit",)), tensors)
    with pytest.raises(UsageError, match="is encrypted: its passphrase is needed"):
        ckstore.Repo.open(tmp_path / "repo")
    with ckstore.Repo.open(tmp_path / "repo", passphrase=PASS) as r:
        for i, rev in enumerate(("HEAD~2", "HEAD~1", "HEAD")):
            r.checkout(rev, tmp_path / f"out{i}")
            assert (tmp_path / f"out{i}" / FILENAME).read_bytes() == files[i]
        r.checkout("best", tmp_path / "best")
        assert (tmp_path / "best" / FILENAME).read_bytes() == files[1]
        assert r.fsck().ok
        with pytest.raises(UsageError, match="encrypted already"):
            r.migrate_encrypt(PASS)


def test_migrate_killed_before_the_swap_leaves_the_plain_repository(tmp_path, monkeypatch):
    repo, _, files = _plain_repo_with_history(tmp_path)
    from ckstore.engine import migrate

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(migrate._Rewrite, "objects", killed)
    with pytest.raises(KeyboardInterrupt):
        repo.migrate_encrypt(PASS)
    repo.close()
    with ckstore.Repo.open(tmp_path / "repo") as r:               # still the plain repository, whole
        assert not r.engine.store.scheme.encrypted
        r.checkout("HEAD", tmp_path / "out")
        assert (tmp_path / "out" / FILENAME).read_bytes() == files[2]
        monkeypatch.undo()
        r.migrate_encrypt(PASS)                                   # starts over
        assert r.engine.store.scheme.encrypted


def test_migrate_finishes_a_swap_cut_between_its_renames(tmp_path, monkeypatch):
    repo, _, files = _plain_repo_with_history(tmp_path)
    from ckstore.engine import migrate
    monkeypatch.setattr(migrate, "finish_migration", lambda root: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        repo.migrate_encrypt(PASS)
    monkeypatch.undo()
    assert not (tmp_path / "repo" / ".ckstore").exists()           # between the two renames
    with ckstore.Repo.open(tmp_path / "repo", passphrase=PASS) as r:  # any command finishes the swap
        assert r.engine.store.scheme.encrypted
        r.checkout("HEAD", tmp_path / "out")
        assert (tmp_path / "out" / FILENAME).read_bytes() == files[2]
