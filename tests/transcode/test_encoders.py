"""Encoder probing and option sets."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import pytest

from engine.media import Codec
from transcode.encoders import SOFTWARE_H264, EncoderProbe, encoder_options, probe_encoders
from transcode.errors import EncoderError, TranscodeConfigError
from transcode.ladder import ENCODE_USES, SourceInfo, plan_ladder

from .conftest import small_ladder

LIVE = ENCODE_USES["live"]


def _gpu_present() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/dri").exists()


def test_probe_opens_libx264_and_falls_back_to_it(caplog: pytest.LogCaptureFixture) -> None:
    if _gpu_present():
        pytest.skip("a GPU device is present: the fallback path is not the one taken here")
    probe = probe_encoders()
    assert SOFTWARE_H264 in probe.available
    assert "h264_nvenc" in probe.failures and "h264_qsv" in probe.failures
    with caplog.at_level(logging.INFO, logger="transcode.encoders"):
        assert probe.choose("auto") == SOFTWARE_H264
    assert "falling back to libx264" in caplog.text


def test_choose_prefers_hardware_when_it_opened() -> None:
    probe = EncoderProbe(("h264_nvenc", "libx264"))
    assert probe.choose("auto") == "h264_nvenc"
    assert probe.choose("libx264") == "libx264"


def test_choose_refuses_unknown_or_unusable_encoders() -> None:
    probe = EncoderProbe(("libx264",), {"h264_nvenc": "no device"})
    with pytest.raises(TranscodeConfigError, match="no device"):
        probe.choose("h264_nvenc")
    with pytest.raises(TranscodeConfigError):
        probe.choose("mpeg2video")
    with pytest.raises(EncoderError):
        EncoderProbe(()).choose("auto")


def test_option_sets_force_idr_and_disable_scene_cuts() -> None:
    ladder = small_ladder(rate_control="cbr", nvenc_preset="p2", nvenc_tune="ll")
    rung = plan_ladder(ladder, SourceInfo(Codec.H264, 640, 360, Fraction(30))).rungs[0]
    x264 = encoder_options("libx264", ladder, rung, LIVE)
    assert x264["forced-idr"] == "1" and "scenecut=0" in x264["x264-params"] and "nal-hrd=cbr" in x264["x264-params"]
    assert x264["maxrate"] == str(rung.config.bitrate)
    nvenc = encoder_options("h264_nvenc", ladder, rung, LIVE)
    assert nvenc["preset"] == "p2" and nvenc["tune"] == "ll" and nvenc["rc"] == "cbr"
    assert nvenc["forced-idr"] == "1" and nvenc["no-scenecut"] == "1" and nvenc["zerolatency"] == "1"
    vbr = encoder_options("h264_nvenc", small_ladder(), rung, LIVE)
    assert vbr["rc"] == "vbr" and int(vbr["maxrate"]) == rung.config.bitrate * 3 // 2
    with pytest.raises(TranscodeConfigError):
        encoder_options("mpeg4", ladder, rung, LIVE)
