"""A plain copy per version (coreutils `cp -r` + `sync`): the speed floor."""

from __future__ import annotations

from pathlib import Path

from ..measure import Step
from .base import FileStore


class Copy(FileStore):
    name = "copy"
    description = "plain copy: `cp -r` + `sync` per version (the speed floor)"
    version_cmd = ("cp", "--version")

    def commit(self, i: int, src: Path, step: Step) -> None:
        name = self.next_id()
        self.sh(step, ["sh", "-c", 'cp -r "$0" "$1" && sync', src, self.store / name])
        self.ids.append(name)

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["cp", "-r", f"{self.store / self.ids[i]}/.", dest])
        return dest
