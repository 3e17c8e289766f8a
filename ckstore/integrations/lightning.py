"""Lightning: `CkstoreCheckpointIO` stores each checkpoint as a commit and leaves a small pointer file behind.

    trainer = L.Trainer(plugins=[CkstoreCheckpointIO("runs")])    # or AsyncCheckpointIO(CkstoreCheckpointIO(...))
    trainer.fit(model, ckpt_path="last")                           # resumes through the pointer file
    trainer.fit(model, ckpt_path="ckstore://lightning/last.ckpt")  # or any revision

`save_checkpoint(checkpoint, path)` commits the checkpoint dict as a state dict (nesting and dtypes kept; no pickle)
to `branch`, points the alias `<prefix><file name>` at it and writes at `path` a JSON pointer naming the
repository and the commit, so ModelCheckpoint's bookkeeping (top-k, last, resume) works unchanged.
`remove_checkpoint(path)` deletes the pointer and the alias: the commit stays in history.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

try:
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
except ImportError:  # the standalone pytorch_lightning package
    from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from ..api import Repo
from ..errors import CkstoreError, UsageError
from .common import open_or_init

POINTER = "ckstore-pointer"
SCHEME = "ckstore://"
MAX_POINTER = 64 << 10
_BAD = re.compile(r"[^A-Za-z0-9._=-]+")
_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CkstoreCheckpointIO(CheckpointIO):
    """Lightning's CheckpointIO over a ckstore repository (thread-safe, so AsyncCheckpointIO may wrap it)."""

    def __init__(self, repo_or_path: Repo | str | os.PathLike, *, branch: str | None = None,
                 alias_prefix: str = "lightning/", capture_env: bool = True) -> None:
        self.target, self.branch, self.alias_prefix, self.capture_env = repo_or_path, branch, alias_prefix, capture_env
        self.repo: Repo | None = None
        self._owned = False
        self._lock = threading.Lock()

    def _open(self) -> Repo:
        if self.repo is None:
            self.repo, self._owned = open_or_init(self.target)
        return self.repo

    def alias_for(self, path: str | os.PathLike) -> str:
        """The alias naming the commit saved at `path`: the prefix and the file name, made a valid ref name."""
        return self.alias_prefix + (_BAD.sub("_", Path(path).name).lstrip(".") or "checkpoint")

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        """Commit `checkpoint`, point the path's alias at it, then write the pointer file at `path`."""
        if storage_options is not None:
            raise UsageError("CkstoreCheckpointIO takes no storage_options")
        step = checkpoint.get("global_step")
        metrics = _metrics(checkpoint)
        target = Path(path)
        with self._lock:
            repo = self._open()
            done = repo.commit(checkpoint, f"{target.name}", step=step if isinstance(step, int) else None,
                               metrics=metrics, meta={"extra": {"lightning": {"file": target.name,
                                                                               "epoch": checkpoint.get("epoch")}}},
                               branch=self.branch, capture_env=self.capture_env)
            repo.alias_set(self.alias_for(target), done.id, f"lightning saved {target.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": POINTER, "repo": str(repo.root), "commit": done.id,
                                       "alias": self.alias_for(target)}) + "\n")
            os.replace(tmp, target)  # the pointer appears only once the commit (and its data) is durable

    def load_checkpoint(self, path: str | os.PathLike, *, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """The checkpoint saved at `path` (a pointer file) or named by `ckstore://REV`."""
        text = os.fspath(path)
        with self._lock:
            if text.startswith(SCHEME):
                state = load_revision(self._open(), text[len(SCHEME):] or "HEAD")
            else:
                pointer = read_pointer(text)
                repo = self._open()
                if Path(pointer["repo"]).resolve() != repo.root.resolve():
                    with Repo.open(pointer["repo"]) as other:
                        state = load_revision(other, pointer["commit"])
                else:
                    state = load_revision(repo, pointer["commit"])
        return _mapped(state, map_location)

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Delete the pointer file and drop its alias; the commit and its data stay in history."""
        target = Path(path)
        with self._lock:
            try:
                pointer = read_pointer(target)
            except CkstoreError:
                pointer = None
            if pointer is not None:
                repo = self._open()
                if any(a.name == pointer.get("alias") for a in repo.aliases()):
                    repo.alias_delete(pointer["alias"], f"lightning removed {target.name}")
            if target.is_file() or target.is_symlink():
                target.unlink()

    def teardown(self) -> None:
        """Release the repository when this plugin opened it."""
        with self._lock:
            if self.repo is not None and self._owned:
                self.repo.close()
                self.repo = None


def read_pointer(path: str | os.PathLike) -> dict:
    """The pointer file Lightning's `path` holds; CkstoreError for a missing file or anything else in it."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_POINTER + 1)
    except OSError as exc:
        raise CkstoreError(f"cannot read checkpoint {p}: {exc.strerror or exc}") from None
    try:
        pointer = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_POINTER else None
    except (UnicodeDecodeError, ValueError):
        pointer = None
    if not (isinstance(pointer, dict) and pointer.get("format") == POINTER and isinstance(pointer.get("repo"), str)
            and isinstance(pointer.get("commit"), str)):
        raise CkstoreError(f"{p} is not a ckstore checkpoint pointer",
                           hint="commit the file first (`ckstore commit FILE`) and load ckstore://REV")
    return pointer


def load_revision(repo: Repo, rev: str) -> dict:
    """A committed checkpoint as a dict: a committed state dict rebuilt from its tree (no pickle at all), or a
    committed `.ckpt/.pt` file, unpickled by torch's weights-only loader after ckstore verified its bytes."""
    if repo.manifest(rev).tree is not None:
        state = repo.load(rev, framework="torch")
        if not isinstance(state, dict):
            raise CkstoreError(f"{rev} holds a single tensor, not a Lightning checkpoint")
        return state
    files = [f.path for f in repo.ls(rev) if f.path.lower().endswith(_TORCH_SUFFIXES)]
    if len(files) != 1:
        raise CkstoreError(f"{rev} holds {len(files)} torch checkpoint files, not one",
                           hint="commit a single .ckpt file, or checkpoints saved by CkstoreCheckpointIO")
    import torch
    # cat hands out the file only after its whole-file BLAKE3 matched the commit (a file over 64 MiB is checked
    # as it streams and fails at the end, before torch.load runs), and weights_only=True keeps torch's allowlist
    # unpickler: no code in the file can run, whoever wrote it.
    data = b"".join(bytes(p) for p in repo.cat(rev, files[0]))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _metrics(checkpoint: dict) -> dict:
    """Monitored scores Lightning's ModelCheckpoint callbacks keep: {"best_model_score": ..., monitor: ...}."""
    torch = sys.modules.get("torch")
    out: dict = {}
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if isinstance(key, str) and key.startswith("ModelCheckpoint") and isinstance(state, dict):
            monitor, score = state.get("monitor"), state.get("best_model_score")
            if torch is not None and isinstance(score, torch.Tensor) and score.numel() == 1:
                score = score.item()
            if isinstance(monitor, str) and isinstance(score, (int, float)) and not isinstance(score, bool):
                out[f"best_{monitor}"] = score
    return out


def _mapped(state: Any, map_location: Any) -> Any:
    """Tensors moved as `map_location` says: a device or its name (callables and dicts: to CPU, as loaded)."""
    if map_location is None or callable(map_location) or isinstance(map_location, dict):
        return state
    import torch
    if isinstance(state, torch.Tensor):
        return state.to(map_location)
    if isinstance(state, dict):
        return {k: _mapped(v, map_location) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_mapped(v, map_location) for v in state)
    return state
