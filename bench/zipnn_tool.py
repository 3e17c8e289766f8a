"""ZipNN per-file compression for bench/series.py; runs inside the zipnn venv (torch==2.13.0 + zipnn).

    python zipnn_tool.py compress   SRC_DIR DST_DIR DTYPE   # every file of SRC_DIR -> DST_DIR/<rel>.znn
    python zipnn_tool.py decompress STORE_DIR OUT_DIR       # every STORE_DIR/<rel>.znn -> OUT_DIR/<rel>

DTYPE is the float type ZipNN groups bytes for: float32 or bfloat16. Each file is compressed whole, as bytes,
the way ZipNN's own file scripts do. ZipNN rewrites the buffer it is given in place, so it always gets a copy.
A small header (the dtype and the original length) is written before each compressed payload so decompression
needs no flag. ZipNN 0.5.4 can corrupt its heap (abort) on a buffer whose length is not a multiple of the dtype
width (seen on small JSON files with float32), so such a buffer is zero-padded to the width and cut back after
decompression.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from zipnn import ZipNN

MAGIC = b"ZNN2"
WIDTH = {"float32": 4, "bfloat16": 2, "float16": 2}


def compress(src: Path, dst: Path, dtype: str) -> None:
    znn = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=2)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dst / (str(path.relative_to(src)) + ".znn")
        out.parent.mkdir(parents=True, exist_ok=True)
        data = bytearray(path.read_bytes())  # a private copy: ZipNN rewrites its input buffer
        size = len(data)
        data += bytes(-size % WIDTH.get(dtype, 1))
        payload = znn.compress(data) if data else b""
        with open(out, "wb") as f:
            f.write(MAGIC + dtype.encode().ljust(16, b" ") + struct.pack("<Q", size) + bytes(payload))


def decompress(dst_files: Path, out_dir: Path) -> None:
    cache: dict[str, ZipNN] = {}
    for path in sorted(p for p in dst_files.rglob("*.znn") if p.is_file()):
        blob = path.read_bytes()
        if blob[:4] not in (MAGIC, b"ZNNB"):
            raise SystemExit(f"{path}: not a zipnn_tool file")
        dtype = blob[4:20].decode().strip()
        if blob[:4] == MAGIC:
            (size,) = struct.unpack("<Q", blob[20:28])
            payload = blob[28:]
        else:  # the first format: no length, never padded
            size, payload = None, blob[20:]
        znn = cache.setdefault(dtype, ZipNN(input_format="byte", bytearray_dtype=dtype, threads=2))
        data = bytes(znn.decompress(bytearray(payload)))[:size] if payload else b""
        out = out_dir / str(path.relative_to(dst_files))[: -len(".znn")]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            f.write(data)


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "compress":
        compress(Path(argv[1]), Path(argv[2]), argv[3])
    elif len(argv) >= 3 and argv[0] == "decompress":
        decompress(Path(argv[1]), Path(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
