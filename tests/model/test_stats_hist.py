"""The value histogram of tensor statistics, checked against np.histogram on the same edges: over every element
of small chunks, over the same strided sample of large ones."""

import functools

import ml_dtypes
import numpy as np
import pytest

from ckstore.model import stats

FLOATS = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64, ml_dtypes.float8_e4m3fn]
INTS = [np.int8, np.uint8, np.int32, np.int64, np.bool_]


def reference(arr) -> list[int]:
    """np.histogram over the documented edges: per sign over the magnitudes, the outer bins open-ended."""
    x = np.asarray(arr).astype(np.float64).reshape(-1)
    x = x[np.isfinite(x) & (x != 0)]
    edges = np.array(stats.hist_edges())
    octaves = np.concatenate([[0.0], edges[stats.OCTAVES + 1:-1], [np.inf]])  # (0, 2^-23), ..., [2^7, inf]
    pos = np.histogram(x[x > 0], octaves)[0]
    neg = np.histogram(-x[x < 0], octaves)[0]
    return neg[::-1].tolist() + pos.tolist()


def spread(rng, n: int, dtype) -> np.ndarray:
    """Values of both signs over magnitudes far past both ends of the edges, cast to `dtype`."""
    if np.dtype(dtype).kind in "iub":
        info = np.iinfo(dtype) if np.dtype(dtype).kind != "b" else None
        if info is None:
            return rng.integers(0, 2, n).astype(bool)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), n, endpoint=True).astype(dtype)
    info = ml_dtypes.finfo(dtype)  # within the type's range: no overflow to Inf, few underflows to zero
    lo, hi = max(-40.0, np.log2(float(info.smallest_subnormal))), min(20.0, np.log2(float(info.max)) - 1)
    return (rng.choice([-1.0, 1.0], n) * np.exp2(rng.uniform(lo, hi, n))).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("zeros", [True, False], ids=["zeros", "no-zeros"])
def test_float_histogram_matches_numpy(dtype, zeros):
    rng = np.random.default_rng(7)
    a = spread(rng, 20000, dtype)
    tiny = ml_dtypes.finfo(dtype).smallest_subnormal
    a[:4] = [tiny, -tiny, tiny * 2, -tiny * 3]  # subnormals: below the lowest edge, in the lowest bins
    if zeros:
        a[10:15] = 0
        a[15:18] = -0.0
    got = stats.finish(stats.partial(a))
    assert got["hist"] == reference(a) and got["hist_of"] == got["count"] == a.size  # small: every element
    assert sum(got["hist"]) == got["count"] - got["zeros"]
    if zeros:
        assert got["zeros"] == 8


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_nan_and_inf_are_counted_not_binned(dtype):
    rng = np.random.default_rng(8)
    a = spread(rng, 5000, dtype)
    a[:3] = np.nan
    a[3:5] = np.inf
    a[5] = -np.inf
    a[6:9] = 0
    a[9] = ml_dtypes.finfo(dtype).smallest_subnormal
    got = stats.finish(stats.partial(a))
    assert (got["nan"], got["inf"], got["zeros"]) == (3, 3, 3)
    assert got["hist"] == reference(a)
    assert sum(got["hist"]) == got["count"] - got["zeros"] - got["nan"] - got["inf"]


@pytest.mark.parametrize("dtype", INTS, ids=lambda d: np.dtype(d).name)
def test_integer_histogram_matches_numpy(dtype):
    a = spread(np.random.default_rng(9), 10000, dtype)
    got = stats.finish(stats.partial(a))
    assert got["hist"] == reference(a)
    assert sum(got["hist"]) == got["count"] - got["zeros"]


def sample_of(a: np.ndarray) -> np.ndarray:
    """The elements a chunk's histogram counts: every hist_step-th from the first."""
    return a.reshape(-1)[::stats.hist_step(a.size)]


def finite_nonzero(a: np.ndarray) -> int:
    x = np.asarray(a).astype(np.float64)
    return int(np.count_nonzero(np.isfinite(x) & (x != 0)))


def test_hist_step():
    s, top = stats.HIST_SAMPLE, stats.HIST_STRIDE
    assert [stats.hist_step(n) for n in (0, 1, s, 2 * s - 1)] == [1, 1, 1, 1]
    assert stats.hist_step(2 * s) == min(2, top) and stats.hist_step(1 << 40) == top
    for n in (2 * s, 3 * s - 1, 4 * s + 3, 9 * s, 1 << 20):  # never fewer than HIST_SAMPLE sampled
        assert -(-n // stats.hist_step(n)) >= s


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16, np.float64, np.int32],
                         ids=lambda d: np.dtype(d).name)
def test_large_chunk_bins_a_strided_sample_exactly(dtype):
    """A chunk past 2 × HIST_SAMPLE: the bins equal numpy's over the same strided sample, the exact counts are over
    every element (zeros, NaN and Inf placed both on and off the sampled positions)."""
    rng = np.random.default_rng(11)
    n = 4 * stats.HIST_SAMPLE + 5
    a = spread(rng, n, dtype)
    k = stats.hist_step(n)
    assert k == min(4, stats.HIST_STRIDE) and k > 1
    zero_at = [8, 9, 10, 11, 4 * k + 1, n - 1]  # some sampled (multiples of k), some not
    a[zero_at] = 0
    if np.dtype(dtype).kind == "f":
        a[[0, 3, 5 * k]] = np.nan
        a[[7 * k, 7]] = np.inf
        a[13] = -np.inf
        a[[6 * k, 6 * k + 1]] = ml_dtypes.finfo(dtype).smallest_subnormal
    x = a.astype(np.float64)
    got = stats.finish(stats.partial(a))
    sample = a[::k]
    assert got["hist"] == reference(sample)
    assert got["hist_of"] == sample.size == -(-n // k) and sum(got["hist"]) == finite_nonzero(sample)
    assert got["count"] == n and got["zeros"] == int(np.count_nonzero(x == 0)) >= len(zero_at)
    assert (got["nan"], got["inf"]) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))
    fin = x[np.isfinite(x)]
    assert (got["min"], got["max"]) == (fin.min(), fin.max())
    assert got["mean"] == pytest.approx(fin.mean(), rel=1e-9, abs=1e-12)
    assert got["l2"] == pytest.approx(np.sqrt(np.sum(fin ** 2)), rel=1e-9)


def test_stride_one_bins_every_element(monkeypatch):
    monkeypatch.setattr(stats, "HIST_STRIDE", 1)
    a = spread(np.random.default_rng(12), 5 * stats.HIST_SAMPLE, np.float32)
    got = stats.finish(stats.partial(a))
    assert got["hist"] == reference(a) and got["hist_of"] == a.size


def test_zeros_are_exact_when_the_sample_misses_them():
    a = np.full(4 * stats.HIST_SAMPLE, 0.5, np.float32)
    a[1::stats.hist_step(a.size)] = 0  # none sampled
    got = stats.finish(stats.partial(a))
    assert got["zeros"] == a.size // stats.hist_step(a.size) and sum(got["hist"]) == got["hist_of"]
    assert stats.finish(stats.partial(np.full(3 * stats.HIST_SAMPLE, 2.0, np.float32)))["zeros"] == 0  # 0 < min
    neg = -np.ones(3 * stats.HIST_SAMPLE)
    neg[-1] = -0.0
    assert stats.finish(stats.partial(neg))["zeros"] == 1  # max == -0.0: counted


def test_merged_sampled_chunks_are_the_sum_of_their_parts():
    rng = np.random.default_rng(13)
    s = stats.HIST_SAMPLE
    a = spread(rng, 11 * s + 17, np.float32)
    a[rng.choice(a.size, 300, replace=False)] = 0
    a[rng.choice(a.size, 9, replace=False)] = np.nan
    cuts = [0, 5, 2 * s + 5, 2 * s + 6, 6 * s, 9 * s + 1, a.size]  # strides 1, 2, 1, 3, 3, 2 (at HIST_STRIDE >= 3)
    parts = [a[i:j] for i, j in zip(cuts, cuts[1:])]
    merged = stats.finish(functools.reduce(stats.merge, map(stats.partial, parts), stats.Partial()))
    assert merged["hist"] == np.sum([reference(sample_of(p)) for p in parts], axis=0).tolist()
    assert merged["hist_of"] == sum(sample_of(p).size for p in parts)
    assert (merged["count"], merged["zeros"], merged["nan"]) == (a.size, 300, 9)
    block = 3 * s  # of_array: the same, block by block
    blocks = [a[i:i + block] for i in range(0, a.size, block)]
    got = stats.of_array(a, block=block)
    assert got["hist"] == np.sum([reference(sample_of(b)) for b in blocks], axis=0).tolist()
    assert got["hist_of"] == sum(sample_of(b).size for b in blocks) and got["zeros"] == 300


def test_bins_by_hand():
    """Values placed by the definition, not by numpy: octave [2^k, 2^(k+1)) per sign, open outer bins."""
    values = {1.0: 56, 1.5: 56, 0.75: 55, 2.0 ** -24: 32, 2.0 ** -23: 33, 1e-30: 32, 127.0: 62, 128.0: 63, 1e30: 63,
              -1.0: 7, -0.75: 8, -(2.0 ** -23): 30, -1e-30: 31, -128.0: 0, -1e30: 0}
    for v, expected in values.items():
        hist = stats.partial(np.array([v], np.float64)).hist
        assert hist.index(1) == expected and sum(hist) == 1, v


def test_edges():
    edges = stats.hist_edges()
    assert len(edges) == stats.HIST_BINS + 1 == 65
    assert edges == sorted(edges) and edges[32] == 0.0 and edges == [-e for e in reversed(edges)]
    assert (edges[0], edges[33], edges[-1]) == (-256.0, 2.0 ** -23, 256.0)
    assert all(edges[i + 1] / edges[i] == 2 for i in range(33, 64))


def test_merged_chunk_partials_equal_the_whole():
    rng = np.random.default_rng(10)
    a = spread(rng, 30001, np.float32)
    a[rng.choice(a.size, 50, replace=False)] = 0
    a[rng.choice(a.size, 7, replace=False)] = np.nan  # some chunks take the masked path
    cuts = [0, 1, 999, 5000, 17000, 17001, a.size]
    merged = functools.reduce(stats.merge, (stats.partial(a[i:j]) for i, j in zip(cuts, cuts[1:])), stats.Partial())
    whole = stats.partial(a)
    assert merged.hist == whole.hist and merged.hist_of == whole.hist_of == a.size
    assert (merged.count, merged.zeros, merged.nan) == (whole.count, whole.zeros, whole.nan)
    assert stats.of_array(a, block=4096)["hist"] == stats.finish(whole)["hist"] == reference(a)


def test_empty_and_all_nan_have_a_histogram_of_zeros():
    for a in (np.zeros(0, np.float32), np.full(9, np.nan, np.float32), np.zeros(5, np.float16)):
        assert stats.finish(stats.partial(a))["hist"] == [0] * stats.HIST_BINS


def test_stored_histogram_helpers():
    current = stats.finish(stats.partial(np.array([1.0, -3.0, 0.0], np.float32)))
    old = {k: v for k, v in current.items() if k != "hist"}
    edges, counts, of = stats.histogram(current)
    assert edges == stats.hist_edges() and counts == current["hist"] and sum(counts) == 2 and of == 3
    before_sampling = {k: v for k, v in current.items() if k != "hist_of"}  # bins over every element
    assert stats.histogram(before_sampling)[1:] == (counts, 3) and not stats.stale(before_sampling)
    assert stats.histogram(old) is None and stats.histogram({}) is None
    assert stats.histogram({"hist": [1, 2]}) is None  # not this layout: not drawn as if it were
    assert stats.stale(old) and not stats.stale(current) and not stats.stale({})
