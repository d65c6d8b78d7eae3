"""The video decoder probe and choice, on a machine without a GPU, and the
rung scalers fed with the frames a hardware decoder hands back (nv12)."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.conftest import start_engine
from transcode.config import TranscodeSettings
from transcode.decoders import DecoderProbe, probe_clip, probe_decoders
from transcode.errors import TranscodeConfigError
from transcode.ladder import ENCODE_USES, SourceInfo, plan_ladder
from transcode.video import RungEncoder, VideoDecoder, mark_frame

from .conftest import model_packets, small_ladder


def no_gpu() -> bool:
    return not probe_decoders().available


pytestmark = pytest.mark.skipif(not no_gpu(), reason="this machine has a working GPU decoder")


def test_auto_falls_back_to_software_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    probe = probe_decoders()
    assert probe.available == ()
    assert set(probe.failures) == {"cuda", "qsv"}
    with caplog.at_level(logging.INFO, logger="transcode.decoders"):
        assert probe.choose("auto") == "software"
    lines = [r.getMessage() for r in caplog.records if r.name == "transcode.decoders"]
    assert len(lines) == 1
    assert "decoding in software" in lines[0] and "cuda: " in lines[0], lines


def test_explicit_gpu_decoder_without_gpu_is_a_config_error() -> None:
    probe = probe_decoders(("cuda",))
    with pytest.raises(TranscodeConfigError, match="cuda decoding does not work here"):
        probe.choose("cuda")
    assert probe.choose("software") == "software"
    with pytest.raises(TranscodeConfigError, match="unknown video decoder"):
        probe.choose("nvdec")


def test_choose_prefers_a_device_that_decoded() -> None:
    assert DecoderProbe(("cuda",), {"qsv": "no device"}).choose("auto") == "cuda"
    assert DecoderProbe(("cuda",)).choose("cuda") == "cuda"


def test_setting_is_validated() -> None:
    assert TranscodeSettings().decoder == "auto"
    assert TranscodeSettings(decoder="cuda").decoder == "cuda"
    with pytest.raises(TranscodeConfigError):
        TranscodeSettings(decoder="gpu")


def test_probe_clip_decodes_in_software() -> None:
    """The probe's test frame is sound: a device that fails on it fails for
    itself, not for the frame."""
    ctx = av.CodecContext.create("h264", "r")
    frames = [f for p in (*probe_clip(), None) for f in ctx.decode(p)]
    assert len(frames) == 1 and (frames[0].width, frames[0].height) == (256, 144)


def test_stream_decoder_on_a_missing_device_decodes_in_software(
    clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracks, packets = model_packets(clip)
    with caplog.at_level(logging.INFO, logger="transcode.video"):
        decoder = VideoDecoder(tracks[0], hwaccel="cuda")
    assert decoder.name == "software"
    assert any("decoding in software" in r.getMessage() for r in caplog.records)
    frames = [f for p in packets if p.track == 0 for f in decoder.decode(p)] + decoder.decode(None)
    assert len(frames) == 90 and decoder.errors == 0


def test_rungs_take_nv12_frames(clip: Path) -> None:
    """A hardware decoder's frames come back as nv12: each rung scales and
    encodes them like yuv420p ones."""
    tracks, packets = model_packets(clip)
    video = tracks[0]
    ladder = small_ladder(bframes=0)
    assert video.width and video.height
    plan = plan_ladder(ladder, SourceInfo(video.codec, video.width, video.height, Fraction(30)))
    rung = RungEncoder(plan.rungs[0], ladder, "libx264", video.time_base, ENCODE_USES["live"])
    decoder = VideoDecoder(video)
    out = []
    for i, frame in enumerate(f for p in packets if p.track == 0 for f in decoder.decode(p)):
        nv12 = frame.reformat(format="nv12")
        nv12.pts, nv12.time_base = frame.pts, frame.time_base
        assert nv12.format.name == "nv12"
        mark_frame(nv12, video.time_base, i % 30 == 0)
        out += rung.encode(nv12, boundary=(i % 30 == 0))
    out += rung.flush()
    assert len(out) == rung.frames_encoded > 80
    check = av.CodecContext.create("h264", "r")
    check.extradata = rung.track.extradata
    decoded = [f for p in out for f in check.decode(av.Packet(p.data))]
    assert decoded and (decoded[0].width, decoded[0].height) == (plan.rungs[0].width, plan.rungs[0].height)


async def test_engine_refuses_to_start_with_cuda_and_no_gpu(tmp_path: Path) -> None:
    with pytest.raises(TranscodeConfigError, match="cuda decoding does not work here"):
        engine = await start_engine(tmp_path / "data", transcode={"enabled": True, "decoder": "cuda"})
        await engine.stop()


def test_decoder_probe_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import decoder_probe

    assert decoder_probe.main(["--seconds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chosen"] == "software" and "cuda" in report["failures"]
    (software,) = report["results"]
    assert software["decoder"] == "software" and software["frames"] == 30 and software["cpu_ms_per_frame"] > 0


def test_serve_command_reports_an_unusable_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.app.cli import main

    monkeypatch.setenv("FANZ_TRANSCODE_DECODER", "cuda")
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--dev", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "configuration error: transcode.decoder = cuda, but cuda decoding does not work here" in (
        capsys.readouterr().err
    )
