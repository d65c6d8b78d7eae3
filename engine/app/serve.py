"""The composition root: ``fanz-media serve``.

The only module that imports every package and wires them together from
the config. Everything it builds is owned by :class:`Engine`, which starts
and stops in order (listeners last on start, first on stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from control_api.app import API_PREFIX, create_app, get_checks
from effects.catalog import StageKind
from effects.errors import EffectsError
from engine.app import features
from engine.app.config import EngineConfig
from engine.app.status import StatusHttp
from engine.auth import AllowAllChecks, PlaybackCheck, PublishCheck, StaticKeyChecks
from engine.errors import ConfigError
from engine.metrics import CONTENT_TYPE, Metrics, stream_metrics
from engine.registry import LiveStream, StreamRegistry
from engine.settings import coerce
from ingest.rtmp.server import RtmpServer
from packager.hls.http import HlsHttp
from packager.hls.live import HlsService
from transcode.encoders import EncoderProbe, probe_encoders
from transcode.errors import TranscodeConfigError
from transcode.ladder import LadderConfig, RungConfig
from transcode.live import LiveTranscoder

if TYPE_CHECKING:
    from effects.chain import EffectChain
    from webrtc.http import WebRtcHttp

log = logging.getLogger(__name__)


class Engine:
    """Every running part of one node."""

    def __init__(self, config: EngineConfig, checks: tuple[PublishCheck, PlaybackCheck] | None = None) -> None:
        self.config = config
        self.data_dir = Path(config.server.data_dir)
        self.registry = StreamRegistry(
            grace_s=config.streams.reconnect_grace_s, gop_cache_limit=config.streams.gop_cache_packets
        )
        self.api_app: web.Application | None = None
        if config.http.api:
            api_config = replace(config.api, data_dir=self.data_dir)
            self.api_app = create_app(api_config, self.registry)
        if checks is None:
            checks = self._default_checks()
        self.publish_check, self.playback_check = checks
        self.metrics = Metrics()
        self.metrics.add_source(stream_metrics(self.registry))
        self.hls = HlsService(
            config.hls,
            self.data_dir / "hls",
            self.registry,
            fanout_buffer=config.streams.fanout_buffer,
            ended_retention_s=config.streams.ended_retention_s,
            package_source=not config.transcode.enabled,
        )
        self.metrics.add_source(self._hls_metrics)
        self.webrtc: WebRtcHttp | None = None
        webrtc = features.load(features.WEBRTC, "webrtc.http") if config.webrtc.enabled else None
        if webrtc is not None:
            self.webrtc = webrtc.WebRtcHttp(self.registry, self.publish_check, self.playback_check, config.webrtc)
            self.metrics.add_source(self._webrtc_metrics)
        self.encoders: EncoderProbe | None = None
        self.transcoders: dict[str, LiveTranscoder] = {}
        self._transcode_tasks: set[asyncio.Task[None]] = set()
        self.effect_chains: dict[str, EffectChain] = {}
        self._chain_type: type[EffectChain] | None = None
        if config.transcode.enabled:
            chain_module = features.load(features.EFFECTS, "effects.chain")
            if chain_module is not None:
                self._chain_type = chain_module.EffectChain
                self._check_configured_effects()
            self.registry.on_stream_created(self._start_transcoder)
            self.registry.on_settings_changed(self._settings_changed)
            self.metrics.add_source(self._effects_metrics)
            self.metrics.add_source(self._transcode_metrics)
        self.rtmp: RtmpServer | None = None
        self.rtmps: RtmpServer | None = None
        self.http_runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.started = time.time()
        self._ready = False
        self._cleanups: list[Callable[[], Awaitable[None]]] = []

    def _default_checks(self) -> tuple[PublishCheck, PlaybackCheck]:
        if self.config.server.dev:
            dev = AllowAllChecks()
            return dev, dev
        if self.api_app is not None:
            store = get_checks(self.api_app)
            return store, store
        static = StaticKeyChecks(self.config.streams.keys)
        if not self.config.streams.keys:
            log.warning("no stream keys are configured ([streams] keys) and --dev is off: every publish is refused")
        return static, static

    def _hls_metrics(self) -> Iterable[Metric]:
        segments = CounterMetricFamily("fanz_hls_segments_written", "HLS segments written.", labels=["stream"])
        dropped = CounterMetricFamily(
            "fanz_hls_out_of_order_dropped", "Packets the segmenter dropped for going backwards.", labels=["stream"]
        )
        for name, output in self.hls.outputs.items():
            segments.add_metric([name], output.segments_written)
        for name, seg in self.hls.segmenters.items():
            dropped.add_metric([name], seg.stats.out_of_order_dropped)
        rtmp = GaugeMetricFamily("fanz_rtmp_connections", "Open RTMP connections.", labels=["listener"])
        for label, server in (("rtmp", self.rtmp), ("rtmps", self.rtmps)):
            if server is not None:
                rtmp.add_metric([label], server.connection_count)
        return [segments, dropped, rtmp]

    # -- transcoding --------------------------------------------------------
    def _start_transcoder(self, stream: LiveStream) -> None:
        if "/" in stream.name:
            return  # a rendition, not a source
        if self.encoders is None:
            log.error("stream %s: encoders were not probed; not transcoding", stream.name)
            return
        settings = self.config.transcode
        ladders = settings.all_ladders()
        ladder = self._ladder_for(stream.name, ladders, ladders[settings.ladder])
        chain = self._effects_for(stream.name)
        if chain is not None and chain.has(StageKind.VIDEO) and ladder.passthrough:
            # Effects are drawn on decoded frames: a passed-through copy of the
            # source would not carry them, so every rendition is encoded.
            ladder = replace(ladder, passthrough=False)
        transcoder = LiveTranscoder(
            self.registry,
            stream.name,
            ladder,
            self.encoders,
            settings.encoder,
            # Always through the chain, even an empty one (a no-op), so that
            # effects switched on while live apply at once.
            frame_filter=chain.process_video if chain is not None else None,
            audio_filter=chain.process_audio if chain is not None else None,
            queue_size=settings.queue_frames,
        )
        self.transcoders[stream.name] = transcoder
        task = asyncio.get_running_loop().create_task(self._run_transcoder(transcoder), name=f"tx:{stream.name}")
        self._transcode_tasks.add(task)
        task.add_done_callback(self._transcode_tasks.discard)

    def _ladder_for(self, name: str, ladders: dict[str, LadderConfig], default: LadderConfig) -> LadderConfig:
        """A ladder named by the stream's settings, or rungs of its own (the
        control API's stream record), or the configured default."""
        chosen = self.registry.settings(name).get("ladder")
        if isinstance(chosen, str):
            return ladders.get(chosen, default)
        if isinstance(chosen, list):
            try:
                rungs = tuple(coerce(r, RungConfig, "ladder") for r in chosen)
                return replace(default, name=f"{name}-custom", rungs=rungs)
            except (ConfigError, TranscodeConfigError) as exc:
                log.error("stream %s: its own ladder is invalid (%s); using %s", name, exc, default.name)
        return default

    def _check_configured_effects(self) -> None:
        """Build the configured chains once, so that an effect whose file
        or model cannot be opened stops the start, not the first stream."""
        assert self._chain_type is not None
        effects = self.config.effects
        for specs in (effects.default, *effects.streams.values()):
            try:
                self._chain_type(specs)
            except EffectsError as exc:
                raise ConfigError(f"effects: {exc}") from exc

    def _effects_for(self, name: str) -> EffectChain | None:
        """The stream's effect chain: its own settings (control API) or the
        config's. Kept for the stream's life so that changes apply live.
        ``None`` when the effects extra is not installed."""
        configured = self.registry.settings(name).get("effects")
        chain_type = self._chain_type
        if chain_type is None:
            if configured or self.config.effects.specs_for(name):
                log.warning("stream %s: effects are off on this node; its effects are not applied", name)
            return None
        try:
            if isinstance(configured, (dict, list)):
                chain = chain_type.from_settings(configured)
            else:
                specs = self.config.effects.specs_for(name)
                budget = self.config.effects.budget_ms or None
                chain = chain_type(specs, budget_ms=budget)
        except EffectsError as exc:
            log.error("stream %s: effects not applied: %s", name, exc)
            return None
        self.effect_chains[name] = chain
        return chain

    def _settings_changed(self, name: str, key: str, value: object) -> None:
        """Effects changed while live: rebuild the stages off the event loop
        (models load there); the next decoded frame uses them."""
        chain = self.effect_chains.get(name)
        if key != "effects" or chain is None or not isinstance(value, (dict, list)):
            return

        def apply() -> None:
            try:
                chain.update(value)
            except EffectsError as exc:
                log.error("stream %s: effects update refused: %s", name, exc)

        asyncio.get_running_loop().run_in_executor(None, apply)

    async def _run_transcoder(self, transcoder: LiveTranscoder) -> None:
        try:
            await transcoder.run()
        except Exception:
            log.exception("stream %s: transcoding failed", transcoder.source_name)
        finally:
            if self.transcoders.get(transcoder.source_name) is transcoder:
                del self.transcoders[transcoder.source_name]
                self.effect_chains.pop(transcoder.source_name, None)

    def _transcode_status(self, name: str) -> dict[str, object]:
        transcoder = self.transcoders.get(name)
        if transcoder is None:
            return {}
        status = transcoder.status
        return {
            "ladder": status.ladder,
            "renditions": [{"stream": r, "encoder": e} for r, e in status.renditions.items()],
            "dropped_frames": status.drops.total,
            "queue_depth": status.queue_depth,
            "passthrough": status.passthrough_reason or "on",
        }

    def _hls_status(self, name: str) -> dict[str, object]:
        output = self.hls.outputs.get(name)
        if output is None:
            return {}
        return {
            "playlist": f"/hls/{name}/index.m3u8",
            "segments_written": output.segments_written,
            "variants": sorted(output.variants),
        }

    def _transcode_metrics(self) -> Iterable[Metric]:
        encoders = GaugeMetricFamily(
            "fanz_transcode_rendition_info", "Renditions being encoded, and by which encoder.",
            labels=["stream", "rendition", "encoder"],
        )
        dropped = CounterMetricFamily(
            "fanz_transcode_dropped_frames", "Frames a transcoder dropped because it could not keep up.",
            labels=["stream"],
        )
        queue = GaugeMetricFamily("fanz_transcode_queue_depth", "Frames waiting for the encoder.", labels=["stream"])
        for name, transcoder in self.transcoders.items():
            status = transcoder.status
            for rendition, encoder in status.renditions.items():
                encoders.add_metric([name, rendition, encoder], 1)
            dropped.add_metric([name], status.drops.total)
            queue.add_metric([name], status.queue_depth)
        return [encoders, dropped, queue]

    def _effects_metrics(self) -> Iterable[Metric]:
        labels = ["stream", "position", "effect"]
        frames = CounterMetricFamily(
            "fanz_effect_frames", "Frames each effect stage processed.", labels=labels
        )
        skipped = CounterMetricFamily(
            "fanz_effect_skipped_frames", "Frames an effect stage skipped to keep up.", labels=labels
        )
        cost = GaugeMetricFamily(
            "fanz_effect_frame_milliseconds", "Recent time per frame of each effect stage.", labels=labels
        )
        for name, chain in self.effect_chains.items():
            for stage in chain.stats():
                values = [name, str(stage.index), stage.name]
                frames.add_metric(values, stage.frames)
                skipped.add_metric(values, stage.skipped)
                cost.add_metric(values, stage.recent_ms)
        return [frames, skipped, cost]

    def _webrtc_metrics(self) -> Iterable[Metric]:
        assert self.webrtc is not None
        stats = self.webrtc.stats
        sessions = CounterMetricFamily("fanz_webrtc_sessions", "WHIP and WHEP sessions started.", labels=["kind"])
        sessions.add_metric(["whip"], stats.whip_sessions)
        sessions.add_metric(["whep"], stats.whep_sessions)
        live = GaugeMetricFamily("fanz_webrtc_live_sessions", "Open WebRTC sessions.", labels=["kind"])
        live.add_metric(["whip"], len(self.webrtc.publishers))
        live.add_metric(["whep"], len(self.webrtc.viewers))
        events = CounterMetricFamily("fanz_webrtc_events", "Refused and reaped sessions.", labels=["event"])
        events.add_metric(["refused"], stats.refused)
        events.add_metric(["reaped"], stats.reaped)
        drops = CounterMetricFamily("fanz_webrtc_viewer_dropped_packets", "Packets dropped for slow WHEP viewers.")
        drops.add_metric([], stats.viewer_drops)
        return [sessions, live, events, drops]

    # -- HTTP ---------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready_handler)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_routes(HlsHttp(self.hls, self.playback_check).routes())
        app.router.add_routes(
            StatusHttp(self.registry, {"transcode": self._transcode_status, "hls": self._hls_status}).routes()
        )
        if self.webrtc is not None:
            app.router.add_routes(self.webrtc.routes())
        if self.api_app is not None:
            app.add_subapp(API_PREFIX, self.api_app)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "uptime_s": round(time.time() - self.started, 1),
                "streams": len(self.registry.streams()),
            }
        )

    async def _ready_handler(self, request: web.Request) -> web.Response:
        if not self._ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # -- lifecycle -------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext | None:
        rtmp = self.config.rtmp
        if not rtmp.tls_cert:
            return None
        if not rtmp.tls_key:
            raise ConfigError("rtmp.tls_cert is set but rtmp.tls_key is not")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(rtmp.tls_cert, rtmp.tls_key)
        return ctx

    async def start(self) -> None:
        host = self.config.server.host
        if self.config.transcode.enabled:
            # Opening each hardware encoder takes a moment: off the loop.
            self.encoders = await asyncio.get_running_loop().run_in_executor(None, probe_encoders)
            log.info("H.264 encoders available: %s", ", ".join(self.encoders.available))
        apps = frozenset(self.config.rtmp.apps) or None
        self.http_runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self.http_runner.setup()
        site = web.TCPSite(self.http_runner, host, self.config.http.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http.port
        if self.config.rtmp.enabled:
            self.rtmp = RtmpServer(self.registry, self.publish_check, self.config.rtmp.limits, app_names=apps)
            await self.rtmp.start(host, self.config.rtmp.port)
            tls = self._tls_context()
            if tls is not None:
                self.rtmps = RtmpServer(
                    self.registry, self.publish_check, self.config.rtmp.limits, ssl_context=tls, app_names=apps
                )
                await self.rtmps.start(host, self.config.rtmp.tls_port)
        self._ready = True
        log.info(
            "serving: RTMP %s:%s%s, HTTP http://%s:%s (HLS at /hls/NAME/index.m3u8)",
            host,
            self.rtmp.port if self.rtmp else "off",
            f", RTMPS port {self.rtmps.port}" if self.rtmps else "",
            host,
            self.http_port,
        )

    def add_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        self._cleanups.append(cleanup)

    async def stop(self) -> None:
        self._ready = False
        for server in (self.rtmps, self.rtmp):
            if server is not None:
                await server.close()
        if self.webrtc is not None:
            await self.webrtc.close()
        self.registry.close()
        await self.registry.drain()
        for transcoder in tuple(self.transcoders.values()):
            transcoder.stop()
        for task in tuple(self._transcode_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hls.close()
        for cleanup in reversed(self._cleanups):
            await cleanup()
        if self.http_runner is not None:
            await self.http_runner.cleanup()


async def run(config: EngineConfig) -> None:
    """Start the engine and run until SIGINT or SIGTERM."""
    engine = Engine(config)
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await engine.stop()
