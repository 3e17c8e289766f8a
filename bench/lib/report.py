"""Number formatting and the markdown of docs/benchmarks*.md, rebuilt from the figures of a results.json."""

from __future__ import annotations

import re

from . import BENCH, KIB, MIB
from .summary import series_rank, tool_rank, tool_summary

# the peers' figures of the "figures seen here" table of shared/BENCHMARKS.md (mix series, size S)
PEERS_SEEN = [
    ("DVC, git-lfs", "1.00×", "1.00×", "the whole file again"),
    ("ZipNN per file", "1.20×", "1.51×", "the whole file again"),
    ("restic", "1.72×", "1.61×", "17 MB"),
    ("borg zstd,3", "1.74×", "1.81×", "31 MB"),
    ("git-theta", "1.93× (37 s to commit)", "crashes", "0.6 MB"),
    ("what a tensor-level store with grouping + XOR can reach", "**2.55×**", "**3.60×**", "**0.43 MB**"),
]


def fmt_b(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < KIB:
        return f"{sign}{n:.0f} B"
    if n < MIB:
        return f"{sign}{n / KIB:.1f} KiB"
    return f"{sign}{n / MIB:.1f} MiB"


def fmt_s(x: float | None) -> str:
    return "–" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def fmt_r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def ck(ok: bool | None) -> str:
    return "–" if ok is None else ("✓" if ok else "✗")


def series_table(series: dict) -> list[str]:
    nv = len(series["versions"])
    head = (["tool", "ratio"] + [f"+v{i}" for i in range(nv)] +
            ["commit s (median wall / cpu)", "commit GB/s wall / per CPU-s", "peak RSS commit / checkout",
             "checkout v0 hot / cold s", f"checkout v{nv - 1} hot / cold s", "re-commit s / +bytes", "identical"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for t, r in sorted(series["tools"].items(), key=lambda x: tool_rank(x[0])):
        if not r.get("available"):
            notes.append(f"{t}: not available — {r['reason']}")
            continue
        if "error" in r:
            err = " ".join(r["error"].split())
            notes.append(f"{t}: failed — {err[:80]} … {err[-300:]}")
            continue
        s = tool_summary(series, t)
        rc = s["recommit"] or {}
        row = [f"**{t}**" if t == "ckstore" else t, fmt_r(s["ratio"])] + [fmt_b(b) for b in s["added"]] + [
            f"{fmt_s(s['commit_med'])} / {fmt_s(s['commit_cpu_med'])}",
            f"{s['throughput_med'] / 1e9:.2f} / {(s['cpu_throughput_med'] or 0) / 1e9:.2f}",
            f"{fmt_b(s['rss_commit'])} / {fmt_b(s['rss_checkout'])} (anon {fmt_b(s['anon_commit'])} / "
            f"{fmt_b(s['anon_checkout'])})",
            f"{fmt_s(s['old_hot'])} / {fmt_s(s['old_cold'])}", f"{fmt_s(s['new_hot'])} / {fmt_s(s['new_cold'])}",
            f"{fmt_s(rc.get('wall'))} / {fmt_b(rc.get('added'))}", ck(s["identical"])]
        lines.append("| " + " | ".join(row) + " |")
        if t == "ckstore":
            notes.append(f"ckstore: `.ckstore/cache` (LMDB index, not counted as stored) {fmt_b(s['aux'])}; "
                         f"median 1-min load average during its steps {s['load_med']}")
        if r.get("maintain"):
            mt = r["maintain"]
            notes.append(f"{t}: upkeep after the last commit {fmt_s(mt['wall'])} s wall / {fmt_s(mt['cpu'])} s cpu, "
                         f"peak RSS {fmt_b(mt['maxrss'])}; stored after it {fmt_b(mt['stored'])} (the ratio and "
                         f"+v columns are from before it)")
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def option(cmd: str, name: str, default: str | None = None) -> str | None:
    """The value a recorded command line gave option name (default when it gave none)."""
    found = re.search(rf"{name}[= ](\S+)", cmd)
    return found.group(1) if found else default


def shown(cmd: str) -> str:
    """A recorded command as the report shows it: without `--json PATH`, which only wrote a copy of results.json."""
    return re.sub(r" --json[= ]\S+", "", cmd)


def render(results: dict) -> str:
    all_series = results["series"]
    cmd = results["command"]
    md = f" --md {option(cmd, '--md')}" if option(cmd, "--md") else ""  # a page other than docs/benchmarks.md
    L = ["# Benchmarks", "",
         f"Measured with one command (size {option(cmd, '--size', 'S')}; the inputs come from `bench/scenarios.py`, "
         "generated when missing):", "",
         "```sh", shown(cmd), "```", "",
         *([f"Completed or re-measured with: `{c}`" for c in dict.fromkeys(map(shown, results.get("also_ran", [])))]
           + [""]
           if results.get("also_ran") else []),
         f"Per-series results are kept in `{results['out_dir']}/series/`; rebuild this page from them without "
         f"measuring: `python bench/series.py --report-only --out {results['out_dir']}{md}`. Every figure is in "
         f"`{results['json_path']}`. How each tool is driven and measured: `bench/README.md`.", "",
         f"Run: {results['started']} → {results['finished']}, {results['machine']}. ckstore snapshot "
         f"`{results['ckstore_snapshot']}` (sha256 of its .py files). Hot checkout = median of "
         f"{results['repeat']} runs; cold = after `sync` + `posix_fadvise(DONTNEED)` on every file of the tool's "
         "directory. Ratio = logical bytes of all versions / stored bytes after the last one. Sizes in KiB/MiB, "
         "throughput in GB/s (10⁹ B/s). The machine is shared and noisy: compare tools within a run.", ""]
    size = option(cmd, "--size", "S")
    scenario = BENCH / f"scenario-{size}.md"  # what a size's series are, where scenarios.py does not train them
    if scenario.exists():
        L += [scenario.read_text().rstrip(), ""]
    L += ["## Tools", "", "| tool | version | how |", "|---|---|---|"]
    for t, v in results["tools"].items():
        L.append(f"| {t} | {v.get('version') or ('not available: ' + v.get('reason', ''))} | {v['description']} |")
    L.append("")
    # headline
    L += ["## Headline: the mix series (v0, +1 dense step, +1 partial step, +LoRA r=8 in the same file)", "",
          "| tool | fp32 store ratio | bf16 store ratio | LoRA version costs fp32 / bf16 | v0 alone fp32 / bf16 |",
          "|---|---|---|---|---|"]
    tools_seen = sorted({t for s in all_series.values() for t in s["tools"]}, key=tool_rank)
    for t in tools_seen:
        f = tool_summary(all_series["mix-fp32"], t) if "mix-fp32" in all_series else None
        b = tool_summary(all_series["mix-bf16"], t) if "mix-bf16" in all_series else None
        if not f and not b:
            continue
        name = f"**{t}**" if t == "ckstore" else t
        L.append(f"| {name} | {fmt_r(f and f['ratio'])} | {fmt_r(b and b['ratio'])} | "
                 f"{fmt_b(f and f['added'][3])} / {fmt_b(b and b['added'][3])} | "
                 f"{fmt_r(f and f['v0_ratio'])} / {fmt_r(b and b['v0_ratio'])} |")
    L += ["", "For comparison, the figures seen earlier on this machine (shared/BENCHMARKS.md):", "",
          "| tool | fp32 store ratio | bf16 store ratio | LoRA version costs |", "|---|---|---|---|"]
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in PEERS_SEEN]
    L += ["", "## Targets (shared/BENCHMARKS.md), ckstore measured in this run", "",
          "| target | measured | met |", "|---|---|---|"]
    L += [f"| {r['target']} | {r['measured']} | {ck(r['ok'])} |" for r in results["targets"]]
    L += ["", "## Store ratio by series", ""]
    names = sorted(all_series, key=series_rank)
    L += ["| tool | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for t in tools_seen:
        cells = []
        for n in names:
            s = tool_summary(all_series[n], t)
            cells.append(fmt_r(s["ratio"]) if s else "–")
        if any(c != "–" for c in cells):
            L.append(f"| {t} | " + " | ".join(cells) + " |")
    L += ["", "## Per series", "",
          "Columns: ratio; bytes added by each version (+v0 is the first commit's store); commit median over the "
          "versions (wall / CPU s) and median throughput (logical bytes / wall); peak RSS; checkout of the oldest "
          "and newest version (hot median / cold); a no-op re-commit of the newest version (same directory again) "
          "and the bytes it added; every restored file of every version sha256-identical.", ""]
    for n in names:
        s = all_series[n]
        L += [f"### {n}", "", f"{len(s['versions'])} versions, logical {fmt_b(s['logical_total'])} "
              f"({' + '.join(fmt_b(v['logical']) for v in s['versions'])}); largest tensor "
              f"{fmt_b(s['largest_tensor'])}; inputs sha256 `{s['input_sha256']}`; measured {s['time']}.", ""]
        L += [f"- v{i}: {v['description']}" for i, v in enumerate(s["versions"])]
        if s.get("adapter"):
            a = s["adapter"]
            L.append(f"- LoRA adapter of v{a['version']} alone: {fmt_b(a['raw'])} raw, {fmt_b(a['zstd3'])} zstd -3"
                     + (f", {fmt_b(a['zipnn'])} ZipNN" if "zipnn" in a else ""))
        L.append("")
        L += series_table(s)
        L.append("")
    if results.get("losses"):
        L += ["## Where ckstore is behind a peer in this run", ""] + [f"- {x}" for x in results["losses"]] + [""]
    notes = BENCH / "analysis.md"  # hand-written reading of the S and M figures (profiles), kept beside the generator
    if notes.exists() and size in ("S", "M"):
        L += [notes.read_text().rstrip(), ""]
    return "\n".join(L) + "\n"

