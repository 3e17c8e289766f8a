"""T13: damage to the LMDB cache (truncation, zeroed pages, flipped entries of every table) never makes a command
crash, show altered data or write a commit whose checkout differs from its source; the cache is rebuilt.

Every command runs in its own process (a truncated data.mdb used to end in SIGBUS) and is compared with the
answers of an intact copy of the same repository.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest

from conftest import make_safetensors

ENV = {**os.environ, "CKSTORE_AUTHOR": "t <t@example.com>"}
ENV.pop("CKSTORE_DIR", None)


def ck(repo: Path, *args: object, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", "import sys; from ckstore.cli import main; sys.argv[0]='ckstore'; main()",
                        "-C", str(repo), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {args}"
    assert "Traceback" not in r.stderr, r.stderr
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A repository of three commits (metrics, messages), its sources, and the answers of the intact copy."""
    root = tmp_path_factory.mktemp("cache")
    repo, src = root / "repo", root / "src"
    ck(root, "init", repo)
    rng = np.random.default_rng(0)
    for i in range(3):
        f = make_safetensors(src / f"v{i}" / "model.safetensors",
                             {f"layer{k}.weight": rng.standard_normal((128, 128)).astype(np.float32) for k in range(6)})
        os.utime(f, (f.stat().st_mtime - 60,) * 2)  # older than the racy window: the stat cache keeps it
        ck(repo, "commit", src / f"v{i}", "-m", f"version {i}", "--metric", f"loss={0.5 - i / 10}")
    return repo, src, answers(repo)


def answers(repo: Path) -> dict:
    log = json.loads(ck(repo, "log", "--json").stdout)
    return {"log": [(e["id"], e["message"], e["metrics"]) for e in log],
            "find": [e["id"] for e in json.loads(ck(repo, "find", "metrics.loss < 0.45", "--json").stdout)],
            "show": json.loads(ck(repo, "show", "HEAD~1", "--json").stdout)["files"]}


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and \
        all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def check_everything(repo: Path, src: Path, expected: dict, work: Path) -> None:
    """Every command gives the intact answers, a re-commit of an unchanged source checks out identical, fsck ok."""
    assert answers(repo) == expected
    for i, (cid, _, _) in enumerate(reversed(expected["log"])):
        out = work / f"co{i}"
        ck(repo, "checkout", cid, "-o", out)
        assert same_tree(out, src / f"v{i}")
        shutil.rmtree(out)
    ck(repo, "commit", src / "v1", "-m", "again")  # through the stat cache
    ck(repo, "checkout", "HEAD", "-o", work / "again")
    assert same_tree(work / "again", src / "v1")
    r = ck(repo, "fsck", "--read-data", "--json", ok=False)
    problems = json.loads(r.stdout)["problems"]
    # entries no command has read yet are still wrong: fsck names them (only them), and --repair rebuilds them
    assert all(p["kind"] == "cache" for p in problems), problems
    if problems:
        ck(repo, "fsck", "--repair")
    assert ck(repo, "fsck", "--read-data").stdout.rstrip().endswith("ok")


def copy_of(base: tuple[Path, Path, dict], tmp_path: Path) -> Path:
    case = tmp_path / "repo"
    shutil.copytree(base[0], case)
    return case


def test_truncated_data_file_is_set_aside_and_rebuilt(base, tmp_path: Path) -> None:
    case = copy_of(base, tmp_path)
    data = case / ".ckstore" / "cache" / "index.lmdb" / "data.mdb"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    r = ck(case, "log", "--oneline")
    assert "warning: the LMDB cache" in r.stderr and "rebuilt from the packs" in r.stderr
    check_everything(case, base[1], base[2], tmp_path)


@pytest.mark.parametrize("seed", range(4))
def test_zeroed_and_flipped_pages_never_crash_or_lie(base, tmp_path: Path, seed: int) -> None:
    case = copy_of(base, tmp_path)
    data = case / ".ckstore" / "cache" / "index.lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    rng = random.Random(seed)
    pages = list(range(2, len(raw) // 4096))  # past the two meta pages
    for page in rng.sample(pages, min(2, len(pages))):
        if seed % 2:
            raw[page * 4096:(page + 1) * 4096] = bytes(4096)
        else:
            for _ in range(8):
                raw[page * 4096 + rng.randrange(4096)] ^= 1 << rng.randrange(8)
    data.write_bytes(bytes(raw))
    check_everything(case, base[1], base[2], tmp_path)


def flip_entries(case: Path, table: bytes, rng: random.Random, n: int = 3) -> int:
    """Flip one bit in the values of `n` entries of one LMDB table; how many were flipped."""
    env = lmdb.open(str(case / ".ckstore" / "cache" / "index.lmdb"), max_dbs=5)
    db = env.open_db(table)
    with env.begin(write=True, db=db) as txn:
        items = [(bytes(k), bytearray(v)) for k, v in txn.cursor()]
        for key, value in rng.sample(items, min(n, len(items))):
            value[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
            txn.put(key, bytes(value))
    env.close()
    return min(n, len(items))


@pytest.mark.parametrize("table", [b"chunks", b"commits", b"stat"])
@pytest.mark.parametrize("seed", range(3))
def test_flipped_entries_are_caught(base, tmp_path: Path, table: bytes, seed: int) -> None:
    case = copy_of(base, tmp_path)
    ck(case, "log")  # fills the commits cache
    assert flip_entries(case, table, random.Random(seed)) > 0
    check_everything(case, base[1], base[2], tmp_path)


def test_a_flipped_cached_inline_header_never_reaches_a_commit(base, tmp_path: Path) -> None:
    """The case seen from outside: one byte of a cached inline safetensors header, then a re-commit."""
    case = copy_of(base, tmp_path)
    src = base[1] / "v2"
    ck(case, "commit", src, "-m", "cached")  # the stat cache now holds v2's recipe
    env = lmdb.open(str(case / ".ckstore" / "cache" / "index.lmdb"), max_dbs=5)
    db = env.open_db(b"stat")
    with env.begin(write=True, db=db) as txn:
        for key, value in list(txn.cursor()):
            value = bytearray(value)
            at = bytes(value).find(b"layer0.weight")  # inside the inline header bytes
            assert at > 0
            value[at] ^= 0x01
            txn.put(bytes(key), bytes(value))
    env.close()
    ck(case, "commit", src, "-m", "from the damaged cache")
    ck(case, "checkout", "HEAD", "-o", tmp_path / "out")
    assert same_tree(tmp_path / "out", src)
