"""What the value histogram of tensor statistics costs: per 1 MiB chunk, and as a share of a whole commit.

    python bench/hist_cost.py [--mb 320] [--runs 7] [--stride 4] [--report docs/bench-codecs.md]

Per chunk: `stats.partial` on seeded normal weights (× 0.02) with the histogram and with it switched off
(`stats._hist` returning empty counts; the exact zero count is outside it, as before histograms), median of 21
runs of process CPU time on one thread. The histogram bins a systematic sample of each chunk (`stats.hist_step`);
`--stride K` sets its largest stride (`stats.HIST_STRIDE`, default the committed one; 1 bins every element).
Whole commit: a safetensors checkpoint of about `--mb` MB generated with numpy (GPT-like tensors: matrices of normal
weights × 0.02, norms near 1, biases near 0) and its next training step (every element moved by ±3e-5), both read
once so they are hot in the page cache, committed one after the other with the Python API into a fresh repository
(the first stores every chunk whole, the second every chunk as a delta against the first), with and without the
histogram, alternating, `--runs` times each; medians of wall and process CPU time, and of the CPU time spent in
the histogram itself (each call timed with the thread's CPU clock). The section "Histogram cost" of the report is
rewritten; the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import ml_dtypes
import numpy as np

from ckstore import Repo
from ckstore.allocator import tune
from ckstore.model import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.measure import median_time  # noqa: E402
from lib.safetensors_io import encode_header  # noqa: E402

CHUNK = 1 << 20
DTYPES = {"fp32": (np.float32, "F32"), "bf16": (ml_dtypes.bfloat16, "BF16"), "fp16": (np.float16, "F16")}
HEADING = "## Histogram cost"
TARGET = 0.10  # of commit time


@contextmanager
def histogram_off() -> Iterator[None]:
    """Statistics without the histogram: the one function that computes it returns empty counts (the exact zero
    count is `partial`'s own, as before histograms)."""
    real = stats._hist
    stats._hist = lambda a: stats._NO_HIST
    try:
        yield
    finally:
        stats._hist = real


@contextmanager
def histogram_timed(spent: list[float]) -> Iterator[None]:
    """The histogram as committed, each call's thread CPU time appended to `spent`."""
    real = stats._hist

    def timed(a: np.ndarray) -> tuple:
        t = time.thread_time()
        try:
            return real(a)
        finally:
            spent.append(time.thread_time() - t)  # list.append is atomic: the workers share the list

    stats._hist = timed
    try:
        yield
    finally:
        stats._hist = real


def per_chunk() -> list[dict]:
    """stats.partial on one 1 MiB chunk per dtype, with and without the histogram (CPU ms, median of 21)."""
    rng = np.random.default_rng(0)
    rows = []
    for name, (dtype, _) in DTYPES.items():
        a = (rng.standard_normal(CHUNK // np.dtype(dtype).itemsize) * 0.02).astype(dtype)
        with_ms = median_time(lambda: stats.partial(a), 21, clock=time.process_time)[0] * 1000
        with histogram_off():
            without_ms = median_time(lambda: stats.partial(a), 21, clock=time.process_time)[0] * 1000
        rows.append({"dtype": name, "partial_ms": with_ms, "without_hist_ms": without_ms,
                     "hist_ms": with_ms - without_ms, "ratio": with_ms / without_ms})
    return rows


def gpt_tensors(mb: int) -> dict[str, np.ndarray]:
    """GPT-like float32 tensors of about `mb` MB."""
    rng = np.random.default_rng(1)
    d, tensors, total, layer = 1024, {}, 0, 0
    while total < mb * 1e6:
        for part, shape in (("attn.qkv.weight", (3 * d, d)), ("attn.proj.weight", (d, d)),
                            ("mlp.fc.weight", (4 * d, d)), ("mlp.proj.weight", (d, 4 * d))):
            tensors[f"h.{layer}.{part}"] = rng.standard_normal(shape, np.float32) * 0.02
        tensors[f"h.{layer}.ln.weight"] = 1 + rng.standard_normal(d, np.float32) * 0.05
        tensors[f"h.{layer}.mlp.fc.bias"] = rng.standard_normal(4 * d, np.float32) * 1e-3
        total = sum(t.size * 4 for t in tensors.values())
        layer += 1
    return tensors


def write_checkpoint(path: Path, tensors: dict[str, np.ndarray], dtype_name: str) -> int:
    """`tensors` cast to one dtype as a safetensors file; returns its size in bytes."""
    dtype, code = DTYPES[dtype_name]
    header, offset, cast = {}, 0, {k: t.astype(dtype) for k, t in tensors.items()}
    for name, t in cast.items():
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    with open(path, "wb") as f:
        f.write(encode_header(header))
        for t in cast.values():
            f.write(t.tobytes())
    return path.stat().st_size


def commit_two(v0: Path, v1: Path, work: Path, hist: bool) -> list[tuple[float, float, float]]:
    """Wall, process CPU and histogram CPU seconds of committing `v0` into a fresh repository (every chunk new),
    then `v1` (every chunk changed: delta frames against v0's); without the histogram when not `hist`."""
    repo_dir = work / "repo"
    shutil.rmtree(repo_dir, ignore_errors=True)
    out = []
    with Repo.init(repo_dir) as repo:
        for src in (v0, v1):
            spent: list[float] = []
            with histogram_timed(spent) if hist else histogram_off():
                wall, cpu = time.perf_counter(), time.process_time()
                repo.commit(src, "bench", capture_env=False)
                out.append((time.perf_counter() - wall, time.process_time() - cpu, sum(spent)))
    return out


def whole_commit(mb: int, runs: int, dtype_name: str, work: Path) -> list[dict]:
    """Median commit times of a checkpoint of about `mb` MB and of its next training step, with and without the
    histogram, the variants alternating."""
    base = gpt_tensors(mb * 4 // np.dtype(DTYPES[dtype_name][0]).itemsize)  # about `mb` MB once cast
    rng = np.random.default_rng(2)
    step = {k: t - 3e-4 * np.sign(rng.standard_normal(t.shape, np.float32)) * 0.1 for k, t in base.items()}
    v0, v1 = work / f"v0-{dtype_name}.safetensors", work / f"v1-{dtype_name}.safetensors"
    size = write_checkpoint(v0, base, dtype_name)
    write_checkpoint(v1, step, dtype_name)
    del base, step
    v0.read_bytes(), v1.read_bytes()  # hot: in the page cache
    commit_two(v0, v1, work, True)  # warm-up (imports, thread pool, allocator)
    on, off = [], []
    for _ in range(runs):
        on.append(commit_two(v0, v1, work, True))
        off.append(commit_two(v0, v1, work, False))
    rows = []
    for k, kind in enumerate(("new", "next step")):
        med = {name: statistics.median(r[k][i] for r in v) for name, v, i in
               (("wall_s", on, 0), ("cpu_s", on, 1), ("hist_cpu_s", on, 2), ("wall_off_s", off, 0),
                ("cpu_off_s", off, 1))}
        rows.append({"dtype": dtype_name, "commit": kind, "bytes": size, **med, "runs": runs,
                     "wall_share": (med["wall_s"] - med["wall_off_s"]) / med["wall_s"],
                     "cpu_share": (med["cpu_s"] - med["cpu_off_s"]) / med["cpu_s"],
                     "hist_cpu_share": statistics.median(r[k][2] / r[k][1] for r in on)})
    return rows


def report(chunks: list[dict], commits: list[dict], machine: str, out: Path, stride: int) -> None:
    """Rewrite the report's "Histogram cost" section (appended when absent), keeping everything else."""
    lines = [HEADING, "", "Generated by `python bench/hist_cost.py` (see its docstring for the method) on "
             f"{machine}. `stats.partial` per 1 MiB chunk of normal weights × 0.02, process CPU time on one "
             "thread, median of 21; `without` has the histogram switched off.", "",
             f"Sampling: the bins count every k-th element of a chunk of n, k = min({stride}, n // "
             f"{stats.HIST_SAMPLE:,}) and at least 1 (`stats.hist_step`; `hist_of` stores the elements sampled), "
             f"so at least {stats.HIST_SAMPLE:,} per chunk and every element of chunks below "
             f"{2 * stats.HIST_SAMPLE:,}: k = {stats.hist_step(CHUNK // 4)} for a 1 MiB float32 chunk and "
             f"k = {stats.hist_step(CHUNK // 2)} for a 16-bit one. count, zeros, nan, inf and the moments stay exact "
             "over every element (the zeros counted by `partial` itself when min ≤ 0 ≤ max).", "",
             "| dtype | partial ms | without ms | histogram ms | ratio |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['dtype']} | {r['partial_ms']:.3f} | {r['without_hist_ms']:.3f} | {r['hist_ms']:.3f} | "
              f"{r['ratio']:.2f}× |" for r in chunks]
    lines += ["", "Whole commits, hot page cache: a checkpoint into a fresh repository (`new`: every chunk stored "
              "whole), then its next training step (`next step`: every chunk changed, stored as a delta), median of "
              f"{commits[0]['runs']} alternating runs each:", "",
              "| checkpoint | commit | wall s | without | Δ share | CPU s | without | Δ share | histogram CPU s | "
              "share of CPU |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {c['bytes'] / 1e6:.0f} MB {c['dtype']} | {c['commit']} | {c['wall_s']:.3f} | {c['wall_off_s']:.3f} | "
              f"{c['wall_share']:.1%} | {c['cpu_s']:.3f} | {c['cpu_off_s']:.3f} | {c['cpu_share']:.1%} | "
              f"{c['hist_cpu_s']:.3f} | {c['hist_cpu_share']:.1%} |" for c in commits]
    lines += ["", "`Δ share` is (with − without) / with, of the medians; `histogram CPU s` is the thread CPU time "
              "spent in the histogram during the commit with it (every call timed), and `share of CPU` its median "
              "ratio to the commit's process CPU time (the steadier figure: the Δ columns subtract two noisy "
              "medians).", "",
              f"Target: the histogram at most {TARGET:.0%} of commit time. Met by: "
              + (", ".join(f"{c['dtype']} {c['commit']}" for c in commits if c["hist_cpu_share"] <= TARGET)
                 or "none of these") + "; over it: "
              + (", ".join(f"{c['dtype']} {c['commit']} ({c['hist_cpu_share']:.1%})" for c in commits
                           if c["hist_cpu_share"] > TARGET) or "none") + ". "
              "The cost is one np.bincount over the sampled elements, about 1 ns per element however it is fed (see "
              "`stats._hist` for the alternatives measured), so it falls with k: a 16-bit chunk, twice the "
              "elements of a float32 one, costs twice as much at the same k; chunks equal to their parent's and "
              f"unchanged tensors cost nothing. Largest stride k measured here: {stride}."]
    lines += ["", "```json", json.dumps({"stride": stride, "per_chunk": chunks, "commit": commits}, indent=1), "```",
              ""]
    text = out.read_text() if out.exists() else ""
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines)
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + "\n".join(lines) + (text[end + 1:] if end >= 0 else "")
    out.write_text(text)


def main() -> None:
    """Measure, print the section, rewrite it in the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=320, help="checkpoint size for the whole-commit figure")
    ap.add_argument("--runs", type=int, default=7, help="commits per variant")
    ap.add_argument("--dtype", action="append", choices=list(DTYPES), help="checkpoint dtypes (default fp32, bf16)")
    ap.add_argument("--stride", type=int, default=stats.HIST_STRIDE,
                    help=f"largest histogram sampling stride (default {stats.HIST_STRIDE}; 1: every element)")
    ap.add_argument("--report", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "bench-codecs.md")
    args = ap.parse_args()
    tune()
    stats.HIST_STRIDE = args.stride
    load = os.getloadavg()[0]
    chunks = per_chunk()
    with tempfile.TemporaryDirectory(prefix="ck-hist-") as tmp:
        commits = [row for d in args.dtype or ["fp32", "bf16"] for row in whole_commit(args.mb, args.runs, d, Path(tmp))]
    machine = f"{os.cpu_count()} CPUs, load average {load:.1f} before and {os.getloadavg()[0]:.1f} after the run"
    report(chunks, commits, machine, args.report, args.stride)
    text = args.report.read_text()
    print(text[text.find(HEADING):].split("```json")[0])


if __name__ == "__main__":
    main()
