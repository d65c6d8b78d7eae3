"""The composition root: ``fanz-media serve``.

The only module that imports every package and wires them together from
the config. Everything it builds is owned by :class:`Engine`, which starts
and stops in order (listeners last on start, first on stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cluster.local_directory import FileStreamDirectory
from cluster.storage import (
    Backend,
    LocalStorage,
    ServeMode,
    SpooledUploader,
    Storage,
    open_uploader,
    spool_metrics,
)
from cluster.storage.setup import spool_dir, storage_root
from control_api.app import API_PREFIX, PLANE, create_app, get_checks, hide_server_header
from control_api.forwarded import forwarded_middleware, networks
from control_api.ratelimit import RateLimiter
from drm.delivery import KeyHttp
from drm.keystore import make_private_dir
from drm.model import KeyProvider
from drm.setup import open_key_provider
from effects.catalog import StageKind, default_catalog
from effects.errors import EffectsError
from engine.app import features
from engine.app.config import EngineConfig
from engine.app.geodb import open_wheel_database
from engine.app.live_effects import EffectUpdates
from engine.app.owner_routing import (
    NODE_PREFIX,
    ClaimingPublishCheck,
    OwnerRouting,
    WorkerIdentity,
    merge_worker_metrics,
    private_side,
)
from engine.app.protection import ProtectionPolicy, stream_plans
from engine.app.status import StatusHttp
from engine.auth import AllowAllChecks, PlaybackCheck, PublishCheck, StaticKeyChecks
from engine.errors import ConfigError
from engine.geo import CountryCache
from engine.metrics import CONTENT_TYPE, Metrics, stream_metrics
from engine.registry import LiveStream, StreamRegistry
from engine.settings import coerce
from ingest.rtmp.server import RtmpServer
from packager.assets.http import VodHttp
from packager.assets.library import AssetLibrary
from packager.dash.http import DashHttp
from packager.hls.disk import Disk
from packager.hls.http import HlsHttp
from packager.hls.keys import SegmentProtection
from packager.hls.live import HlsService
from packager.recording.metrics import recording_metrics
from packager.recording.recorder import RecordingService, StreamRecorder
from transcode.config import HARDWARE_DECODERS, SOFTWARE_DECODER
from transcode.decoders import probe_decoders
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

    def __init__(
        self,
        config: EngineConfig,
        checks: tuple[PublishCheck, PlaybackCheck] | None = None,
        hls_disk: Disk | None = None,
        worker: WorkerIdentity | None = None,
        protection: ProtectionPolicy | None = None,
    ) -> None:
        """``hls_disk`` is where HLS files go (the local file system unless
        given: an object store, or a disk made slow in the tests).
        ``worker``: this engine is one of the node's processes
        (``server.processes`` > 1); see :mod:`engine.app.owner_routing`.
        ``protection`` is how streams are encrypted and where their keys come
        from: unless given, ``drm.protection`` by default (each stream's
        ``protection`` setting, from its publish grant or the control API,
        overrides it), ``drm.rotate_every_segments``, and keys from the
        configured key provider, served at ``/keys``."""
        self.config = config
        self.worker = worker
        self.data_dir = Path(config.server.data_dir)
        make_private_dir(self.data_dir)
        self.registry = StreamRegistry(
            grace_s=config.streams.reconnect_grace_s, gop_cache_limit=config.streams.gop_cache_packets
        )
        self.api_app: web.Application | None = None
        self.geo: CountryCache | None = None
        key_file = Path(config.server.master_key_file) if config.server.master_key_file else None
        if config.http.api:
            api_config = replace(config.api, data_dir=self.data_dir, master_key_file=key_file)
            # The streams' geographic rules: the bundled country database
            # (the geo extra), one lookup per viewer address.
            self.geo = CountryCache(open_wheel_database())
            self.api_app = create_app(api_config, self.registry, geo=self.geo)
        if checks is None:
            checks = self._default_checks()
        self.publish_check, self.playback_check = checks
        # Content keys for the packager (through KeyProvider, off the event
        # loop) and for the key endpoints, gated by the playback check.
        opened = open_key_provider(config.drm, self.data_dir, key_file)
        self._key_store = opened.store
        self.key_provider: KeyProvider = opened
        self.key_http = KeyHttp(
            self.key_provider,
            self.playback_check,
            RateLimiter(config.drm.key_requests_per_minute, 60.0),
            cors_origin=config.hls.cors_origin,
        )
        if protection is None:
            # Keys at this engine's own key endpoint, whose names are the
            # streams' playback names (the HLS names).
            protection = ProtectionPolicy(config.drm.protection, self.key_provider, config.drm.rotate_every_segments)
        self.protection = protection
        self.directory: FileStreamDirectory | None = None
        self.routing: OwnerRouting | None = None
        self.private_runner: web.AppRunner | None = None
        self._claims: ClaimingPublishCheck | None = None
        if worker is not None:
            self.directory = FileStreamDirectory(stream_directory_path(self.data_dir))
            self._claims = ClaimingPublishCheck(self.publish_check, self.directory, worker.address,
                                               self._ask_to_yield)
            self.publish_check = self._claims
            self.registry.on_stream_created(self._claimed)
        self.metrics = Metrics(stream_labels=config.http.metrics_stream_labels)
        self.metrics.combine_by_max("fanz_effect_frame_milliseconds")
        self.metrics.add_source(stream_metrics(self.registry))
        self.storage: Storage | None = None
        """Where recordings and VOD assets are kept; ``None`` when the
        configured backend's extra is not installed."""
        self.uploader: SpooledUploader | None = None
        """Writes to :attr:`storage` through the bounded local spool."""
        self._open_storage()
        self.assets = AssetLibrary(self.storage) if self.storage is not None else None
        """The VOD assets kept in :attr:`storage`, served under ``/vod/``."""
        if self.api_app is not None and self.assets is not None:
            self.api_app[PLANE].on_asset_deleted(self._remove_asset)
        self.recordings: RecordingService | None = None
        """Keeps streams as recordings (``None`` without storage)."""
        self._recorders: dict[str, StreamRecorder] = {}
        self._open_recordings()
        self.hls = HlsService(
            config.hls,
            hls_root(self.data_dir, worker),
            self.registry,
            fanout_buffer=config.streams.fanout_buffer,
            ended_retention_s=config.streams.ended_retention_s,
            package_source=not config.transcode.enabled,
            disk=hls_disk,
            protection=stream_plans(protection, self.registry),
            sinks=self._recorder_for if self.recordings is not None else None,
        )
        self.metrics.add_source(self._hls_metrics)
        self.metrics.add_source(self._drm_metrics)
        if self.geo is not None:
            self.metrics.add_source(self._geo_metrics)
        if worker is not None and self.directory is not None:
            self.routing = OwnerRouting(worker, self.directory, self._has_stream)
            self.metrics.add_source(self._routing_metrics)
            if self.api_app is not None:
                self.api_app[PLANE].reach_other_processes(self.routing)
        self.webrtc: WebRtcHttp | None = None
        webrtc = features.load(features.WEBRTC, "webrtc.http") if config.webrtc.enabled else None
        if webrtc is not None:
            self.webrtc = webrtc.WebRtcHttp(self.registry, self.publish_check, self.playback_check, config.webrtc)
            self.metrics.add_source(self._webrtc_metrics)
        self.encoders: EncoderProbe | None = None
        self.decoder = SOFTWARE_DECODER
        """The video decoder every live transcode uses (chosen at start-up)."""
        self.transcoders: dict[str, LiveTranscoder] = {}
        self._transcode_tasks: set[asyncio.Task[None]] = set()
        self.effect_chains: dict[str, EffectChain] = {}
        self.effect_updates = EffectUpdates(self._apply_effects, self._effects_applied)
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

    def _open_storage(self) -> None:
        config = self.config.storage
        if config.backend is Backend.LOCAL:
            self.storage = LocalStorage(storage_root(config, self.data_dir))
        else:
            s3 = features.load(features.S3_STORAGE, "cluster.storage.s3")
            if s3 is None:
                return
            self.storage = s3.S3Storage(config)
        if self.worker is not None:
            # Each process of a node drains a spool of its own: two
            # uploaders must never pick the same spooled file.
            config = replace(config, spool_dir=str(spool_dir(config, self.data_dir) / f"w{self.worker.index}"))
        self.uploader = open_uploader(config, self.data_dir, self.storage)
        self.metrics.add_source(spool_metrics(self.uploader))

    def _open_recordings(self) -> None:
        if self.storage is None or self.uploader is None:
            return
        config = self.config.recording
        journals = Path(config.journal_dir) if config.journal_dir else self.data_dir / "recordings"
        if self.worker is not None:
            journals = journals / f"w{self.worker.index}"
        self.recordings = RecordingService(config, self.storage, self.uploader, journals,
                                           count_disk=self.config.storage.backend is Backend.LOCAL)
        self.metrics.add_source(recording_metrics(self.recordings))
        self.registry.on_settings_changed(self._recording_changed)
        if self.api_app is not None:
            plane = self.api_app[PLANE]
            self.recordings.on_ready = plane.recording_closed
            self.recordings.on_stopped = plane.recording_stopped

    def _wants_recording(self, name: str) -> bool:
        flag = self.registry.settings(name).get("recording")
        return bool(flag) if isinstance(flag, bool) else self.config.recording.default

    def _recorder_for(self, name: str, plan: SegmentProtection | None) -> StreamRecorder | None:
        """The recorder of a source stream's HLS output (called when it starts)."""
        assert self.recordings is not None
        recorder = self.recordings.recorder(name, self._wants_recording(name))
        if plan is not None:
            recorder.protected = True
            if recorder.wanted:
                log.warning("stream %s: encrypted streams are not recorded", name)
        for done in [n for n, r in self._recorders.items() if r.finished]:
            del self._recorders[done]
        self._recorders[name] = recorder
        return recorder

    def _recording_changed(self, name: str, key: str, value: object) -> None:
        recorder = self._recorders.get(name)
        if key == "recording" and recorder is not None:
            recorder.wanted = self._wants_recording(name)

    async def _remove_asset(self, asset_id: str) -> None:
        """A recording deleted through the control API: its objects go."""
        assert self.assets is not None
        removed = await asyncio.to_thread(self.assets.delete, asset_id)
        log.info("asset %s deleted: %d objects removed from storage", asset_id, removed)

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

    # -- one process among several ------------------------------------------------
    def _claimed(self, stream: LiveStream) -> None:
        """A new source stream: its directory claim is given up when it ends."""
        if isinstance(stream.key, str) and self._claims is not None:
            stream.on_ended("directory", functools.partial(self._claims.release, stream.key))

    async def _ask_to_yield(self, name: str, owner: str) -> bool:
        return self.routing is not None and await self.routing.ask_to_yield(name, owner)

    def _has_stream(self, name: str) -> bool:
        return self.registry.get(name) is not None or name in self.hls.outputs

    def _routing_metrics(self) -> Iterable[Metric]:
        assert self.routing is not None
        passed = CounterMetricFamily(
            "fanz_worker_passed_requests", "HTTP requests passed to the process that owns their stream."
        )
        passed.add_metric([], self.routing.passed)
        failed = CounterMetricFamily(
            "fanz_worker_pass_failures", "Passed requests whose owning process did not answer."
        )
        failed.add_metric([], self.routing.failed)
        return [passed, failed]

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
        if stream.rendition is not None:
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
            # Rungs cut keyframes where HLS cuts segments when the
            # publisher's keyframes are further apart than that.
            segment_target=Fraction(self.config.hls.target_duration_s),
            decoder=self.decoder,
        )
        log.info("stream %s: decoding with %s, encoding with %s", stream.name, self.decoder, transcoder.encoder)
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
                self._chain_type(specs, threads=1).close()
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
            threads = self.config.effects.threads
            if isinstance(configured, (dict, list)):
                chain = chain_type.from_settings(configured, threads=threads)
            else:
                specs = self.config.effects.specs_for(name)
                budget = self.config.effects.budget_ms or None
                chain = chain_type(specs, budget_ms=budget, threads=threads)
        except EffectsError as exc:
            log.error("stream %s: effects not applied: %s", name, exc)
            return None
        self.effect_chains[name] = chain
        return chain

    def _settings_changed(self, name: str, key: str, value: object) -> None:
        """Effects changed while live: queue the rebuild on the stream's
        ordered queue (stages build off the event loop, where models load;
        the next decoded frame uses them).

        A video effect must also reach the passed-through source rendition,
        which carries the publisher's own pictures: it is switched to an
        encoded picture at the next source keyframe, before the new stages
        are even built, and stays encoded for the rest of the broadcast (see
        :meth:`LiveTranscoder.seal_passthrough`)."""
        chain = self.effect_chains.get(name)
        if key != "effects" or chain is None or not isinstance(value, (dict, list)):
            return
        transcoder = self.transcoders.get(name)
        if transcoder is not None and _names_video_effect(value):
            transcoder.seal_passthrough("a video effect was switched on")
        # The chain travels with the update: the worker thread never reads
        # the engine's dicts, which the event loop changes.
        self.effect_updates.submit(name, (chain, value))

    @staticmethod
    def _apply_effects(name: str, update: object) -> None:
        """Runs in the stream's effects worker thread."""
        assert isinstance(update, tuple)
        chain, value = update  # the stream's EffectChain and its new settings
        chain.update(value)

    def _effects_applied(self, name: str, update: object) -> None:
        chain = self.effect_chains.get(name)
        transcoder = self.transcoders.get(name)
        if chain is not None and transcoder is not None and chain.has(StageKind.VIDEO):
            transcoder.seal_passthrough("a video effect is on")

    async def _run_transcoder(self, transcoder: LiveTranscoder) -> None:
        try:
            await transcoder.run()
        except Exception:
            log.exception("stream %s: transcoding failed", transcoder.source_name)
        finally:
            if self.transcoders.get(transcoder.source_name) is transcoder:
                del self.transcoders[transcoder.source_name]
                chain = self.effect_chains.pop(transcoder.source_name, None)
                if chain is not None:
                    chain.close()

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
            "keyframes": status.keyframes,
            "decoder": status.decoder,
            "encoder": status.encoder,
        }

    def _hls_status(self, name: str) -> dict[str, object]:
        output = self.hls.outputs.get(name)
        if output is None:
            return {}
        return {
            "playlist": f"/hls/{name}/index.m3u8",
            "dash_manifest": f"/dash/{name}/manifest.mpd",
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
        codecs = GaugeMetricFamily(
            "fanz_transcode_stream_info", "Each transcoded stream's video decoder and encoder.",
            labels=["stream", "decoder", "encoder"],
        )
        for name, transcoder in self.transcoders.items():
            status = transcoder.status
            codecs.add_metric([name, status.decoder, status.encoder], 1)
            for rendition, encoder in status.renditions.items():
                encoders.add_metric([name, rendition, encoder], 1)
            dropped.add_metric([name], status.drops.total)
            queue.add_metric([name], status.queue_depth)
        return [encoders, dropped, queue, codecs]

    def _effects_metrics(self) -> Iterable[Metric]:
        labels = ["stream", "position", "effect"]
        frames = CounterMetricFamily(
            "fanz_effect_frames", "Frames each effect stage processed.", labels=labels
        )
        skipped = CounterMetricFamily(
            "fanz_effect_skipped_frames", "Frames an effect stage skipped to keep up.", labels=labels
        )
        reused = CounterMetricFamily(
            "fanz_effect_reused_frames",
            "Frames a critical effect stage (background, face privacy) drew with its last analysis to keep up.",
            labels=labels,
        )
        cost = GaugeMetricFamily(
            "fanz_effect_frame_milliseconds", "Recent time per frame of each effect stage.", labels=labels
        )
        for name, chain in self.effect_chains.items():
            for stage in chain.stats():
                values = [name, str(stage.index), stage.name]
                frames.add_metric(values, stage.frames)
                skipped.add_metric(values, stage.skipped)
                reused.add_metric(values, stage.reused)
                cost.add_metric(values, stage.recent_ms)
        return [frames, skipped, reused, cost]

    def _drm_metrics(self) -> Iterable[Metric]:
        stats = self.key_http.stats
        requests = CounterMetricFamily(
            "fanz_drm_key_requests", "Key and ClearKey licence requests, by how they were answered.", labels=["result"]
        )
        requests.add_metric(["key"], stats.keys_served)
        requests.add_metric(["licence"], stats.licences_served)
        requests.add_metric(["refused"], stats.refused)
        requests.add_metric(["rate_limited"], stats.rate_limited)
        return [requests]

    def _geo_metrics(self) -> Iterable[Metric]:
        assert self.geo is not None and self.api_app is not None
        lookups = CounterMetricFamily(
            "fanz_geo_lookups", "Searches of the country database (one per viewer address, then cached)."
        )
        lookups.add_metric([], self.geo.lookups)
        refused = CounterMetricFamily(
            "fanz_geo_refused", "Playback requests refused (451) by a stream's geographic rule."
        )
        refused.add_metric([], get_checks(self.api_app).geo_refused)
        return [lookups, refused]

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
    def build_app(self, private: bool = False) -> web.Application:
        """The HTTP app. ``private``: the app of a node process's loopback
        port (no control API; /metrics and /streams of this process only)."""
        middlewares: list[Middleware] = []
        if private and self.worker is not None:
            # The viewer's address comes from the passing process, with the secret.
            middlewares.append(private_side(self.worker.secret))
        else:
            # Behind a reverse proxy, every route (HLS, keys, WHEP, the API)
            # sees the viewer's address, not the proxy's: X-Forwarded-For is
            # believed from api.trusted_proxies only, by the API's own rule;
            # a request passed to the owning process carries that address.
            middlewares.append(forwarded_middleware(networks(self.config.api.trusted_proxies)))
            if self.routing is not None:
                middlewares.append(self.routing.middleware)
        app = web.Application(client_max_size=1 << 20, middlewares=middlewares)
        hide_server_header(app)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready_handler)
        app.router.add_get("/metrics", self._metrics if not private else self._local_metrics)
        hls_http = HlsHttp(self.hls, self.playback_check)
        app.router.add_routes(hls_http.routes())
        clearkey = "/drm/clearkey/{name}" if self.config.drm.clear_key_delivery else None
        app.router.add_routes(DashHttp(self.hls, hls_http, clearkey_path=clearkey).routes())
        if self.config.drm.clear_key_delivery:
            app.router.add_routes(self.key_http.routes())
        if self.assets is not None:
            app.router.add_routes(
                VodHttp(
                    self.assets,
                    self.playback_check,
                    presigned=self.config.storage.serve_mode is ServeMode.PRESIGNED,
                    cors_origin=self.config.hls.cors_origin,
                    cache_s=self.config.hls.segment_cache_s,
                ).routes()
            )
        app.router.add_routes(
            StatusHttp(self.registry, {"transcode": self._transcode_status, "hls": self._hls_status}).routes()
        )
        if self.webrtc is not None:
            app.router.add_routes(self.webrtc.routes())
        if self.api_app is not None and not private:
            app.add_subapp(API_PREFIX, self.api_app)
        if private:
            app.router.add_post(NODE_PREFIX + "/streams/{name}/kick", self._node_kick)
            app.router.add_post(NODE_PREFIX + "/streams/{name}/settings", self._node_settings)
            app.router.add_post(NODE_PREFIX + "/streams/{name}/yield", self._node_yield)
        return app

    async def _node_kick(self, request: web.Request) -> web.Response:
        """Another process of the node passes on the control API's kick."""
        body = await request.json()
        kicked = self.registry.kick(request.match_info["name"], str(body.get("reason", "disconnected")))
        return web.json_response({"kicked": kicked})

    async def _node_yield(self, request: web.Request) -> web.Response:
        """Another process of the node has this stream's publisher back: a
        stream waiting for its publisher ends here at once and its name is
        released, so that the publisher continues there without waiting out
        the grace window. A stream with a publisher is kept."""
        name = request.match_info["name"]
        # Only a stream that exists here and waits: a name claimed a moment
        # ago by a publish not yet in the registry is kept.
        if self._claims is None or not self.registry.end_waiting(
            name, "its publisher returned to another process of this node"
        ):
            return web.json_response({"yielded": False})
        await self._claims.release(name)
        return web.json_response({"yielded": True})

    async def _node_settings(self, request: web.Request) -> web.Response:
        """Another process of the node passes on a live setting."""
        body = await request.json()
        name = request.match_info["name"]
        if self.registry.get(name) is not None:
            self.registry.configure(name, str(body["key"]), body["value"])
        return web.json_response({"applied": self.registry.get(name) is not None})

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

    async def _local_metrics(self, request: web.Request) -> web.Response:
        # The collectors read dicts that only this loop changes: copy their
        # values here, and let a worker thread do the text formatting.
        families = self.metrics.snapshot()
        body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render_snapshot, families)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _metrics(self, request: web.Request) -> web.Response:
        """This process's series; on a node of several processes, every
        process's series, each labelled ``worker`` (one scrape covers the
        node, whichever process answers)."""
        if self.routing is None or self.worker is None:
            return await self._local_metrics(request)
        families = self.metrics.snapshot()
        others = await self.routing.gather("/metrics")
        parts: list[tuple[int, Sequence[Metric] | bytes | None]] = [(self.worker.index, families), *others]

        def render() -> bytes:
            return self.metrics.render_snapshot(merge_worker_metrics(parts))

        body = await asyncio.get_running_loop().run_in_executor(None, render)
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
            wanted = self.config.transcode.decoder
            candidates = () if wanted == SOFTWARE_DECODER else HARDWARE_DECODERS if wanted == "auto" else (wanted,)
            decoders = await asyncio.get_running_loop().run_in_executor(None, probe_decoders, candidates)
            # A GPU decoder named in the config that does not work stops the
            # start here (TranscodeConfigError), before any stream is taken.
            self.decoder = decoders.choose(wanted)
            log.info("video decoder: %s", self.decoder)
        if self.uploader is not None:
            # Uploads what an earlier run left in the spool (disk reads: off the loop).
            await asyncio.to_thread(self.uploader.start)
        apps = frozenset(self.config.rtmp.apps) or None
        self.http_runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self.http_runner.setup()
        await self._reconcile()
        if self.recordings is not None:
            # Recordings a crash left open are closed and reported first.
            await self.recordings.start()
        shared = self.worker is not None
        if self.worker is not None:
            assert self.directory is not None
            # This process's earlier life (same address) died with its streams.
            forgotten = await asyncio.to_thread(self.directory.forget, self.worker.address)
            if forgotten:
                log.warning("released %d streams an earlier run of this process owned", len(forgotten))
            self.private_runner = web.AppRunner(self.build_app(private=True), access_log=None, handle_signals=False)
            await self.private_runner.setup()
            private = web.TCPSite(self.private_runner, "127.0.0.1", self.worker.private_ports[self.worker.index],
                                  reuse_address=True)
            await private.start()
        site = web.TCPSite(self.http_runner, host, self.config.http.port, reuse_address=True, reuse_port=shared)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http.port
        if self.config.rtmp.enabled:
            self.rtmp = RtmpServer(self.registry, self.publish_check, self.config.rtmp.limits, app_names=apps)
            await self.rtmp.start(host, self.config.rtmp.port, reuse_port=shared)
            tls = self._tls_context()
            if tls is not None:
                self.rtmps = RtmpServer(
                    self.registry, self.publish_check, self.config.rtmp.limits, ssl_context=tls, app_names=apps
                )
                await self.rtmps.start(host, self.config.rtmp.tls_port, reuse_port=shared)
        self._ready = True
        log.info(
            "serving: RTMP %s:%s%s, HTTP http://%s:%s (HLS at /hls/NAME/index.m3u8)",
            host,
            self.rtmp.port if self.rtmp else "off",
            f", RTMPS port {self.rtmps.port}" if self.rtmps else "",
            host,
            self.http_port,
        )

    async def _reconcile(self) -> None:
        """Before any publisher can connect: forget what an earlier run left
        behind when it died without stopping (``kill -9``, a power cut). Its
        HLS folders are deleted (this run serves none of them), and the
        control API's store stops listing its streams as live."""
        live = {stream.name for stream in self.registry.streams()}
        stale = await asyncio.get_running_loop().run_in_executor(
            None, remove_stale_outputs, self.hls.root, live | set(self.hls.outputs)
        )
        if stale:
            log.warning("removed HLS output of %d streams left by an earlier run: %s", len(stale), ", ".join(stale))
        if self.api_app is not None and self.config.api.reconcile_on_start:
            await self.api_app[PLANE].reconcile(live)

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
        await self.effect_updates.close()
        for transcoder in tuple(self.transcoders.values()):
            transcoder.stop()
        for task in tuple(self._transcode_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hls.close()
        if self.recordings is not None:
            await self.recordings.close()
        for cleanup in reversed(self._cleanups):
            await cleanup()
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        if self.uploader is not None:
            # Files still spooled stay on disk; the next start uploads them.
            await asyncio.to_thread(self.uploader.close, 30.0)
        self._key_store.close()
        if self.private_runner is not None:
            await self.private_runner.cleanup()
        if self.routing is not None:
            await self.routing.close()


def _names_video_effect(value: dict[str, object] | list[object]) -> bool:
    """Whether effect settings (the control API's JSON form) name a video
    effect. Anything that cannot be read as effect names counts as one: the
    cost of a needless switch is encoding, the cost of a missed one is a
    face shown."""
    effects = value.get("effects", []) if isinstance(value, dict) else value
    if not isinstance(effects, list):
        return True
    registry = default_catalog()
    for item in effects:
        name = item.get("effect") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in registry:
            return True
        if registry.get(name).kind is StageKind.VIDEO:
            return True
    return False


def hls_root(data_dir: Path, worker: WorkerIdentity | None) -> Path:
    """Where the engine writes HLS: a folder of its own for each process of
    a node (each cleans its own leftovers when it starts)."""
    root = data_dir / "hls"
    return root if worker is None else root / f"w{worker.index}"


def stream_directory_path(data_dir: Path) -> Path:
    """The node's local stream directory (:mod:`cluster.local_directory`)."""
    return data_dir / "streams"


def remove_stale_outputs(root: Path, keep: set[str]) -> list[str]:
    """Delete every entry under the HLS root except the folders named in
    ``keep``; returns the names deleted. Runs off the event loop."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


async def run(config: EngineConfig, worker: WorkerIdentity | None = None) -> None:
    """Start the engine and run until SIGINT or SIGTERM (or, for one of a
    node's processes, until its supervisor is gone)."""
    engine = Engine(config, worker=worker)
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    orphan_watch = None
    if worker is not None:
        orphan_watch = loop.create_task(_stop_when_orphaned(worker.supervisor_pid, stop), name="orphan-watch")
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if orphan_watch is not None:
            orphan_watch.cancel()
        await engine.stop()


async def _stop_when_orphaned(supervisor_pid: int, stop: asyncio.Event) -> None:
    """Polls: no portable signal tells a process its parent died."""
    while not stop.is_set():
        if os.getppid() != supervisor_pid:
            log.error("the supervisor (pid %d) is gone: stopping", supervisor_pid)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def run_blocking(config: EngineConfig, worker: WorkerIdentity | None = None) -> None:
    """Run the engine on uvloop when configured and installed, else on
    asyncio's own loop, until it is stopped."""
    if config.server.use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using the default event loop")
        else:
            uvloop.run(run(config, worker))
            return
    asyncio.run(run(config, worker))
