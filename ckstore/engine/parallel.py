"""Ordered map over a thread pool with a bounded number of jobs in flight (memory stays a few chunks per core)."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor, Future, wait
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
WINDOW = 2 * (os.cpu_count() or 2) + 2


def ordered_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int = WINDOW) -> Iterator[R]:
    """`fn` over `items` on `pool`, yielded in input order with at most `window` in flight. On an error or when the
    generator is closed early, the jobs not started are cancelled and the running ones waited for: when it is done,
    no job of it is still running (a job writing into a file descriptor the caller is about to close, say)."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:  # an error or an abandoned generator: do not leave work running
            f.cancel()
        wait(pending)
