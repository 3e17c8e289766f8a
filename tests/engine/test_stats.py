"""Tensor statistics at commit time and change statistics, each checked against numpy computed independently."""

import dataclasses
import math
import os
import time

import ml_dtypes
import numpy as np
import pytest

from ckstore import Repo
from ckstore.model import stats
from ckstore.model.objects import Manifest
from conftest import make_safetensors

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]


def reference(arr):
    x = np.asarray(arr, dtype=np.float64).reshape(-1)
    fin = x[np.isfinite(x)]
    return {"count": x.size, "mean": fin.mean(), "std": fin.std(), "min": fin.min(), "max": fin.max(),
            "l2": np.sqrt(np.sum(fin ** 2)), "zeros": int(np.sum(x == 0)), "nan": int(np.isnan(x).sum()),
            "inf": int(np.isinf(x).sum())}


def close(a, b):
    assert set(a) >= set(b)
    for k, v in b.items():
        assert math.isclose(a[k], v, rel_tol=1e-9, abs_tol=1e-12), (k, a[k], v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_commit_stats_match_numpy(tmp_path, dtype):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((300, 257)) * 0.5 + 0.1).astype(dtype)
    w[0, :3] = 0
    w[1, 1] = np.nan
    w[2, 2] = np.inf
    with Repo.init(tmp_path / "r", chunk_size=16384) as repo:  # many chunks: exercises the exact merge
        repo.commit({"w": w, "empty": np.zeros((0,), dtype)}, "stats", capture_env=False)
        entries = {t.name: t for t in repo.manifest().tensors}
        close(entries["w"].stats, reference(w))
        assert entries["empty"].stats["count"] == 0
        shown = {t["name"]: t for t in repo.show().to_dict()["tensors"]}
        assert shown["w"]["stats"]["nan"] == 1


def test_unchanged_tensor_reuses_parent_stats(tmp_path):
    w = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    with Repo.init(tmp_path / "r") as repo:
        repo.commit({"w": w, "v": w * 2}, "a", capture_env=False)
        repo.commit({"w": w, "v": w * 3}, "b", capture_env=False)
        t = {t.name: t for t in repo.manifest().tensors}
        close(t["w"].stats, reference(w))
        close(t["v"].stats, reference(w * 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_delta_stats_match_numpy(dtype):
    rng = np.random.default_rng(1)
    old = rng.standard_normal(5000).astype(dtype)
    new = old.copy()
    idx = rng.choice(5000, 700, replace=False)
    new[idx] = (new[idx].astype(np.float32) + rng.standard_normal(700).astype(np.float32) * 0.1).astype(dtype)
    parts = [stats.delta_partial(old[i:i + 1000], new[i:i + 1000]) for i in range(0, 5000, 1000)]
    a, b = old.astype(np.float64), new.astype(np.float64)
    got = stats.finish_delta(__import__("functools").reduce(stats.merge_delta, parts, stats.DeltaPartial()),
                             np.linalg.norm(a), np.linalg.norm(b))
    d = b - a
    assert got["changed"] == int(np.sum(old.view(np.uint8 if old.itemsize == 1 else f"u{old.itemsize}")
                                        != new.view(np.uint8 if old.itemsize == 1 else f"u{old.itemsize}")))
    assert math.isclose(got["frac_changed"], got["changed"] / 5000)
    assert math.isclose(got["l2_delta"], np.linalg.norm(d), rel_tol=1e-9)
    assert math.isclose(got["rel_l2"], np.linalg.norm(d) / np.linalg.norm(a), rel_tol=1e-9)
    assert math.isclose(got["max_abs"], np.abs(d).max(), rel_tol=1e-12)
    assert math.isclose(got["cosine"], a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), rel_tol=1e-9)


def test_delta_tolerances_and_appearing_nans():
    old = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    new = np.array([1.0, 2.0 + 1e-6, np.nan, np.inf], np.float32)
    got = stats.finish_delta(stats.delta_partial(old, new), 5.5, 5.5)
    assert got["changed"] == 3 and got["nan_appeared"] == 1 and got["inf_appeared"] == 1
    tol = stats.finish_delta(stats.delta_partial(old, new, atol=1e-5), 5.5, 5.5)
    assert tol["changed"] == 0  # only finite pairs are compared under a tolerance


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
                                   np.int8, np.int64, np.uint16, np.bool_])
@pytest.mark.parametrize("special", ["none", "nan", "inf", "all-nan", "offset"])
def test_partial_every_dtype_and_special_value(dtype, special):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(5000) * 3
    if special == "offset":  # large mean, small spread: the centred second moment must not cancel away
        if np.dtype(dtype).itemsize < 2 or np.dtype(dtype) == np.float16:
            pytest.skip("1000 ± 0.003 is not representable in this type")
        x = 1000 + x * 1e-3
    arr = x.astype(dtype)
    if np.dtype(dtype).kind in "fV" and special in ("nan", "inf", "all-nan"):
        if special == "all-nan":
            arr[:] = np.nan
        else:
            arr[7] = np.nan if special == "nan" else np.inf
            arr[9] = -np.inf if special == "inf" else arr[9]
    got = stats.finish(stats.partial(arr))
    if special == "all-nan" and np.dtype(dtype).kind in "fV":
        assert got["mean"] is None and got["nan"] == arr.size and got["count"] == arr.size
    else:
        want = reference(arr)
        assert got["count"] == want["count"] and got["zeros"] == want["zeros"]
        assert got["nan"] == want["nan"] and got["inf"] == want["inf"]
        close({k: got[k] for k in ("mean", "min", "max", "l2")}, {k: want[k] for k in ("mean", "min", "max", "l2")})
        assert math.isclose(got["std"], want["std"], rel_tol=1e-6, abs_tol=1e-12)


def test_stats_of_chunks_partly_equal_to_their_base(tmp_path):
    """A tensor where only some chunks changed: statistics skip equal chunks on the stream and are completed after."""
    w = np.random.default_rng(2).standard_normal(40_000).astype(np.float32)
    with Repo.init(tmp_path / "r", chunk_size=16384) as repo:
        repo.commit({"w": w}, "a", capture_env=False)
        w2 = w.copy()
        w2[:100] += 1
        repo.commit({"w": w2}, "b", capture_env=False)
        close(repo.manifest().tensors[0].stats, reference(w2))


# -- the value histogram through commits ------------------------------------------------------------------------


def without_hist(m: Manifest) -> Manifest:
    """The manifest an older build wrote: the same tensors, statistics without the histogram."""
    tensors = tuple(dataclasses.replace(t, stats={k: v for k, v in t.stats.items() if k != "hist"})
                    for t in m.tensors)
    return Manifest(m.files, tensors, m.tree)


def test_commit_stores_histograms_and_unchanged_tensors_keep_them(tmp_path):
    rng = np.random.default_rng(4)
    w, v = rng.standard_normal(50_000).astype(np.float32), rng.standard_normal(3000).astype(ml_dtypes.bfloat16)
    with Repo.init(tmp_path / "r", chunk_size=16384) as repo:
        repo.commit({"w": w, "v": v}, "a", capture_env=False)
        first = {t.name: t.stats for t in repo.manifest().tensors}
        assert first["w"]["hist"] == stats.of_array(w)["hist"] and first["v"]["hist"] == stats.of_array(v)["hist"]
        assert first["w"]["hist"] == hist_reference(w) and first["w"]["hist_of"] == w.size  # small chunks: exact
        w2 = w.copy()
        w2[:10] = 1000.0  # past the top edge: the highest bin
        repo.commit({"w": w2, "v": v}, "b", capture_env=False)
        second = {t.name: t.stats for t in repo.manifest().tensors}
        assert second["v"]["hist"] == first["v"]["hist"]
        assert second["w"]["hist"] == stats.of_array(w2)["hist"] and second["w"]["hist"][63] == 10


def test_commit_bins_a_sample_of_large_chunks_and_counts_exactly(tmp_path):
    """Chunks past 2 × HIST_SAMPLE elements bin every hist_step-th element; the exact counts cover every one."""
    rng = np.random.default_rng(7)
    n = 9 * stats.HIST_SAMPLE + 123  # 1 MiB chunks of float32: two full ones and a short one
    w = (rng.standard_normal(n) * 0.02).astype(np.float32)
    w[rng.choice(n, 40, replace=False)] = 0
    w[[1, 4, 100_001]] = np.nan
    w[[2, 300_000]] = -np.inf
    chunk = (1 << 20) // 4
    with Repo.init(tmp_path / "r", chunk_size=1 << 20) as repo:
        repo.commit({"w": w}, "a", capture_env=False)
        got = repo.manifest().tensors[0].stats
    close(got, reference(w))
    pieces = [w[i:i + chunk] for i in range(0, n, chunk)]
    samples = [p[::stats.hist_step(p.size)] for p in pieces]
    assert [stats.hist_step(p.size) for p in pieces] == [min(4, stats.HIST_STRIDE)] * 2 + [1]
    assert got["hist_of"] == sum(s.size for s in samples) < n
    assert got["hist"] == np.sum([hist_reference(s) for s in samples], axis=0).tolist()
    assert (got["zeros"], got["nan"], got["inf"]) == (40, 3, 2)
    assert got["hist"] == stats.of_array(w, block=chunk)["hist"]


def hist_reference(a: np.ndarray) -> list[int]:
    """np.histogram per sign over the magnitude octaves of `stats.hist_edges()` (outer bins open-ended)."""
    x = a.astype(np.float64)
    x = x[np.isfinite(x) & (x != 0)]
    octaves = np.concatenate([[0.0], stats.hist_edges()[stats.OCTAVES + 1:-1], [np.inf]])
    return np.histogram(-x[x < 0], octaves)[0][::-1].tolist() + np.histogram(x[x > 0], octaves)[0].tolist()


def test_stats_without_histogram_are_computed_again_on_the_next_commit(tmp_path):
    rng = np.random.default_rng(5)
    state = {"w": rng.standard_normal(40_000).astype(np.float32), "b": np.arange(7, dtype=np.int64)}
    with Repo.init(tmp_path / "r", chunk_size=16384) as repo:
        repo.commit(state, "current", capture_env=False)
        fresh = {t.name: t.stats for t in repo.manifest().tensors}
        repo.commit(without_hist(repo.manifest()), "as an older build wrote it", capture_env=False)
        assert all("hist" not in t.stats and t.stats for t in repo.manifest().tensors)
        repo.commit(state, "same tensors again", capture_env=False)  # every chunk equals its parent's
        again = {t.name: t.stats for t in repo.manifest().tensors}
        assert {k: s["hist"] for k, s in again.items()} == {k: s["hist"] for k, s in fresh.items()}
        close(again["w"], reference(state["w"]))


def test_stat_cache_entry_without_histogram_is_a_miss(tmp_path):
    """An unchanged file whose stat-cache entry an older build wrote is read again, so its tensors get histograms."""
    f = make_safetensors(tmp_path / "ckpt" / "model.safetensors",
                         {"w": np.random.default_rng(6).standard_normal(3000).astype(np.float16)})
    past = time.time() - 60  # older than the racy window, so the stat cache keeps it
    os.utime(f, (past, past))
    with Repo.init(tmp_path / "r") as repo:
        repo.commit(f, "a", capture_env=False)
        want = repo.manifest().tensors[0].stats
        cache, st, size = repo.engine.stat_cache, os.stat(f), repo.engine.config.chunk_size
        recipe, tensors = cache.get(str(f), f.name, st, size)
        old = tuple(dataclasses.replace(t, stats={k: v for k, v in t.stats.items() if k != "hist"}) for t in tensors)
        cache.put([(str(f), st, size, recipe, old)])
        assert "hist" not in cache.get(str(f), f.name, st, size)[1][0].stats
        repo.commit(without_hist(repo.manifest()), "older stats everywhere", capture_env=False)
        repo.commit(f, "b", capture_env=False)
        assert repo.manifest().tensors[0].stats["hist"] == want["hist"]
        assert "hist" in cache.get(str(f), f.name, st, size)[1][0].stats  # and the cache entry is current again
