"""The targets of shared/BENCHMARKS.md checked on ckstore's figures: a data table and one generic evaluator.

A target names the series it looks at (`scenario`), the figure it reads there (`metric`: a function of one series
giving one or more samples), how the samples combine (`over`), and what they are compared with (`comparison`
against `threshold`, or against each sample's own bound when the threshold is None).

    over="one"      one sample (one series): its value against the threshold
    over="median"   the median of the samples against the threshold; the slowest sample is named
    over="largest"  the sample of the largest input (its weight) speaks for the target
    over="every"    every sample must pass; the count that did and the failures are shown
    over="worst"    every sample must be within its bound; the worst one relative to its bound is named
"""

from __future__ import annotations

import operator
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from . import ALL_DTYPES, KIB, MIB
from .report import fmt_b, fmt_r
from .summary import med, tool_summary

SLACK = 64 * KIB
# the "figures seen here" table of shared/BENCHMARKS.md (mix series, size S)
REACHABLE = {"fp32": 2.55, "bf16": 3.60}
SINGLE_DENSE = {"fp32": 1.19, "bf16": 1.49}
SHOWN_FAILURES = 6  # an "every" target lists at most this many failures


@dataclass(frozen=True)
class Target:
    name: str  # as the report states it; {series} and the fields of the sample are filled in
    scenario: str | tuple[str, ...]  # "mix-fp32": that series; ("C", "D"): each in every dtype; "*": every series;
    #                                  "help": the `ckstore --help` timings
    metric: str  # a key of METRICS
    comparison: str  # ">=", "<=" or "=="
    threshold: Any = None  # None: each sample brings its own bound
    over: str = "one"  # how the samples combine (see the module docstring)
    unit: str = ""  # of a median
    also: str = ""  # a median: what the second figure of the samples is, shown beside it
    says: tuple[str, str] = ("series", "failed")  # every: what is counted, what the failures are called
    tool: str = "ckstore"  # whose figures (ckstore-repack: the same commits, then `ckstore repack`)


@dataclass
class Sample:
    label: str  # where it was measured: a series, a version of one
    value: Any
    bound: Any = None  # this sample's own threshold
    shown: str = ""  # the value as the report writes it
    weight: float = 0  # over="largest": the sample with the largest weight is the one reported
    also: float | None = None  # a second figure (see Target.also)
    failure: str = ""  # how a failed comparison of this sample reads
    fields: dict[str, Any] = field(default_factory=dict)  # filled into the target's name


# ---------------------------------------------------------------- metrics: (series name, series, ckstore summary)


def ratio(name: str, se: dict, s: dict) -> list[Sample]:
    return [Sample(name, s["ratio"], shown=fmt_r(s["ratio"]))]


def v0_ratio(name: str, se: dict, s: dict) -> list[Sample]:
    return [Sample(name, s["v0_ratio"], shown=fmt_r(s["v0_ratio"]))]


def ratio_vs_best_peer(name: str, se: dict, s: dict) -> list[Sample]:
    best = max(((t, tool_summary(se, t)) for t in se["tools"] if not t.startswith("ckstore")),
               key=lambda x: (x[1] or {}).get("ratio") or 0, default=(None, None))
    peer = best[1]["ratio"] if best[1] and best[1]["ratio"] else None
    return [Sample(name, s["ratio"], bound=peer, failure=f"{name}: {best[0]} {peer or 0:.2f}× > {s['ratio']:.2f}×")]


def lora_cost(name: str, se: dict, s: dict) -> list[Sample]:
    a = se.get("adapter")
    if not a:
        return []
    cost = s["added"][a["version"]]
    return [Sample(name, cost, bound=a["compressed"] + SLACK, shown=fmt_b(cost),
                   fields={"version": a["version"], "adapter": fmt_b(a["compressed"])})]


def layout_churn(name: str, se: dict, s: dict) -> list[Sample]:
    what = ["re-shard (v1)", "reorder (v2)", "no-op re-save (v3)"]
    return [Sample(name, max(s["added"][1:4]),
                   shown=" / ".join(f"{w} {fmt_b(b)}" for w, b in zip(what, s["added"][1:4])))]


def new_data_gbs(name: str, se: dict, s: dict) -> list[Sample]:
    cpu = s["cpu_throughput"][0]
    return [Sample(name, s["throughput"][0] / 1e9, also=cpu / 1e9 if cpu else None)]


def later_versions_gbs(name: str, se: dict, s: dict) -> list[Sample]:
    return [Sample(f"{name} v{i}", x / 1e9) for i, x in enumerate(s["throughput"]) if i >= 1]


def recommit_s_per_gib(name: str, se: dict, s: dict) -> list[Sample]:
    if not s["recommit"]:
        return []
    wall, b = s["recommit"]["wall"], se["versions"][-1]["logical"]
    per_gib = wall * (1 << 30) / b
    return [Sample(name, per_gib, weight=b, shown=f"{name}: {wall:.2f} s for {fmt_b(b)} → {per_gib:.2f} s/GiB")]


def against_borg_restic(key: str) -> Callable[[str, dict, dict], list[Sample]]:
    def metric(name: str, se: dict, s: dict) -> list[Sample]:
        out = []
        for peer in ("borg", "restic"):
            p = tool_summary(se, peer)
            if p and p[key] is not None and s[key] is not None:
                out.append(Sample(name, s[key], bound=p[key], failure=f"{name}: {peer} {p[key]:.2f} s < {s[key]:.2f} s"))
        return out
    return metric


def hot_checkout_gbs(name: str, se: dict, s: dict) -> list[Sample]:
    return [Sample(label, x) for label, x in ((f"{name} v0", s["old_hot_gbs"]), (f"{name} newest", s["new_hot_gbs"]))
            if x]


def peak(kind: str) -> Callable[[str, dict, dict], list[Sample]]:
    def metric(name: str, se: dict, s: dict) -> list[Sample]:
        return [Sample(name, max(s[f"{kind}_commit"], s[f"{kind}_checkout"]), bound=64 * MIB + 2 * se["largest_tensor"])]
    return metric


def is_large(se: dict) -> bool:
    return str(se.get("size", "")).startswith("L")  # L and its test twin Ltiny


def checkout_vs_copy(name: str, se: dict, s: dict) -> list[Sample]:
    """Size L: the newest hot checkout against 2 x cp's (i.e. at least half cp's speed)."""
    cp = tool_summary(se, "copy")
    if not is_large(se) or not cp or cp["new_hot"] is None or s["new_hot"] is None:
        return []
    return [Sample(name, s["new_hot"], bound=2 * cp["new_hot"],
                   failure=f"{name}: {s['new_hot']:.2f} s vs cp {cp['new_hot']:.2f} s")]


def large_rss(name: str, se: dict, s: dict) -> list[Sample]:
    if not is_large(se):
        return []
    return [Sample(name, max(s["rss_commit"], s["rss_checkout"]), bound=256 * MIB)]


def identical(name: str, se: dict, s: dict) -> list[Sample]:
    return [Sample(name, s["identical"], failure=name)]


def help_s(name: str, h: dict, s: None) -> list[Sample]:
    shown = f"{h['median']:.3f} s"
    if "installed_median" in h:
        shown += f" (via the installed `{h['installed_path']}`: {h['installed_median']:.3f} s)"
    if h.get("python_runs"):
        shown += f"; the interpreter alone (`python -c pass`, same timing): {statistics.median(h['python_runs']):.3f} s"
    return [Sample(name, h["median"], shown=shown, fields={"runs": len(h["runs"])})]


METRICS: dict[str, Callable[[str, Any, Any], list[Sample]]] = {
    "ratio": ratio, "v0_ratio": v0_ratio, "ratio_vs_best_peer": ratio_vs_best_peer, "lora_cost": lora_cost,
    "layout_churn": layout_churn, "new_data_gbs": new_data_gbs, "later_versions_gbs": later_versions_gbs,
    "recommit_s_per_gib": recommit_s_per_gib, "commit_total_vs_peers": against_borg_restic("commit_total"),
    "new_hot_vs_peers": against_borg_restic("new_hot"), "new_cold_vs_peers": against_borg_restic("new_cold"),
    "old_hot_vs_peers": against_borg_restic("old_hot"),
    "hot_checkout_gbs": hot_checkout_gbs, "peak_rss": peak("rss"), "peak_anon": peak("anon"), "identical": identical,
    "help_s": help_s, "checkout_vs_copy": checkout_vs_copy, "large_rss": large_rss,
}

# ---------------------------------------------------------------- the table

MEMORY = "≤ 64 MiB + 2 × largest tensor (commit and checkout, every series)"
TARGETS: list[Target] = [
    *[Target(f"mix {dt} series store ratio ≥ 0.95 × {r:.2f} = {0.95 * r:.2f}×", f"mix-{dt}", "ratio", ">=", 0.95 * r)
      for dt, r in REACHABLE.items()],
    *[Target(f"single dense checkpoint (mix v0) {dt} ≥ {r:.2f}×", f"mix-{dt}", "v0_ratio", ">=", r)
      for dt, r in SINGLE_DENSE.items()],
    Target("store ratio ahead of every peer on every series", "*", "ratio_vs_best_peer", ">=", over="every",
           says=("series", "behind")),
    *[Target("LoRA version ({series} v{version}) ≤ compressed adapter ({adapter}) + 64 KiB", f"{sc}-{dt}",
             "lora_cost", "<=") for sc in ("mix", "mixsharded", "C", "Cfile") for dt in ALL_DTYPES],
    *[Target(f"D {dt}: re-shard / reorder / no-op re-save each ≤ 64 KiB", f"D-{dt}", "layout_churn", "<=", SLACK)
      for dt in ALL_DTYPES],
    Target("commit of new data (v0 of every series) ≥ 0.5 GB/s (median over series)", "*", "new_data_gbs", ">=", 0.5,
           over="median", unit="GB/s", also="per CPU-second"),
    Target("commit of unchanged tensors (C, Cfile, D v1–v3: new files, known tensors) ≥ 2.5 GB/s", ("C", "Cfile", "D"),
           "later_versions_gbs", ">=", 2.5, over="median", unit="GB/s"),
    Target("no-op re-commit of 1 GiB ≤ 0.5 s (same directory again, largest series)", "*", "recommit_s_per_gib", "<=",
           0.5, over="largest"),
    *[Target(f"{what} faster than borg and restic on every series", "*", f"{key}_vs_peers", "<=", over="every",
             says=("comparisons won", "lost"))
      for what, key in (("commit (total series wall)", "commit_total"), ("newest checkout hot", "new_hot"),
                        ("newest checkout cold", "new_cold"))],
    Target("hot checkout ≥ 1 GB/s end to end (median over oldest+newest of every series)", "*", "hot_checkout_gbs",
           ">=", 1.0, over="median", unit="GB/s"),
    Target(f"peak RSS (ru_maxrss, includes mmapped input pages) {MEMORY}", "*", "peak_rss", "<=", over="worst"),
    Target(f"peak anonymous RSS {MEMORY}", "*", "peak_anon", "<=", over="worst"),
    Target("every restored file byte-identical (sha256), every version of every series", "*", "identical", "==", True,
           over="every", says=("series", "bad")),
    # size L (shared/BENCHMARKS.md, "figures seen at scale"); no rows for series of the other sizes
    Target("size L: newest checkout hot ≥ 0.5 × `cp`'s speed, every series", "*", "checkout_vs_copy", "<=",
           over="every", says=("series", "slower")),
    Target("size L: peak RSS (commit and checkout) ≤ 256 MiB, every series", "*", "large_rss", "<=", over="worst"),
    # the same checkouts after `ckstore repack` (rows only when the ckstore-repack tool ran)
    Target("size L, after `ckstore repack`: newest checkout hot ≥ 0.5 × `cp`'s speed, every series", "*",
           "checkout_vs_copy", "<=", over="every", says=("series", "slower"), tool="ckstore-repack"),
    *[Target(f"after `ckstore repack`: {what} faster than borg and restic on every series", "*", f"{key}_vs_peers",
             "<=", over="every", says=("comparisons won", "lost"), tool="ckstore-repack")
      for what, key in (("newest checkout hot", "new_hot"), ("oldest checkout hot", "old_hot"))],
    Target("`ckstore --help` ≤ 0.2 s (median of {runs} runs, start and end)", "help", "help_s", "<="),
]

# ---------------------------------------------------------------- evaluation

COMPARE = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


def passes(t: Target, s: Sample) -> bool:
    limit = s.bound if t.threshold is None else t.threshold
    return limit is None or COMPARE[t.comparison](s.value, limit)


def combine(t: Target, samples: list[Sample]) -> tuple[str, str, bool, dict]:
    """(target text, measured text, met, extra fields of the row) of the samples, as t.over says."""
    if t.over == "one":
        s = samples[0]
        return t.name.format(series=s.label, **s.fields), s.shown, passes(t, s), {}
    if t.over == "median":
        m = med([s.value for s in samples])
        worst = min(samples, key=lambda s: s.value)
        text = f"median {m:.2f} {t.unit}, slowest {worst.label} {worst.value:.2f} {t.unit}"
        also = [s.also for s in samples if s.also]
        if t.also and also:
            text += f" ({t.also}: median {med(also):.2f} {t.unit})"
        return t.name, text, COMPARE[t.comparison](m, t.threshold), {}
    if t.over == "largest":
        s = max(samples, key=lambda s: s.weight)
        return t.name, s.shown, passes(t, s), {}
    failed = [s for s in samples if not passes(t, s)]
    if t.over == "worst":
        worst = max(samples, key=lambda s: s.value / s.bound)
        return t.name, (f"worst {worst.label}: {fmt_b(worst.value)} vs bound {fmt_b(worst.bound)}; "
                        f"{len(samples) - len(failed)}/{len(samples)} series within"), not failed, {}
    if t.over == "every":
        counted, called = t.says
        text = f"{len(samples) - len(failed)}/{len(samples)} {counted}"
        if failed:
            listed = [s.failure for s in failed]
            more = len(listed) - SHOWN_FAILURES
            text += f" — {called}: " + "; ".join(listed[:SHOWN_FAILURES]) + (
                f"; … {more} more in the per-series tables" if more > 0 else "")
        return t.name, text, not failed, {"failures": [s.failure for s in failed]}
    raise ValueError(f"unknown way to combine samples: {t.over!r}")


def select(scenario: str | tuple[str, ...], all_series: dict[str, dict], help_t: dict | None) -> list[tuple[str, Any]]:
    if scenario == "help":
        return [("help", help_t)] if help_t else []
    if scenario == "*":
        return sorted(all_series.items())
    names = [scenario] if isinstance(scenario, str) else [f"{sc}-{dt}" for sc in scenario for dt in ALL_DTYPES]
    return [(n, all_series[n]) for n in names if n in all_series]


def evaluate(t: Target, all_series: dict[str, dict], help_t: dict | None) -> dict | None:
    """The report row of one target, or None when none of its series was measured with ckstore."""
    samples: list[Sample] = []
    for name, se in select(t.scenario, all_series, help_t):
        summary = tool_summary(se, t.tool) if t.scenario != "help" else None
        if summary or t.scenario == "help":
            samples += METRICS[t.metric](name, se, summary)
    if not samples:
        return None
    target, measured, ok, extra = combine(t, samples)
    return {"target": target, "measured": measured, "ok": ok, **extra}


def targets(all_series: dict[str, dict], help_t: dict | None) -> list[dict]:
    """The rows of every target of TARGETS that has figures, in the table's order."""
    return [row for t in TARGETS if (row := evaluate(t, all_series, help_t))]
