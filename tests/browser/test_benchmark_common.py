"""The benchmark helpers measure what they claim: /proc accounting of a real
process tree, ffmpeg's real ``-progress`` output, playlist freshness, and a
short real RTMP-to-HLS step against nginx with the RTMP module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.common import (
    FreshnessTracker,
    ParseError,
    PlaylistInfo,
    ProgressParser,
    format_table,
    parse_playlist,
    parse_proc_stat,
    parse_speed,
    read_proc_stat,
    tree_usage,
)
from benchmarks.rtmp_remux import Settings, nginx_config, ramp_counts, render, run_step

_STAT = ("4242 (we(ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
         "150 25 7 3 20 0 1 0 100 1000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0")


def test_proc_stat_fields() -> None:
    stat = parse_proc_stat(_STAT)
    assert (stat.pid, stat.comm, stat.state, stat.ppid) == (4242, "we(ird) name", "S", 1)
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime, stat.rss_pages) == (150, 25, 7, 3, 321)
    assert stat.cpu_ticks == 185


def test_proc_stat_of_self() -> None:
    stat = read_proc_stat(os.getpid())
    assert stat is not None and stat.pid == os.getpid() and stat.ppid == os.getppid()
    assert stat.rss_pages > 0


@pytest.mark.parametrize("text", ["", "4242", "4242 (x", "4242 (x) S 1 2", "x (y) " + "1 " * 30,
                                  _STAT.replace(" 150 ", " 1.5 "), "(x) " + "1 " * 30])
def test_proc_stat_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_proc_stat(text)


@given(st.text(max_size=400))
def test_proc_stat_hostile(text: str) -> None:
    try:
        parse_proc_stat(text)
    except ParseError:
        pass


def test_tree_usage_counts_children() -> None:
    """A shell whose child burns 0.3 s of CPU then idles: the tree holds
    both processes and at least that much CPU."""
    spin = ("import os, time\n"
            "while sum(os.times()[:2]) < 0.3: pass\n"
            "print('spun', flush=True)\n"
            "time.sleep(60)\n")
    with subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; exit 0', spin],
                          stdout=subprocess.PIPE, text=True) as shell:
        try:
            assert shell.stdout is not None
            assert shell.stdout.readline().strip() == "spun"
            usage = tree_usage(shell.pid)
            assert usage.processes == 2
            assert usage.cpu_s >= 0.3
            assert usage.rss_bytes > 0
        finally:
            for child in Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split():
                os.kill(int(child), 9)
            shell.wait(timeout=10)
    assert tree_usage(shell.pid).processes == 0


def test_progress_from_real_ffmpeg(ffmpeg: str) -> None:
    out = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
         "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=2", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    parser = ProgressParser()
    blocks = [b for b in (parser.feed_line(line) for line in out.splitlines()) if b is not None]
    assert blocks and blocks[-1].ended
    assert not any(b.ended for b in blocks[:-1])
    assert blocks[-1].out_time_us is not None and blocks[-1].out_time_us >= 1_900_000
    assert blocks[-1].speed is not None and blocks[-1].speed > 0


@pytest.mark.parametrize(("text", "value"), [("1.01x", 1.01), ("   1x", 1.0), ("N/A", None), ("x", None),
                                             ("-1x", None), ("infx", None), ("nanx", None), ("1.0", None)])
def test_parse_speed(text: str, value: float | None) -> None:
    assert parse_speed(text) == value


@given(st.lists(st.text(max_size=60), max_size=30))
def test_progress_hostile_lines(lines: list[str]) -> None:
    parser = ProgressParser()
    for line in lines:
        parser.feed_line(line)


_MEDIA = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-TARGETDURATION:2
#EXTINF:2.000,
bench0-7.ts
#EXTINF:2.000,
bench0-8.ts
"""


def test_playlist_media() -> None:
    info = parse_playlist(_MEDIA)
    assert info == PlaylistInfo(2.0, 7, 2, (), False)
    assert info.newest_segment == 8
    assert parse_playlist(_MEDIA + "#EXT-X-ENDLIST\n").ended


def test_playlist_multivariant() -> None:
    text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=2x2\nhi/index.m3u8\n\n" \
           "#EXT-X-STREAM-INF:BANDWIDTH=2\nlo/index.m3u8\n"
    info = parse_playlist(text)
    assert info.variants == ("hi/index.m3u8", "lo/index.m3u8")
    assert info.segments == 0 and info.newest_segment is None


@pytest.mark.parametrize("text", ["", "EXTM3U\n", "#EXTM3U\n#EXT-X-TARGETDURATION:abc\n",
                                  "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1.5\n", "#EXTM3U\n#EXT-X-TARGETDURATION:0\n",
                                  "#EXTM3U\n#EXT-X-TARGETDURATION:nan\n", "#EXTM3U\n" + "a" * 70000 + "\n"])
def test_playlist_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_playlist(text)


@given(st.text(max_size=500))
def test_playlist_hostile(text: str) -> None:
    for candidate in (text, "#EXTM3U\n" + text):
        try:
            info = parse_playlist(candidate)
        except ParseError:
            continue
        assert info.segments >= 0


def test_freshness_tracker() -> None:
    def info(seq: int, n: int) -> PlaylistInfo:
        return PlaylistInfo(2.0, seq, n, (), False)

    tracker = FreshnessTracker(started=100.0)
    tracker.observe(None, 101.0)
    assert tracker.first_segment_s is None and tracker.max_age_s == 0
    tracker.observe(info(0, 1), 102.5)
    assert tracker.first_segment_s == 2.5
    tracker.observe(info(0, 1), 104.0)
    tracker.observe(info(0, 2), 104.5)
    tracker.observe(info(1, 2), 106.0)  # window slid by one: a new segment
    tracker.observe(info(1, 2), 109.5)
    assert tracker.newest == 2
    assert tracker.max_age_s == pytest.approx(3.5)
    assert tracker.target_duration == 2.0


def test_ramp_counts() -> None:
    assert ramp_counts(16) == (1, 2, 4, 8, 16)
    assert ramp_counts(6) == (1, 2, 4, 6)
    assert ramp_counts(1) == (1,)


def test_format_table() -> None:
    text = format_table([{"a": 1.23456, "b": None, "c": True}], [("a", "A"), ("b", "B"), ("c", "C")])
    assert text.splitlines()[2].split() == ["1.235", "-", "yes"]


def _nginx() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (Debian: nginx libnginx-mod-rtmp)")
    return nginx


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, 1935, 8080))
    result = subprocess.run([_nginx(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.fixture
def small_source(tmp_path: Path, ffmpeg: str) -> Path:
    source = tmp_path / "src.mp4"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=30:duration=4", "-f", "lavfi", "-i", "sine=duration=4",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(source)], check=True, timeout=60)
    return source


@pytest.mark.slow
async def test_nginx_step_end_to_end(tmp_path: Path, ffmpeg: str, small_source: Path) -> None:
    """One small publisher into nginx for 6 s: the step sees HLS segments,
    real-time speed and some CPU."""
    _nginx()
    source = small_source
    settings = Settings(servers=("nginx",), counts=(1,), ramp=False, duration_s=6.0, min_speed=0.9, warmup_s=2.0,
                        ffmpeg=ffmpeg, cache_dir=tmp_path, as_json=False)
    step = await run_step("nginx", 1, settings, source)
    assert step.failures == [] and step.sustained
    assert step.max_first_segment_s is not None and step.target_duration_s is not None
    assert step.min_speed is not None and step.min_speed >= 0.9
    assert step.cpu_s >= 0 and step.peak_rss_mb > 0
    text = render({"steps": [step.__dict__], "cpu_ratio_engine_over_nginx": {}, "max_sustained_publishers": None})
    assert "nginx" in text
