"""The stream directory of one node: one small file per live stream.

Used when one node runs several engine processes (``server.processes``):
every process of the node shares the data directory, so ownership lives
there, as ``<root>/<name>`` holding the owner's address.

Each operation is atomic without locks:

- a claim writes the address to a private temporary file and hard-links it
  to the stream's name; ``link`` fails when the name exists, so of two
  processes claiming at once exactly one wins, and no reader ever sees a
  half-written file;
- a release or a forget reads the owner and unlinks only its own entries.

The blocking calls are plain methods (the supervisor, which runs no event
loop, uses them); the :class:`~engine.directory.StreamDirectory` methods run
them in a worker thread so that the event loop never touches the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from cluster.errors import DirectoryError
from engine.media import check_stream_name

TEMP_PREFIX = ".claim-"


class FileStreamDirectory:
    """A :class:`~engine.directory.StreamDirectory` in a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DirectoryError(f"cannot create the stream directory {root}: {exc}") from exc

    def _path(self, name: str) -> Path:
        # Names follow the stream name rule (letters, digits, _ and -), so a
        # name is always one plain file inside the root.
        check_stream_name(name)
        return self.root / name

    # -- blocking operations ---------------------------------------------------
    def owner_now(self, name: str) -> str | None:
        try:
            return self._path(name).read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DirectoryError(f"cannot read the owner of {name}: {exc}") from exc

    def claim_now(self, name: str, owner_address: str) -> str:
        path = self._path(name)
        temp = self.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            temp.write_text(owner_address + "\n", encoding="ascii")
            try:
                os.link(temp, path)
                return owner_address
            except FileExistsError:
                pass
        except OSError as exc:
            raise DirectoryError(f"cannot claim {name}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        current = self.owner_now(name)
        if current is None:
            # Released between our link and our read: try once more.
            return self.claim_now(name, owner_address)
        return current

    def release_now(self, name: str, owner_address: str) -> None:
        if self.owner_now(name) != owner_address:
            return
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def forget(self, owner_address: str) -> list[str]:
        """Remove every claim of ``owner_address`` (a process that died, or
        one starting again at the same address, whose streams died with
        it); returns the names removed."""
        removed = []
        try:
            entries = sorted(self.root.iterdir())
        except OSError as exc:
            raise DirectoryError(f"cannot list the stream directory {self.root}: {exc}") from exc
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            if self.owner_now(entry.name) == owner_address:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                removed.append(entry.name)
        return removed

    def entries(self) -> dict[str, str]:
        """Every claim: name -> owner (for tests and status)."""
        found = {}
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(TEMP_PREFIX):
                continue
            owner = self.owner_now(entry.name)
            if owner is not None:
                found[entry.name] = owner
        return found

    # -- StreamDirectory ------------------------------------------------------
    async def claim(self, name: str, owner_address: str) -> str:
        return await asyncio.to_thread(self.claim_now, name, owner_address)

    async def release(self, name: str, owner_address: str) -> None:
        await asyncio.to_thread(self.release_now, name, owner_address)

    async def owner(self, name: str) -> str | None:
        return await asyncio.to_thread(self.owner_now, name)
