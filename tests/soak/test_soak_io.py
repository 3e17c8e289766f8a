"""Soak tier of the file-system cases of RELIABILITY.md: T2 (every power-loss state of every prefix of a recorded
commit and push, tests/powerloss.py) and T7 (ENOSPC from every write-like call of a commit, a checkout and a pull,
tests/enospc_shim.c). The CI tier of both is tests/engine/test_powerloss.py and tests/engine/test_diskfull.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from soakutil import Tally, skip_unless_soak, soak

import powerloss as pl
import test_diskfull as df
import test_powerloss as tp
from test_diskfull import shim  # noqa: F401  (module fixture)

pytestmark = [soak, skip_unless_soak]


@pytest.mark.parametrize("scenario", tp.SCENARIOS, ids=lambda s: s.name)
def test_t2_power_loss(scenario: pl.Scenario, tmp_path: Path, record_property) -> None:
    """Every variant of every prefix (module docstring of tests/powerloss.py); identical states checked once."""
    tally = Tally(record_property, f"every state of a {scenario.name.split('-')[0]}")
    result = pl.sweep(scenario, tmp_path / "w", on_case=tally.case)
    tally.notes["operations"] = len(result.recording.ops)
    tally.notes["durable_points"] = result.durable_points
    tally.notes["states_built"] = result.states
    tally.finish()


@pytest.mark.parametrize("name", sorted(df.CASES))
def test_t7_enospc_every_step(shim, tmp_path: Path, record_property, name: str) -> None:  # noqa: F811
    tally = Tally(record_property, "ENOSPC at every I/O step of one commit" if name == "commit"
                  else "ENOSPC at every I/O step")
    case = df.CASES[name](tmp_path / "base")
    steps = df.count_steps(shim, case, tmp_path / "count")
    for k in range(1, steps + 1):
        tally.case(f"{name} ENOSPC from write-like call {k}/{steps}", df.full_at, shim, case, k, tmp_path / f"k{k}")
    tally.notes["io_steps"] = steps
    tally.finish()
