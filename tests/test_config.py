"""The typed config: TOML, environment, errors, and the README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.app.config import load_config, settings
from engine.errors import ConfigError
from packager.hls.config import SegmentFormat

ROOT = Path(__file__).resolve().parent.parent
LADDER = "[transcode.ladders.x]\nrungs = [{name = 'a', height = 240, bitrate = 300000}]\n"


def test_defaults_without_file_or_env() -> None:
    cfg = load_config(None, env={})
    assert cfg.rtmp.port == 1935 and cfg.http.port == 8080
    assert cfg.hls.segment_format is SegmentFormat.FMP4
    assert cfg.streams.reconnect_grace_s == 10.0


def test_toml_then_environment_wins(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text('[rtmp]\nport = 2000\n[hls]\nsegment_format = "mpegts"\n[streams]\nkeys = { k1 = "alice" }\n')
    cfg = load_config(f, env={"FANZ_RTMP_PORT": "3000", "FANZ_RTMP_LIMITS_MAX_CONNECTIONS": "7"})
    assert cfg.rtmp.port == 3000
    assert cfg.rtmp.limits.max_connections == 7
    assert cfg.hls.segment_format is SegmentFormat.MPEGTS
    assert cfg.streams.keys == {"k1": "alice"}
    env = load_config(None, env={"FANZ_STREAMS_KEYS": "a=alice,b=bob", "FANZ_SERVER_DEV": "yes"})
    assert env.streams.keys == {"a": "alice", "b": "bob"} and env.server.dev is True


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[rtmp]\nprot = 1\n", {}, "unknown setting"),
        ("[rtmp]\nport = 'x'\n", {}, "expected an integer"),
        ("[hls]\nsegment_format = 'webm'\n", {}, "expected one of"),
        ("[hls]\nwindow_segments = 1\n", {}, "at least 3"),
        ("", {"FANZ_SERVER_DEV": "maybe"}, "true or false"),
        ("not toml = = 1", {}, "not valid TOML"),
        ("[server]\nlog_level = 'verbose'\n", {}, "server.log_level 'verbose' is not one of 'debug', 'info'"),
        ("[transcode]\nencoder = 'x265'\n", {}, "transcode.encoder 'x265' is not one of 'auto', 'h264_nvenc'"),
        ("", {"FANZ_TRANSCODE_ENCODER": "nvenc"}, "transcode.encoder 'nvenc' is not one of"),
        (f"{LADDER}x264_tune = 'nolatency'\n", {}, r"\[transcode.ladders.x\]: ladder x: x264_tune 'nolatency'"),
        (f"{LADDER}x264_tune = 'film,grain'\n", {}, "names more than one of film"),
        (f"{LADDER}x264_preset = 'quick'\n", {}, "x264_preset 'quick' is not one of 'ultrafast'"),
        (f"{LADDER}nvenc_preset = 'p9'\n", {}, "nvenc_preset 'p9' is not one of 'p1'"),
        ("[transcode.ladders.x]\nrungs = [{name = 'a', height = 240, bitrate = 1, level = '3.7'}]\n", {},
         "rung a: level '3.7' is not one of '1'"),
        ("[transcode.ladders.x]\nrungs = [{name = 'a', height = 240, bitrate = 1, profile = 'high10'}]\n", {},
         "rung a: profile 'high10' is not one of 'baseline', 'main', 'high'"),
        ("[transcode]\ndecoder = 'vaapi'\n", {}, "transcode.decoder 'vaapi' is not one of 'auto', 'software'"),
        ("[streams.keys]\nk1 = 'victim/evil'\n", {}, "streams.keys: playback name 'victim/evil' is not allowed"),
        ("[effects]\nthreads = 0\n", {}, "effects.threads must be between 1 and 8"),
        ("", {"FANZ_EFFECTS_THREADS": "9"}, "effects.threads must be between 1 and 8"),
    ],
)
def test_clear_errors(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f, env=env)


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for s in settings():
        assert s.doc, f"{'.'.join(s.path)} has no documentation"
        assert f"`{s.env}`" in readme, f"README lacks {s.env}: run python scripts/update_readme.py"


def test_named_ladders_from_toml(tmp_path: Path) -> None:
    from fractions import Fraction

    f = tmp_path / "e.toml"
    f.write_text(
        '[transcode]\nladder = "tiny"\n'
        "[transcode.ladders.tiny]\npassthrough = false\nx264_preset = \"ultrafast\"\n"
        'rungs = [{name = "240p", height = 240, bitrate = 400000, max_frame_rate = "30000/1001"}]\n'
    )
    cfg = load_config(f, env={})
    tiny = cfg.transcode.all_ladders()["tiny"]
    assert tiny.name == "tiny" and not tiny.passthrough and tiny.x264_preset == "ultrafast"
    assert tiny.rungs[0].height == 240 and tiny.rungs[0].max_frame_rate == Fraction(30000, 1001)
    assert "default" in cfg.transcode.all_ladders()
    bad = tmp_path / "bad.toml"
    bad.write_text('[transcode.ladders.x]\nrungs = [{name = "a", height = 241, bitrate = 1}]\n')
    with pytest.raises(ConfigError, match="height must be even"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="not a known ladder"):
        load_config(None, env={"FANZ_TRANSCODE_LADDER": "nope"})


@pytest.mark.parametrize("spelling", ["", "none"])
def test_no_tune_can_be_said(tmp_path: Path, spelling: str) -> None:
    from transcode.ladder import ENCODE_USES

    f = tmp_path / "e.toml"
    f.write_text(f"{LADDER}x264_tune = '{spelling}'\n")
    ladder = load_config(f, env={}).transcode.all_ladders()["x"]
    assert ladder.tune_for(ENCODE_USES["live"]) is None and ladder.tune_for(ENCODE_USES["file"]) is None
    assert load_config(None, env={}).transcode.all_ladders()["default"].x264_tune == "auto"


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.app import cli

    good = tmp_path / "good.toml"
    good.write_text(f"[transcode]\nladder = 'x'\n{LADDER}x264_tune = 'none'\n")
    assert cli.main(["config", "--check", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok"
    bad = tmp_path / "bad.toml"
    bad.write_text(f"{LADDER}x264_tune = 'nolatency'\n")
    assert cli.main(["config", "--check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "x264_tune 'nolatency'" in err and "'zerolatency'" in err
    assert cli.main(["config", "--check", str(tmp_path / "missing.toml")]) == 1
    assert "not found" in capsys.readouterr().err
