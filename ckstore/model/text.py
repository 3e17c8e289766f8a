"""Text that can be stored: strings must encode as UTF-8 (no lone surrogates, which stand for undecodable bytes)."""

from __future__ import annotations


def is_utf8(text: str) -> bool:
    """True when `text` encodes as UTF-8: no lone surrogates (os.fsdecode's stand-ins for undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """`text` as it can be printed: itself when it is valid UTF-8, else its ascii() form (surrogates escaped)."""
    return text if is_utf8(text) else ascii(text)
