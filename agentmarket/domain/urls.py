"""Which URLs a deployment's configuration may hold (`format: uri` fields: docs links, webhooks).

Something may fetch or post to these URLs, so besides being well-formed they must point at the
public internet: `https` only (`http` too when ALLOW_HTTP_URLS is set, for development), no user
name or password, and no host that names this machine or a private network as an IP literal or
`localhost`. IP literals are read the way browsers and HTTP clients read them (WHATWG URL): besides
dotted quads that includes `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1`, and IPv6 literals
with IPv4 inside (`[::ffff:127.0.0.1]`). Host names are not resolved: a public name that resolves
to a private address must be refused by whatever connects to it.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "CREDENTIALS",
    "HTTPS_ONLY",
    "HTTP_OR_HTTPS",
    "INVALID",
    "LOCALHOST",
    "NON_PUBLIC",
    "url_problem",
]

INVALID: Final = "must be a valid URL"
HTTPS_ONLY: Final = "must be an https:// URL"
HTTP_OR_HTTPS: Final = "must be an http:// or https:// URL"
CREDENTIALS: Final = "must not contain a user name or password"
LOCALHOST: Final = "must not point to localhost"
NON_PUBLIC: Final = (
    "must not point to a private, loopback, link-local, multicast or reserved IP address"
)

_DIGITS: Final = {10: "0123456789", 8: "01234567", 16: "0123456789abcdefABCDEF"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def url_problem(url: str, *, allow_http: bool = False) -> str | None:
    """Why `url` may not be used (a message completing "the field …"), or None if it may.

    Assumes `url` already passed a syntax check (RFC 3986 `URI`); this is the policy on top.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return INVALID
    if parts.scheme.lower() not in (("http", "https") if allow_http else ("https",)):
        return HTTP_OR_HTTPS if allow_http else HTTPS_ONLY
    if "@" in parts.netloc:
        return CREDENTIALS
    host = parts.hostname  # lower-cased, IPv6 brackets removed
    if not host or "%" in host:  # no host, or a percent-encoded / zoned one
        return INVALID
    try:
        address = _ip_literal(host, bracketed=parts.netloc.startswith("["))
    except ValueError:
        return INVALID
    if address is None:
        name = host.removesuffix(".")
        if name == "localhost" or name.endswith(".localhost"):
            return LOCALHOST
        if not name or "" in name.split("."):
            return INVALID
        return None
    return None if _is_public(address) else NON_PUBLIC


def _ip_literal(host: str, *, bracketed: bool) -> IPAddress | None:
    """The address a host denotes literally, None for a name; ValueError when it is neither."""
    if bracketed:
        return ipaddress.IPv6Address(host)  # ValueError for IPvFuture and the like
    if _ends_in_a_number(host):
        return _parse_ipv4(host)
    return None


def _ends_in_a_number(host: str) -> bool:
    """WHATWG URL "ends in a number": such a host is an IPv4 address or invalid, never a name."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    return bool(last) and (all(c in _DIGITS[10] for c in last) or _ipv4_number(last) is not None)


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 host: decimal, 0x-prefixed hex or 0-prefixed octal (WHATWG)."""
    if not part:
        return None
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if not part:
        return 0
    if not all(c in _DIGITS[radix] for c in part):
        return None
    return int(part, radix)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address:
    """WHATWG's IPv4 parser: 1 to 4 parts, the last one filling the remaining bytes."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if len(labels) > 4:
        raise ValueError(host)
    numbers = [_ipv4_number(label) for label in labels]
    if any(n is None for n in numbers):
        raise ValueError(host)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise ValueError(host)
    address = values[-1]
    for index, n in enumerate(values[:-1]):
        address += n * 256 ** (3 - index)
    return ipaddress.IPv4Address(address)


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _is_public(address.ipv4_mapped)
        embedded = [address.sixtofour, address.teredo[1] if address.teredo else None]
        if any(e is not None and not _is_public(e) for e in embedded):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
