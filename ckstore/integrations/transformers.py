"""Hugging Face Trainer: `CkstoreCallback` commits every `checkpoint-N/` the Trainer saves.

    trainer = Trainer(..., callbacks=[CkstoreCallback("runs", alias_best="best")])

Each commit carries the step and the metrics of `trainer_state.json` (train and eval, read by the commit itself),
the JSON-able TrainingArguments as params and the model config in extra.model_config. Trainer's own
`save_total_limit` rotation does no harm: the store keeps every commit.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..api import Repo
from ..errors import UsageError
from .common import jsonable, open_or_init

log = logging.getLogger("ckstore")
CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR


class CkstoreCallback(TrainerCallback):
    """Commit each checkpoint the Trainer saves (world process zero only; other ranks do nothing).

    `branch`: where commits go (default HEAD's). `remote`: push there in the background every `push_every`
    commits (default 1) and at the end of training; a failed push is logged, never stops training.
    `commit_every_save=False`: commit only a new best checkpoint and the last one. `alias_best`: an alias moved
    to the commit of `state.best_model_checkpoint` whenever it changes."""

    def __init__(self, repo_or_path: Repo | str | os.PathLike, branch: str | None = None, remote: str | None = None,
                 push_every: int | None = None, commit_every_save: bool = True,
                 alias_best: str | None = None) -> None:
        if push_every is not None and push_every < 1:
            raise UsageError("push_every must be at least 1")
        self.target, self.branch, self.remote = repo_or_path, branch, remote
        self.push_every = push_every or 1
        self.commit_every_save, self.alias_best = commit_every_save, alias_best
        self.commits: dict[str, str] = {}  # checkpoint directory name -> commit id
        self.repo: Repo | None = None
        self._owned = False
        self._best: str | None = None
        self._last_dir: Path | None = None
        self._since_push = 0
        self._lock = threading.Lock()  # one Repo, used by the training thread and the push thread
        self._pusher: ThreadPoolExecutor | None = None
        self._pushes: list[Future] = []
        self.push_errors: list[BaseException] = []

    # -- Trainer events ----------------------------------------------------------------------------------------

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit `output_dir/checkpoint-{global_step}` (and move `alias_best`)."""
        if not state.is_world_process_zero:
            return control
        directory = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}-{state.global_step}"
        if not directory.is_dir():
            raise UsageError(f"the Trainer saved no {directory}: nothing to commit",
                             hint="CkstoreCallback expects Trainer's checkpoint-N directories")
        self._last_dir = directory
        best = os.path.basename(state.best_model_checkpoint) if state.best_model_checkpoint else None
        if self.commit_every_save or (best == directory.name and best != self._best):
            self._commit(directory, args, state, kwargs.get("model"))
        self._move_best(best, args, state, kwargs.get("model"))
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit the last checkpoint if it is not yet, push, wait for pushes, release the repository."""
        if not state.is_world_process_zero:
            return control
        last = self._last_dir
        if last is not None and last.name not in self.commits and last.is_dir():
            self._commit(last, args, state, kwargs.get("model"))
        if self.remote and self._since_push:
            self._push()
        self.close()
        return control

    # -- the work ----------------------------------------------------------------------------------------------

    def _open(self) -> Repo:
        if self.repo is None:
            self.repo, self._owned = open_or_init(self.target)
        return self.repo

    def _commit(self, directory: Path, args: Any, state: Any, model: Any) -> str:
        params = {k: v for k, v in (jsonable(args.to_dict()) or {}).items() if v is not None}
        config = getattr(model, "config", None)
        extra = {"model_config": jsonable(config.to_dict())} if hasattr(config, "to_dict") else {}
        repo = self._open()
        with self._lock:  # the step is Trainer's; metrics come from the directory's trainer_state.json
            done = repo.commit(directory, directory.name, step=state.global_step, params=params,
                               meta={"extra": extra}, branch=self.branch)
        self.commits[directory.name] = done.id
        self._since_push += 1
        if self.remote and self._since_push >= self.push_every:
            self._push()
        return done.id

    def _move_best(self, best: str | None, args: Any, state: Any, model: Any) -> None:
        if not self.alias_best or best is None or best == self._best:
            return
        if best not in self.commits:  # a best directory saved before this callback was added, or skipped
            where = Path(args.output_dir) / best
            if not where.is_dir():
                return
            self._commit(where, args, state, model)
        metric = getattr(args, "metric_for_best_model", None) or "loss"
        with self._lock:
            self._open().alias_set(self.alias_best, self.commits[best],
                                   f"best {metric} = {state.best_metric} at {best}")
        self._best = best

    def _push(self) -> None:
        self._since_push = 0
        if self._pusher is None:
            self._pusher = ThreadPoolExecutor(1, thread_name_prefix="ckstore-push")
        repo, branch = self._open(), self.branch

        def push() -> None:
            try:
                with self._lock:
                    repo.push(self.remote, [branch] if branch else None)
            except Exception as exc:  # training goes on; the next push sends everything again
                self.push_errors.append(exc)
                log.warning("ckstore: push to %s failed: %s", self.remote, exc)
        self._pushes.append(self._pusher.submit(push))

    def close(self) -> None:
        """Wait for background pushes and close the repository if this callback opened it."""
        if self._pusher is not None:
            self._pusher.shutdown(wait=True)
            self._pusher = None
        if self.repo is not None and self._owned:
            self.repo.close()
            self.repo = None
