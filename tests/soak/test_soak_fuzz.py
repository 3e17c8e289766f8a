"""T8 soak: fuzz every reader (safetensors, .npy, .npz, torch zip and legacy pickle files, and the opaque fallback).

Seeded mutation and random-bytes cases are generated with `random.Random(seed)` (cheap: 10^5 of each fit); the
structured safetensors- and npy-header strategies of tests/formats/test_formats.py run under hypothesis with the
examples counted. The oracle is test_formats._check_scan: a typed MalformedCheckpoint naming the file, or a scan
whose spans cover the file byte for byte."""

from __future__ import annotations

import io
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings

from soakutil import Tally, n, skip_unless_soak, soak

import test_formats as tf

pytestmark = [soak, skip_unless_soak]
READERS = ["f.safetensors", "f.npy", "f.npz", "f.pt", "f.bin", "f.txt"]  # every dispatch target


@pytest.fixture(scope="module")
def bases() -> dict[str, bytes]:
    """test_formats' base files plus a real torch.save archive and a legacy (non-zip) torch file."""
    torch = pytest.importorskip("torch")
    out = dict(tf.BASES)
    f = io.BytesIO()
    torch.save({"layer.weight": torch.arange(6, dtype=torch.float32), "step": 3}, f)
    out["t.pt"] = f.getvalue()
    f = io.BytesIO()
    torch.save({"w": torch.ones(3)}, f, _use_new_zipfile_serialization=False)
    out["legacy.pt"] = f.getvalue()
    return out


def random_ops(rng: random.Random) -> list[tuple]:
    ops = []
    for _ in range(rng.randint(1, 4)):
        k, pos = rng.choice(["flip", "trunc", "splice", "dup", "byte"]), rng.randrange(1 << 16)
        if k == "flip":
            ops.append((k, pos, rng.randrange(8)))
        elif k == "trunc":
            ops.append((k, pos))
        elif k == "splice":
            ops.append((k, pos, rng.randrange(65), rng.randbytes(rng.randrange(65))))
        elif k == "dup":
            ops.append((k, pos, rng.randrange(65), rng.randrange(1 << 16)))
        else:
            ops.append((k, pos, rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0x5B, 0x7B, 0x22, 0x2D, 0x39, 0x2C, 0x5D, 0x7D])))
    return ops


def mutated_case(seed: int, bases: dict[str, bytes]) -> None:
    rng = random.Random(seed)
    name = rng.choice(sorted(bases))
    data = tf._mutate(bases[name], random_ops(rng))
    tf._check_scan(name, data)
    tf._check_scan(rng.choice(READERS), data)  # the same bytes under another reader


def random_case(seed: int) -> None:
    rng = random.Random(seed)
    kind, rest = rng.randrange(5), rng.randbytes(rng.randrange(513))
    data = [rest, struct.pack("<Q", rng.randrange(601)) + rest, b"\x93NUMPY" + bytes([rng.randrange(5), 0]) + rest,
            b"PK\x03\x04" + rest, b"\x80" + bytes([rng.randrange(6)]) + rest][kind]
    tf._check_scan(rng.choice(READERS), data)


def test_t8_fuzz_mutated_every_reader(bases, record_property) -> None:
    tally = Tally(record_property, 100_000)
    for seed in range(n(100_000)):
        tally.case(f"mutated Random({seed})", mutated_case, seed, bases)
    tally.finish()


def test_t8_fuzz_random_bytes_every_reader(record_property) -> None:
    tally = Tally(record_property, 100_000)
    for seed in range(n(100_000)):
        tally.case(f"random Random({seed})", random_case, seed)
    tally.finish()


def test_t8_every_truncation_of_every_base(bases, record_property) -> None:
    tally = Tally(record_property, "every truncation")
    for name, data in sorted(bases.items()):
        for cut in range(len(data)):
            tally.case(f"{name}[:{cut}]", tf._check_scan, name, data[:cut])
    tally.finish()


@pytest.mark.parametrize("which", ["st_header", "npy_header"])
def test_t8_fuzz_structured_headers(record_property, which: str) -> None:
    """Hypothesis, with its examples counted (it may stop early once a strategy is exhausted)."""
    fn, strategies = {"st_header": (tf._structured_st, tf._STRUCT), "npy_header": (tf._npy_header_fuzz, tf._NPY)}[which]
    target = n(100_000)
    tally = Tally(record_property, 100_000)

    @settings(max_examples=target, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(**strategies)
    def run(**kw):
        tally.count += 1
        fn(**kw)

    try:
        run()
    except (Exception, pytest.fail.Exception) as exc:  # hypothesis re-raises the shrunk failing example
        tally.failures.append(("hypothesis (shrunk example in the test output)", repr(exc)[:400]))
    tally.finish()
