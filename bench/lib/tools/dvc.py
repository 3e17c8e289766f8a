"""DVC 3 in its own venv (--envs/dvc, `pip install dvc`): `dvc add` of the workspace, `dvc checkout`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..measure import Run, Step, apparent_bytes
from ..versions import tool_version
from .base import Tool


class Dvc(Tool):
    """DVC tracks a workspace directory: each version is copied into ws/ckpt (untimed), then `dvc add ckpt`.

    Checkout: the version's .dvc file is put back and `dvc checkout` rebuilds ws/ckpt from the cache (copy links).
    """

    name = "dvc"
    description = "DVC 3 (own venv), `init --no-scm`, `dvc add` of the version directory, `dvc checkout`"

    @classmethod
    def bin(cls, envs: Path) -> Path:
        return envs / "dvc" / "bin" / "dvc"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        return None if cls.bin(envs).exists() else f"DVC venv missing ({cls.bin(envs)}); run with --install"

    @classmethod
    def version(cls, envs: Path) -> str:
        return "dvc " + tool_version([str(cls.bin(envs)), "--version"])

    @property
    def ws(self) -> Path:
        return self.ctx.dir / "ws"

    def dvc(self, step: Step, *args: Any) -> Run:
        return self.sh(step, [self.bin(self.ctx.envs), *args], cwd=self.ws)

    def init(self) -> None:
        self.ws.mkdir(parents=True)
        self.dvc(Step(), "init", "--no-scm", "-q")
        self.dvc(Step(), "config", "core.analytics", "false")
        (self.ctx.dir / "versions").mkdir()

    def commit(self, i: int, src: Path, step: Step) -> None:
        ck = self.ws / "ckpt"
        if src != ck:
            shutil.rmtree(ck, ignore_errors=True)
            shutil.copytree(src, ck)  # the workspace a training run would have written (untimed)
        self.dvc(step, "add", "-q", "ckpt")
        record = self.ctx.dir / "versions" / f"{len(self.ids)}.dvc"
        shutil.copyfile(self.ws / "ckpt.dvc", record)
        self.ids.append(str(record))

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        shutil.rmtree(self.ws / "ckpt", ignore_errors=True)
        shutil.copyfile(self.ids[i], self.ws / "ckpt.dvc")
        self.dvc(step, "checkout", "-q", "ckpt.dvc")
        return self.ws / "ckpt"

    def stored(self) -> tuple[int, int]:
        d = self.ws / ".dvc"
        return apparent_bytes(d / "cache"), apparent_bytes(d, exclude=[d / "cache"]) + apparent_bytes(
            self.ctx.dir / "home")

    def cold_paths(self) -> list[Path]:
        return [self.ws / ".dvc", self.ctx.dir / "home"]

    def recommit_src(self, src: Path) -> Path:
        return self.ws / "ckpt"  # holds the newest version after the checkouts: `dvc add` again
