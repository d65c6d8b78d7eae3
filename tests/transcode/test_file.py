"""Real decode, scale and encode of a tiny clip, checked with ffprobe and PyAV."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import pytest

from engine.app import transcode_command as cli
from engine.media import Packet
from transcode.core import RenditionPacket, RenditionStarted, StreamTranscoder
from transcode.errors import EncoderError
from transcode.fanout import InlineLane, ThreadedLane, threads_pay, usable_cpus
from transcode.file import TranscodeProgress, transcode_file
from transcode.keyframes import SourceKeyframeGrid

from .conftest import model_packets, small_ladder

pytestmark = pytest.mark.timeout(120)


def ffprobe_streams(ffprobe: str, path: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,sample_rate,channels",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
        text=True,
    ).stdout
    return list(json.loads(out)["streams"])


def key_times(path: Path) -> tuple[list[Fraction], int]:
    """Presentation times of the video keyframes, and the frame count."""
    keys = []
    count = 0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for p in c.demux(stream):
            if p.size == 0 or p.pts is None:
                continue
            count += 1
            if p.is_keyframe:
                assert p.time_base is not None
                keys.append(p.pts * p.time_base)
    return sorted(keys), count


def pict_types(ffprobe: str, path: Path) -> list[str]:
    out = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pict_type,key_frame",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
        text=True,
    ).stdout
    return [line.split(",")[1] for line in out.split() if line]


@pytest.fixture(scope="module")
def outputs(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each rendition's VOD media playlist, as written by the transcode command."""
    index = cli.run(clip, tmp_path_factory.mktemp("rungs") / "out", small_ladder(), "libx264", quiet=True)
    variants = [line for line in index.read_text().splitlines() if line and not line.startswith("#")]
    return {v.split("/")[0]: index.parent / v for v in variants}


def test_each_rendition_has_its_size_and_codecs(outputs: dict[str, Path], ffprobe: str) -> None:
    assert sorted(outputs) == ["240p", "288p", "source"]
    sizes = {"source": (640, 360), "288p": (512, 288), "240p": (426, 240)}
    for name, path in outputs.items():
        streams = ffprobe_streams(ffprobe, path)
        video = next(s for s in streams if s["codec_type"] == "video")
        audio = next(s for s in streams if s["codec_type"] == "audio")
        assert video["codec_name"] == "h264" and (video["width"], video["height"]) == sizes[name]
        assert audio["codec_name"] == "aac" and audio["sample_rate"] == "48000" and audio["channels"] == 2


def test_keyframes_aligned_in_every_rendition(outputs: dict[str, Path]) -> None:
    # fMP4 HLS has no edit list: times start at the first composition offset,
    # the same in every rendition.
    times = {name: key_times(path)[0] for name, path in outputs.items()}
    assert [t - times["source"][0] for t in times["source"]] == [0, 1, 2]
    assert times["288p"] == times["source"]
    assert times["240p"] == times["source"]


def test_not_every_frame_is_an_idr(outputs: dict[str, Path], ffprobe: str) -> None:
    keys, frames = key_times(outputs["288p"])
    assert frames == 90 and len(keys) == 3
    types = pict_types(ffprobe, outputs["288p"])
    assert len(types) >= 88  # the MP4 edit list may hide a frame from ffprobe
    assert types.count("I") == 3 and types.count("P") + types.count("B") == len(types) - 3


def test_frame_rate_cap(outputs: dict[str, Path]) -> None:
    _, frames = key_times(outputs["240p"])
    assert 44 <= frames <= 47  # 30 fps capped at 15


def test_passthrough_is_the_source_bitstream(outputs: dict[str, Path], clip: Path) -> None:
    def payloads(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]

    assert payloads(outputs["source"]) == payloads(clip)


def test_audio_decoded_and_encoded_once(clip: Path) -> None:
    tracks, packets = model_packets(clip)
    tx = StreamTranscoder(small_ladder(), "libx264", SourceKeyframeGrid())
    events = tx.start(tracks)
    for packet in packets:
        events += tx.push(packet)
    events += tx.flush()
    started = {e.name: e for e in events if isinstance(e, RenditionStarted)}
    assert set(started) == {"source", "288p", "240p"}
    assert len({e.tracks[1] for e in started.values()}) == 1  # one shared AAC track
    audio: dict[str, list[Packet]] = defaultdict(list)
    for e in events:
        if isinstance(e, RenditionPacket) and e.packet.track == 1:
            audio[e.name].append(e.packet)
    first = audio["source"]
    assert len(first) >= 140  # about 3 s of 1024-sample frames at 48 kHz
    for name in ("288p", "240p"):
        assert len(audio[name]) == len(first)
        assert all(a is b for a, b in zip(audio[name], first, strict=True))  # the same packets, not re-encoded
    source_audio = sum(1 for p in packets if p.track == 1)
    assert tx.stats.audio_packets_in == source_audio
    assert tx.stats.audio_frames_encoded <= source_audio + 5  # once, not once per rendition
    assert tx.encoders == {"source": "copy", "288p": "libx264", "240p": "libx264"}


def test_fixed_grid_for_files_without_passthrough(clip: Path) -> None:
    ladder = small_ladder(passthrough=False, segment_duration=Fraction(1, 2))
    seen: list[TranscodeProgress] = []
    keys: dict[str, list[Fraction]] = defaultdict(list)
    for e in transcode_file(clip, ladder, "libx264", progress=seen.append):
        if isinstance(e, RenditionPacket) and e.packet.track == 0 and e.packet.keyframe:
            keys[e.name].append(e.packet.pts_seconds)
    assert sorted(keys) == ["240p", "288p"]
    expected = [Fraction(i, 2) for i in range(6)]
    assert sorted(keys["288p"]) == expected and sorted(keys["240p"]) == expected
    assert seen and seen[-1].fraction == 1.0
    fractions = [p.fraction for p in seen if p.fraction is not None]
    assert max(fractions[:-1]) < 1.0


def test_frame_filter_runs_once_per_decoded_frame(clip: Path) -> None:
    calls = []

    def mark(frame: av.VideoFrame) -> av.VideoFrame:
        calls.append(frame.pts)
        return frame

    list(transcode_file(clip, small_ladder(), "libx264", frame_filter=mark))
    assert len(calls) == 90 and len(set(calls)) == 90


def test_cli_main_writes_vod_hls(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vod"
    assert cli.main([str(clip), str(out), "--ladder", "mobile", "--encoder", "libx264"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "index.m3u8")
    assert "100%" in captured.err and "[" in captured.err  # the progress bar reached the end
    index = (out / "index.m3u8").read_text()
    # The mobile ladder's 360p rung would sit beside the 360p passthrough: left out.
    assert "source/media.m3u8" in index and "360p/media.m3u8" not in index
    media = (out / "source" / "media.m3u8").read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in media and media.rstrip().endswith("#EXT-X-ENDLIST")
    # A folder that is not empty is refused rather than overwritten.
    assert cli.main([str(clip), str(out), "--encoder", "libx264", "--quiet"]) == 1
    assert cli.main([str(tmp_path / "missing.mp4"), str(tmp_path / "x"), "--encoder", "libx264", "--quiet"]) == 1
    assert "unknown ladder" in _exit_message(lambda: cli.main([str(clip), str(tmp_path / "y"), "--ladder", "nope"]))


def _exit_message(call) -> str:  # type: ignore[no-untyped-def]
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        call()
    return err.getvalue()


def _run_transcoder(clip: Path, **ladder_changes: object) -> tuple[StreamTranscoder, list[RenditionPacket]]:
    tracks, packets = model_packets(clip)
    tx = StreamTranscoder(small_ladder(**ladder_changes), "libx264", SourceKeyframeGrid(), use="file")
    events = tx.start(tracks)
    for packet in packets:
        events += tx.push(packet)
    events += tx.flush()
    return tx, [e for e in events if isinstance(e, RenditionPacket)]


def test_threads_per_rung_give_the_serial_output(clip: Path) -> None:
    # With one x264 thread an encode is fully deterministic: the rung threads must
    # change nothing but the timing (same packets, same order, same IDRs).
    if usable_cpus() < 2:
        pytest.skip("rung threads are used only with more than one CPU")
    serial_tx, serial = _run_transcoder(clip, parallel_rungs=False, encoder_threads=1)
    tx, parallel = _run_transcoder(clip, parallel_rungs=True, encoder_threads=1)
    assert all(isinstance(lane, ThreadedLane) for lane in tx._lanes)
    assert all(isinstance(lane, InlineLane) for lane in serial_tx._lanes)
    for name in ("288p", "240p"):
        def video(events: list[RenditionPacket], name: str = name) -> list[tuple[int, int, bool, bytes]]:
            return [(e.packet.pts, e.packet.dts, e.packet.keyframe, e.packet.data)
                    for e in events if e.name == name and e.packet.track == 0]
        assert video(parallel) == video(serial)
        assert len(video(parallel)) == tx.stats.frames_encoded[name] > 0
    assert not [t for t in threading.enumerate() if t.name.startswith("rung:")]  # flush ended them


def test_one_cpu_runs_the_rungs_on_the_decoding_thread() -> None:
    # Pinned to one CPU there is nothing to overlap: the serial layout is used.
    code = "from transcode.fanout import threads_pay, usable_cpus; print(usable_cpus(), threads_pay(True))"
    cpu = sorted(os.sched_getaffinity(0))[0]
    out = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.stdout.split() == ["1", "False"]
    assert threads_pay(False) is False
    assert threads_pay(True) is (usable_cpus() > 1)


def test_each_rendition_interleaves_audio_behind_its_video(clip: Path) -> None:
    _, events = _run_transcoder(clip)
    for name in ("288p", "240p"):
        latest_audio = None
        audio = video = 0
        for e in events:
            if e.name != name:
                continue
            if e.packet.track == 1:
                audio += 1
                latest_audio = e.packet.dts_seconds
            else:
                video += 1
                # No audio goes out ahead of the video of the same moment.
                assert latest_audio is None or latest_audio <= e.packet.dts_seconds
        assert audio >= 140 and video > 0


def test_a_failing_rung_thread_surfaces_its_error_and_ends(clip: Path) -> None:
    tracks, packets = model_packets(clip)
    tx = StreamTranscoder(small_ladder(), "libx264", SourceKeyframeGrid(), use="file")
    tx.start(tracks)
    broken = tx._lanes[0].encoder

    def fail(frame: av.VideoFrame, boundary: bool) -> list[Packet]:
        raise EncoderError("encoder gone")

    broken.encode = fail  # type: ignore[method-assign]
    with pytest.raises(EncoderError, match="encoder gone"):
        for packet in packets:
            tx.push(packet)
        tx.flush()
    for t in threading.enumerate():
        if t.name.startswith("rung:"):
            t.join(5)
    assert not [t for t in threading.enumerate() if t.name.startswith("rung:")]


def _first_segment_x264(path: Path) -> dict[str, str]:
    seg = sorted(path.parent.glob("seg*"))[0]
    found = re.search(rb"options: ([^\x00]*)", seg.read_bytes())
    assert found is not None
    return dict(item.split("=", 1) for item in found.group(1).decode().split() if "=" in item)


def test_files_get_file_settings_and_live_gets_live_settings(
    clip: Path, tmp_path: Path, ffprobe: str
) -> None:
    ladder = small_ladder(bframes=None, passthrough=False, x264_preset="veryfast", segment_duration=Fraction(1))
    found: dict[str, tuple[dict[str, str], list[str]]] = {}
    for use in ("file", "live"):
        index = cli.run(clip, tmp_path / use, ladder, "libx264", quiet=True, use=use)
        media = index.parent / "288p" / "media.m3u8"
        found[use] = (_first_segment_x264(media), pict_types(ffprobe, media))
    file_opts, file_types = found["file"]
    live_opts, live_types = found["live"]
    assert "B" in file_types and "B" not in live_types
    assert file_opts["bframes"] == "3" and live_opts["bframes"] == "0"
    assert file_opts["sliced_threads"] == "0" and live_opts["sliced_threads"] == "1"
    assert int(file_opts["rc_lookahead"]) > 0 and live_opts["rc_lookahead"] == "0"
    # Both keep the keyframe grid: IDRs only where forced, closed GOPs (x264
    # names open_gop only where there are B-frames to open a GOP with).
    assert file_opts["open_gop"] == "0"
    for opts in (file_opts, live_opts):
        assert opts["scenecut"] == "0"
    assert file_types.count("I") == live_types.count("I") == 3


@pytest.mark.parametrize("parallel", [True, False])
def test_sealed_passthrough_encodes_on_a_rung_lane_with_its_audio_interleaved(clip: Path, parallel: bool) -> None:
    """The passthrough encoded from a keyframe on (a video effect switched
    on) runs like any rung: on a lane of its own, with the shared audio
    held behind its video, and its restart after the audio that comes
    before the switch."""
    tracks, packets = model_packets(clip)
    tx = StreamTranscoder(
        small_ladder(parallel_rungs=parallel),
        "libx264",
        SourceKeyframeGrid(),
        passthrough_switch=lambda p: p.keyframe and p.pts >= 1000,
    )
    events = tx.start(tracks)
    for packet in packets:
        events += tx.push(packet)
    events += tx.flush()
    assert isinstance(tx._source_lane, ThreadedLane if threads_pay(parallel) else InlineLane)
    source = [e for e in events if e.name == "source"]
    restart = next(i for i, e in enumerate(source) if isinstance(e, RenditionStarted) and e.clock_continues)
    before = [e.packet for e in source[:restart] if isinstance(e, RenditionPacket)]
    after = [e.packet for e in source[restart + 1 :] if isinstance(e, RenditionPacket)]
    assert max(p.pts for p in before if p.track == 0) < 1000
    encoded = [p for p in after if p.track == 0]
    assert encoded[0].keyframe and encoded[0].pts == 1000
    assert tx.encoders["source"] == "libx264" and tx.stats.frames_encoded["source"] == len(encoded)
    # The audio up to the switch stays before the restart...
    assert all(p.dts_seconds <= encoded[0].dts_seconds for p in before if p.track == 1)
    # ...and after it no audio goes out ahead of the video of the same moment.
    latest_audio = None
    for p in after:
        if p.track == 1:
            latest_audio = p.dts_seconds
        else:
            assert latest_audio is None or latest_audio <= p.dts_seconds
    assert any(p.track == 1 for p in after)
    audio = sorted(p.dts for p in before + after if p.track == 1)
    assert audio == sorted(e.packet.dts for e in events if isinstance(e, RenditionPacket)
                           and e.name == "288p" and e.packet.track == 1)
    assert not [t for t in threading.enumerate() if t.name.startswith("rung:") and t.is_alive()]
