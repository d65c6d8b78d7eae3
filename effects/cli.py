"""``fanz-media effects``: list the effects, or apply some to a file.

``effects list`` prints every effect with its options (type, range,
default, meaning). ``effects apply INPUT OUTPUT --effect NAME:key=value,...``
(repeatable, applied in order; or ``--settings FILE.json`` with the JSON
form) decodes INPUT with PyAV, runs the chain on every video and audio
frame, and writes H.264 + AAC to OUTPUT. Exit status: 0 done, 2 bad
arguments or effect options, 1 the media could not be read or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import av
import av.error

from effects.chain import EffectChain
from effects.errors import EffectOptionError, EffectsError, MediaFormatError
from effects.registry import EffectRegistry, default_registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanz-media effects", description="Live effects: list or apply to a file.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="name every effect with its options")
    apply = commands.add_parser("apply", help="apply effects to a media file (H.264 + AAC output)")
    apply.add_argument("input", type=Path)
    apply.add_argument("output", type=Path)
    apply.add_argument("--effect", action="append", default=[], metavar="NAME[:key=value,...]",
                       help="an effect to apply; repeat for several, applied in order")
    apply.add_argument("--settings", type=Path, help="JSON file: {\"effects\": [{\"effect\": NAME, ...}, ...]}")
    apply.add_argument("--preset", default="veryfast", help="libx264 preset (default veryfast)")
    apply.add_argument("--crf", type=int, default=20, help="libx264 quality, lower is better (default 20)")
    return parser


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the command; returns the exit status."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    registry = default_registry()
    if args.command == "list":
        print(registry.describe(), file=out)
        return 0
    try:
        chain = _chain(args, registry)
    except EffectOptionError as exc:
        print(f"effects: {exc}", file=err)
        return 2
    except EffectsError as exc:
        print(f"effects: {exc}", file=err)
        return 1
    try:
        frames = apply_file(args.input, args.output, chain, preset=args.preset, crf=args.crf)
    except (EffectsError, av.error.FFmpegError, OSError) as exc:
        print(f"effects: {args.input}: {exc}", file=err)
        return 1
    for stat in chain.stats():
        print(f"{stat.index}:{stat.name} frames={stat.frames} skipped={stat.skipped} mean_ms={stat.mean_ms:.2f}",
              file=out)
    print(f"wrote {args.output} ({frames} video frames)", file=out)
    return 0


def _chain(args: argparse.Namespace, registry: EffectRegistry) -> EffectChain:
    specs: list[Any] = []
    if args.settings is not None:
        try:
            settings = json.loads(args.settings.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EffectOptionError(f"--settings {args.settings}: {exc}") from exc
        if isinstance(settings, dict):
            specs += list(settings.get("effects", []))
            extra = set(settings) - {"effects", "budget_ms"}
            if extra:
                raise EffectOptionError(f"--settings: unknown key {sorted(extra)[0]!r}")
        elif isinstance(settings, list):
            specs += settings
        else:
            raise EffectOptionError("--settings: expected an object or a list")
    specs += args.effect
    if not specs:
        raise EffectOptionError("give at least one --effect NAME[:key=value,...] or --settings FILE")
    return EffectChain(specs, registry=registry)


def apply_file(source: Path, target: Path, chain: EffectChain, preset: str = "veryfast", crf: int = 20) -> int:
    """Decode ``source``, run ``chain``, encode H.264 + AAC to ``target``.
    Returns the number of video frames written."""
    with av.open(str(source)) as inp:
        video_in = next(iter(inp.streams.video), None)
        audio_in = next(iter(inp.streams.audio), None)
        if video_in is None and audio_in is None:
            raise MediaFormatError("no video or audio stream")
        with av.open(str(target), mode="w") as out:
            video_out = audio_out = None
            if video_in is not None:
                rate = video_in.average_rate or video_in.guessed_rate or Fraction(30)
                video_out = out.add_stream("libx264", rate=rate)
                video_out.width = video_in.codec_context.width
                video_out.height = video_in.codec_context.height
                video_out.pix_fmt = "yuv420p"
                if video_in.time_base is not None:
                    video_out.time_base = video_in.time_base
                    video_out.codec_context.time_base = video_in.time_base
                video_out.options = {"preset": preset, "crf": str(crf)}
            if audio_in is not None:
                sample_rate = audio_in.codec_context.sample_rate or 48000
                audio_out = out.add_stream("aac", rate=sample_rate)
                audio_out.layout = audio_in.codec_context.layout.name
                audio_out.bit_rate = 128_000
            streams = [s for s in (video_in, audio_in) if s is not None]
            count = 0
            for packet in inp.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame) and video_out is not None:
                        count += _encode_video(out, video_out, chain.process_video(frame))
                    elif isinstance(frame, av.AudioFrame) and audio_out is not None:
                        _encode_audio(out, audio_out, chain.process_audio(frame))
            for stream in (video_out, audio_out):
                if stream is not None:
                    out.mux(stream.encode(None))
    return count


def _encode_video(out: Any, stream: Any, frame: av.VideoFrame) -> int:
    # Decoded frames carry pict_type I; x264 would then make every frame an
    # IDR frame.
    frame.pict_type = av.video.frame.PictureType.NONE
    out.mux(stream.encode(frame))
    return 1


def _encode_audio(out: Any, stream: Any, frame: av.AudioFrame) -> None:
    if frame.pts is not None and frame.time_base is not None and frame.sample_rate:
        frame.pts = int(frame.pts * frame.time_base * frame.sample_rate)
        frame.time_base = Fraction(1, frame.sample_rate)
    out.mux(stream.encode(frame))
