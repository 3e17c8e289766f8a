"""borg 1.2 (apt-get install -y borgbackup): `create --compression zstd,3` per version, `extract`."""

from __future__ import annotations

from pathlib import Path

from ..measure import Step, apparent_bytes
from .base import Tool


class Borg(Tool):
    name = "borg"
    description = "borg 1.2, `init -e none`, `create --compression zstd,3`, `extract`"
    binary, apt = "borg", "borgbackup"
    version_cmd = ("borg", "--version")

    def init(self) -> None:
        self.sh(Step(), ["borg", "init", "-e", "none", self.repo])

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = f"v{i}" if i >= 0 else f"recommit{len(self.ids)}"
        self.sh(step, ["borg", "create", "--compression", "zstd,3", f"{self.repo}::{name}", "."], cwd=src)
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["borg", "extract", f"{self.repo}::{self.ids[i]}"], cwd=dest)
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.repo), apparent_bytes(self.ctx.dir / "home" / "borg")
