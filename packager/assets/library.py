"""Assets in storage: where one lives, which files it has, and the files
made from it once (the MP4 download, the poster), kept beside it.

Every method blocks on the storage backend: call them from a worker thread.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cluster.storage import ObjectInfo, ObjectNotFoundError, Storage
from packager.assets.ids import ASSET_PREFIXES, FILE_NAME, VARIANT, check_asset_id
from packager.errors import AssetIdError, AssetNotFoundError, RemuxError

INDEX = "index.m3u8"
DOWNLOAD = "download.mp4"
POSTER = "poster.jpg"


@dataclass(frozen=True, slots=True)
class Rendition:
    """One media playlist of an asset: its init segment and segments (keys)
    in order, and the sum of its EXTINF durations."""

    init_key: str | None
    segment_keys: tuple[str, ...]
    duration: Fraction
    encrypted: bool = False
    """An ``EXT-X-KEY`` other than ``METHOD=NONE`` applies to some segment."""


class AssetLibrary:
    """The assets kept in ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._making: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def locate(self, asset_id: str) -> str:
        """The storage prefix of the asset (``assets/ID/`` or
        ``recordings/ID/``); :class:`AssetNotFoundError` when it has none,
        such as right after it was deleted."""
        check_asset_id(asset_id)
        for base in ASSET_PREFIXES:
            prefix = f"{base}{asset_id}/"
            try:
                self.storage.stat(prefix + INDEX)
            except ObjectNotFoundError:
                continue
            return prefix
        raise AssetNotFoundError(f"no asset {asset_id}")

    @staticmethod
    def file_key(prefix: str, variant: str | None, name: str) -> str:
        """The key of file ``name`` (of rendition ``variant``) under the
        asset's ``prefix``; :class:`AssetIdError` for a name outside the rule."""
        if not FILE_NAME.fullmatch(name) or (variant is not None and not VARIANT.fullmatch(variant)):
            raise AssetIdError(f"invalid asset file name {variant!r}/{name!r}")
        return prefix + (f"{variant}/{name}" if variant is not None else name)

    def stat(self, key: str) -> ObjectInfo:
        return self.storage.stat(key)

    def text(self, key: str) -> str:
        return self.storage.read(key).decode("utf-8")

    def first_rendition(self, prefix: str) -> Rendition:
        """The first (highest bandwidth) rendition of the multivariant
        playlist, read from its media playlist."""
        index = self.text(prefix + INDEX)
        uri = next((line.strip() for line in index.splitlines() if line.strip() and not line.startswith("#")), None)
        if uri is None or uri.count("/") != 1:
            raise RemuxError(f"{prefix}{INDEX} names no rendition playlist of this asset")
        variant, playlist_name = uri.split("/")
        playlist = self.text(self.file_key(prefix, variant, playlist_name))
        init: str | None = None
        segments: list[str] = []
        total = Fraction(0)
        encrypted = False
        for line in playlist.splitlines():
            line = line.strip()
            if line.startswith("#EXT-X-KEY:") and "METHOD=NONE" not in line:
                encrypted = True
            elif line.startswith("#EXT-X-MAP:") and init is None:
                init = self.file_key(prefix, variant, line.split('URI="', 1)[1].split('"', 1)[0])
            elif line.startswith("#EXTINF:"):
                total += Fraction(line[len("#EXTINF:"):].split(",", 1)[0])
            elif line and not line.startswith("#"):
                segments.append(self.file_key(prefix, variant, line))
        if not segments:
            raise RemuxError(f"{prefix}{uri} lists no segments")
        return Rendition(init, tuple(segments), total, encrypted)

    def concatenated(self, rendition: Rendition, into: Path) -> Path:
        """Write the rendition's init segment and segments one after the
        other into the file ``into``: a fragmented MP4 (or a transport
        stream) that a demuxer reads from start to end."""
        with into.open("wb") as out:
            for key in ((rendition.init_key,) if rendition.init_key else ()) + rendition.segment_keys:
                for chunk in self.storage.iter_range(key):
                    out.write(chunk)
        return into

    def derived(self, asset_id: str, name: str, make: Callable[[AssetLibrary, str, Path], Path]) -> str:
        """The key of the file ``name`` made from the asset by ``make``
        (called as ``make(library, prefix, workdir)``, returning the made
        file) the first time it is asked for, then kept beside the asset."""
        prefix = self.locate(asset_id)
        key = prefix + name
        with self._guard:
            lock = self._making.setdefault((prefix, name), threading.Lock())
        with lock:
            try:
                self.storage.stat(key)
                return key
            except ObjectNotFoundError:
                pass
            with tempfile.TemporaryDirectory(prefix="fanz-asset-") as work:
                made = make(self, prefix, Path(work))
                self.storage.put_file(key, made)
        return key

    def delete(self, asset_id: str) -> int:
        """Remove every object of the asset; how many there were."""
        check_asset_id(asset_id)
        return sum(self.storage.delete_prefix(f"{base}{asset_id}/") for base in ASSET_PREFIXES)

    def upload(self, asset_id: str, folder: Path) -> int:
        """Store every file of ``folder`` (a ``fanz-media transcode`` output)
        as asset ``asset_id`` under ``assets/ID/``; how many files."""
        check_asset_id(asset_id)
        if not (folder / INDEX).is_file():
            raise AssetNotFoundError(f"{folder} has no {INDEX}")
        count = 0
        # The multivariant playlist goes last: an asset exists for players
        # only once all of its files are there.
        files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p == folder / INDEX)
        for path in files:
            rel = path.relative_to(folder)
            parts = rel.parts
            variant = parts[0] if len(parts) == 2 else None
            if len(parts) > 2:
                raise AssetIdError(f"unexpected nested file {rel} in {folder}")
            self.storage.put_file(self.file_key(f"assets/{asset_id}/", variant, parts[-1]), path)
            count += 1
        return count
