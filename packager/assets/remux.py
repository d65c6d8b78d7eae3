"""The MP4 download and the poster frame of an asset, with PyAV.

The download is a remux of the first rendition's segments into one
progressive MP4 (moov first, so players start before the end): no sample is
decoded or encoded again. The poster is the first keyframe of that
rendition, decoded and written as a JPEG of the video's own size.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from packager.assets.library import AssetLibrary, Rendition
from packager.errors import AssetEncryptedError, RemuxError


def _clear(rendition: Rendition, prefix: str) -> Rendition:
    if rendition.encrypted:
        raise AssetEncryptedError(f"{prefix}: the segments are encrypted; no download or poster")
    return rendition


def make_download(library: AssetLibrary, prefix: str, work: Path) -> Path:
    """``make`` for :meth:`AssetLibrary.derived`: the MP4 download."""
    import av

    source = library.concatenated(_clear(library.first_rendition(prefix), prefix), work / "source.bin")
    target = work / "download.mp4"
    try:
        with av.open(str(source)) as inp, av.open(str(target), "w", format="mp4",
                                                  options={"movflags": "+faststart"}) as out:
            mapping = {}
            for stream in inp.streams:
                if stream.type in ("video", "audio"):
                    mapping[stream.index] = out.add_stream_from_template(stream)
            if not mapping:
                raise RemuxError(f"{prefix}: no audio or video to download")
            # The segments carry the live timeline (a recording starts
            # wherever its stream was); the download starts at zero.
            start = Fraction(inp.start_time or 0, 1_000_000)
            shifts = {s.index: round(start / (s.time_base or Fraction(1, 90000))) for s in inp.streams
                      if s.index in mapping}
            for packet in inp.demux(*[s for s in inp.streams if s.index in mapping]):
                if packet.dts is None:
                    continue
                shift = shifts[packet.stream_index]
                packet.dts -= shift
                if packet.pts is not None:
                    packet.pts -= shift
                packet.stream = mapping[packet.stream_index]
                out.mux(packet)
    except av.error.FFmpegError as exc:
        raise RemuxError(f"{prefix}: remux failed: {exc}") from exc
    return target


def make_poster(library: AssetLibrary, prefix: str, work: Path) -> Path:
    """``make`` for :meth:`AssetLibrary.derived`: the poster JPEG."""
    import av

    rendition = _clear(library.first_rendition(prefix), prefix)
    first = Rendition(rendition.init_key, rendition.segment_keys[:1], rendition.duration)
    source = library.concatenated(first, work / "first.bin")
    target = work / "poster.jpg"
    try:
        with av.open(str(source)) as inp:
            if not inp.streams.video:
                raise RemuxError(f"{prefix}: no video for a poster")
            video = inp.streams.video[0]
            frame = next((f for f in inp.decode(video) if f.key_frame), None)
            if frame is None:
                raise RemuxError(f"{prefix}: no keyframe in the first segment")
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height = frame.width, frame.height
            encoder.pix_fmt = "yuvj420p"
            encoder.time_base = video.time_base or Fraction(1, 25)
            encoder.options = {"qscale": "3"}
            picture = frame.reformat(format="yuvj420p")
            data = b"".join(bytes(p) for p in encoder.encode(picture) + encoder.encode(None))
    except av.error.FFmpegError as exc:
        raise RemuxError(f"{prefix}: poster failed: {exc}") from exc
    target.write_bytes(data)
    return target
