"""Compare ckstore between two or more `bench/series.py` result sets (A/B runs of two source trees).

    python bench/ab.py OUT_A OUT_B [OUT_A2 OUT_B2 ...] [--names before,after] [--md FILE]

Each OUT is a `--out` folder of series.py (its results.json). Runs are grouped by name in the order given (with
--names a,b the 1st, 3rd, ... belong to a, the 2nd, 4th, ... to b), and each figure is the median over a name's
runs: per series, the sum of the four commits' wall time, the hot checkout of the newest version, the bytes stored,
and peak anonymous RSS. The last column is b/a of the medians (below 1: b is faster or smaller).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def figures(out: Path) -> dict[str, dict[str, float]]:
    """{series: {figure: value}} of ckstore in one results.json."""
    results = json.loads((out / "results.json").read_text())
    rows = {}
    for name, series in results["series"].items():
        ck = series["tools"].get("ckstore") or {}
        if not ck.get("available", False) or not ck.get("commits"):
            continue
        newest = len(series["versions"]) - 1
        hot = [c["wall"] for c in ck["checkouts"] if c["kind"] == "hot" and c["version"] == newest]
        rows[name] = {"commits s": sum(c["wall"] for c in ck["commits"]),
                      "newest hot checkout s": statistics.median(hot) if hot else float("nan"),
                      "stored MiB": ck["commits"][-1]["stored"] / 2**20,
                      "peak anon MiB": max(c["anon"] for c in ck["commits"] + ck["checkouts"]) / 2**20}
    return rows


def table(groups: dict[str, list[dict]], names: list[str]) -> list[str]:
    """Markdown rows: per series and figure, the median of each name's runs and the ratio of the last two."""
    a, b = names[0], names[-1]
    series = sorted(set.intersection(*(set(run) for runs in groups.values() for run in runs)))
    keys = ["commits s", "newest hot checkout s", "stored MiB", "peak anon MiB"]
    lines = [f"| series | figure | {' | '.join(names)} | {b}/{a} |", "|---|---|" + "---|" * (len(names) + 1)]
    ratios: dict[str, list[float]] = {k: [] for k in keys}
    for s in series:
        for k in keys:
            med = {n: statistics.median(run[s][k] for run in groups[n]) for n in names}
            ratio = med[b] / med[a] if med[a] else float("nan")
            ratios[k].append(ratio)
            lines.append(f"| {s} | {k} | " + " | ".join(f"{med[n]:.3f}" for n in names) + f" | {ratio:.2f} |")
    lines.append("")
    lines.append(f"| figure | median {b}/{a} over {len(series)} series | range |")
    lines.append("|---|---|---|")
    for k in keys:
        lines.append(f"| {k} | {statistics.median(ratios[k]):.2f} | {min(ratios[k]):.2f}–{max(ratios[k]):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outs", nargs="+", type=Path)
    ap.add_argument("--names", default="a,b", help="comma list of run names, cycled over the OUT folders")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    names = args.names.split(",")
    groups: dict[str, list[dict]] = {n: [] for n in names}
    for i, out in enumerate(args.outs):
        groups[names[i % len(names)]].append(figures(out))
    text = "\n".join(table(groups, names)) + "\n"
    print(text)
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
