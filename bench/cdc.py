#!/usr/bin/env python3
"""Content-defined chunking of opaque bytes against fixed cuts and against borg and restic, on real files.

Each scenario is two versions of one file. Every tool stores version 0, then version 1; what version 1 adds to
the repository (its bytes on disk, cache excluded) is the figure, beside ckstore's count of new chunks. Version
1 is then restored by each tool and compared byte for byte.

    python bench/cdc.py [--cache DIR] [--out docs/bench-cdc.md]

Files come from PyPI packages (downloaded once with pip into the cache): silero-vad's TorchScript releases,
jieba's dictionary, open_clip's BPE vocabulary; the GGUF file is written by the `gguf` package with that
vocabulary as its tokenizer; training_args.bin is transformers' own TrainingArguments saved by torch.save.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"silero-vad": ["5.1.2", "6.0.0"], "jieba": ["0.42.1"], "open-clip-torch": ["2.24.0"]}


def fetch(cache: Path, name: str, version: str) -> Path:
    """The unpacked distribution of name==version (wheel, else sdist) under `cache`."""
    dest = cache / f"{name}-{version}"
    if dest.is_dir():
        return dest
    dl = cache / "dl" / f"{name}-{version}"
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), f"{name}=={version}"],
                   check=True)
    (archive,) = list(dl.iterdir())
    tmp = cache / f".{name}-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    if archive.suffix == ".whl":
        zipfile.ZipFile(archive).extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    tmp.rename(dest)
    return dest


def find(root: Path, name: str) -> Path:
    (hit,) = [p for p in root.rglob(name) if p.is_file()][:1]
    return hit


def gguf_file(vocab: list[str], name: str, path: Path) -> bytes:
    import gguf
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    rng = np.random.default_rng(0)
    for i in range(2):
        q = gguf.quants.quantize(rng.standard_normal((256, 1024)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(f"blk.{i}.w", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def training_args(lr: float, path: Path) -> bytes:
    import torch
    from transformers import TrainingArguments
    torch.save(TrainingArguments(output_dir="out", learning_rate=lr, report_to=[]), path)
    return path.read_bytes()


def scenarios(cache: Path, work: Path) -> list[tuple[str, str, bytes, bytes, str]]:
    """(name, file name, version 0, version 1, what changed)."""
    out = []
    jit = [find(fetch(cache, "silero-vad", v), "silero_vad.jit").read_bytes() for v in PACKAGES["silero-vad"]]
    out.append(("TorchScript release", "silero_vad.jit", jit[0], jit[1], "silero-vad 5.1.2 → 6.0.0"))
    words = find(fetch(cache, "jieba", "0.42.1"), "dict.txt").read_bytes()
    lines = words.split(b"\n")
    mid = len(lines) // 2
    added = b"\n".join(lines[:mid] + [f"新词{i} 3 n".encode() for i in range(20)] + lines[mid:])
    out.append(("dictionary, 20 entries added mid-file", "dict.txt", words, added, "jieba 0.42.1 dict.txt"))
    bpe = gzip.decompress(find(fetch(cache, "open-clip-torch", "2.24.0"), "bpe_simple_vocab_16e6.txt.gz").read_bytes())
    special = b"<|pad|>\n<|mask|>\n"
    head, rest = bpe.split(b"\n", 1)
    out.append(("BPE merges, 2 tokens added at the front", "vocab.txt", bpe, head + b"\n" + special + rest,
                "open_clip bpe_simple_vocab_16e6"))
    vocab = [line.decode("utf-8", "replace") for line in bpe.split(b"\n")[1:100001] if line]
    g0 = gguf_file(vocab, "model", work / "a.gguf")
    g1 = gguf_file(vocab, "model-finetuned-v2", work / "b.gguf")
    out.append(("GGUF metadata edit (general.name)", "model.gguf", g0, g1, "100k-token vocabulary, 2 Q8_0 tensors"))
    out.append(("training_args.bin, learning rate changed", "training_args.bin", training_args(5e-5, work / "t0"),
                training_args(3e-5, work / "t1"), "transformers TrainingArguments"))
    blob = np.random.default_rng(1).integers(0, 256, int(2.9 * 2**20), dtype=np.uint8).tobytes()
    out.append(("1 byte inserted at the front", "blob.bin", blob, b"\0" + blob, "2.9 MiB of random bytes"))
    return out


def du(path: Path, skip: str | None = None) -> int:
    total = 0
    for dirpath, dirnames, files in os.walk(path):
        if skip:
            dirnames[:] = [d for d in dirnames if d != skip]
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def sh(cmd: list, cwd: Path | None = None, env: dict | None = None) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                       text=True)
    if r.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {r.stderr[-400:]}")
    return r.stdout


def ckstore_run(d: Path, versions: list[Path], fixed: bool) -> tuple[int, int, bool]:
    """(bytes version 1 added, chunks it added, restored byte-identical) for ckstore, content-cut or fixed."""
    ck = [sys.executable, "-m", "ckstore", "-C", d / "repo"]
    (d / "repo").mkdir(parents=True)
    sh(ck + ["init"])
    if fixed:                             # a version-1 repository: opaque runs at fixed 1 MiB cuts
        cfg = d / "repo" / ".ckstore" / "config"
        raw = json.loads(cfg.read_text())
        raw.pop("features"), raw.pop("check")
        raw["version"] = 1
        cfg.write_text(json.dumps(raw))
    ids, sizes = [], []
    for src in versions:
        ids.append(json.loads(sh(ck + ["commit", src, "-m", src.name, "--json"]))["id"])
        sizes.append(du(d / "repo" / ".ckstore", skip="cache"))
    import ckstore
    with ckstore.Repo.open(d / "repo") as r:
        new = len(r.manifest(ids[1]).chunk_ids() - r.manifest(ids[0]).chunk_ids())
    sh(ck + ["checkout", ids[1], "-o", d / "out"])
    return sizes[1] - sizes[0], new, same(d / "out", versions[1])


def borg_run(d: Path, versions: list[Path]) -> tuple[int, bool]:
    env = {"BORG_BASE_DIR": str(d / "home"), "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
    d.mkdir(parents=True)
    sh(["borg", "init", "-e", "none", d / "repo"], env=env)
    sizes = []
    for i, src in enumerate(versions):
        sh(["borg", "create", "--compression", "zstd,3", f"{d / 'repo'}::v{i}", "."], cwd=src, env=env)
        sizes.append(du(d / "repo"))
    (d / "out").mkdir()
    sh(["borg", "extract", f"{d / 'repo'}::v1"], cwd=d / "out", env=env)
    return sizes[1] - sizes[0], same(d / "out", versions[1])


def restic_run(d: Path, versions: list[Path]) -> tuple[int, bool]:
    env = {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(d / "cache")}
    d.mkdir(parents=True)
    sh(["restic", "-r", d / "repo", "init", "--repository-version", "2"], env=env)
    sizes, snaps = [], []
    for src in versions:
        out = sh(["restic", "-r", d / "repo", "backup", "--compression", "auto", "--host", "bench", "--json", "."],
                 cwd=src, env=env)
        snaps.append([json.loads(x) for x in out.splitlines() if '"summary"' in x][-1]["snapshot_id"])
        sizes.append(du(d / "repo"))
    sh(["restic", "-r", d / "repo", "restore", snaps[1], "--target", d / "out"], env=env)
    return sizes[1] - sizes[0], same(d / "out", versions[1])


def same(out: Path, src: Path) -> bool:
    return all((out / p.name).read_bytes() == p.read_bytes() for p in src.iterdir())


def speed(work: Path, reps: int = 5) -> dict:
    """Cut throughput, and median commit seconds of a 256 MiB opaque file, content-cut against fixed cuts
    (interleaved runs, each a new repository)."""
    import statistics
    import time
    from ckstore.model.chunking import cut_by_content
    src = work / "speed"
    src.mkdir()
    data = np.random.default_rng(3).integers(0, 256, 256 << 20, dtype=np.uint8).tobytes()
    (src / "big.bin").write_bytes(data)
    cuts = []
    for _ in range(reps):
        t = time.perf_counter()
        n = sum(1 for _ in cut_by_content(memoryview(data)))
        cuts.append(time.perf_counter() - t)
    times: dict[str, list[float]] = {"cdc": [], "fixed": []}
    for rep in range(reps):
        for mode in times:
            d = work / f"speed-{mode}-{rep}"
            ck = [sys.executable, "-m", "ckstore", "-C", d]
            d.mkdir()
            sh(ck + ["init"])
            if mode == "fixed":
                cfg = d / ".ckstore" / "config"
                raw = json.loads(cfg.read_text())
                raw.pop("features"), raw.pop("check")
                raw["version"] = 1
                cfg.write_text(json.dumps(raw))
            t = time.perf_counter()
            sh(ck + ["commit", src, "-m", "big"])
            times[mode].append(time.perf_counter() - t)
            shutil.rmtree(d)
    return {"cut_gbs": len(data) / statistics.median(cuts) / 1e9, "chunks": n,
            **{k: statistics.median(v) for k, v in times.items()}, "load": os.getloadavg()[0]}


def restic_cell(r: dict) -> str:
    if r["restic"] is None:
        return "—"
    lo, hi = r["restic_range"]
    return fmt(r["restic"]) + (f" ({fmt(lo)}–{fmt(hi)})" if hi - lo > 1024 else "")


def fmt(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 10 << 20 else f"{n / 2**20:,.2f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ckstore-bench-cdc")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-cdc.md")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ckbench-cdc-") as tmp:
        work = Path(tmp)
        for k, (name, fname, v0, v1, what) in enumerate(scenarios(args.cache, work)):
            base = work / f"s{k}"
            versions = []
            for i, blob in enumerate((v0, v1)):
                (base / f"v{i}").mkdir(parents=True)
                (base / f"v{i}" / fname).write_bytes(blob)
                versions.append(base / f"v{i}")
            row = {"name": name, "what": what, "size": len(v1)}
            row["cdc"], row["cdc_chunks"], ok1 = ckstore_run(base / "cdc", versions, fixed=False)
            row["fixed"], row["fixed_chunks"], ok2 = ckstore_run(base / "fixed", versions, fixed=True)
            row["borg"], ok3 = borg_run(base / "borg", versions) if shutil.which("borg") else (None, True)
            row["restic"], ok4, row["restic_range"] = None, True, None
            if shutil.which("restic"):      # a random chunker polynomial per repository: three of them
                runs = [restic_run(base / f"restic{k}", versions) for k in range(3)]
                sizes = sorted(r[0] for r in runs)
                row["restic"], ok4, row["restic_range"] = sizes[1], all(r[1] for r in runs), (sizes[0], sizes[-1])
            row["identical"] = ok1 and ok2 and ok3 and ok4
            rows.append(row)
            print(row, flush=True)
        cost = speed(work)
        print(cost, flush=True)
    lines = ["# Content-defined chunking of opaque bytes", "",
             "Written by `python bench/cdc.py` (the figures below are its last run). Each row is two versions of",
             "one file; the columns are what storing the second version added to each repository (bytes on disk,",
             "caches excluded), and for ckstore how many chunks it added. ckstore CDC: format version 3 (FastCDC",
             "16/64/256 KiB); ckstore fixed: the same build on a version-1 repository (1 MiB cuts); borg 1.2",
             "(`create --compression zstd,3`, its default buzhash chunker, 2 MiB average); restic 0.14",
             "(`backup --compression auto`, 1 MiB average; it draws a new chunker polynomial for every repository,",
             "so its cuts differ between repositories: the median of three, their range in brackets). Every tool",
             "restored version 2 byte-identical in every row unless the last column says otherwise.", "",
             "| change | file | size | ckstore CDC | (chunks) | ckstore fixed | (chunks) | borg | restic | identical |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['what']} | {fmt(r['size'])} | {fmt(r['cdc'])} | {r['cdc_chunks']} | "
                     f"{fmt(r['fixed'])} | {r['fixed_chunks']} | "
                     f"{fmt(r['borg']) if r['borg'] is not None else '—'} | "
                     f"{restic_cell(r)} | {'yes' if r['identical'] else 'NO'} |")
    lines += ["", "## Cost", "",
              f"FastCDC cuts at {cost['cut_gbs']:.2f} GB/s on one core (256 MiB of random bytes into {cost['chunks']}",
              f"chunks, median of 5). A commit of that file into a new repository takes {cost['cdc']:.2f} s content-cut",
              f"against {cost['fixed']:.2f} s with fixed 1 MiB cuts (medians of 5 interleaved runs, load average",
              f"{cost['load']:.1f}): the cut itself, and per-chunk work (hash, index lookup, frame, index entry) for 16×",
              "as many chunks. Checkpoints are mostly tensors, which keep their fixed element-aligned chunks; the cut",
              "runs on opaque runs over 64 KiB only, and reads in order, dropping the pages it has passed from the",
              "process's resident set (the page cache keeps them for the chunk stream)."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
