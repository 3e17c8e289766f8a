"""The Tool base every peer adapter of bench/series.py derives from, and what an adapter is given (Ctx)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..measure import Run, Step, apparent_bytes, run
from ..versions import tool_version


@dataclass
class Ctx:
    """What a tool adapter gets: its own directory, the environment to run in, the series dtype."""

    dir: Path
    env: dict[str, str]
    dtype: str
    envs: Path  # where the venvs live


class Tool:
    """A peer adapter: init, commit version i from src, check out version i into dest, say what is stored.

    commit() is called with i = -1 for the no-op re-commit of the newest version.
    """

    name = "?"
    description = ""
    restore_ignore: tuple[str, ...] = ()  # top-level names in the restored directory that are the tool's own
    binary = ""  # the command it needs on PATH
    apt = ""  # the Debian package that brings it (--install)
    version_cmd: tuple[str, ...] = ()  # prints the version on its first line

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.ids: list[str] = []

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(list(cls.version_cmd)) if cls.version_cmd else ""

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        """None when the tool can run here, else the reason it cannot."""
        if cls.binary and not shutil.which(cls.binary):
            return f"{cls.binary} not installed (apt-get install -y {cls.apt})"
        return None

    def sh(self, step: Step, cmd: list, cwd: Path | None = None) -> Run:
        return step.add(run(cmd, cwd=cwd, env=self.ctx.env))

    def init(self) -> None:
        raise NotImplementedError

    def commit(self, i: int, src: Path, step: Step) -> None:
        raise NotImplementedError

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        """Restore version i; returns the directory holding the restored files (dest unless the tool can't)."""
        raise NotImplementedError

    def stored(self) -> tuple[int, int]:
        """(stored bytes, auxiliary cache bytes not counted as stored)."""
        raise NotImplementedError

    def maintain(self, step: Step) -> bool:
        """Upkeep run once after the last commit, before the checkouts (timed in `step`); False: none."""
        return False

    def cold_paths(self) -> list[Path]:
        return [self.ctx.dir]

    def recommit_src(self, src: Path) -> Path:
        return src

    @property
    def repo(self) -> Path:
        return self.ctx.dir / "repo"

    @property
    def store(self) -> Path:
        return self.ctx.dir / "store"


class FileStore(Tool):
    """A tool that keeps each version as files under store/<n>/: stored = their apparent bytes."""

    def init(self) -> None:
        self.store.mkdir(parents=True)

    def next_id(self) -> str:
        return f"{len(self.ids)}"

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.store), 0
