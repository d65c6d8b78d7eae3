"""ICE set-up for the engine's peer connections.

Two things the ICE library does by default are wrong for this engine: it
offers no loopback candidate (so a viewer on the same host, or a local
reverse proxy, can never connect) and, without servers configured, aiortc
falls back to a public STUN server. :func:`rtc_configuration` always names
the servers explicitly (an empty list when none are configured), and
:class:`HostAddresses` gives the engine's own peer connections the
configured host addresses.

The ICE library (aioice) looks host addresses up through one module-level
function, ``aioice.ice.get_host_addresses``, and offers no per-connection
setting. The first :meth:`HostAddresses.applied` replaces that function,
once, with a dispatcher that answers from a context variable: inside an
``applied()`` block (and in the tasks it starts, such as aiortc's candidate
gathering) the configured addresses; everywhere else exactly what the
library's own function answers. Other peer connections in the process keep
the library's behaviour. :func:`check_library` confirms the function is
still where and what this expects; ``tests/webrtc/test_library_hooks.py``
fails when a new aioice changes it, and pyproject bounds the version.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Callable, Iterator, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from webrtc.config import WebRtcConfig
from webrtc.errors import WebRtcUsageError

HostLookup = Callable[[bool, bool], list[str]]


def rtc_configuration(config: WebRtcConfig) -> RTCConfiguration:
    """The peer-connection configuration: only the configured ICE servers."""
    servers = []
    for url in config.ice_servers:
        if url.startswith("turn"):
            servers.append(
                RTCIceServer(urls=url, username=config.ice_username or None, credential=config.ice_credential or None)
            )
        else:
            servers.append(RTCIceServer(urls=url))
    return RTCConfiguration(iceServers=servers)


def merge_addresses(extra: Sequence[str], interfaces: Sequence[str]) -> list[str]:
    """Configured addresses first, then the interface addresses, without
    duplicates (order decides nothing in ICE but keeps logs stable)."""
    seen: list[str] = []
    for address in (*extra, *interfaces):
        if address and address not in seen:
            seen.append(address)
    return seen


_ACTIVE: contextvars.ContextVar[HostAddresses | None] = contextvars.ContextVar("fanz_ice_hosts", default=None)
_library_lookup: HostLookup | None = None
"""aioice's own lookup, kept when the dispatcher is put in its place."""


def check_library() -> None:
    """Raise :class:`WebRtcUsageError` unless aioice still looks host
    addresses up through ``aioice.ice.get_host_addresses(use_ipv4,
    use_ipv6)`` from ``Connection.gather_candidates``."""
    lookup = getattr(aioice.ice, "get_host_addresses", None)
    if lookup is None or not callable(lookup):
        raise WebRtcUsageError("aioice.ice.get_host_addresses is gone: this aioice version is not supported")
    original = _library_lookup or lookup
    params = list(inspect.signature(original).parameters)
    if params != ["use_ipv4", "use_ipv6"]:
        raise WebRtcUsageError(f"aioice.ice.get_host_addresses takes {params}: this aioice version is not supported")
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    if "get_host_addresses(" not in source:
        raise WebRtcUsageError("aioice no longer gathers host candidates through get_host_addresses")


def _dispatch(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    assert _library_lookup is not None
    active = _ACTIVE.get()
    if active is None:
        return _library_lookup(use_ipv4, use_ipv6)
    return active.lookup(use_ipv4, use_ipv6, _library_lookup)


def _hook() -> None:
    global _library_lookup
    if _library_lookup is None:
        check_library()
        _library_lookup = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _dispatch


class HostAddresses:
    """The host addresses the engine's peer connections offer.

    Gathering that runs inside :meth:`applied` uses them; nesting is
    allowed (the innermost block wins) and concurrent tasks each see their
    own.
    """

    def __init__(self, addresses: Sequence[str], include_interfaces: bool) -> None:
        self.addresses = list(addresses)
        self.include_interfaces = include_interfaces

    @classmethod
    def from_config(cls, config: WebRtcConfig) -> HostAddresses:
        return cls(config.host_addresses, config.include_interface_addresses)

    def lookup(self, use_ipv4: bool, use_ipv6: bool, original: HostLookup) -> list[str]:
        interfaces = original(use_ipv4, use_ipv6) if self.include_interfaces else []
        extra = [a for a in self.addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        return merge_addresses(extra, interfaces)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Candidates gathered in this block (and in tasks started from
        it) use these addresses."""
        _hook()
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)
