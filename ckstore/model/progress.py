"""How long-running library work reports progress; the CLI renders it, library callers may ignore it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """begin(what, total units, unit), advance(units done) any number of times, end()."""

    def begin(self, description: str, total: int, unit: str = "bytes") -> None:
        """Start a task of `total` units: bytes, or a count of `unit` ("packs" for fsck)."""

    def advance(self, n: int) -> None:
        """Report `n` more units done."""

    def end(self) -> None:
        """Finish the current task."""


class NoProgress:
    """A Progress that reports nothing: the default for library callers."""

    def begin(self, description: str, total: int, unit: str = "bytes") -> None:
        """Ignore the start of a task."""
        pass

    def advance(self, n: int) -> None:
        """Ignore progress."""
        pass

    def end(self) -> None:
        """Ignore the end of a task."""
        pass


def human_bytes(n: float) -> str:
    """A byte count in binary units: "512 B", "1.5 KiB", ... up to TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
