"""Version strings of the peers, informative only: a failure gives "?" rather than an error."""

from __future__ import annotations

import subprocess
from pathlib import Path


def tool_version(cmd: list[str]) -> str:
    """The first line a `--version`-like command prints."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a version string is informative only
        return f"? ({e})"


def pip_version(python: Path, package: str) -> str:
    """The version `pip show` gives for package in the environment of that interpreter."""
    try:
        r = subprocess.run([str(python), "-m", "pip", "show", package], capture_output=True, text=True)
    except OSError:
        return "?"
    v = [line for line in r.stdout.splitlines() if line.startswith("Version")]
    return v[0].split()[-1] if v else "?"
