"""Shared by the soak tests (not a test module): import paths for the CI-tier helpers, and the tally every soak test
records its count and failures with (JUnit properties read by bench/soak.py)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for _sub in ("", "engine", "sync", "storage", "formats"):  # the CI-tier modules import by basename
    _p = str(TESTS / _sub) if _sub else str(TESTS)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from conftest import SOAK, skip_unless_soak, soak  # noqa: E402,F401

SCALE = float(os.environ.get("CKSTORE_SOAK_SCALE") or 1)  # < 1 for a quick rehearsal; the counts run are recorded


def n(count: int) -> int:
    """`count` cases, scaled by CKSTORE_SOAK_SCALE."""
    return max(1, round(count * SCALE))


class Tally:
    """Run cases one by one; a failing case is kept (seed and error) and the run goes on. `finish` records
    count, failures and target as JUnit properties and fails the test if any case failed."""

    def __init__(self, record_property, target: int | str) -> None:
        self.record, self.target = record_property, target
        self.count = 0
        self.failures: list[tuple[object, str]] = []
        self.notes: dict[str, object] = {}

    def case(self, seed: object, fn, *args, **kwargs):
        self.count += 1
        try:
            return fn(*args, **kwargs)
        except (Exception, pytest.fail.Exception) as exc:  # pytest.fail raises a BaseException
            last = traceback.extract_tb(exc.__traceback__)[-1]
            text = str(exc) if len(str(exc)) < 900 else f"{str(exc)[:300]} ... {str(exc)[-600:]}"
            self.failures.append((seed, f"{type(exc).__name__}: {text} ({Path(last.filename).name}:{last.lineno})"))
            return None

    def finish(self) -> None:
        self.record("count", self.count)
        self.record("failures", len(self.failures))
        self.record("target", self.target)
        for k, v in self.notes.items():
            self.record(k, v)
        if self.failures:
            self.record("failed_seeds", " ; ".join(f"{s}: {e}" for s, e in self.failures[:20]))
        assert self.count > 0, "no case ran"
        assert not self.failures, f"{len(self.failures)}/{self.count} failed: {self.failures[:5]}"
