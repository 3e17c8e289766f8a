"""Repack with real repositories (real files, real LMDB): re-encoding frees the bytes of dropped bases, exactly as
`forget --dry-run` predicted; inversion makes branch tips full frames within max_delta_depth at about the same
stored bytes; small packs merge; a corrupt frame is never copied; killed at every durable I/O step of a repack,
the repository stays fsck-clean and every commit checks out byte-identical."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp

from ckstore import Repo
from ckstore.storage.packs import pack_path, parse_idx
from crash_worker import tree_bytes

PROJECT = Path(__file__).resolve().parents[2]
CHUNK = 1 << 16


def make_series(root: Path, n: int, *, sparse: bool = False, seed: int = 0) -> list[Path]:
    """n versions of a small model, each a fine-tuning step from the one before: every weight moves a little
    (dense), or 1% of them move (sparse: deltas far smaller than full frames)."""
    rng = np.random.default_rng(seed)
    w = {"layer.w": rng.standard_normal((192, 1024), dtype=np.float32),
         "embed": rng.standard_normal((64, 1024)).astype(np.float16)}
    out = []
    for i in range(n):
        d = root / f"v{i}"
        d.mkdir(parents=True)
        stnp.save_file(w, str(d / "model.safetensors"))
        (d / "config.json").write_text(f'{{"step": {i}}}\n')
        out.append(d)
        nxt = {}
        for k, v in w.items():
            step = (1e-3 * rng.standard_normal(v.shape)).astype(v.dtype) * np.abs(v).astype(v.dtype)
            if sparse:
                step = np.where(rng.random(v.shape) < 0.01, step + v.dtype.type(0.01), v.dtype.type(0))
            nxt[k] = (v + step).astype(v.dtype)
        w = nxt
    return out


def build(path: Path, srcs: list[Path]) -> list[str]:
    with Repo.init(path, chunk_size=CHUNK) as repo:
        return [repo.commit(s, f"v{i}", capture_env=False).id for i, s in enumerate(srcs)]


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[str]]:
    d = tmp_path_factory.mktemp("dense")
    srcs = make_series(d / "src", 6)
    ids = build(d / "repo", srcs[:4])
    return d / "repo", srcs, ids


def copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def disk(repo: Repo) -> int:
    return repo.du().disk["total"]


def is_full(repo: Repo, chunk: bytes) -> bool:
    st = repo.engine.store
    return st.frame_base(st.index.get(chunk), chunk) is None


def tensor_chunks(repo: Repo, rev: str) -> list[bytes]:
    return [c for t in repo.engine.manifest_of(repo.engine.resolve(rev)).tensors for c in t.chunks]


def assert_sound(repo: Repo, ids: list[str], srcs: list[Path], work: Path) -> None:
    report = repo.fsck(read_data=True)
    assert report.ok, [str(p) for p in report.problems]
    for oid, src in zip(ids, srcs):
        dest = work / f"co-{oid[:12]}"
        shutil.rmtree(dest, ignore_errors=True)
        repo.checkout(oid, dest)
        assert tree_bytes(dest) == tree_bytes(src), f"checkout of {oid[:12]} differs from its source"
        shutil.rmtree(dest)


def packs_on_disk(repo: Repo) -> set[bytes]:
    return repo.engine.store.pack_ids()


# -- re-encoding what dropped bases would keep ----------------------------------------------------------------------

def test_keeping_only_the_newest_frees_the_old_versions(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        assert not any(is_full(repo, c) for c in tensor_chunks(repo, ids[3])), "v3 should be stored as deltas"
        before = disk(repo)
        predicted = repo.forget({"keep_last": 1}, dry_run=True).bytes_freed
        repo.forget({"keep_last": 1})
        repo.gc(now=True)
        freed = before - disk(repo)
        assert abs(predicted - freed) <= 0.01 * freed, (predicted, freed)
        assert all(is_full(repo, c) for c in tensor_chunks(repo, ids[3])), "v3 must be re-encoded whole"
        assert_sound(repo, ids[3:], srcs[3:4], tmp_path)
        after = disk(repo)
    with Repo.init(tmp_path / "alone", chunk_size=CHUNK) as alone:
        alone.commit(srcs[3], "v3", capture_env=False)
        own = disk(alone)
    assert abs(after - own) <= 0.03 * own, f"kept {after} bytes for a version that costs {own} alone"


def test_keep_last_two_frees_what_forget_predicted(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        before = disk(repo)
        predicted = repo.forget({"keep_last": 2}, dry_run=True).bytes_freed
        repo.forget({"keep_last": 2})
        result = repo.gc(now=True)
        freed = before - disk(repo)
        assert result.repacked >= 1
        assert abs(predicted - freed) <= 0.01 * freed, (predicted, freed)
        assert_sound(repo, ids[2:], srcs[2:4], tmp_path)


def test_a_cheap_base_is_kept_rather_than_re_encoding(tmp_path):
    """Sparse updates: v2's delta is tiny, so with v3 and v1 kept (v1 by a tag) and v2 dropped, keeping v2's frames
    as v3's bases costs less than storing v3 whole; gc keeps them, and frees what forget said."""
    srcs = make_series(tmp_path / "src", 4, sparse=True)
    ids = build(tmp_path / "repo", srcs)
    with Repo.open(tmp_path / "repo") as repo:
        repo.tag("keep-v1", ids[1])
        v2 = set(tensor_chunks(repo, ids[2])) - set(tensor_chunks(repo, ids[3])) - set(tensor_chunks(repo, ids[1]))
        before = disk(repo)
        policy = {"keep_last": 1}
        predicted = repo.forget(policy, dry_run=True).bytes_freed
        kept = [c.id for c in repo.forget(policy).commits if c.reasons]
        assert set(kept) == {ids[1], ids[3]}
        repo.gc(now=True)
        freed = before - disk(repo)
        assert abs(predicted - freed) <= 0.01 * max(freed, 1), (predicted, freed)
        assert v2 and all(repo.engine.store.has_chunk(c) for c in v2), "v2's cheap delta frames are kept as bases"
        assert not any(is_full(repo, c) for c in tensor_chunks(repo, ids[3]) if c not in v2)
        assert_sound(repo, [ids[1], ids[3]], [srcs[1], srcs[3]], tmp_path)


# -- inversion --------------------------------------------------------------------------------------------------

def test_invert_makes_the_tip_full_and_older_versions_deltas(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        before = disk(repo)
        assert all(is_full(repo, c) for c in tensor_chunks(repo, ids[0]))
        result = repo.repack(invert=True)
        assert result.repacked >= 1
        assert all(is_full(repo, c) for c in tensor_chunks(repo, ids[3])), "the branch tip must be full frames"
        older = [c for i in ids[:3] for c in tensor_chunks(repo, i)]
        assert not any(is_full(repo, c) for c in older), "older versions become deltas against newer ones"
        c2 = tensor_chunks(repo, ids[2])[0]
        base = repo.engine.store.frame_base(repo.engine.store.index.get(c2), c2)
        assert base == tensor_chunks(repo, ids[3])[0], "v2's chunk is a delta against v3's same chunk"
        after = disk(repo)
        assert abs(after - before) <= 0.02 * before, (before, after)
        assert_sound(repo, ids, srcs, tmp_path)
        again = repo.repack(invert=True)
        assert again.repacked == 0 and disk(repo) == after, "a second repack has nothing to change"


def test_invert_keeps_chains_within_max_delta_depth(dense, tmp_path):
    _, srcs, _ = dense
    ids = build(tmp_path / "repo", srcs)  # 6 versions: more than max_delta_depth (4) deltas behind the tip
    with Repo.open(tmp_path / "repo") as repo:
        limit = repo.engine.config.max_delta_depth
        before = disk(repo)
        repo.repack(invert=True)
        st = repo.engine.store
        depths = [st.delta_depth(c, 64) for i in ids for c in tensor_chunks(repo, i)]
        assert max(depths) == limit, depths
        assert all(is_full(repo, c) for c in tensor_chunks(repo, ids[-1]))
        assert abs(disk(repo) - before) <= 0.02 * before
        assert_sound(repo, ids, srcs, tmp_path)


def test_invert_on_two_branches_makes_both_tips_full(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        repo.branch("side", ids[1])
        side = repo.commit(srcs[4], "side v4", branch="side", capture_env=False).id
        repo.repack(invert=True)
        for tip in (ids[3], side):
            assert all(is_full(repo, c) for c in tensor_chunks(repo, tip)), tip[:12]
        assert_sound(repo, [*ids, side], [*srcs[:4], srcs[4]], tmp_path)


def test_gc_with_invert_flag(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        repo.gc(now=True)
        assert not all(is_full(repo, c) for c in tensor_chunks(repo, ids[3])), "gc alone does not invert"
        repo.gc(now=True, invert=True)
        assert all(is_full(repo, c) for c in tensor_chunks(repo, ids[3]))
        assert_sound(repo, ids, srcs, tmp_path)


# -- packs ------------------------------------------------------------------------------------------------------

def test_small_packs_are_merged(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        assert len(packs_on_disk(repo)) == 4
        repo.repack(invert=False)
        assert len(packs_on_disk(repo)) == 1
        assert_sound(repo, ids, srcs, tmp_path)


def test_a_corrupt_frame_is_never_copied(dense, tmp_path):
    template, srcs, ids = dense
    with Repo.open(copy(template, tmp_path / "repo")) as repo:
        victim = tensor_chunks(repo, ids[1])[0]
        loc = repo.engine.store.index.get(victim)
        path = pack_path(repo.engine.store.packs_dir, loc.pack)
        data = bytearray(path.read_bytes())
        data[loc.offset + loc.length // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        repo.repack(invert=True)
        assert path.read_bytes() == bytes(data), "the damaged pack is left as it is"
        for pack_id in packs_on_disk(repo) - {loc.pack}:
            _, entries = parse_idx(pack_path(repo.engine.store.packs_dir, pack_id, ".idx").read_bytes())
            assert victim not in {e.chunk for e in entries}, "the corrupt frame was copied into a new pack"
        assert repo.engine.store.index.get(victim).pack == loc.pack
        # every commit that does not need the damaged frame still checks out byte-identical
        dest = tmp_path / "co"
        repo.checkout(ids[0], dest)
        assert tree_bytes(dest) == tree_bytes(srcs[0])


# -- killed at every durable I/O step ---------------------------------------------------------------------------

WORKER = """
import sys
from ckstore import Repo
from ckstore.fs import fileio
with Repo.open(sys.argv[1]) as repo:
    before = fileio._steps
    repo.repack(invert=True)
    print(before, fileio._steps)
"""


def _run_repack(repo: Path, crash_at: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PROJECT), CKSTORE_CRASH_AT=str(crash_at))
    return subprocess.run([sys.executable, "-c", WORKER, str(repo)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=PROJECT)


def test_repack_killed_at_every_step_stays_sound(tmp_path):
    """CI tier: a repack that re-encodes a dropped base's dependants and inverts the chains, killed at each of its
    durable I/O steps (os._exit), leaves a repository that passes fsck --read-data and checks out every kept
    commit byte-identical; a repack run afterwards completes it, just as sound."""
    srcs = make_series(tmp_path / "src", 4)
    ids = build(tmp_path / "template", srcs)
    with Repo.open(tmp_path / "template") as repo:
        repo.forget({"keep_last": 3})  # v0 dropped: v1's base is kept only as a base
    probe = _run_repack(copy(tmp_path / "template", tmp_path / "probe"))
    assert probe.returncode == 0, probe.stderr
    start, end = map(int, probe.stdout.split())
    assert end - start >= 10, f"a repack should take many durable steps, counted {end - start}"

    def crash_at(n: int) -> None:
        case = copy(tmp_path / "template", tmp_path / f"n{n}")
        p = _run_repack(case, n)
        assert p.returncode == 137, f"step {n}: rc {p.returncode}\n{p.stderr}"
        with Repo.open(case) as repo:
            assert_sound(repo, ids[1:], srcs[1:], tmp_path / f"w{n}")
            repo.repack(invert=True)
            assert all(is_full(repo, c) for c in tensor_chunks(repo, ids[3]))
            assert_sound(repo, ids[1:], srcs[1:], tmp_path / f"w{n}")
        shutil.rmtree(case)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(crash_at, range(start + 1, end + 1)))
