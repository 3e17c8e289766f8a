"""torch.save zip archives (placeholder until the allowlist reader lands): stored as opaque bytes."""

from __future__ import annotations

from .base import ScannedFile, opaque


def scan(rel: str, buf: memoryview) -> ScannedFile:
    return opaque(rel, buf)
