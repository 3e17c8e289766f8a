"""Where a tool runs: its redirected HOME and caches; installing the peers that are missing (apt-get, venvs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .tools import TOOLS

DEFAULT_ENVS = Path("/tmp/ckbench-envs")  # venvs for DVC, ZipNN and git-theta (created on demand)
TORCH_PIN = "torch==2.13.0"  # the CPU wheel on this machine; a bare `torch` pulls a multi-GB CUDA build
VENVS = {"dvc": [["dvc"]], "zipnn": [[TORCH_PIN], ["zipnn"]], "git-theta": [[TORCH_PIN], ["git-theta", "safetensors"]]}


def install_envs(envs: Path, tools: list[str], log: Callable[[str], None]) -> None:
    """apt-get / venv installs for the peers that are missing; failures are left for unavailable() to report."""
    missing = sorted({TOOLS[t].apt for t in tools if TOOLS[t].apt and TOOLS[t].unavailable(envs)})
    if missing:
        log(f"apt-get install -y {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True)
    envs.mkdir(parents=True, exist_ok=True)
    for tool, steps in VENVS.items():
        if tool not in tools or not TOOLS[tool].unavailable(envs):
            continue
        venv = envs / ("theta" if tool == "git-theta" else tool)
        log(f"creating {venv} for {tool}")
        with open(envs / f"{tool}-install.log", "ab") as f:
            ok = subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=f, stderr=f).returncode == 0
            for pkgs in steps:
                if ok:
                    ok = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs], stdout=f, stderr=f,
                                        timeout=900).returncode == 0


def tool_env(d: Path, envs: Path) -> dict[str, str]:
    """The environment of a tool run in d: HOME, XDG_*, the borg, DVC and restic caches all under d/home."""
    home = d / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GIT_", "BORG_", "RESTIC_", "DVC_"))}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"), XDG_STATE_HOME=str(home / ".local" / "state"),
        BORG_BASE_DIR=str(home / "borg"), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", DVC_SITE_CACHE_DIR=str(home / "dvc-site"), DVC_NO_ANALYTICS="1",
        RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(home / ".cache" / "restic"),
        GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost", GIT_THETA_CHECKPOINT_TYPE="safetensors",
    )
    # the pyenv shims look for their root under HOME: keep the real one
    env.setdefault("PYENV_ROOT", str(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))))
    theta_bin = envs / "theta" / "bin"
    if theta_bin.exists():  # git-theta's filters are found on PATH; harmless for the others (nothing shadows git)
        env["PATH"] = env.get("PATH", "") + os.pathsep + str(theta_bin)
    for sub in ("", ".config", ".cache", ".local/share", ".local/state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return env
