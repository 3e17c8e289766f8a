"""git-theta 0.2 (optional; venv --envs/theta with torch==2.13.0, git-theta, safetensors): per-tensor LFS objects."""

from __future__ import annotations

from pathlib import Path

from ..measure import Step
from ..versions import pip_version
from .git_lfs import GitLfs, empty_work_tree


class GitTheta(GitLfs):
    """git-theta: per-tensor LFS objects for safetensors; needs its venv on PATH for the filters (see envs.tool_env)."""

    name = "git-theta"
    restore_ignore = (".git", ".gitattributes")
    description = "git-theta (own venv, GIT_THETA_CHECKPOINT_TYPE=safetensors), `*.safetensors` tracked"
    patterns = ["*.safetensors"]
    apt = ""  # its venv, see envs.VENVS; git-lfs is git-lfs's to install

    @classmethod
    def unavailable(cls, envs: Path) -> str | None:
        if not (envs / "theta" / "bin" / "git-theta").exists():
            return f"git-theta venv missing ({envs / 'theta'}); it is optional"
        return GitLfs.unavailable(envs)

    @classmethod
    def version(cls, envs: Path) -> str:
        return "git-theta " + pip_version(envs / "theta" / "bin" / "python", "git-theta")

    def setup_filters(self) -> None:
        self.git(Step(), "lfs", "install", "--local")
        self.git(Step(), "theta", "install")  # writes the filter config into the redirected HOME
        for pat in self.patterns:
            self.git(Step(), "theta", "track", pat)  # writes .gitattributes: left out of the comparison
        self.git(Step(), "add", ".gitattributes")
        self.git(Step(), "commit", "-q", "-m", "init")

    def checkout(self, i: int, dest: Path, step: Step) -> Path:
        # git-theta's smudge filter opens the work tree as a repository and refuses `--work-tree` and linked work
        # trees: the repository's own work tree is emptied (untimed) and checked out, and is what gets verified
        empty_work_tree(self.repo, self.restore_ignore)
        self.sh(step, ["git", "checkout", "-f", self.ids[i], "--", "."], cwd=self.repo)
        return self.repo
