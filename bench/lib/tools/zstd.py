"""The zstd CLI (apt-get install -y zstd): `zstd -3 -T2` per file per version."""

from __future__ import annotations

from pathlib import Path

from ..measure import Step, files_under
from .base import FileStore


class Zstd(FileStore):
    name = "zstd"
    description = "zstd CLI, `zstd -3 -T2` per file per version; store = sum of the .zst"
    binary = apt = "zstd"
    version_cmd = ("zstd", "--version")

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = self.next_id()
        for p in sorted(files_under(src)):
            out = self.store / name / (str(p.relative_to(src)) + ".zst")
            out.parent.mkdir(parents=True, exist_ok=True)
            self.sh(step, ["zstd", "-3", "-T2", "-q", p, "-o", out])
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        folder = self.store / self.ids[i]
        for p in sorted(files_under(folder)):
            out = dest / str(p.relative_to(folder))[: -len(".zst")]
            out.parent.mkdir(parents=True, exist_ok=True)
            self.sh(step, ["zstd", "-d", "-q", p, "-o", out])
        return dest
