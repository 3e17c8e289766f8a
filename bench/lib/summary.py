"""Derived figures of one tool on one series, and the order series and tools are listed in."""

from __future__ import annotations

import statistics
from typing import Any

from . import ALL_DTYPES, ALL_SCENARIOS, SYNTH_SCENARIOS
from .tools import ALL_TOOLS as TOOL_ORDER

# peers whose speed ckstore is compared with in "where ckstore is behind" (copy and git-theta are not)
SPEED_PEERS = ("borg", "restic", "restic-max", "dvc", "git-lfs", "zipnn", "zstd")


def med(xs: list[Any]) -> Any:
    """The median of the values that are not None (None when there are none)."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


SCENARIO_ORDER = list(dict.fromkeys([*SYNTH_SCENARIOS, *ALL_SCENARIOS]))


def series_rank(name: str) -> tuple:
    sc, _, dt = name.rpartition("-")
    return (SCENARIO_ORDER.index(sc) if sc in SCENARIO_ORDER else 99, ALL_DTYPES.index(dt) if dt in ALL_DTYPES else 9,
            name)


def tool_rank(t: str) -> int:
    return TOOL_ORDER.index(t) if t in TOOL_ORDER else len(TOOL_ORDER)


def tool_summary(series: dict, t: str) -> dict | None:
    """The derived figures of one tool on one series (None when it did not run)."""
    r = series["tools"].get(t)
    if not r or not r.get("available") or "error" in r:
        return None
    logical = [v["logical"] for v in series["versions"]]
    commits = r["commits"]
    stored = [c["stored"] for c in commits]
    added = [stored[0] - r.get("init_stored", 0)] + [b - a for a, b in zip(stored, stored[1:])]
    last = len(logical) - 1

    def co(i: int, kind: str) -> float | None:
        return med([c["wall"] for c in r["checkouts"] if c["version"] == i and c["kind"] == kind])

    return {
        "ratio": sum(logical) / stored[-1] if stored[-1] else None,
        "v0_ratio": logical[0] / stored[0] if stored[0] else None,
        "stored": stored[-1], "aux": commits[-1]["aux"], "added": added,
        "commit_wall": [c["wall"] for c in commits], "commit_cpu": [c["cpu"] for c in commits],
        "commit_med": med([c["wall"] for c in commits]), "commit_cpu_med": med([c["cpu"] for c in commits]),
        "commit_total": sum(c["wall"] for c in commits),
        "throughput": [b / c["wall"] for b, c in zip(logical, commits)],
        "throughput_med": med([b / c["wall"] for b, c in zip(logical, commits)]),
        "cpu_throughput": [b / c["cpu"] if c["cpu"] else None for b, c in zip(logical, commits)],
        "cpu_throughput_med": med([b / c["cpu"] for b, c in zip(logical, commits) if c["cpu"]]),
        "load_med": med([c.get("load") for c in commits] + [c.get("load") for c in r["checkouts"]]),
        "rss_commit": max(c["maxrss"] for c in commits),
        "rss_checkout": max((c["maxrss"] for c in r["checkouts"]), default=0),
        "anon_commit": max(c.get("anon", 0) for c in commits),
        "anon_checkout": max((c.get("anon", 0) for c in r["checkouts"]), default=0),
        "old_hot": co(0, "hot"), "old_cold": co(0, "cold"), "new_hot": co(last, "hot"), "new_cold": co(last, "cold"),
        "new_hot_gbs": logical[last] / co(last, "hot") / 1e9 if co(last, "hot") else None,
        "old_hot_gbs": logical[0] / co(0, "hot") / 1e9 if co(0, "hot") else None,
        "identical": r["identical"], "recommit": r.get("recommit"),
    }


def losses(all_series: dict[str, dict]) -> list[str]:
    """Every series where a peer had a better ratio, or (the speed peers) a faster commit or newest checkout."""
    out = []
    for name, se in sorted(all_series.items()):
        s = tool_summary(se, "ckstore")
        if not s:
            continue
        for t in se["tools"]:
            p = tool_summary(se, t) if not t.startswith("ckstore") else None
            if not p:
                continue
            bits = []
            if p["ratio"] and s["ratio"] and p["ratio"] > s["ratio"]:
                bits.append(f"ratio {p['ratio']:.2f}× vs {s['ratio']:.2f}×")
            if t in SPEED_PEERS:
                if p["commit_total"] < s["commit_total"]:
                    bits.append(f"commit total {p['commit_total']:.2f} s vs {s['commit_total']:.2f} s")
                for key, label in (("new_hot", "newest checkout hot"), ("new_cold", "newest checkout cold")):
                    if p[key] is not None and s[key] is not None and p[key] < s[key]:
                        bits.append(f"{label} {p[key]:.2f} s vs {s[key]:.2f} s")
            if bits:
                out.append(f"{name} — {t}: " + "; ".join(bits))
    return out
