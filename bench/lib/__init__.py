"""Shared code of the bench/ entry points (series.py, remote.py, codecs.py, queries.py, scenarios.py).

The entry points put bench/ on sys.path and import `lib.<module>`; nothing here parses a command line.

    measure.py         subprocesses measured (wall, CPU, peak RSS, I/O counters), stored bytes, eviction, hashes
    versions.py        version strings of the peers (CLI `--version`, `pip show`)
    envs.py            the redirected HOME of a tool run, venv and apt installs of the peers
    safetensors_io.py  reading and writing safetensors headers
    gpt.py, real_model.py   the model the scenarios train, the real weights of scenario R
    shapes.py, synth.py     the sizes' shapes (no torch); the synthetic size-L series (numpy, streamed, HF shards)
    tools/             one module per peer of series.py, on the small Tool base of tools/base.py
    series_run.py      one series measured for every tool, interleaved
    summary.py         derived figures of one tool on one series, ordering of series and tools
    targets.py         the targets of shared/BENCHMARKS.md as a data table, one generic evaluator
    report.py          number formatting and the markdown of docs/benchmarks*.md
    results.py         results.json and meta.json of a series.py --out directory
    remote_s3.py, remote_tools.py, remote_run.py, remote_report.py   what bench/remote.py measures and reports
"""

import time
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
KIB, MIB = 1024, 1024 * 1024
ALL_SCENARIOS = ["mix", "A", "B", "C", "Cfile", "D", "E", "Ept", "R"]
SYNTH_SCENARIOS = ["mix", "mixsharded"]  # the synthetic sizes (L): the mix series in one file and sharded
ALL_DTYPES = ["fp32", "bf16"]


def open_log(path: Path, stamp: str = "[%H:%M:%S]") -> Callable[[str], None]:
    """A log function: each message with a time stamp, printed and appended to path."""
    logf = open(path, "a")

    def log(msg: str) -> None:
        line = f"{time.strftime(stamp)} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()
    return log
