"""Browser playback harness: headless Chromium playing HLS with hls.js,
Shaka Player or the native player (see play.mjs and player.py)."""

from tests.browser.player import (
    BrowserSetupError,
    HarnessError,
    HarnessOutputError,
    HarnessTimeoutError,
    Level,
    PlaybackReport,
    ensure_browser_deps,
    parse_report,
    play_hls,
    play_hls_async,
)
from tests.browser.static_server import serve_directory

__all__ = [
    "BrowserSetupError",
    "HarnessError",
    "HarnessOutputError",
    "HarnessTimeoutError",
    "Level",
    "PlaybackReport",
    "ensure_browser_deps",
    "parse_report",
    "play_hls",
    "play_hls_async",
    "serve_directory",
]
