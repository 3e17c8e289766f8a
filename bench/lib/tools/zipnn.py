"""ZipNN in its own venv (--envs/zipnn: torch==2.13.0, then zipnn), driven through bench/zipnn_tool.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import BENCH
from ..measure import Step
from ..versions import pip_version
from .base import FileStore

SCRIPT = BENCH / "zipnn_tool.py"
FLOAT = {"fp32": "float32", "bf16": "bfloat16"}  # the series dtype as ZipNN names the type it groups bytes for


def python(envs: Path) -> Path:
    return envs / "zipnn" / "bin" / "python"


def compress_cmd(envs: Path, src: Path, dst: Path, dtype: str) -> list:
    """Every file of src compressed whole (bytes mode, dtype of the series) into dst/<rel>.znn."""
    return [python(envs), SCRIPT, "compress", src, dst, FLOAT[dtype]]


class Zipnn(FileStore):
    name = "zipnn"
    description = "ZipNN per file per version (own venv with torch==2.13.0), bytes mode, dtype of the series"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        py = python(envs)
        if not py.exists():
            return f"ZipNN venv missing ({py}); run with --install"
        r = subprocess.run([str(py), "-c", "import zipnn"], capture_output=True, text=True)
        return None if r.returncode == 0 else f"import zipnn failed: {r.stderr.strip()[-300:]}"

    @classmethod
    def version(cls, envs: Path) -> str:
        return "zipnn " + pip_version(python(envs), "zipnn")

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = self.next_id()
        self.sh(step, compress_cmd(self.ctx.envs, src, self.store / name, self.ctx.dtype))
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, [python(self.ctx.envs), SCRIPT, "decompress", self.store / self.ids[i], dest])
        return dest
