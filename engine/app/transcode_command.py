"""``fanz-media transcode INPUT OUTDIR [--ladder NAME] [--encoder auto|NAME] [--use file|live]
[--protection SCHEME [--content-id ID] [--key-uri BASE] [--rotate-every N]] [--asset [ID]]``.

Wires the file transcoder to the VOD HLS writer: the same decode-once ladder
as live streams, written as ``OUTDIR/index.m3u8`` with one folder per
rendition, and a progress bar on stderr. With ``--protection`` every
rendition is encrypted with keys of the asset ``--content-id`` (the output
folder's name unless given) from the engine's key provider, and the
playlists send players to ``BASE/ID/KID`` for them.

With ``--asset`` the finished folder is also stored as a VOD asset: every
file is uploaded to the configured storage under ``assets/ID/`` (ID given,
or a new random one), the multivariant playlist last, and the asset id is
printed. Uploading rather than registering the folder in place means one
layout whatever the backend (disk or S3), every node of a cluster serving
the asset, and an output folder the operator may delete afterwards.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from cluster.storage import StorageError, open_storage
from drm.errors import DrmError
from drm.model import KeyProvider, Protection
from engine.app.config import EngineConfig, load_config
from engine.app.protection import DEFAULT_KEY_URI_BASE, ProtectionPolicy
from engine.errors import ConfigError
from packager.assets.ids import is_asset_id
from packager.assets.library import AssetLibrary
from packager.errors import PackagerError
from packager.hls.config import HlsConfig
from packager.hls.keys import SegmentProtection
from packager.hls.vod import VodHlsWriter
from transcode.core import RenditionStarted
from transcode.errors import TranscodeError
from transcode.file import TranscodeProgress, transcode_file
from transcode.ladder import ENCODE_USES, LadderConfig

log = logging.getLogger(__name__)


class ProgressBar:
    """A progress bar on stderr, redrawn at each whole percent; with no known
    duration it shows the media time read so far."""

    WIDTH = 40

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.last = -1
        self.started = time.monotonic()

    def __call__(self, p: TranscodeProgress) -> None:
        frac = p.fraction
        if frac is None:
            self.stream.write(f"\r{float(p.position):8.1f}s transcoded")
            self.stream.flush()
            return
        percent = int(frac * 100)
        if percent <= self.last:
            return
        self.last = percent
        filled = int(frac * self.WIDTH)
        elapsed = time.monotonic() - self.started
        speed = float(p.position) / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r[{bar}] {percent:3d}%  {speed:5.2f}x real time")
        self.stream.flush()


def run(
    input_path: Path,
    outdir: Path,
    ladder: LadderConfig,
    encoder: str,
    quiet: bool = False,
    hls: HlsConfig | None = None,
    use: str = "file",
    protection: SegmentProtection | None = None,
) -> Path:
    """Transcode ``input_path`` into a VOD HLS ladder in ``outdir``; returns
    the multivariant playlist's path. ``use`` names the encoder settings
    (``file`` unless the output should look like a live stream's);
    ``protection`` encrypts every rendition."""
    writer = VodHlsWriter(outdir, hls or HlsConfig(), ladder.segment_duration, protection)
    bar = None if quiet else ProgressBar()
    for event in transcode_file(input_path, ladder, encoder, progress=bar, use=use):
        if isinstance(event, RenditionStarted):
            writer.start(event.name, event.tracks)
            log.info("rendition %s: encoder %s", event.name, event.encoder)
        else:
            writer.write(event.name, event.packet)
    index = writer.finish()
    if not quiet:
        sys.stderr.write("\n")
    return index


KeyProviderOpener = Callable[[EngineConfig], KeyProvider]
"""Opens the key provider a config names (``drm.provider`` over the sealed
store in ``server.data_dir``): given by the CLI, called only when
``--protection`` encrypts."""


def main(
    argv: Sequence[str] | None = None,
    key_provider: KeyProvider | None = None,
    open_provider: KeyProviderOpener | None = None,
) -> int:
    """``key_provider`` is where ``--protection`` gets its keys; without one,
    ``open_provider`` opens the config's (the engine's own provider, so that
    the engine's key endpoints serve the asset's keys)."""
    parser = argparse.ArgumentParser(
        prog="fanz-media transcode", description="Transcode a file along a ladder into VOD HLS (OUTDIR/index.m3u8)."
    )
    parser.add_argument("input", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--config", type=Path, help="the engine's TOML config: its ladders and [hls] settings")
    parser.add_argument("--ladder", default=None, help="ladder name (default: transcode.ladder from the config)")
    parser.add_argument("--encoder", default="auto", help="auto, libx264, h264_nvenc or h264_qsv")
    parser.add_argument(
        "--use",
        choices=sorted(ENCODE_USES),
        default="file",
        help="encoder settings: file (B-frames, lookahead, frame threads; the default) or live (zerolatency)",
    )
    parser.add_argument(
        "--protection",
        choices=[p.value for p in Protection],
        default=None,
        help="encrypt the renditions: aes-128 (whole segments), sample-aes (MPEG-TS samples; cbcs in fMP4), "
        "cbcs or cenc (common encryption, fMP4); default: drm.protection of the config",
    )
    parser.add_argument("--content-id", help="the asset ID its keys are stored under (default: OUTDIR's name)")
    parser.add_argument(
        "--key-uri", default=DEFAULT_KEY_URI_BASE, help="where players fetch keys: BASE/ID/KID (default: /keys)"
    )
    parser.add_argument(
        "--rotate-every", type=int, default=None,
        help="segments per key (default: drm.vod_rotate_every_segments, 0: one key for the whole file)",
    )
    parser.add_argument(
        "--asset",
        nargs="?",
        const="",
        default=None,
        metavar="ID",
        help="also store the output as VOD asset ID (3-64 of a-z 0-9 _ -; default: a new id) in the configured "
        "storage, served at /vod/ID/index.m3u8; prints the id",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        parser.exit(2, f"fanz-media transcode: configuration error: {exc}\n")
    asset_id = None
    if args.asset is not None:
        asset_id = args.asset or uuid.uuid4().hex
        if not is_asset_id(asset_id):
            parser.exit(2, f"fanz-media transcode: invalid asset id {asset_id!r}: 3-64 of a-z 0-9 _ -\n")
    ladders = config.transcode.all_ladders()
    name = args.ladder or config.transcode.ladder
    if name not in ladders:
        parser.exit(2, f"fanz-media transcode: unknown ladder {name!r}; known: {', '.join(sorted(ladders))}\n")
    scheme = Protection(args.protection) if args.protection is not None else config.drm.protection
    rotate_every = args.rotate_every if args.rotate_every is not None else config.drm.vod_rotate_every_segments
    try:
        if scheme.encrypted and key_provider is None and open_provider is not None:
            key_provider = open_provider(config)
        policy = ProtectionPolicy(provider=key_provider, rotate_every=rotate_every, key_uri_base=args.key_uri)
        plan = policy.plan(args.content_id or args.outdir.name, scheme)
        index = run(args.input, args.outdir, ladders[name], args.encoder, args.quiet, config.hls, args.use, plan)
    except (TranscodeError, PackagerError, DrmError) as exc:
        print(f"fanz-media transcode: {exc}", file=sys.stderr)
        return 1
    print(index)
    if asset_id is not None:
        try:
            library = AssetLibrary(open_storage(config.storage, config.server.data_dir))
            count = library.upload(asset_id, index.parent)
        except (StorageError, PackagerError, ModuleNotFoundError) as exc:
            print(f"fanz-media transcode: storing asset {asset_id} failed: {exc}", file=sys.stderr)
            return 1
        log.info("asset %s: %d files stored", asset_id, count)
        print(f"asset {asset_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
