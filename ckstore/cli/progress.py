"""Progress for the command line, on stderr and only for long work: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from ..model.progress import human_bytes

clock = time.monotonic  # a module attribute, so tests can run the progress on a clock of their own


class DelayedProgress:
    """Progress on stderr once work has run for a while. On a terminal a rich bar appears after DELAY seconds and
    is removed at the end; elsewhere (a log file, CI) there is one line every INTERVAL seconds and a final line for
    work that lasted that long, never a carriage return. In JSON mode those lines are JSON objects."""

    DELAY = 1.0
    INTERVAL = 10.0

    def __init__(self, *, as_json: bool = False) -> None:
        self.as_json = as_json
        self.terminal: bool | None = None  # found out once work is due to show, so short commands never ask
        self.bar: Any = None
        self.task: Any = None
        self.description, self.total, self.unit, self.done = "", 0, "bytes", 0
        self.start = self.next_line = 0.0

    def begin(self, description: str, total: int, unit: str = "bytes") -> None:
        """Start a task of `total` units (bytes, or a count of `unit`: packs); nothing is shown yet."""
        self.description, self.total, self.unit, self.done = description, total, unit, 0
        self.start = clock()
        self.next_line = self.start + self.INTERVAL

    def advance(self, n: int) -> None:
        """Count `n` more units done; on a terminal the bar shows after DELAY seconds, elsewhere a line is printed
        when INTERVAL seconds have passed since the last one."""
        self.done += n
        now = clock()
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=self._rate(now - self.start))
            return
        if now - self.start < self.DELAY:
            return
        if self.terminal is None:
            from rich.console import Console  # rich is imported only once progress is due: short commands skip it
            self.terminal = Console(stderr=True).is_terminal
        if self.terminal:
            self._show_bar()
        elif now >= self.next_line:
            self._line(now, final=False)
            self.next_line = now + self.INTERVAL

    def end(self) -> None:
        """Remove the bar, or print the final line when the task ran for INTERVAL seconds or more."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            return
        now = clock()
        if not self.terminal and now - self.start >= self.INTERVAL:
            self._line(now, final=True)

    def _amount(self, n: float) -> str:
        return human_bytes(n) if self.unit == "bytes" else f"{n:,.0f} {self.unit}"

    def _of_total(self) -> str:
        if self.unit == "bytes":
            return f"{human_bytes(self.done)} / {human_bytes(self.total)}"
        return f"{self.done:,} / {self.total:,} {self.unit}"

    def _rate(self, seconds: float) -> str:
        per = self.done / seconds if seconds > 0 else 0.0
        return f"{human_bytes(per)}/s" if self.unit == "bytes" else f"{per:,.1f} {self.unit}/s"

    def _line(self, now: float, *, final: bool) -> None:
        seconds = now - self.start
        if self.as_json:
            record = {"progress": self.description, "done": self.done, "total": self.total, "unit": self.unit,
                      "seconds": round(seconds, 1), "rate": round(self.done / seconds, 1) if seconds > 0 else 0.0}
            return typer.echo(json.dumps({**record, "final": final}), err=True)
        if final:
            text = f"{self.description}: {self._amount(self.done)} in {seconds:.0f} s, {self._rate(seconds)}"
        elif self.total:
            text = (f"{self.description}: {self._of_total()} ({min(self.done / self.total, 1.0):.0%}), "
                    f"{self._rate(seconds)}")
        else:  # the total is not known beforehand (gc's marking)
            text = f"{self.description}: {self._amount(self.done)}, {self._rate(seconds)}"
        typer.echo(text, err=True)

    def _show_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)
        amount = DownloadColumn(binary_units=True) if self.unit == "bytes" else MofNCompleteColumn()
        # the rate is ours, not rich's TransferSpeedColumn: that one says decimal MB/s beside binary MiB amounts
        columns = [TextColumn("{task.description}"), BarColumn(), amount, TextColumn("{task.fields[rate]}")]
        self.bar = Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=self.total or None, completed=self.done, rate="")
