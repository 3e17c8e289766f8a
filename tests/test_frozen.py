"""Repositories written by an earlier ckstore (tests/data/frozen, made once by its make.py and never rewritten)
still read, verify and check out byte-identical, upgrade in place to the newest format version, and migrate to an
encrypted repository."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import ckstore
from ckstore.model.crypto import WrongPassphrase

FROZEN = Path(__file__).parent / "data" / "frozen"
NAMES = sorted(p.name for p in FROZEN.iterdir() if (p / "expected.json").is_file())


def _copy(name: str, tmp_path: Path) -> tuple[Path, dict]:
    shutil.copytree(FROZEN / name, tmp_path / name)
    root = tmp_path / name
    remotes = root / "repo" / ".ckstore" / "remotes.json"
    if remotes.is_file():                          # the remote it was cloned from, copied beside it
        table = json.loads(remotes.read_text())
        for spec in table.values():
            spec["url"] = str(root / "remote")
        remotes.write_text(json.dumps(table))
    return root, json.loads((root / "expected.json").read_text())


def _digests(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _check(repo: ckstore.Repo, expected: dict, out: Path) -> None:
    assert {n: o.hex() for n, o in repo.engine.refs.list().items()} == expected["refs"]
    assert [i.id for i in repo.log(all=True)] == [c["id"] for c in expected["commits"]]
    for c in expected["commits"]:
        repo.checkout(c["id"], out / c["id"])
        assert _digests(out / c["id"]) == c["files"], c["message"]


def test_every_frozen_version_is_there():
    assert {"v1-basic", "v1-partial", "v2-encrypted", "v3-cdc", "v3-encrypted"} <= set(NAMES)


def test_version_3_holds_its_features(tmp_path):
    """The frozen version-3 repositories hold what version 3 added: content-cut runs and GGML block types."""
    root, _ = _copy("v3-cdc", tmp_path)
    with ckstore.Repo.open(root / "repo") as repo:
        assert repo.format_version == 3 and repo.config.features == ("cdc",)
        m = repo.manifest("HEAD")
        runs = [s for f in m.files for s in f.segments if getattr(s, "lengths", None)]
        assert runs and {t.dtype for t in m.tensors} >= {"Q8_0", "F32"}


@pytest.mark.parametrize("name", NAMES)
def test_frozen_repository_reads_verifies_and_checks_out(name, tmp_path):
    root, expected = _copy(name, tmp_path)
    passphrase = expected.get("passphrase")
    if passphrase:
        with pytest.raises(WrongPassphrase):
            ckstore.Repo.open(root / "repo", passphrase="not it")
    with ckstore.Repo.open(root / "repo", passphrase=passphrase) as repo:
        assert repo.fsck(read_data=True).ok
        _check(repo, expected, tmp_path / "out")
        assert repo.engine.store.scheme.encrypted == bool(passphrase)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("v1-basic")])
def test_frozen_plain_repository_migrates_to_an_encrypted_one(name, tmp_path):
    root, expected = _copy(name, tmp_path)
    with ckstore.Repo.open(root / "repo") as repo:
        result = repo.migrate_encrypt("migrated passphrase")
        assert result.refs == len(expected["refs"])
        assert repo.fsck(read_data=True).ok
        messages = [i.commit.message for i in repo.log(all=True)]
        assert messages == [c["message"] for c in expected["commits"]]
        for info, c in zip(repo.log(all=True), expected["commits"]):
            repo.checkout(info.id, tmp_path / "out" / info.id)
            assert _digests(tmp_path / "out" / info.id) == c["files"]


@pytest.mark.parametrize("name", NAMES)
def test_migrate_upgrades_each_frozen_version_in_place(name, tmp_path, monkeypatch, capsys):
    """`ckstore migrate` raises every frozen version to the newest (3); the repository then verifies and checks
    out as before, cuts opaque runs by content from its next commit on, and a second migrate has nothing to do."""
    from conftest import run_cli
    root, expected = _copy(name, tmp_path)
    if expected.get("passphrase"):
        monkeypatch.setenv("CKSTORE_PASSWORD", expected["passphrase"])
    before = json.loads((root / "repo" / ".ckstore" / "config").read_text())["version"]
    code, out, err = run_cli(monkeypatch, capsys, "-C", root / "repo", "migrate", "--json")
    assert code == 0, err
    assert json.loads(out) == {"version": 3, "from": before, "migrated": before != 3}
    config = json.loads((root / "repo" / ".ckstore" / "config").read_text())
    assert config["version"] == 3 and config["features"] == ["cdc"]
    assert bool(config.get("encryption")) == bool(expected.get("passphrase"))
    with ckstore.Repo.open(root / "repo", passphrase=expected.get("passphrase")) as repo:
        assert repo.fsck(read_data=True).ok
        _check(repo, expected, tmp_path / "out")
        (tmp_path / "new").mkdir()
        (tmp_path / "new" / "vocab.txt").write_bytes(b"".join(b"token %d\n" % i for i in range(30000)))
        c = repo.commit(tmp_path / "new", "after the upgrade", capture_env=False)
        (seg,) = repo.manifest(c.id).files[0].segments
        assert seg.lengths is not None and sum(seg.lengths) == (tmp_path / "new" / "vocab.txt").stat().st_size
    code, out, err = run_cli(monkeypatch, capsys, "-C", root / "repo", "migrate", "--json")
    assert json.loads(out) == {"version": 3, "from": 3, "migrated": False}


def test_migrate_killed_at_every_durable_step_leaves_a_readable_repository(tmp_path):
    """`ckstore migrate` in a real process killed at its 1st, 2nd, … durable I/O step (CKSTORE_CRASH_AT): each
    time the repository opens, verifies and checks out as before, at the old version or the new one."""
    import os
    import subprocess
    import sys
    seen = set()
    for n in range(1, 20):
        root, expected = _copy("v1-basic", tmp_path / f"crash-{n}")
        run = subprocess.run([sys.executable, "-m", "ckstore", "-C", str(root / "repo"), "migrate"],
                             env={**os.environ, "CKSTORE_CRASH_AT": str(n)}, capture_output=True, text=True)
        with ckstore.Repo.open(root / "repo") as repo:
            seen.add((run.returncode == 0, repo.format_version))
            assert repo.fsck(read_data=True).ok
            _check(repo, expected, tmp_path / f"out-{n}")
        if run.returncode == 0:
            break
    assert (True, 3) in seen and any(not done and version == 1 for done, version in seen), seen
