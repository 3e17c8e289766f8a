"""Capture from outside the model: the environment a checkpoint was made in, and metadata files on disk."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidMetadata
from ..model.metadata import parse_meta_text


def read_meta_file(path: str | os.PathLike) -> dict:
    """Metadata from a JSON, YAML or TOML file (by extension); the top level must be a mapping."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidMetadata(f"cannot read metadata file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_meta_text(text, p.name)


_PACKAGES = ("numpy", "torch", "transformers", "safetensors", "jax", "ckstore")


def capture_env() -> dict:
    """What produced this checkpoint: interpreter, platform, library versions, and the training code's git state."""
    env: dict = {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count() or 0,
        "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else [],
    }
    from importlib import metadata as importlib_metadata  # ~20 ms to import: only when a commit is made

    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    env["packages"] = versions
    torch = sys.modules.get("torch")  # never import torch just to ask about GPUs
    if torch is not None:
        try:
            env["cuda"] = bool(torch.cuda.is_available())
            if env["cuda"]:
                env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # a broken CUDA setup must not block a commit
            env["cuda"] = False
    git = _git_state()
    if git:
        env["git"] = git
    return env


def _git_state() -> dict | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None
