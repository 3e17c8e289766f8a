"""restic 0.14 (apt-get install -y restic): `backup` of the version directory, `restore` of its snapshot."""

from __future__ import annotations

import json
from pathlib import Path

from ..measure import Step, apparent_bytes
from .base import Tool


class Restic(Tool):
    name = "restic"
    compression = "auto"
    description = "restic 0.14, repository v2, `backup --compression auto`, `restore`"
    binary = apt = "restic"
    version_cmd = ("restic", "version")

    def init(self) -> None:
        self.sh(Step(), ["restic", "-r", self.repo, "init", "--repository-version", "2"])

    def commit(self, i: int, src: Path, step: Step) -> None:
        r = self.sh(step, ["restic", "-r", self.repo, "backup", "--compression", self.compression, "--host", "bench",
                           "--json", "."], cwd=src)
        summary = [json.loads(line) for line in r.out.splitlines() if '"summary"' in line][-1]
        self.ids.append(summary["snapshot_id"])

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["restic", "-r", self.repo, "restore", self.ids[i], "--target", dest])
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.repo), apparent_bytes(self.ctx.dir / "home" / ".cache")


class ResticMax(Restic):
    name = "restic-max"
    compression = "max"
    description = "restic as above with `--compression max`"
