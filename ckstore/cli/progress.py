"""Progress bars for the command line: rich, on stderr, only once work has run for a while."""

from __future__ import annotations

import time
from typing import Any


class DelayedProgress:
    """A rich progress bar on stderr that shows up only once work has run for more than a second."""

    DELAY = 1.0

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.done = 0

    def begin(self, description: str, total: int) -> None:
        """Start a task of `total` units (bytes, or packs for fsck); no bar is drawn yet."""
        self.description, self.total, self.done, self.start = description, total, 0, time.monotonic()

    def advance(self, n: int) -> None:
        """Count `n` more units done; draws the bar once the task has run longer than DELAY seconds on a terminal."""
        self.done += n
        if self.bar is None:
            if time.monotonic() - self.start < self.DELAY:
                return
            self._show()
            if self.bar is None:
                return
        self.bar.update(self.task, completed=self.done)

    def _show(self) -> None:
        # rich is imported only once a bar is due: short commands never pay for it
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        err = Console(stderr=True)
        if not err.is_terminal:
            self.start = float("inf")  # never again for this task
            return
        columns = [TextColumn("{task.description}"), BarColumn()]
        if self.description != "fsck":
            columns += [DownloadColumn(binary_units=True), TransferSpeedColumn()]
        self.bar = Progress(*columns, TimeRemainingColumn(), console=err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=self.total, completed=self.done)

    def end(self) -> None:
        """Stop and remove the bar, if one was drawn."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
