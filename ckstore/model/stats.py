"""Pure tensor statistics: per-chunk partials merged exactly (Chan et al.), and change statistics between versions.

Moments (mean, std, L2 norm) and min/max are over the finite elements; NaN and Inf are counted separately, so one
bad value does not hide the shape of the rest; `count`, `zeros`, `nan` and `inf` are exact over every element.
The histogram counts finite nonzero elements in fixed bins (see `hist_edges`): the same edges for every chunk,
tensor and commit, so histograms add up and compare. For large chunks it is a deterministic systematic sample:
every k-th element of the chunk from its first, k = `hist_step(n)` (1 below 2 × HIST_SAMPLE elements, so small
tensors are binned exactly; at most HIST_STRIDE), so at least HIST_SAMPLE elements are sampled per chunk. The
stored `hist_of` is the number of elements sampled (zeros, NaN and Inf among them, which fall in no bin), summed
over the chunks; `sum(hist)` is the sampled elements that are finite and nonzero, and `hist[i] * count / hist_of`
estimates bin i over every element. Stats written before sampling have no `hist_of`: their bins are over every
element (`hist_of` = `count`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


# The histogram: one bin per octave of magnitude [2^k, 2^(k+1)) for k = HIST_LOW .. HIST_HIGH-1, per sign.
# 2^-24 is the smallest float16 subnormal; the top octave [128, 256) is beyond almost every weight. Magnitudes
# below 2^(HIST_LOW+1) (subnormals included) count in the lowest bin of their sign, magnitudes of 2^(HIST_HIGH-1)
# and up in the highest; zeros, NaN and Inf are not binned (they have their own counts).
HIST_LOW, HIST_HIGH = -24, 8
OCTAVES = HIST_HIGH - HIST_LOW  # bins per sign
HIST_BINS = 2 * OCTAVES  # negative values in bins 0..31 (largest magnitude first), positive in 32..63
# The sample: at least HIST_SAMPLE elements per chunk, every k-th with k at most HIST_STRIDE (see `hist_step`).
# Measured by bench/hist_cost.py (docs/bench-codecs.md, "Histogram cost"), share of commit CPU for fp32 new, fp32
# next step, bf16 new, bf16 next step: every element 16.1, 9.6, 20.8, 15.0%; HIST_STRIDE 2: 11.8, 6.8, 15.4, 9.9%;
# 4: 7.9, 4.5, 9.4, 6.1%; 8: 7.5, 4.3, 5.7, 3.8% (1 MiB fp32 chunks stay at k = 4). 4 is the smallest under 10%.
HIST_SAMPLE, HIST_STRIDE = 1 << 16, 4
_NO_HIST = (0,) * HIST_BINS


@dataclass(frozen=True, slots=True)
class Partial:
    """Mergeable statistics of some elements: counts, mean/M2/sum of squares and min/max of the finite ones, and
    the histogram (HIST_BINS counts) of the finite nonzero ones among the `hist_of` elements sampled."""

    count: int = 0
    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0
    sumsq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    zeros: int = 0
    nan: int = 0
    inf: int = 0
    hist: tuple[int, ...] = _NO_HIST
    hist_of: int = 0


def hist_edges() -> list[float]:
    """The HIST_BINS + 1 bin edges, ascending: -2^8, -2^7, ..., -2^-23, 0, 2^-23, ..., 2^8.

    Bins are octaves of magnitude per sign: bin 32 + j holds values in [2^(j-24), 2^(j-23)) and bin 31 - j their
    negatives, so a negative bin is closed at its upper (smaller-magnitude) edge. The outer edges ±2^8 and the middle
    0 are nominal: bins 0 and 63 also hold every larger magnitude, bins 31 and 32 every nonzero magnitude below
    2^-23, subnormals included."""
    pos = [2.0 ** k for k in range(HIST_LOW + 1, HIST_HIGH + 1)]
    return [-m for m in reversed(pos)] + [0.0] + pos


def hist_step(n: int) -> int:
    """The sampling stride of a chunk of `n` elements: n // HIST_SAMPLE capped at HIST_STRIDE, so at least
    HIST_SAMPLE elements are sampled (k = 1, every element, for chunks below 2 × HIST_SAMPLE)."""
    return max(1, min(HIST_STRIDE, n // HIST_SAMPLE))


def histogram(stored: dict) -> tuple[list[float], list[int], int] | None:
    """A stored stats dict's histogram as (edges, counts, hist_of) for renderers: the raw (sampled) counts and
    the number of elements they were counted over (`count` for stats written before sampling); None when it has
    none (stats written before histograms, or of a tensor that has no statistics)."""
    counts = stored.get("hist")
    if not isinstance(counts, list) or len(counts) != HIST_BINS:
        return None
    return hist_edges(), [int(c) for c in counts], hist_of(stored)


def hist_of(stored: dict) -> int:
    """The number of elements a stored histogram was counted over: `hist_of`, or `count` when absent."""
    return int(stored.get("hist_of", stored.get("count") or 0))


def stale(stored: dict) -> bool:
    """True for statistics written by an older version: they exist but lack the histogram, so they are computed
    again rather than reused."""
    return bool(stored) and "hist" not in stored


def _key_bins(exp_bits: int) -> np.ndarray:
    """Bin of every sign+exponent key of a float layout with `exp_bits` exponent bits; HIST_BINS for NaN/Inf."""
    keys = np.arange(1 << (exp_bits + 1))
    exp = keys & ((1 << exp_bits) - 1)
    octave = np.clip(exp - ((1 << (exp_bits - 1)) - 1) - HIST_LOW, 0, OCTAVES - 1)  # exponent 0 (subnormal): 0
    bins = np.where(keys >> exp_bits, OCTAVES - 1 - octave, OCTAVES + octave)
    bins[exp == (1 << exp_bits) - 1] = HIST_BINS
    return bins


# float32 and float64 working views: (bits type, signed type of the same width, mantissa bits, key -> bin)
_LAYOUTS = {4: (np.uint32, np.int32, 23, _key_bins(8)), 8: (np.uint64, np.int64, 52, _key_bins(11))}


def _hist(a: np.ndarray) -> tuple[int, ...]:
    """The histogram of a float32 or float64 working view (a strided sample in `partial`), from its sign and
    exponent bits: one shift and one bincount over the sign+exponent keys, then the few hundred key counts folded
    into bins. Measured over every element of 1 MiB of float32: 0.31 ms; mapping each element to its bin first (a
    lookup table, or clip and or) 0.6 ms, one key per pair of elements 2.1 ms, np.histogram of log2|x| 1.8 ms;
    bincount in cache-sized blocks was no faster (it costs about 1 ns per element however it is fed), hence the
    sample. Zeros have exponent 0, like subnormals:
    only when some element has exponent 0 are the zeros of `a` counted (weights seldom hold any), and only when
    some of those are subnormals is `a` looked at a third time, for the sign of the zeros. NaN and Inf (the top
    exponent) fall in no bin."""
    bits_t, signed_t, mantissa, key_bins = _LAYOUTS[a.dtype.itemsize]
    bits = a.view(bits_t)
    counts = np.bincount((bits >> mantissa).view(signed_t), minlength=key_bins.size)
    neg = key_bins.size // 2  # the key of -0.0 and of the negative subnormals; +0.0 and the positive ones: 0
    exp0 = int(counts[0] + counts[neg])
    zeros = int(np.count_nonzero(a == 0)) if exp0 else 0
    if zeros == exp0:  # no subnormals: every exponent-0 element is a zero
        counts[0] = counts[neg] = 0
    elif zeros:
        neg_zeros = int(np.count_nonzero(bits == bits_t(neg) << bits_t(mantissa)))
        counts[0] -= zeros - neg_zeros
        counts[neg] -= neg_zeros
    binned = np.bincount(key_bins, weights=counts, minlength=HIST_BINS + 1)[:HIST_BINS]  # exact below 2^53
    return tuple(binned.astype(np.int64).tolist())


def _sampled_hist(a: np.ndarray) -> tuple[tuple[int, ...], int]:
    """(histogram, elements sampled) of a chunk's working view: every `hist_step`-th element, a strided view."""
    k = hist_step(a.size)
    s = a[::k] if k > 1 else a
    return _hist(s), s.size


def _zeros(a: np.ndarray, lo: float, hi: float) -> int:
    """The exact number of zeros of `a`, counted only when its finite range [lo, hi] holds 0."""
    return int(np.count_nonzero(a == 0)) if lo <= 0 <= hi else 0


def as_float64(arr: np.ndarray) -> np.ndarray:
    """A float64 working copy (bfloat16 widened through its bits: exact and far faster than a generic cast)."""
    if arr.dtype.kind == "c":
        raise ValueError("complex tensors have no ordered statistics")
    if arr.dtype.name == "bfloat16":
        return (arr.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return arr.astype(np.float64)  # ml_dtypes' float8 cast directly


def sumsq(x: np.ndarray) -> float:
    # einsum runs its own SIMD loop: np.dot would call OpenBLAS, whose threads oversubscribe the worker pool
    # (measured 15.6 ms instead of 0.7 ms per MiB on 2 cores)
    """The sum of squares of a 1-D array, as a float."""
    return float(np.einsum("i,i->", x, x))


def _widen(arr: np.ndarray) -> np.ndarray:
    """The cheapest exact working type: float32 for narrow floats (bfloat16 through its bits), float64 for
    integers and booleans, float32/float64 themselves unchanged."""
    if arr.dtype.kind == "c":
        raise ValueError("complex tensors have no ordered statistics")
    if arr.dtype.name == "bfloat16":
        return (arr.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if arr.dtype.kind == "f" and arr.dtype.itemsize >= 4:
        return arr
    return arr.astype(np.float32 if arr.dtype.kind in "fV" else np.float64)  # fp16 and float8 fit in float32


def partial(arr: np.ndarray) -> Partial:
    """Statistics of one chunk of elements."""
    a = _widen(arr.reshape(-1))
    n = a.size
    if n == 0:
        return Partial()
    lo, hi = float(a.min()), float(a.max())  # in the narrow type: fast, and NaN or Inf shows up in one of them
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _partial_masked(a)
    hist, sampled = _sampled_hist(a)
    zeros = _zeros(a, lo, hi)
    x = a.astype(np.float64)  # our own working copy: sums in float64, centred in place
    mean = float(x.sum()) / n
    x -= mean
    m2 = sumsq(x)
    return Partial(n, n, mean, m2, m2 + n * mean * mean, lo, hi, zeros, 0, 0, hist, sampled)  # Σx² = Σ(x-mean)² + n·mean²


def _partial_masked(a: np.ndarray) -> Partial:
    """The slow path for a chunk holding NaN or Inf: moments over the finite elements only."""
    x = a.astype(np.float64)
    n = x.size
    nan = int(np.count_nonzero(np.isnan(x)))
    hist, sampled = _sampled_hist(a)  # NaN and Inf fall in no bin
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Partial(n, 0, 0.0, 0.0, 0.0, math.inf, -math.inf, 0, nan, n - nan, hist, sampled)
    finite = x.size
    mean = float(x.sum()) / finite
    lo, hi = float(x.min()), float(x.max())
    zeros = _zeros(x, lo, hi)
    sq = sumsq(x)
    x -= mean
    return Partial(n, finite, mean, sumsq(x), sq, lo, hi, zeros, nan, n - finite - nan, hist, sampled)


def merge(a: Partial, b: Partial) -> Partial:
    """The statistics of two disjoint sets of elements combined exactly (Chan et al. for mean and M2; the
    histograms add bin by bin, and so do the elements they were counted over)."""
    if not a.finite:
        mean, m2 = b.mean, b.m2
    elif not b.finite:
        mean, m2 = a.mean, a.m2
    else:
        n = a.finite + b.finite
        delta = b.mean - a.mean
        mean = a.mean + delta * b.finite / n
        m2 = a.m2 + b.m2 + delta * delta * a.finite * b.finite / n
    return Partial(a.count + b.count, a.finite + b.finite, mean, m2, a.sumsq + b.sumsq, min(a.min, b.min),
                   max(a.max, b.max), a.zeros + b.zeros, a.nan + b.nan, a.inf + b.inf,
                   tuple(x + y for x, y in zip(a.hist, b.hist)), a.hist_of + b.hist_of)


def finish(p: Partial) -> dict:
    """The stored form: count, mean, std (population), min, max, l2, zeros, nan, inf (all exact over every
    element), hist and hist_of. `hist` is HIST_BINS raw counts over `hist_edges()` of the finite nonzero elements
    among the `hist_of` elements sampled (every `hist_step(n)`-th element of each chunk of n, so every element
    of a chunk below 2 × HIST_SAMPLE); when hist_of == count they sum to count - zeros - nan - inf, and
    `hist[i] * count / hist_of` estimates bin i over every element. Stats without `hist_of` (written before
    sampling) have bins over every element."""
    if not p.finite:
        return {"count": p.count, "mean": None, "std": None, "min": None, "max": None, "l2": 0.0,
                "zeros": p.zeros, "nan": p.nan, "inf": p.inf, "hist": list(p.hist), "hist_of": p.hist_of}
    return {"count": p.count, "mean": p.mean, "std": math.sqrt(max(p.m2, 0.0) / p.finite), "min": p.min,
            "max": p.max, "l2": math.sqrt(p.sumsq), "zeros": p.zeros, "nan": p.nan, "inf": p.inf,
            "hist": list(p.hist), "hist_of": p.hist_of}


def of_array(arr: np.ndarray, block: int = 1 << 20) -> dict:
    """The stored statistics of a whole array, computed `block` elements at a time and merged (the working copies
    stay small): the same figures a commit stores, for tensors whose stored ones are stale."""
    flat = arr.reshape(-1)
    parts = (partial(flat[k:k + block]) for k in range(0, flat.size, block))
    return finish(functools.reduce(merge, parts, Partial()))


# -- change statistics between two versions of a tensor ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeltaPartial:
    """Mergeable change statistics of some elements: counts, squared and largest difference, new NaN/Inf."""

    count: int = 0
    changed: int = 0
    sq: float = 0.0  # sum of squared differences over elements finite in both versions
    max_abs: float = 0.0
    nan_new: int = 0  # NaN in the new version where the old had none
    inf_new: int = 0


def delta_partial(old: np.ndarray, new: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> DeltaPartial:
    """Change statistics of one chunk; identical chunks need no call (they contribute only their count)."""
    a, b = as_float64(old.reshape(-1)), as_float64(new.reshape(-1))
    d = b - a
    sq = sumsq(d)
    if math.isfinite(sq):  # no NaN or Inf on either side (they would make d non-finite): skip the masks
        af, nan_new, inf_new = a, 0, 0
    else:
        both = np.isfinite(a) & np.isfinite(b)
        af, d = a[both], d[both]
        sq = sumsq(d)
        nan_new = int(np.count_nonzero(np.isnan(b) & ~np.isnan(a)))
        inf_new = int(np.count_nonzero(np.isinf(b) & ~np.isinf(a)))
    if atol or rtol:
        changed = int(np.count_nonzero(np.abs(d) > atol + rtol * np.abs(af)))
    else:  # exact: an element changed when any of its bytes did (so NaN payloads and -0.0 count too)
        bits = np.dtype(f"u{old.dtype.itemsize}")  # every dtype here is 1, 2, 4 or 8 bytes wide
        changed = int(np.count_nonzero(old.reshape(-1).view(bits) != new.reshape(-1).view(bits)))
    return DeltaPartial(a.size, changed, sq, float(np.abs(d).max()) if d.size else 0.0, nan_new, inf_new)


def merge_delta(a: DeltaPartial, b: DeltaPartial) -> DeltaPartial:
    """The change statistics of two disjoint sets of elements combined."""
    return DeltaPartial(a.count + b.count, a.changed + b.changed, a.sq + b.sq, max(a.max_abs, b.max_abs),
                        a.nan_new + b.nan_new, a.inf_new + b.inf_new)


def finish_delta(p: DeltaPartial, old_l2: float, new_l2: float) -> dict:
    """`old_l2`/`new_l2` are the tensors' stored norms: a·b = (‖a‖² + ‖b‖² − ‖a−b‖²) / 2 gives the cosine
    without reading the chunks that did not change."""
    l2 = math.sqrt(p.sq)
    cosine = None
    if old_l2 and new_l2:
        cosine = max(-1.0, min(1.0, (old_l2 ** 2 + new_l2 ** 2 - p.sq) / (2 * old_l2 * new_l2)))
    return {"elements": p.count, "changed": p.changed, "frac_changed": p.changed / p.count if p.count else 0.0,
            "l2_delta": l2, "rel_l2": l2 / old_l2 if old_l2 else (0.0 if l2 == 0 else math.inf),
            "max_abs": p.max_abs, "cosine": cosine, "nan_appeared": p.nan_new, "inf_appeared": p.inf_new}
