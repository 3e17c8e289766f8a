"""The lower bound of a verified checkout on this machine, measured on the checkout's own frames.

    python bench/limits.py --repo DIR [--rev REV] [--repeat 3] [--threads N] [--json OUT]

For every file of commit REV it times, as tight loops over the same data a checkout touches, the work no
verified checkout can skip:

  read     pread every frame the files need (each chunk's whole delta chain, as stored) from the page cache
  decode   decode each chunk from those frames (zstd planes joined, XOR chains applied: `codec.decode_chain`)
  hash     BLAKE3 of every decoded chunk (each is checked against its id) and of every whole file, in order
  write    pwrite every chunk at its offset into a preallocated file (page cache, no fsync: checkout has none)

each on one thread (CPU seconds, so other load on the machine counts little) and the decode and chunk hashes
also on --threads workers (wall seconds). The bound is the larger of: all the work spread evenly over the cores,
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


def cpu(fn) -> float:
    """Thread CPU seconds of fn()."""
    t = time.thread_time()
    fn()
    return time.thread_time() - t


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

    frames: list[list[bytes]] = []
    t_read = cpu(lambda: frames.extend([store.read_frame(loc) for loc in p[4]] for p in chunks))
    raws: list[memoryview] = []
    t_decode = cpu(lambda: raws.extend(codec.decode_chain(fr, p[4][0].raw_length) for fr, p in zip(frames, chunks)))
    t_hash_chunks = cpu(lambda: [blake3.blake3(r).digest() for r in raws])
    by_file: dict[int, list] = {}
    raw_of = {id(p): r for p, r in zip(chunks, raws)}
    for p in plan:
        by_file.setdefault(p[0], []).append(raw_of.get(id(p), p[3]))

    def hash_files() -> None:
        for i, parts in by_file.items():
            h = blake3.blake3()
            for r in parts:
                h.update(r)
            assert h.digest() == files[i].hash, files[i].path  # the data measured is the real file

    t_hash_files = cpu(hash_files)
    def one_file(parts: list) -> None:
        h = blake3.blake3()
        for r in parts:
            h.update(r)

    longest_file = max((cpu(lambda parts=parts: one_file(parts)) for parts in by_file.values()), default=0.0)
    out_dir = scratch / "limit-out"
    out_dir.mkdir()

    def write() -> None:
        for i, f in enumerate(files):
            fd = os.open(out_dir / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if f.size:
                    os.posix_fallocate(fd, 0, f.size)
                for p in plan:
                    if p[0] == i:
                        os.pwrite(fd, raw_of.get(id(p), p[3]), p[1])
            finally:
                os.close(fd)

    t_write = wall(write)  # mostly kernel time: wall on an otherwise idle step
    shutil.rmtree(out_dir)
    with ThreadPoolExecutor(threads) as pool:
        t_par = wall(lambda: list(pool.map(lambda fp: blake3.blake3(codec.decode_chain(fp[0], fp[1][4][0].raw_length))
                                           .digest(), zip(frames, chunks))))
    serial = t_read + t_decode + t_hash_chunks + t_hash_files + t_write
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
        "cpu_s": {"read": t_read, "decode": t_decode, "hash_chunks": t_hash_chunks, "hash_files": t_hash_files,
                  "write_wall": t_write, "longest_file_hash": longest_file},
        "decode_and_hash_wall_s": t_par,
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
