"""Which URLs may carry checkpoints and credentials: plain `http://` only to loopback or when allowed."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..errors import UsageError


def is_loopback(host: str | None) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (a host name other than localhost is not trusted to be one)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plain_http(url: str, allow_http: bool, what: str) -> None:
    """Refuse an `http://` URL unless `allow_http` or its host is loopback: credentials, tokens and checkpoints
    would cross the network in the clear. `what` names the URL's role in the message (UsageError)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise UsageError(f"{what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() == "http" and not allow_http and not is_loopback(host):
        raise UsageError(f"refusing plain http:// for {what} {url}: credentials and data would travel unencrypted",
                         hint="use https://, or give --allow-http for this remote if the network is trusted")
