"""WebRTC load: how many WHEP viewers of one 2.5 Mbit/s stream, and how many
concurrent WHIP publishers, one engine process sustains, and its CPU per
viewer and per publisher.

The engine's WebRTC side (registry, ``WebRtcHttp``) runs in a child process
on loopback; this process is the load generator. Viewers are aiortc peers
that count the frames they receive without decoding them; publishers are
aiortc peers that send pre-encoded packets (H.264 with SPS/PPS on keyframes,
Opus), so the generator spends no CPU on encoding. The viewed stream is a
720p30 H.264 clip (2.5 Mbit/s, no B-frames, 1 s GOP) with AAC, looped into
the registry at real-time pace: the engine relays the H.264 and converts the
AAC to Opus once. For publishers the engine converts each one's Opus to AAC.

A step is sustained when every peer received at least 90 % of the source
frame rate. CPU is the child's CPU time over the measuring window, as a
percentage of one core; "per peer" is the increase over the step without
peers divided by the peer count. Counts and time are bounded::

    .venv/bin/python -m benchmarks.webrtc_load --viewers 1,4,8 --publishers 1,2 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from benchmarks.common import ProcessSet, format_table, free_port, to_json, tree_usage, wait_for_port

FPS = 30
SOURCE_NAME = "bench"


# --- the media -----------------------------------------------------------------

def make_clips(folder: Path, seconds: int) -> tuple[Path, Path]:
    """A 720p30 2.5 Mbit/s H.264 + AAC MP4 and the same audio as Opus in Ogg."""
    folder.mkdir(parents=True, exist_ok=True)
    mp4, ogg = folder / "source.mp4", folder / "audio.ogg"
    base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    if not mp4.exists():
        subprocess.run(
            [*base, "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
             "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-bf", "0", "-g", str(FPS),
             "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(mp4)], check=True, timeout=300)
    if not ogg.exists():
        subprocess.run([*base, "-i", str(mp4), "-vn", "-c:a", "libopus", "-b:a", "64k", str(ogg)],
                       check=True, timeout=120)
    return mp4, ogg


def load_source(mp4: Path) -> tuple[Any, list[Any]]:
    """The clip as engine tracks and packets (AVCC video, raw AAC)."""
    from engine.media import Codec, Packet, Track

    with av.open(str(mp4)) as c:
        vs, as_ = c.streams.video[0], c.streams.audio[0]
        video = Track(0, Codec.H264, vs.time_base, bytes(vs.codec_context.extradata or b""), 1280, 720)
        audio = Track(1, Codec.AAC, as_.time_base, bytes(as_.codec_context.extradata or b""),
                      sample_rate=48_000, channels=2)
        packets = []
        for p in c.demux(vs, as_):
            if p.size == 0 or p.pts is None:
                continue
            index = 0 if p.stream is vs else 1
            packets.append(Packet(index, int(p.pts), int(p.dts if p.dts is not None else p.pts), p.time_base,
                                  bytes(p), bool(p.is_keyframe), int(p.duration or 0)))
    packets.sort(key=lambda p: float(p.dts * p.time_base))
    return (video, audio), packets


async def feed_registry(registry: Any, tracks: tuple[Any, ...], packets: list[Any]) -> None:
    """Loop the clip into the registry at real-time pace."""
    from dataclasses import replace

    publisher = registry.claim(SOURCE_NAME)
    publisher.start(tracks)
    loop = asyncio.get_running_loop()
    span = max(float(p.dts * p.time_base) for p in packets) + 1 / FPS
    start = loop.time()
    lap = 0
    while True:
        for p in packets:
            at = start + lap * span + float(p.dts * p.time_base)
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            shift = round(lap * span / p.time_base)
            publisher.write(replace(p, pts=p.pts + shift, dts=p.dts + shift))
        lap += 1


# --- the server (child process) ------------------------------------------------------

async def serve(port: int, mp4: Path | None) -> None:
    from engine.auth import AllowAllChecks
    from engine.registry import StreamRegistry
    from webrtc.config import WebRtcConfig
    from webrtc.http import WebRtcHttp

    registry = StreamRegistry(grace_s=1.0)
    checks = AllowAllChecks()
    config = WebRtcConfig(include_interface_addresses=False, max_publishers=1000, max_viewers=5000,
                          max_viewers_per_stream=5000)
    rtc = WebRtcHttp(registry, checks, checks, config)
    app = web.Application()
    app.router.add_routes(rtc.routes())

    async def stats(request: web.Request) -> web.Response:
        # Per publisher: video packets written into the registry so far.
        return web.json_response({s.publisher.stream.name: s.packets_out for s in rtc.publishers.values()})

    app.router.add_get("/bench/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    feeder = None
    if mp4 is not None:
        tracks, packets = load_source(mp4)
        feeder = asyncio.create_task(feed_registry(registry, tracks, packets))
    try:
        await asyncio.Event().wait()
    finally:
        if feeder is not None:
            feeder.cancel()
        await rtc.close()
        await runner.cleanup()


# --- the load generator ---------------------------------------------------------------

class Counter:
    def __init__(self) -> None:
        self.frames = {"video": 0, "audio": 0}


async def whep_viewer(http: aiohttp.ClientSession, base: str, counter: Counter) -> RTCPeerConnection:
    from webrtc.tap import tap_receiver

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")

    def on_track(track: MediaStreamTrack) -> None:
        for t in pc.getTransceivers():
            if t.receiver.track is track:
                kind = track.kind

                def sink(codec: str, rate: int, data: bytes, ts: int, kind: str = kind) -> None:
                    counter.frames[kind] += 1

                tap_receiver(t.receiver, sink)

    pc.on("track", on_track)
    await exchange_sdp(http, pc, f"{base}/whep/{SOURCE_NAME}", "WHEP")
    return pc


async def exchange_sdp(http: aiohttp.ClientSession, pc: RTCPeerConnection, url: str, what: str) -> None:
    """POST our offer to a WHIP or WHEP endpoint and apply its answer."""
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"{what} {resp.status}: {body}")
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))


class PacketTrack(MediaStreamTrack):
    """Sends pre-encoded packets at real-time pace, looping."""

    def __init__(self, kind: str, packets: list[tuple[bytes, int]], time_base: fractions.Fraction,
                 span: int) -> None:
        super().__init__()
        self.kind = kind
        self.packets, self.time_base, self.span = packets, time_base, span
        self.i = 0
        self.start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        lap, idx = divmod(self.i, len(self.packets))
        data, pts = self.packets[idx]
        pts += lap * self.span
        delay = self.start + float(pts * self.time_base) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.i += 1
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = self.time_base
        return packet


def publisher_media(mp4: Path, ogg: Path) -> tuple[list[tuple[bytes, int]], int, list[tuple[bytes, int]], int]:
    """Annex B H.264 (parameter sets before keyframes, 1/90000) and Opus
    (1/48000) packets, with the length of one loop in each clock."""
    from engine.codecs import nal_length_size, parameter_sets
    from webrtc.h264 import avcc_to_annexb_keyframe

    (video_track, _), packets = load_source(mp4)
    sets, size = parameter_sets(video_track), nal_length_size(video_track)
    video = [(avcc_to_annexb_keyframe(p.data, p.keyframe, sets, size), round(p.pts * p.time_base * 90_000))
             for p in packets if p.track == 0]
    video.sort(key=lambda v: v[1])
    with av.open(str(ogg)) as c:
        s = c.streams.audio[0]
        audio = [(bytes(p), round(p.pts * s.time_base * 48_000)) for p in c.demux(s) if p.size and p.pts is not None]
    v_span = video[-1][1] + 90_000 // FPS
    a_span = audio[-1][1] + 960
    return video, v_span, audio, a_span


async def whip_publisher(http: aiohttp.ClientSession, base: str, key: str, media: tuple[Any, ...]) -> RTCPeerConnection:
    from aiortc import RTCRtpSender

    video, v_span, audio, a_span = media
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    vt = pc.addTransceiver(PacketTrack("video", video, fractions.Fraction(1, 90_000), v_span), direction="sendonly")
    caps = RTCRtpSender.getCapabilities("video")
    assert caps is not None
    vt.setCodecPreferences([c for c in caps.codecs if c.mimeType == "video/H264"])
    pc.addTransceiver(PacketTrack("audio", audio, fractions.Fraction(1, 48_000), a_span), direction="sendonly")
    await exchange_sdp(http, pc, f"{base}/whip/{key}", "WHIP")
    return pc


async def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling counters of other tasks
        await asyncio.sleep(0.2)


async def publisher_stats(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    async with http.get(f"{base}/bench/stats") as resp:
        data: dict[str, int] = await resp.json()
        return data


async def measure(pid: int, seconds: float) -> float:
    before = tree_usage(pid).cpu_s
    await asyncio.sleep(seconds)
    return (tree_usage(pid).cpu_s - before) / seconds * 100


async def run_step(kind: str, count: int, seconds: float, mp4: Path, ogg: Path) -> dict[str, Any]:
    from webrtc.ice import HostAddresses

    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.webrtc_load", "--serve", str(port)]
    if kind == "viewers":
        cmd += ["--clip", str(mp4)]
    hosts = HostAddresses(["127.0.0.1"], include_interfaces=False)
    pcs: list[RTCPeerConnection] = []
    with hosts.applied():
        async with ProcessSet() as procs:
            server = await procs.spawn(cmd)
            await wait_for_port("127.0.0.1", port, server, 30)
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                await asyncio.sleep(1.0)
                counters: list[Counter] = []
                if kind == "viewers":
                    for _ in range(count):
                        counter = Counter()
                        counters.append(counter)
                        pcs.append(await whep_viewer(http, base, counter))
                    await wait_until(lambda: all(c.frames["video"] for c in counters), 20)
                else:
                    media = publisher_media(mp4, ogg)
                    for i in range(count):
                        pcs.append(await whip_publisher(http, base, f"pub{i}", media))
                await asyncio.sleep(2.0)
                start = [dict(c.frames) for c in counters]
                written = await publisher_stats(http, base)
                cpu = await measure(server.pid, seconds)
                fps = [(c.frames["video"] - s["video"]) / seconds for c, s in zip(counters, start, strict=True)]
                if kind == "publishers" and count:
                    after = await publisher_stats(http, base)
                    # Packets into the registry: video frames plus AAC frames (46.875/s at 48 kHz).
                    fps = [(after.get(k, 0) - written.get(k, 0)) / seconds - 48_000 / 1024 for k in after]
                    fps += [0.0] * (count - len(fps))
                rss = tree_usage(server.pid).rss_bytes
                for pc in pcs:
                    await pc.close()
    row: dict[str, Any] = {"kind": kind, "count": count, "server_cpu_pct": cpu, "server_rss_mb": rss / 2**20}
    if fps:
        row.update(min_fps=min(fps), mean_fps=sum(fps) / len(fps), sustained=min(fps) >= 0.9 * FPS)
    return row


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    folder = Path(args.cache or tempfile.mkdtemp(prefix="fanz-webrtc-bench-"))
    mp4, ogg = await asyncio.to_thread(make_clips, folder, args.clip_seconds)
    rows: list[dict[str, Any]] = []
    for kind, counts in (("viewers", args.viewers), ("publishers", args.publishers)):
        if not counts:
            continue
        baseline = await run_step(kind, 0, args.seconds, mp4, ogg)
        rows.append(baseline)
        for n in counts:
            row = await run_step(kind, n, args.seconds, mp4, ogg)
            row["cpu_pct_per_peer"] = (row["server_cpu_pct"] - baseline["server_cpu_pct"]) / n
            rows.append(row)
            print(format_table([row], COLUMNS), file=sys.stderr)
    return rows


COLUMNS = [("kind", "peers"), ("count", "n"), ("server_cpu_pct", "server CPU %"),
           ("cpu_pct_per_peer", "CPU % per peer"), ("server_rss_mb", "RSS MB"), ("min_fps", "min fps"),
           ("mean_fps", "mean fps"), ("sustained", "sustained")]


def counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if any(v < 1 or v > 200 for v in values):
        raise argparse.ArgumentTypeError("counts must be between 1 and 200")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=counts, default=[1, 4, 8], help="WHEP viewer counts to try")
    parser.add_argument("--publishers", type=counts, default=[1, 2, 4], help="WHIP publisher counts to try")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring window per step")
    parser.add_argument("--clip-seconds", type=int, default=10)
    parser.add_argument("--cache", help="folder for the generated clips (kept between runs)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve, Path(args.clip) if args.clip else None))
        return
    rows = asyncio.run(main_async(args))
    print(to_json(rows) if args.json else format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
