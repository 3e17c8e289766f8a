"""What bench/remote.py reports: medians over the repeats, the tables of docs/bench-remote.md."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .report import fmt_b, fmt_s
from .summary import med

KIND_TITLE = {"dir": "directory remote (local path)", "s3": "S3 remote on loopback"}
FUSED_TITLE = {"checkout": "checking out while the data arrives (`clone --checkout`)",
               "depth1": "newest commit's data only, checked out while it arrives (`clone --depth 1 --checkout`)",
               "depth1-inverted": "the same from a remote pushed after `ckstore repack` (tips as full frames)"}


def agree(xs: list[Any]) -> tuple[Any, bool]:
    """The median of xs and whether every repeat gave the same value."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, True
    return statistics.median(xs), len(set(xs)) == 1


def summarize(s: dict, tool: str, kind: str) -> dict | None:
    runs = [r[tool]["kinds"][kind] for r in s["reps"] if tool in r and not r[tool].get("error")]
    errors = [r[tool]["error"] for r in s["reps"] if tool in r and r[tool].get("error")]
    if not runs:
        return {"error": errors[0] if errors else "not run"}
    n = len(s["versions"])
    out: dict[str, Any] = {"reps": len(runs), "errors": errors, "disagree": []}

    def per_version(key: str) -> list[Any]:
        vals = []
        for i in range(n):
            xs = [k["pushes"][i].get(key) for k in runs if len(k["pushes"]) > i]
            v, same = agree(xs)
            if key == "growth":
                xs = [x for x in xs if x is not None]
                out.setdefault("growth_range", []).append((min(xs), max(xs)) if xs else (None, None))
            vals.append(v)
        return vals

    out["growth"] = per_version("growth")
    out["reported_sent"] = per_version("reported_sent")
    out["wire_up"] = per_version("wire_up")
    out["wchar"] = per_version("wchar")
    out["push_wall"] = per_version("wall")
    out["push_cpu"] = per_version("cpu")
    totals = [k["pushes"][-1]["stored"] for k in runs if k["pushes"]]
    out["stored"], _ = agree(totals)
    out["stored_range"] = (min(totals), max(totals)) if totals else (None, None)
    out["objects"], _ = agree([k["pushes"][-1]["objects"] for k in runs if k["pushes"]])
    out["init_stored"], _ = agree([k.get("init_stored") for k in runs])
    out["push_median"] = med(out["push_wall"])
    out["push_incr_median"] = med(out["push_wall"][1:])
    clones = [k["clone"] for k in runs if "clone" in k]
    if clones:
        c = {key: med([x.get(key) for x in clones]) for key in
             ("wall", "cpu", "rchar", "wire_down", "wire_up", "reported_received", "cache_bytes", "clone_wall",
              "checkout_wall", "restored_bytes", "local_store", "local_store_after_clone")}
        c["identical"] = all(x["identical"] for x in clones)
        got = [clone_bytes(tool, kind, x)[0] for x in clones]
        got = [g for g in got if g is not None]
        c["bytes_range"] = (min(got), max(got)) if got else (None, None)
        c["n"] = len(clones)
        out["clone"] = c
    out["fused"] = {}
    for variant in dict.fromkeys(v for k in runs for v in k.get("fused", {})):
        fs = [k["fused"][variant] for k in runs if variant in k.get("fused", {})]
        f = {key: med([x.get(key) for x in fs]) for key in ("wall", "cpu", "rchar", "wire_down", "reported_received",
                                                             "local_store", "maxrss", "push_wall", "stored")}
        f["identical"] = all(x["identical"] for x in fs)
        out["fused"][variant] = f
    out["partial"] = {}
    for glob in dict.fromkeys(g for k in runs for g in k.get("partial", {})):
        parts = [k["partial"][glob] for k in runs if glob in k.get("partial", {})]
        p = {key: med([x.get(key) for x in parts]) for key in
             ("clone_wall", "reported_received", "clone_wire_down", "clone_rchar", "checkout_wall",
              "checkout_wire_down", "checkout_rchar", "local_store", "local_store_after_clone", "wall",
              "wire_down")}
        p["filter"] = parts[0]["filter"]
        p["identical"] = all(x["checkout_identical"] for x in parts)
        out["partial"][glob] = p
    return out


def clone_bytes(tool: str, kind: str, c: dict) -> tuple[int | None, str]:
    """The clone's downloaded bytes and where the figure comes from."""
    if tool == "ckstore" and c.get("reported_received") is not None:
        return c["reported_received"], "reported"
    if kind == "s3" and c.get("wire_down") is not None:
        return c["wire_down"], "wire"
    if tool == "dvc" and c.get("cache_bytes") is not None:
        return c["cache_bytes"], "cache"
    return c.get("rchar"), "rchar"


def with_range(v: Any, rg: tuple[Any, Any]) -> str:
    """The median, and the range over the repeats when they differ by more than 1% (or 64 KiB)."""
    lo, hi = rg
    if v is None or lo is None or hi - lo <= max(0.01 * abs(v), 64 * 1024):
        return fmt_b(v)
    a, b = fmt_b(lo), fmt_b(hi)
    if a.split()[-1] == b.split()[-1]:
        a = a.rsplit(" ", 1)[0]
    return f"{fmt_b(v)} ({a}–{b})"


def on_demand(kind: str, p: dict) -> tuple[int | None, str]:
    """Bytes a checkout of a partial clone fetched: on the wire (S3), else the growth of the local store."""
    if kind == "s3" and p.get("checkout_wire_down") is not None:
        return p["checkout_wire_down"], "wire"
    if p.get("local_store") is not None and p.get("local_store_after_clone") is not None:
        return p["local_store"] - p["local_store_after_clone"], "store growth"
    return None, "?"


def report(results: dict) -> str:
    L: list[str] = []
    env = results["environment"]
    for s in results["series"]:
        n = len(s["versions"])
        vs = [v["name"] for v in s["versions"]]
        logical = sum(v["logical"] for v in s["versions"])
        L.append(f"### {s['series']} (size {s['size']}: {n} versions, {fmt_b(s['versions'][0]['logical'])} each, "
                 f"{fmt_b(logical)} logical in all; {len(s['reps'])} repeats)")
        L.append("")
        for kind in results["kinds"]:
            title = KIND_TITLE[kind] + (f" ({env['s3_server']}, through the counting proxy)" if kind == "s3" else "")
            L.append(f"**{s['series']} — {title}**")
            L.append("")
            L.append("| tool | remote total | " + " | ".join(f"up {v}" for v in vs)
                     + " | median push (all / v1+) | clone bytes | clone time | identical |")
            L.append("|---" * (6 + n) + "|")
            for tool in results["tools"]:
                r = summarize(s, tool, kind)
                if not r or "error" in r and len(r) == 1:
                    L.append(f"| {tool} | failed: {(r or {}).get('error', '?')[:200]} |" + " |" * (4 + n))
                    continue
                ups = " | ".join(with_range(g, rg) for g, rg in zip(r["growth"], r["growth_range"]))
                c = r.get("clone") or {}
                cb, src = clone_bytes(tool, kind, c) if c else (None, "")
                ctime = fmt_s(c.get("wall")) + " s" if c else "–"
                if tool == "ckstore" and c:
                    ctime += f" ({fmt_s(c['clone_wall'])} + {fmt_s(c['checkout_wall'])})"
                ident = ("✓" if c.get("identical") else "✗") if c else "–"
                mark = ""
                cbs = with_range(cb, c.get("bytes_range", (None, None))) if c else "–"
                L.append(f"| {tool} | {with_range(r['stored'], r['stored_range'])} | {ups} | {fmt_s(r['push_median'])} s / "
                         f"{fmt_s(r['push_incr_median'])} s | {cbs} ({src}) | {ctime} | {ident}{mark} |")
                for variant, f in (r.get("fused") or {}).items() if tool == "ckstore" else ():
                    how = FUSED_TITLE.get(variant, variant)
                    total = fmt_b(f["stored"]) if f.get("stored") is not None else "″"
                    push = f"{fmt_s(f['push_wall'])} s (one push of all)" if f.get("push_wall") is not None else "″"
                    L.append(f"| ckstore, {how} | {total} |" + " ″ |" * n + f" {push} | "
                             f"{fmt_b(f['reported_received'])} (reported) | {fmt_s(f['wall'])} s "
                             f"| {'✓' if f['identical'] else '✗'} |")
                tip = r.get("partial", {}).get("*")
                if tool == "ckstore" and tip:
                    od, how = on_demand(kind, tip)
                    L.append("| ckstore, newest version only (`clone --filter tensors=*` + checkout) | ″ |"
                             + " ″ |" * n + f" ″ | {fmt_b(tip['reported_received'] + (od or 0))} (reported + {how}) "
                             f"| {fmt_s(tip['wall'])} s ({fmt_s(tip['clone_wall'])} + {fmt_s(tip['checkout_wall'])}) "
                             f"| {'✓' if tip['identical'] else '✗'} |")
            L.append("")
        # details: push times per version, wire and reported bytes
        L.append(f"<details><summary>{s['series']}: per-version push times and bytes on the wire</summary>")
        L.append("")
        L.append("| tool | remote | " + " | ".join(f"push {v} s" for v in vs) + " | "
                 + " | ".join(f"sent {v}" for v in vs) + " | clone received (wire / rchar) |")
        L.append("|---" * (3 + 2 * n) + "|")
        for kind in results["kinds"]:
            for tool in results["tools"]:
                r = summarize(s, tool, kind)
                if not r or "error" in r and len(r) == 1:
                    continue
                times = " | ".join(fmt_s(w) for w in r["push_wall"])
                if kind == "s3":
                    sent = [r["wire_up"][i] for i in range(n)]
                    how = "wire"
                else:
                    sent = [r["wchar"][i] for i in range(n)]
                    how = "wchar"
                if tool == "ckstore":
                    sent_s = " | ".join(f"{fmt_b(x)} {how}, {fmt_b(y)} reported" for x, y in zip(sent, r["reported_sent"]))
                else:
                    sent_s = " | ".join(f"{fmt_b(x)} {how}" for x in sent)
                c = r.get("clone") or {}
                recv = f"{fmt_b(c.get('wire_down'))} / {fmt_b(c.get('rchar'))}" if c else "–"
                L.append(f"| {tool} | {kind} | {times} | {sent_s} | {recv} |")
        L.append("")
        L.append("</details>")
        L.append("")
        # ckstore partial clones
        rows = []
        for kind in results["kinds"]:
            r = summarize(s, "ckstore", kind) or {}
            for glob, p in (r.get("partial") or {}).items():
                od, how = on_demand(kind, p)
                cw = p["clone_wire_down"]
                rows.append(f"| {kind} | `{p['filter']}` | {fmt_b(p['reported_received'])}"
                            + (f" ({fmt_b(cw)} wire)" if cw is not None else "")
                            + f" | {fmt_s(p['clone_wall'])} s | {fmt_b(p['local_store_after_clone'])} "
                            f"| {fmt_b(od)} ({how}) | {fmt_s(p['checkout_wall'])} s "
                            f"| {fmt_b(p['reported_received'] + (od or 0))} | {fmt_s(p['wall'])} s "
                            f"| {'✓' if p['identical'] else '✗'} |")
        if rows:
            L.append(f"**{s['series']} — ckstore partial clones** of the newest version, then `checkout main` "
                     "(which fetches what is missing on demand, in one batch)")
            L.append("")
            L.append("| remote | filter | clone received (reported) | clone time | local store after clone "
                     "| checkout fetched | checkout time | total received | total time | identical |")
            L.append("|---" * 10 + "|")
            L.extend(rows)
            L.append("")
    return "\n".join(L)


def write_md(path: Path, tables: str, results: dict) -> None:
    begin, end = "<!-- tables:begin -->", "<!-- tables:end -->"
    env = results["environment"]
    block = (f"{begin}\n<!-- written by bench/remote.py; {env['time']} -->\n\n"
             f"Run: `{env['command']}` on {env['time']}; ckstore snapshot {env['ckstore_snapshot']}, "
             f"DVC {env['dvc']}, {env['restic']}, S3 server {env['s3_server']}; load average at start "
             f"{', '.join(f'{x:.2f}' for x in env['load_at_start'])}.\n\n{tables}\n{end}")
    if path.exists() and begin in path.read_text():
        text = path.read_text()
        a, b = text.index(begin), text.index(end) + len(end)
        path.write_text(text[:a] + block + text[b:])
    else:
        path.write_text(f"# Remotes benchmark: push and clone with ckstore, DVC and restic\n\n{block}\n")
