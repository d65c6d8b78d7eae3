"""ICE set-up for the engine's peer connections.

Two things the ICE library does by default are wrong for this engine: it
offers no loopback candidate (so a viewer on the same host, or a local
reverse proxy, can never connect) and, without servers configured, aiortc
falls back to a public STUN server. :func:`rtc_configuration` always names
the servers explicitly (an empty list when none are configured), and
:class:`HostAddresses` makes the ICE library's host-address lookup return the
configured addresses.

The ICE library looks host addresses up through one module-level function,
so the override is process-wide: :meth:`HostAddresses.install` is called once
at start-up by :class:`webrtc.http.WebRtcHttp` and undone by its ``close``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


class HostAddresses:
    """Replaces the ICE library's host address lookup while installed.

    Installations nest: each :meth:`install` is matched by one
    :meth:`uninstall`, and the original lookup comes back after the last one
    (several engines in one test process each install their own).
    """

    _stack: list[tuple[HostAddresses, HostLookup]] = []

    def __init__(self, addresses: Sequence[str], include_interfaces: bool) -> None:
        self.addresses = list(addresses)
        self.include_interfaces = include_interfaces
        self._installed = False

    def lookup(self, use_ipv4: bool, use_ipv6: bool, original: HostLookup) -> list[str]:
        interfaces = original(use_ipv4, use_ipv6) if self.include_interfaces else []
        extra = [a for a in self.addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        return merge_addresses(extra, interfaces)

    def install(self) -> None:
        if self._installed:
            raise WebRtcUsageError("host addresses are already installed")
        previous: HostLookup = aioice.ice.get_host_addresses
        original = self._stack[0][1] if self._stack else previous

        def lookup(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return self.lookup(use_ipv4, use_ipv6, original)

        HostAddresses._stack.append((self, previous))
        aioice.ice.get_host_addresses = lookup
        self._installed = True

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        stack = HostAddresses._stack
        index = next(i for i, (owner, _) in enumerate(stack) if owner is self)
        _, previous = stack.pop(index)
        if index == len(stack):
            # We were the innermost: restore what was there before us.
            aioice.ice.get_host_addresses = previous  # type: ignore[assignment]
        else:
            # Someone installed after us and captured our lookup as theirs to
            # restore: hand them our predecessor instead.
            owner, _ = stack[index]
            stack[index] = (owner, previous)
