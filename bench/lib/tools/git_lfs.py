"""git + git-lfs (apt-get install -y git-lfs): the version copied into the work tree, `git add -A && git commit`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..measure import Run, Step, apparent_bytes
from ..versions import tool_version
from .base import Tool


def empty_work_tree(repo: Path, keep: tuple[str, ...]) -> None:
    for p in repo.iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


class GitLfs(Tool):
    """A git repository whose *.safetensors and *.pt go through git-lfs; stored = the size of .git."""

    name = "git-lfs"
    description = "git + git-lfs (`*.safetensors`, `*.pt` tracked), `git add -A && git commit`, checkout into a work tree"
    patterns = ["*.safetensors", "*.pt"]
    apt = "git-lfs"

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        if not shutil.which("git"):
            return "git not installed"
        r = subprocess.run(["git", "lfs", "version"], capture_output=True)
        return None if r.returncode == 0 else "git-lfs not installed (apt-get install -y git-lfs)"

    @classmethod
    def version(cls, envs: Path) -> str:
        return tool_version(["git", "lfs", "version"]) + "; " + tool_version(["git", "--version"])

    def git(self, step: Step, *args: Any) -> Run:
        return self.sh(step, ["git", *args], cwd=self.repo)

    def setup_filters(self) -> None:
        # the LFS rules go into .git/info/attributes, not .gitattributes: the work tree then holds exactly the
        # version's files (a checkpoint directory may bring its own .gitattributes, as the HF one of R does)
        self.git(Step(), "lfs", "install", "--local")
        rules = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in self.patterns)
        (self.repo / ".git" / "info").mkdir(exist_ok=True)
        (self.repo / ".git" / "info" / "attributes").write_text(rules)

    def init(self) -> None:
        self.repo.mkdir(parents=True)
        self.git(Step(), "init", "-q")
        self.setup_filters()

    def commit(self, i: int, src: Path, step: Step) -> None:
        if i >= 0:
            empty_work_tree(self.repo, (".git",) + self.restore_ignore)
            shutil.copytree(src, self.repo, dirs_exist_ok=True)  # the work tree a training run wrote (untimed)
        self.git(step, "add", "-A")
        self.git(step, "commit", "-q", "--allow-empty", "-m", f"v{i}")
        self.ids.append(self.git(Step(), "rev-parse", "HEAD").out.strip())

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        self.sh(step, ["git", f"--work-tree={dest}", "checkout", self.ids[i], "--", "."], cwd=self.repo)
        return dest

    def stored(self) -> tuple[int, int]:
        return apparent_bytes(self.repo / ".git"), 0

    def cold_paths(self) -> list[Path]:
        return [self.repo / ".git", self.ctx.dir / "home"]

    def recommit_src(self, src: Path) -> Path:
        return self.repo
