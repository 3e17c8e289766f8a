"""The lower bound of a verified checkout on this machine, measured on the checkout's own frames.

    python bench/limits.py --repo DIR [--rev REV] [--repeat 3] [--threads N] [--json OUT]

For every file of commit REV it times, as tight loops over the same data a checkout touches, the work no
verified checkout can skip:

  read     pread every frame the files need (each chunk's whole delta chain, as stored) from the page cache
  decode   decode each chunk from those frames (zstd planes joined, XOR chains applied: `codec.decode_chain`)
  hash     BLAKE3 of every decoded chunk (each is checked against its id) and of every whole file, in order
  write    pwrite every chunk at its offset into a preallocated file (page cache, no fsync: checkout has none)

in one streaming pass in file order on one thread, each step on its own CPU timer (so other load on the machine
counts little; buffers are freed chunk by chunk, as in a checkout, so no step pays first-touch page faults for
gigabytes held at once), and read + decode + chunk hash again on --threads workers (wall seconds). The bound is the larger of: all the work spread evenly over the cores,
and the longest step that cannot be split (one file's hash is one stream). Beside it, in the same run, the
medians of --repeat hot `ckstore checkout` runs into fresh directories (in-process, so no interpreter start) and
of `cp` of the same files, so a report can say how close each is to the limit. The input should be in the page
cache: run a checkout once first (the script does a warm-up of each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from ckstore import Repo
from ckstore.allocator import tune
from ckstore.model import codec
from ckstore.model.objects import ChunkRun, Inline


def pieces(manifest, recipe):
    """(offset, length, chunk id or None, inline bytes or None) of every piece of a file, in file order."""
    pos = 0
    for seg in recipe.segments:
        if isinstance(seg, Inline):
            yield pos, len(seg.data), None, bytes(seg.data)
            pos += len(seg.data)
        elif isinstance(seg, ChunkRun):
            for k, cid in enumerate(seg.chunks):
                yield pos + k * seg.chunk_size, min(seg.chunk_size, seg.nbytes - k * seg.chunk_size), cid, None
            pos += seg.nbytes
        else:
            entry = manifest.tensors[seg.index]
            for cid, start, end in entry.chunk_ranges():
                yield pos + start, end - start, cid, None
            pos += entry.nbytes


def chain_locations(store, chunk):
    """The index locations of `chunk`'s frames down to its full frame."""
    out, cur = [], chunk
    while cur is not None:
        loc = store.index.get(cur)
        out.append(loc)
        cur = store.frame_base(loc)
    return out


def wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(repo: Repo, rev: str, threads: int, repeat: int, scratch: Path) -> dict:
    engine = repo.engine
    store = engine.store
    oid = engine.resolve(rev)
    manifest = engine.manifest_of(oid)
    files = list(manifest.files)
    plan = []  # (file index, offset, length, inline bytes or None, [frame locations] or None)
    for i, f in enumerate(files):
        for off, length, cid, inline in pieces(manifest, f):
            plan.append((i, off, length, inline, chain_locations(store, cid) if cid is not None else None))
    chunks = [p for p in plan if p[4]]
    logical = sum(f.size for f in files)
    stored = sum(loc.length for p in chunks for loc in p[4])
    depth = statistics.mean(len(p[4]) for p in chunks) if chunks else 0

    # One streaming pass in file order, as a checkout runs (each chunk's buffers freed before the next, so
    # no step is charged for first-touch page faults of gigabytes held at once), with a CPU timer per step.
    spent = dict.fromkeys(("read", "decode", "hash_chunks", "hash_files", "write"), 0.0)
    longest_file = 0.0
    out_dir = scratch / "limit-out"
    out_dir.mkdir()
    clock = time.thread_time
    for i, f in enumerate(files):
        fd = os.open(out_dir / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if f.size:
            os.posix_fallocate(fd, 0, f.size)
        hasher, file_hash = blake3.blake3(), 0.0
        for p in plan:
            if p[0] != i:
                continue
            t0 = clock()
            if p[4] is None:
                raw = p[3]
                t1 = t2 = t3 = t0
            else:
                frames = [store.read_frame(loc) for loc in p[4]]
                t1 = clock()
                raw = codec.decode_chain(frames, p[4][0].raw_length)
                t2 = clock()
                blake3.blake3(raw).digest()
                t3 = clock()
            hasher.update(raw)
            t4 = clock()
            view, off = memoryview(raw), p[1]
            while view:
                done = os.pwrite(fd, view, off)
                view, off = view[done:], off + done
            t5 = clock()
            spent["read"] += t1 - t0
            spent["decode"] += t2 - t1
            spent["hash_chunks"] += t3 - t2
            spent["hash_files"] += t4 - t3
            spent["write"] += t5 - t4
            file_hash += t4 - t3
        os.close(fd)
        assert hasher.digest() == f.hash, f.path  # the data measured is the real file
        longest_file = max(longest_file, file_hash)
    shutil.rmtree(out_dir)
    with ThreadPoolExecutor(threads) as pool:
        def one(p: tuple) -> bytes:
            return blake3.blake3(codec.decode_chain([store.read_frame(loc) for loc in p[4]], p[4][0].raw_length)
                                 ).digest()
        t_par = wall(lambda: list(pool.map(one, chunks)))
    serial = sum(spent.values())
    cores = threads
    bound = max(serial / cores, longest_file)

    checkouts, copies = [], []
    src_dir = scratch / "src"
    repo.checkout(oid.hex(), src_dir)  # warm-up, and the files cp copies
    for k in range(repeat + 1):
        dest = scratch / f"co{k}"
        t = wall(lambda dest=dest: repo.checkout(oid.hex(), dest))
        if k:
            checkouts.append(t)
        shutil.rmtree(dest)
        dest = scratch / f"cp{k}"
        t = wall(lambda dest=dest: subprocess.run(["cp", "-r", str(src_dir), str(dest)], check=True))
        if k:
            copies.append(t)
        shutil.rmtree(dest)
    co, cp = statistics.median(checkouts), statistics.median(copies)
    return {
        "rev": oid.hex(), "files": len(files), "logical_bytes": logical, "stored_frame_bytes": stored,
        "chunks": len(chunks), "mean_chain_frames": depth, "threads": threads,
        "cpu_s": {**spent, "longest_file_hash": longest_file, "total": serial},
        "read_decode_hash_wall_s": t_par,
        "bound_s": bound, "checkout_s": co, "cp_s": cp,
        "checkout_vs_bound": co / bound if bound else None, "checkout_speed_vs_cp": cp / co if co else None,
        "checkout_runs": checkouts, "cp_runs": copies,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tune()  # the allocator settings the CLI runs with
    with Repo.open(args.repo) as repo, tempfile.TemporaryDirectory(dir=args.repo.parent) as scratch:
        result = measure(repo, args.rev, args.threads, args.repeat, Path(scratch))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    gb = result["logical_bytes"] / 1e9
    print(f"\n{gb:.2f} GB in {result['files']} files, {result['chunks']} chunks, "
          f"{result['mean_chain_frames']:.2f} frames per chunk", file=sys.stderr)
    for k, v in result["cpu_s"].items():
        print(f"  {k:18s} {v:7.3f} s  {gb / v if v else float('inf'):6.2f} GB/s", file=sys.stderr)
    print(f"  bound ({result['threads']} cores) {result['bound_s']:.3f} s; checkout {result['checkout_s']:.3f} s "
          f"({result['checkout_vs_bound']:.2f}× the bound); cp {result['cp_s']:.3f} s (checkout at "
          f"{result['checkout_speed_vs_cp']:.2f}× cp's speed)", file=sys.stderr)


if __name__ == "__main__":
    main()
