"""What it costs to make the newest checkout read fewer delta frames, per series: at commit time, or by repack.

    python bench/tip_frames.py --inputs /tmp/bench-s [--inputs /tmp/bench-m] [--margins 0.05,0.15] [--json OUT]

For every series directory (from scenarios.py) it commits every version into a fresh repository and reports the
stored bytes (packs) and the frames the newest version's chunks decode (1 = a full frame, 2 = one delta on a full
frame, ...), for:

  today     the codec as it is: a delta frame whenever it is smaller than the plain one
  margin m  commit-time rule: a plain frame whenever it is within m of the delta's size (plain <= (1+m) * delta),
            so a chain restarts wherever a delta saves little (the codec change is patched in for the run)
  invert    today's repository after `repack --invert` and a gc that frees the old packs at once: the newest
            version's chunks full, older versions deltas against the next newer one

Timing is not the point (the machine is shared): bytes and frame counts are exact and deterministic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ckstore import Repo  # noqa: E402
from ckstore.model import codec  # noqa: E402
from ckstore.storage.config import MAX_DELTA_DEPTH  # noqa: E402

_encode = codec.encode


def with_margin(margin: float):
    """codec.encode choosing the plain frame when it is within `margin` of the delta frame."""
    def encode(raw, width, level=1, base=None, base_id=None, plain_hint=None):
        frame = _encode(raw, width, level, base=base, base_id=base_id, plain_hint=plain_hint)
        if codec.frame_base(frame) is None or margin <= 0:
            return frame
        plain = _encode(raw, width, level)
        return plain if len(plain) <= (1 + margin) * len(frame) else frame
    return encode


def stored(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".ckstore" / "packs").rglob("*.pack"))


def newest_frames(repo: Repo) -> dict:
    """Frames per chunk of the newest commit (weighted by raw bytes) and the share of its chunks that are full."""
    engine = repo.engine
    m = engine.manifest_of(engine.resolve("HEAD"))
    store = engine.store
    chunks = list(dict.fromkeys(m.file_chunks(m.files)))
    depth = {c: store.delta_depth(c, MAX_DELTA_DEPTH + 1) for c in chunks}
    raw = {c: store.index.get(c).raw_length for c in chunks}
    total = sum(raw.values())
    return {"frames_per_chunk": sum((depth[c] + 1) * raw[c] for c in chunks) / total,
            "full_share": sum(raw[c] for c in chunks if depth[c] == 0) / total, "chunks": len(chunks)}


def run_series(series: Path, margins: list[float], work: Path) -> dict:
    info = json.loads((series / "series.json").read_text())
    versions = [series / v["name"] for v in info["versions"]]
    out: dict = {"series": series.name, "size": info.get("size"), "versions": len(versions), "variants": {}}
    for label, margin in [("today", 0.0)] + [(f"margin {m:g}", m) for m in margins]:
        dest = work / f"{series.name}-{label.replace(' ', '')}"
        codec.encode = with_margin(margin)
        try:
            with Repo.init(dest) as repo:
                for v in versions:
                    repo.commit(v, message=v.name)
                out["variants"][label] = {"stored": stored(dest), **newest_frames(repo)}
                if label == "today":
                    repo.repack(max_unused=0.0, invert=True)
                    repo.gc(now=True)
                    out["variants"]["invert"] = {"stored": stored(dest), **newest_frames(repo)}
        finally:
            codec.encode = _encode
            shutil.rmtree(dest, ignore_errors=True)
    base = out["variants"]["today"]["stored"]
    for v in out["variants"].values():
        v["vs_today"] = v["stored"] / base - 1
    return out


def report(results: list[dict]) -> str:
    labels = list(dict.fromkeys(k for r in results for k in r["variants"]))
    head = "| series | " + " | ".join(f"{k}: stored / frames per chunk" for k in labels) + " |"
    lines = [head, "|---" * (1 + len(labels)) + "|"]
    for r in results:
        cells = []
        for k in labels:
            v = r["variants"].get(k)
            cells.append("–" if v is None else f"{v['stored'] / 2**20:.1f} MiB ({v['vs_today']:+.1%}) / "
                                               f"{v['frames_per_chunk']:.2f}")
        lines.append(f"| {r['series']} | " + " | ".join(cells) + " |")
    worst = {k: max(r["variants"][k]["vs_today"] for r in results if k in r["variants"]) for k in labels}
    med = {k: statistics.median(r["variants"][k]["frames_per_chunk"] for r in results if k in r["variants"])
           for k in labels}
    lines.append("| **worst stored / median frames** | " + " | ".join(f"{worst[k]:+.1%} / {med[k]:.2f}"
                                                                      for k in labels) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=Path, action="append", required=True, help="a directory of series")
    ap.add_argument("--series", default=None, help="comma list of series names (default: all found)")
    ap.add_argument("--margins", default="0.05,0.15")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    margins = [float(x) for x in args.margins.split(",") if x]
    wanted = set(args.series.split(",")) if args.series else None
    results = []
    with tempfile.TemporaryDirectory(prefix="ck-tips-") as tmp:
        for inputs in args.inputs:
            for series in sorted(p.parent for p in inputs.glob("*/series.json")):
                if wanted and series.name not in wanted:
                    continue
                r = run_series(series, margins, Path(tmp))
                results.append(r)
                print(json.dumps(r), flush=True)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
