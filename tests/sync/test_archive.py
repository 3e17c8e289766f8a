"""The cold tier through a directory and an S3 remote: archive verifies and records, gc frees the chunks here,
checkout and load fetch them back on demand, restore-archive keeps them here again; byte-identical throughout.
A cold remote that fails verification is an error that records nothing and changes nothing here."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import ckstore
from ckstore.errors import CorruptObject, UsageError
from ckstore.sync.on_demand import ColdTierFetch
from ckstore.transport import retry

from remote_helpers import KINDS, Series, commit_n, make_remote, new_repo, same_tree


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(retry, "BACKOFF", 0.01)
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


@pytest.fixture(params=KINDS)
def cold(request, tmp_path, monkeypatch):
    return make_remote(request, tmp_path, monkeypatch, request.param, name="cold")


def _chunks(repo, rev):
    return repo.engine.manifest_of(bytes.fromhex(repo.resolve(rev))).chunk_ids()


def test_archive_gc_on_demand_restore_round_trip(tmp_path, cold):
    url, opts = cold
    repo = new_repo(tmp_path / "a")
    repo.remote_add("cold", url, **opts)
    v = []      # unrelated versions: no frame of one is a delta against another's (those bases would stay)
    for i in range(4):
        d = Series(tmp_path / f"src{i}", seed=i).next()
        v.append((repo.commit(d, f"version {i}", metrics={"loss": 1.0 / (i + 1)}).id, d))
    before = None
    t0 = time.perf_counter()
    result = repo.archive(f"{v[0][0]}..{v[2][0]}", to="cold")       # v1 and v2
    archive_s = time.perf_counter() - t0
    assert sorted(result.commits) == sorted([v[1][0], v[2][0]])
    assert result.verified_chunks > 0 and result.chunks > 0
    assert bytes.fromhex(v[1][0]) in repo.engine.archived
    repo.gc(now=True, max_unused=0.0)
    only = (_chunks(repo, v[1][0]) | _chunks(repo, v[2][0])) - _chunks(repo, v[0][0]) - _chunks(repo, v[3][0])
    assert only and not any(repo.engine.store.has_chunk(c) for c in only)  # freed here
    # metadata keeps working locally
    assert [c.id for c in repo.log()] == [x[0] for x in reversed(v)]
    assert repo.find("metrics.loss < 0.4")
    repo.close()
    with ckstore.Repo.open(tmp_path / "a") as again:           # a new process-like open wires the cold source
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            again.checkout(v[1][0], tmp_path / "out1")
            fetch_s = time.perf_counter() - t0
        assert any(issubclass(w.category, ColdTierFetch) for w in seen)
        assert same_tree(v[1][1], tmp_path / "out1")
        again.diff(v[1][0], v[2][0])                        # tensor statistics: fetched on demand too
        arrays = again.load(v[2][0])
        assert set(arrays) == {"enc.weight", "head.bias"} and np.isfinite(arrays["head.bias"]).all()
        restored = again.restore_archive(v[2][0])
        assert restored.commits == [v[2][0]] and bytes.fromhex(v[2][0]) not in again.engine.archived
        assert all(again.engine.store.has_chunk(c) for c in _chunks(again, v[2][0]))
        again.checkout(v[2][0], tmp_path / "out2")
        assert same_tree(v[2][1], tmp_path / "out2")
        assert again.fsck().ok
    print(f"archive {archive_s:.2f}s, on-demand checkout {fetch_s:.2f}s, {result.bytes_local} bytes freed, "
          f"{result.push.bytes_sent} bytes sent", before)


def test_archive_older_than_and_bad_input(tmp_path):
    repo = new_repo(tmp_path / "a")
    repo.remote_add("cold", str(tmp_path / "cold"))
    commit_n(repo, Series(tmp_path / "src"), 2)
    with pytest.raises(UsageError, match="no commit to archive"):
        repo.archive(older_than="30d", to="cold")
    with pytest.raises(UsageError, match="not both"):
        repo.archive("HEAD", older_than="1d", to="cold")
    with pytest.raises(UsageError, match="duration"):
        repo.archive(older_than="3 fortnights", to="cold")
    with pytest.raises(UsageError, match="no remote named"):
        repo.archive("HEAD", to="nowhere")
    result = repo.archive(older_than="0s", to="cold")
    assert len(result.commits) == 2
    repo.restore_archive("HEAD")
    with pytest.raises(UsageError, match="not archived"):
        repo.restore_archive("HEAD")


def test_archive_to_a_remote_that_fails_verification_changes_nothing(tmp_path):
    repo = new_repo(tmp_path / "a")
    cold = tmp_path / "cold"
    repo.remote_add("cold", str(cold))
    v = commit_n(repo, Series(tmp_path / "src"), 2)
    repo.push("cold")
    for pack in cold.glob("packs/*/*.pack"):               # bit rot on the cold remote, after the data landed
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
    packs, objects = sorted(repo.engine.store.pack_ids()), sorted(repo.engine.store.object_ids())
    with pytest.raises(CorruptObject) as err:
        repo.archive(v[0][0], to="cold")
    assert "nothing was archived" in err.value.hint
    assert not repo.engine.archived.records()
    assert sorted(repo.engine.store.pack_ids()) == packs and sorted(repo.engine.store.object_ids()) == objects
    repo.gc(now=True)                                       # and gc still keeps every chunk here
    assert all(repo.engine.store.has_chunk(c) for c in _chunks(repo, v[0][0]))
