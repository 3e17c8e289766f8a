"""Human output for the CLI: log, show, audit tables and a progress bar that appears only for long work."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from .repo import CommitInfo, ShowInfo

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _metrics(c: CommitInfo) -> str:
    return "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(c.metrics.items()))


def _decor(c: CommitInfo) -> str:
    return escape(f" ({', '.join(c.refs)})") if c.refs else ""


def graph_prefixes(entries: list[CommitInfo]) -> list[str]:
    """One lane per open line of history: '*' marks the commit, '|' the lanes passing by."""
    lanes: list[str] = []
    prefixes = []
    for e in entries:
        if e.id not in lanes:
            lanes.append(e.id)
        col = lanes.index(e.id)
        prefixes.append(" ".join("*" if i == col else "|" for i in range(len(lanes))))
        lanes = [lane for i, lane in enumerate(lanes) if lane != e.id or i == col]
        lanes[col:col + 1] = [p for p in e.parents if p not in lanes] or []
    return prefixes


def render_log(entries: list[CommitInfo], *, oneline: bool, graph: bool) -> None:
    prefixes = graph_prefixes(entries) if graph else [""] * len(entries)
    for prefix, e in zip(prefixes, entries):
        lead = f"{prefix} " if graph else ""
        metrics = _metrics(e)
        if oneline:
            out.print(f"{lead}[yellow]{e.id[:12]}[/]{_decor(e)} {escape(e.message)}"
                      + (f"  [dim]{escape(metrics)}[/]" if metrics else ""))
            continue
        pad = "| " if graph else ""
        out.print(f"{lead}[yellow]commit {e.id}[/]{_decor(e)}")
        out.print(f"{pad}Author: {escape(e.author)}")
        out.print(f"{pad}Date:   {when(e.time)}")
        if e.step is not None:
            out.print(f"{pad}Step:   {e.step}")
        if metrics:
            out.print(f"{pad}Metrics: {escape(metrics)}")
        out.print(f"{pad}\n{pad}    {escape(e.message)}\n{pad}")


def render_show(info: ShowInfo) -> None:
    c = info.commit
    render_log([c], oneline=False, graph=False)
    for section in ("params", "data", "seeds", "extra"):
        value = getattr(c.commit, section)
        if value:
            out.print(escape(f"{section}: {value}"))
    env = c.commit.env
    if env:
        pkgs = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        out.print(f"env: Python {env.get('python')} on {env.get('platform')}; {pkgs}"
                  + (f"; git {env['git']['commit'][:12]}{' (dirty)' if env['git']['dirty'] else ''}"
                     if env.get("git") else ""))
    files = Table("file", "size", "blake3", box=None, pad_edge=False)
    for f in info.manifest.files:
        files.add_row(escape(f.path), human_bytes(f.size), f.hash.hex()[:16])
    out.print(files)
    if info.manifest.tensors:
        tensors = Table("tensor", "dtype", "shape", "size", box=None, pad_edge=False)
        for t in info.manifest.tensors[:200]:
            tensors.add_row(escape(t.name), t.dtype, "×".join(map(str, t.shape)) or "scalar", human_bytes(t.nbytes))
        out.print(tensors)
        if len(info.manifest.tensors) > 200:
            out.print(f"… and {len(info.manifest.tensors) - 200} more tensors (use --json for all)")
    ratio = info.logical_bytes / info.stored_bytes if info.stored_bytes else float("inf")
    out.print(f"logical {human_bytes(info.logical_bytes)}, stored {human_bytes(info.stored_bytes)} "
              f"({ratio:.2f}×), new in this commit {human_bytes(info.new_bytes)}")


def render_audit(entries: list[dict[str, Any]]) -> None:
    table = Table("#", "when", "who", "action", "ref", "old", "new", "message", box=None, pad_edge=False)
    for e in entries:
        table.add_row(str(e["seq"]), when(e["time"]), e["user"], e["action"], e["ref"], (e["old"] or "-")[:12],
                      (e["new"] or "-")[:12], escape(e["message"]))
    out.print(table)


class DelayedProgress:
    """A rich progress bar on stderr that shows up only once work has run for more than a second."""

    DELAY = 1.0

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.done = 0

    def begin(self, description: str, total: int) -> None:
        self.description, self.total, self.done, self.start = description, total, 0, time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is None:
            if time.monotonic() - self.start < self.DELAY or not err.is_terminal:
                return
            self._show()
        self.bar.update(self.task, completed=self.done)

    def _show(self) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)
        columns = [TextColumn("{task.description}"), BarColumn()]
        if self.description != "fsck":
            columns += [DownloadColumn(binary_units=True), TransferSpeedColumn()]
        self.bar = Progress(*columns, TimeRemainingColumn(), console=err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=self.total, completed=self.done)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
