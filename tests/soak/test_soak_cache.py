"""T13 soak: damage to every LMDB database of the cache (chunk locations, pack list, commits cache, stat cache),
zeroed and flipped pages, truncated data files; every command runs in its own process and is compared with the
intact repository's answers (tests/storage/test_cache_damage.py's oracle)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from soakutil import Tally, n, skip_unless_soak, soak

import test_cache_damage as cd
from test_cache_damage import base  # noqa: F401  (module fixture)

pytestmark = [soak, skip_unless_soak]


def entry_case(base, work: Path, table: bytes, seed: int) -> int:  # noqa: F811
    work.mkdir()
    case = cd.copy_of(base, work)
    cd.ck(case, "log")  # fills the commits cache
    flipped = cd.flip_entries(case, table, random.Random(seed))
    assert flipped > 0, f"table {table!r} is empty"
    cd.check_everything(case, base[1], base[2], work)
    shutil.rmtree(work)
    return flipped


def page_case(base, work: Path, seed: int) -> None:  # noqa: F811
    work.mkdir()
    case = cd.copy_of(base, work)
    data = case / ".ckstore" / "cache" / "index.lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    rng = random.Random(seed)
    pages = list(range(2, len(raw) // 4096))
    how = ["zero", "flip", "truncate"][seed % 3]
    if how == "truncate":
        raw = raw[:rng.randrange(len(raw))]
    for page in rng.sample(pages, min(2, len(pages))) if how != "truncate" else ():
        if how == "zero":
            raw[page * 4096:(page + 1) * 4096] = bytes(4096)
        else:
            for _ in range(8):
                raw[page * 4096 + rng.randrange(4096)] ^= 1 << rng.randrange(8)
    data.write_bytes(bytes(raw))
    cd.check_everything(case, base[1], base[2], work)
    shutil.rmtree(work)


@pytest.mark.parametrize("table", [b"chunks", b"packs", b"commits", b"stat"])
def test_t13_flipped_entries(base, tmp_path: Path, record_property, table: bytes) -> None:  # noqa: F811
    tally, flips = Tally(record_property, 100), 0
    for seed in range(n(34)):
        flips += tally.case(f"{table.decode()} seed {seed}", entry_case, base, tmp_path / f"s{seed}", table,
                            seed) or 0
    tally.notes["damaged_copies"] = tally.count
    tally.count = flips  # the target counts flips: 3 entries in each damaged copy
    tally.finish()


def test_t13_pages_zeroed_flipped_truncated(base, tmp_path: Path, record_property) -> None:  # noqa: F811
    tally = Tally(record_property, 100)
    for seed in range(n(100)):
        tally.case(f"page seed {seed}", page_case, base, tmp_path / f"p{seed}", seed)
    tally.finish()
