"""Plain training loops: `Checkpointer.save(state)` copies the tensors now and commits in the background."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from ..api import Repo
from ..errors import CkstoreError
from ..model.retention import Policy
from ..results import CommitResult
from .common import host_copy, open_or_init


class CommitFailed(CkstoreError):
    """A background commit failed; raised by the next `save()` or by `close()`."""


class Checkpointer:
    """Commits a training state in the background, one commit at a time and in order.

        ckpt = ckstore.Checkpointer("runs", branch="exp1", keep=ckstore.Policy(keep_last=3))
        for step in ...:
            ckpt.save({"model": model, "optim": opt, "step": step}, step=step, metrics={"loss": loss})
        ckpt.close()

    `save` copies every tensor to host memory on the caller's thread (the model may change right after) and
    returns a Future of the CommitResult. The branch moves only once the commit's data is durable. A failed
    commit is raised (CommitFailed) by the next `save()` or by `close()`; saves queued behind it are skipped,
    so history never skips a step silently. `keep` is a retention Policy applied after each commit."""

    def __init__(self, repo: Repo | str | os.PathLike, *, branch: str | None = None, keep: Policy | None = None,
                 message: str = "step {step}", capture_env: bool = True) -> None:
        self.repo, self._owned = open_or_init(repo)
        self.branch, self.keep, self.message, self.capture_env = branch, keep, message, capture_env
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ckstore-checkpointer")
        self._lock = threading.Lock()
        self._failure: tuple[int | None, BaseException] | None = None  # the first unreported failure
        self._closed = False
        self.last: CommitResult | None = None

    def save(self, state: dict, *, step: int | None = None, metrics: dict | None = None,
             params: dict | None = None, message: str | None = None) -> Future:
        """Copy `state` (tensors to host memory) now and commit it in the background; a Future of the result."""
        if self._closed:
            raise CkstoreError("this Checkpointer is closed")
        self._raise_failure()
        snapshot = host_copy(state)  # on the caller's thread, before training mutates anything
        text = (message or self.message).format(step=step)
        return self._pool.submit(self._commit, snapshot, step, dict(metrics or {}), dict(params or {}), text)

    def _commit(self, state: dict, step: int | None, metrics: dict, params: dict, text: str) -> CommitResult:
        with self._lock:
            if self._failure is not None:
                raise CommitFailed(f"not committed: the commit of step {self._failure[0]} before it failed")
        try:
            done = self.repo.commit(state, text, step=step, metrics=metrics, params=params, branch=self.branch,
                                    capture_env=self.capture_env)
            if self.keep is not None:
                self.repo.forget(self.keep)
        except BaseException as exc:
            with self._lock:
                self._failure = self._failure or (step, exc)
            raise
        self.last = done
        return done

    def _raise_failure(self) -> None:
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            step, exc = failure
            raise CommitFailed(f"the background commit of step {step} failed: {exc}",
                               hint=getattr(exc, "hint", "")) from exc

    def wait(self) -> None:
        """Block until every queued commit is done; raise a failure among them (CommitFailed)."""
        self._pool.submit(lambda: None).result()
        self._raise_failure()

    def close(self) -> None:
        """Finish the queued commits, release the repository (when opened here), and raise a failure."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        try:
            self._raise_failure()
        finally:
            if self._owned:
                self.repo.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
