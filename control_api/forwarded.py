"""Who the client is and which origin it used, when a reverse proxy stands
between it and the API.

``X-Forwarded-For``, ``-Proto`` and ``-Host`` are believed only when the
connection comes from an address in ``api.trusted_proxies``: anyone else
could write them, and a forged ``X-Forwarded-For`` would give every guess at
a password a fresh address to be limited under. Pure functions over the peer
address and header values; :func:`forwarded_middleware` applies them to each
request (``request.remote``, ``.scheme`` and ``.host`` then tell the truth).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from control_api.errors import MalformedRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}"
                  r"[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
"""``host[:port]`` as a Host header may carry it: a DNS name, an IPv4
address or a bracketed IPv6 address, and an optional port."""


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse ``api.trusted_proxies`` (checked when the config loads)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    ip = _address(address)
    return ip is not None and any(ip in net for net in trusted)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer`` itself unless it is a trusted proxy;
    then the ``X-Forwarded-For`` hops read from the right, skipping trusted
    proxies, up to the first address that is not one. A hop that is not an
    address stops the walk at the proxy that passed it on."""
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        ip = _address(hop)
        if ip is None:
            return client
        client = str(ip)
        if not any(ip in net for net in trusted):
            return client
    return client


def last_value(values: Sequence[str]) -> str | None:
    """The value the nearest proxy wrote: the last of a comma-separated list."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items[-1] if items else None


def forwarded_middleware(trusted: Sequence[Network]) -> Middleware:
    """A middleware that rewrites ``remote``, ``scheme`` and ``host`` from
    the ``X-Forwarded-*`` headers of trusted proxies, and leaves every other
    request as it came."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        peer = request.remote or ""
        if not trusted or not is_trusted(peer, trusted):
            return await handler(request)
        headers = request.headers
        changes: dict[str, str] = {
            "remote": client_address(peer, headers.getall("X-Forwarded-For", []), trusted),
        }
        proto = last_value(headers.getall("X-Forwarded-Proto", []))
        if proto is not None and proto.lower() in ("http", "https"):
            changes["scheme"] = proto.lower()
        host = last_value(headers.getall("X-Forwarded-Host", []))
        if host is not None and HOST.fullmatch(host):
            changes["host"] = host
        return await handler(request.clone(**changes))  # type: ignore[arg-type]

    return middleware


def request_origin(request: web.Request) -> str:
    """``scheme://host[:port]`` the client used for this request (after
    :func:`forwarded_middleware`)."""
    host = request.host
    if not HOST.fullmatch(host):
        raise MalformedRequest("the Host header is not host[:port]")
    return f"{request.scheme}://{host}"
