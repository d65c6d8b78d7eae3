"""Which process owns which live stream: an interface the engine defines.

One live stream is published into exactly one event loop (one engine
process). When a node runs several (``server.processes``), or a cluster runs
several nodes, the others must know where a stream lives: to refuse a second
publisher of the same name, and to pass a viewer's request to the process
that has the stream's playlists in memory.

The engine only sees this interface. ``cluster.local_directory`` implements
it with one file per stream under the data directory (processes of one
node); a shared store (Redis) can implement it for many nodes.
"""

from __future__ import annotations

from typing import Protocol


class StreamDirectory(Protocol):
    """Owners of live streams by playback name.

    An owner is the address (``host:port``) where the owning process answers
    HTTP for its streams. Every method is safe to call from several
    processes at once.
    """

    async def claim(self, name: str, owner_address: str) -> str:
        """Become the owner of ``name`` unless someone else is.

        Returns the owner after the call: ``owner_address`` when the claim
        succeeded or the name was already this owner's, another address
        when it is someone else's (the caller then refuses the publish).
        """
        ...

    async def release(self, name: str, owner_address: str) -> None:
        """Give ``name`` up, only if ``owner_address`` still owns it (an
        owner that was declared dead and replaced never removes its
        successor's claim)."""
        ...

    async def owner(self, name: str) -> str | None:
        """The address of ``name``'s owner, ``None`` when nobody owns it."""
        ...
