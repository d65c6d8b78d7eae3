"""``transcode INPUT OUTDIR [--ladder NAME] [--encoder auto|NAME]``.

Writes each rendition as ``OUTDIR/<name>.mp4`` with PyAV's muxer, so a file
transcode can be checked end to end with any player or ``ffprobe``.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import av
from av.container import InputContainer, OutputContainer
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext

from engine.media import Codec, MediaKind, Track
from transcode.core import RenditionPacket, RenditionStarted
from transcode.errors import TranscodeConfigError, TranscodeError
from transcode.file import TranscodeProgress, transcode_file
from transcode.ladder import LadderConfig, builtin_ladders

log = logging.getLogger(__name__)


def _flv_tag(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + bytes(7) + body + (11 + len(body)).to_bytes(4, "big")


def _template(tracks: tuple[Track, ...]) -> InputContainer:
    """A header-only FLV holding the tracks' ``avcC`` / AudioSpecificConfig.

    PyAV opens an encoder for a stream made with ``add_stream()`` when the
    muxer starts, and that encoder's global header would replace ours; a
    stream copied from a template is left closed, so the muxer writes our
    parameter sets and our packets untouched.
    """
    body = b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4)
    for track in tracks:
        if track.codec is Codec.H264:
            body += _flv_tag(9, b"\x17\x00\x00\x00\x00" + track.extradata)
        elif track.codec is Codec.AAC:
            body += _flv_tag(8, b"\xaf\x00" + track.extradata)
        else:
            raise TranscodeConfigError(f"the MP4 writer takes H.264 and AAC only, not {track.codec.value}")
    container = av.open(io.BytesIO(body), format="flv")
    assert isinstance(container, InputContainer)
    return container


class Mp4Writer:
    """One rendition's MP4: model tracks in, an MP4 out (no re-encode)."""

    def __init__(self, path: Path, tracks: tuple[Track, ...]) -> None:
        self.path = path
        self.container: OutputContainer = av.open(str(path), "w", format="mp4")
        self.streams: dict[int, Stream] = {}
        with _template(tracks) as template:
            for track in tracks:
                source = template.streams.video[0] if track.kind is MediaKind.VIDEO else template.streams.audio[0]
                stream = self.container.add_stream_from_template(source)
                stream.time_base = track.time_base
                ctx = stream.codec_context
                if isinstance(ctx, VideoCodecContext):
                    ctx.width = track.width or 0
                    ctx.height = track.height or 0
                self.streams[track.index] = stream

    def write(self, event: RenditionPacket) -> None:
        packet = event.packet
        av_packet = av.Packet(packet.data)
        av_packet.pts = packet.pts
        av_packet.dts = packet.dts
        av_packet.time_base = packet.time_base
        av_packet.is_keyframe = packet.keyframe
        if packet.duration:
            av_packet.duration = packet.duration
        av_packet.stream = self.streams[packet.track]
        self.container.mux(av_packet)

    def close(self) -> None:
        self.container.close()


class _ProgressLine:
    """Prints whole percents to stderr, each once."""

    def __init__(self) -> None:
        self.last = -1

    def __call__(self, p: TranscodeProgress) -> None:
        frac = p.fraction
        if frac is not None and int(frac * 100) > self.last:
            self.last = int(frac * 100)
            sys.stderr.write(f"\r{self.last:3d}%")
            sys.stderr.flush()


def run(input_path: Path, outdir: Path, ladder: LadderConfig, encoder: str, quiet: bool = False) -> dict[str, Path]:
    """Transcode ``input_path`` into one MP4 per rendition; returns them by name."""
    outdir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Mp4Writer] = {}
    try:
        for event in transcode_file(input_path, ladder, encoder, progress=None if quiet else _ProgressLine()):
            if isinstance(event, RenditionStarted):
                writers[event.name] = Mp4Writer(outdir / f"{event.name}.mp4", event.tracks)
                log.info("rendition %s: encoder %s", event.name, event.encoder)
            else:
                writers[event.name].write(event)
    finally:
        for writer in writers.values():
            writer.close()
    if not quiet:
        sys.stderr.write("\n")
    return {name: w.path for name, w in writers.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ladders = builtin_ladders()
    parser = argparse.ArgumentParser(
        prog="transcode", description="Transcode a file along a ladder, one MP4 per rendition."
    )
    parser.add_argument("input", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--ladder", default="default", choices=sorted(ladders))
    parser.add_argument("--encoder", default="auto", help="auto, libx264, h264_nvenc or h264_qsv")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        outputs = run(args.input, args.outdir, ladders[args.ladder], args.encoder, args.quiet)
    except TranscodeError as exc:
        print(f"transcode failed: {exc}", file=sys.stderr)
        return 1
    for name, path in outputs.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
