"""fsck checks everything a command reads and names each damage once, at its root; it raises no false alarm under a
concurrent writer; `fsck --repair --from origin` brings a damaged repository back to clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ckstore import Repo
from conftest import make_safetensors

ENV = {**os.environ, "CKSTORE_AUTHOR": "t <t@example.com>"}
ENV.pop("CKSTORE_DIR", None)


def ck(repo: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from ckstore.cli import main; sys.argv[0]='ckstore'; "
                           "main()", "-C", str(repo), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=300)


def series(root: Path, n: int = 3) -> list[Path]:
    rng = np.random.default_rng(1)
    w = {f"layer{k}.weight": rng.standard_normal((256, 256)).astype(np.float32) for k in range(8)}
    out = []
    for i in range(n):
        w = {k: v + (rng.standard_normal(v.shape).astype(np.float32) * 1e-3 if i else 0) for k, v in w.items()}
        out.append(make_safetensors(root / f"v{i}" / "model.safetensors", w).parent)
    return out


def same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return fa == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and \
        all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Path, list[str], list[Path]]:
    """A repository of 3 commits pushed to a directory remote `origin`."""
    srcs = series(tmp_path / "src")
    with Repo.init(tmp_path / "repo") as repo:
        ids = [repo.commit(s, f"v{i}", capture_env=False).id for i, s in enumerate(srcs)]
        repo.remote_add("origin", str(tmp_path / "remote"))
        repo.push()
    return tmp_path / "repo", ids, srcs


def biggest_pack(repo: Path) -> Path:
    return max((repo / ".ckstore" / "packs").rglob("*.pack"), key=lambda p: p.stat().st_size)


def test_a_flipped_pack_byte_is_repaired_from_the_remote(pushed, tmp_path: Path) -> None:
    repo, ids, srcs = pushed
    pack = biggest_pack(repo)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x10
    pack.write_bytes(bytes(data))
    before = ck(repo, "fsck")
    assert before.returncode == 1
    problems = [line for line in before.stderr.splitlines() if line.startswith("error:")]
    assert len(problems) == 1 and pack.stem in problems[0] and "needed by" in problems[0], before.stderr
    r = ck(repo, "fsck", "--repair", "--from", "origin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quarantined" in r.stdout and r.stdout.rstrip().endswith("ok")
    assert (repo / ".ckstore" / "quarantine" / "packs" / pack.name).exists()
    assert ck(repo, "fsck", "--read-data").returncode == 0
    with Repo.open(repo) as r2:
        for cid, src in zip(ids, srcs):
            out = tmp_path / f"out-{cid[:8]}"
            r2.checkout(cid, out)
            assert same_tree(out, src)


def test_repair_without_a_remote_salvages_and_says_what_is_lost(pushed, tmp_path: Path) -> None:
    repo, ids, srcs = pushed
    pack = biggest_pack(repo)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x10
    pack.write_bytes(bytes(data))
    with Repo.open(repo) as r:
        done = r.repair()
        assert not done.ok and done.salvaged_chunks > 0 and done.missing_chunks >= 1
        assert done.after.affected  # the commits that cannot be read whole are named
        assert all(p.kind == "chunk" for p in done.after.problems), done.after.problems
    with Repo.open(repo) as r:  # the remote brings back the rest
        assert r.repair(source="origin").ok


def test_fsck_checks_head_config_and_caches(pushed, tmp_path: Path) -> None:
    repo, ids, _ = pushed
    d = repo / ".ckstore"
    (d / "HEAD").write_bytes(b"ref: refs/heads/\xff\n")
    raw = json.loads((d / "config").read_text())
    raw["codec"]["max_delta_depth"] = 0  # a legal value, but not what this repository was made with
    (d / "config").write_text(json.dumps(raw))
    r = ck(repo, "fsck", "--json")
    kinds = {(p["kind"], p["id"]) for p in json.loads(r.stdout)["problems"]}
    assert ("ref", "HEAD") in kinds and ("config", "") in kinds and r.returncode == 1
    (d / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    assert ck(repo, "fsck", "--repair").returncode == 0  # the config's values are recorded as meant
    assert json.loads((d / "config").read_text())["codec"]["max_delta_depth"] == 0


def test_fsck_read_data_names_a_wrong_cache_entry(pushed) -> None:
    import lmdb
    repo, ids, _ = pushed
    ck(repo, "log")
    env = lmdb.open(str(repo / ".ckstore" / "cache" / "index.lmdb"), max_dbs=5)
    db = env.open_db(b"commits")
    with env.begin(write=True, db=db) as txn:
        key, value = next(iter(txn.cursor()))
        value = bytearray(value)
        value[-3] ^= 1
        txn.put(bytes(key), bytes(value))
    env.close()
    r = ck(repo, "fsck", "--read-data", "--json")
    assert r.returncode == 1
    assert [(p["kind"], p["id"]) for p in json.loads(r.stdout)["problems"]] == [("cache", "commits")]
    assert ck(repo, "fsck", "--repair").returncode == 0
    assert ck(repo, "fsck", "--read-data").returncode == 0


def test_no_false_alarm_while_another_process_commits(tmp_path: Path) -> None:
    srcs = series(tmp_path / "src", 2)
    repo = tmp_path / "repo"
    Repo.init(repo).close()
    writer = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from ckstore import Repo
with Repo.open({str(repo)!r}) as r:
    for i in range(60):
        r.commit({[str(s) for s in srcs]!r}[i % 2], f"c{{i}}", capture_env=False)
"""], env=ENV)
    runs = []
    try:
        while writer.poll() is None and len(runs) < 15:
            r = ck(repo, "fsck")
            runs.append((r.returncode, r.stderr))
            time.sleep(0.05)
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0
    assert len(runs) >= 3, "fsck never overlapped the writer"
    assert [r for r in runs if r[0] != 0] == [], runs
    assert ck(repo, "fsck", "--read-data").returncode == 0


def test_repair_leaves_a_clean_repository_untouched(pushed) -> None:
    repo, ids, _ = pushed
    packs = sorted(p.name for p in (repo / ".ckstore" / "packs").rglob("*"))
    with Repo.open(repo) as r:
        done = r.repair(source="origin")
    assert done.ok and done.quarantined == [] and done.fetched_chunks == 0
    assert sorted(p.name for p in (repo / ".ckstore" / "packs").rglob("*")) == packs
    assert not (repo / ".ckstore" / "quarantine").exists()
    shutil.rmtree(repo / ".ckstore" / "cache")
    assert ck(repo, "fsck", "--read-data").returncode == 0


def test_fsck_of_a_remote_names_its_damage(pushed, tmp_path: Path) -> None:
    repo, ids, _ = pushed
    assert ck(repo, "fsck", "--remote", "origin", "--read-data").returncode == 0
    remote = tmp_path / "remote"
    pack = max((remote / "packs").rglob("*.pack"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x04
    pack.write_bytes(bytes(data))
    assert ck(repo, "fsck", "--remote", "origin").returncode == 0  # without --read-data only indexes are read
    r = ck(repo, "fsck", "--remote", "origin", "--read-data", "--json")
    problems = json.loads(r.stdout)["problems"]
    assert r.returncode == 1 and ("pack", pack.stem) in {(p["kind"], p["id"]) for p in problems}
    obj = next((remote / "objects").rglob("*"), None)
    while obj is not None and obj.is_dir():
        obj = next(obj.iterdir())
    obj.write_bytes(obj.read_bytes()[:-3])
    r = ck(repo, "fsck", "--remote", "origin", "--json")
    assert r.returncode == 1 and any(p["kind"] in ("object", "ref") for p in json.loads(r.stdout)["problems"])


def test_a_damaged_delta_base_is_blamed_not_its_healthy_dependant(tmp_path: Path) -> None:
    from ckstore.errors import CorruptObject
    from ckstore.storage.packs import pack_path
    srcs = series(tmp_path / "src", 2)  # v1 is a small step from v0: its chunks are XOR deltas on v0's
    with Repo.init(tmp_path / "repo") as repo:
        repo.commit(srcs[0], "v0", capture_env=False)
        v1 = repo.commit(srcs[1], "v1", capture_env=False).id
        store = repo.engine.store
        tensor = next(t for t in repo.manifest(v1).tensors if store.delta_depth(t.chunks[0], 8) == 1)
        dependant = tensor.chunks[0]
        base = store.frame_base(store.index.get(dependant), dependant)
        loc = store.index.get(base)
    path = pack_path(tmp_path / "repo" / ".ckstore" / "packs", loc.pack)
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0x20  # inside the base's frame
    path.write_bytes(bytes(data))
    with Repo.open(tmp_path / "repo") as repo:
        with pytest.raises(CorruptObject) as info:
            repo.load(v1, names=[tensor.name])
    assert info.value.expected == base.hex() and dependant.hex()[:12] in str(info.value)


def test_a_lost_idx_is_named_once_and_rebuilt_by_repair(pushed, tmp_path: Path) -> None:
    repo, ids, srcs = pushed
    pack = biggest_pack(repo)
    pack.with_suffix(".idx").unlink()
    r = ck(repo, "fsck", "--json")
    problems = json.loads(r.stdout)["problems"]
    assert r.returncode == 1 and [(p["kind"], p["id"]) for p in problems] == [("index", pack.stem)], problems
    assert ck(repo, "fsck", "--repair").returncode == 0  # no remote needed: the pack's trailer has it all
    assert pack.with_suffix(".idx").exists() and ck(repo, "fsck", "--read-data").returncode == 0
    with Repo.open(repo) as r2:
        r2.checkout(ids[-1], tmp_path / "out")
    assert same_tree(tmp_path / "out", srcs[-1])
