"""``fanz-media serve`` with ``server.processes`` > 1: a small supervisor.

One event loop tops out near one core of RTMP ingest and packaging. With
``server.processes = N`` the command starts N complete engines (the same
config), each in its own process with its own event loop, and does nothing
else itself:

- before they start, it prepares what they share: ports chosen once (a
  port of 0 is resolved here, so that all bind the same one), the data
  directory with its master key, the control API's database migrated and
  reconciled once, leftovers of an earlier run removed;
- it starts each process with its :class:`WorkerIdentity` (its index, every
  process's private loopback port, the node's secret);
- it restarts a process that dies, after a backoff that grows while
  processes keep dying soon after they start, and releases the dead
  process's streams from the stream directory at once;
- on SIGTERM or SIGINT it stops every process (SIGTERM, then SIGKILL for
  one that has not stopped in time).

The processes share the public RTMP and HTTP ports through SO_REUSEPORT: the
kernel spreads new connections over them. A system without it is refused.
How a request reaches the process that owns its stream is in
:mod:`engine.app.owner_routing`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from cluster.local_directory import FileStreamDirectory
from engine.app.config import EngineConfig
from engine.app.owner_routing import LOOPBACK, WorkerIdentity
from engine.errors import ConfigError

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0
"""A process that ran this long before dying is restarted after the first
backoff again."""
STOP_TIMEOUT_S = 30.0
POLL_S = 0.5


def reuse_port_available() -> bool:
    """Whether this system lets several sockets listen on one port."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        return False
    return True


def free_port(host: str) -> int:
    """A port the system has free now on ``host`` (for ports given as 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_ports(config: EngineConfig) -> EngineConfig:
    """Ports given as 0 chosen once, so that every process binds the same."""
    host = config.server.host if config.server.host not in ("", "0.0.0.0") else LOOPBACK
    rtmp: dict[str, Any] = {}
    if config.rtmp.port == 0:
        rtmp["port"] = free_port(host)
    if config.rtmp.tls_port == 0:
        rtmp["tls_port"] = free_port(host)
    http: dict[str, Any] = {}
    if config.http.port == 0:
        http["port"] = free_port(host)
    return config.with_overrides(rtmp=rtmp, http=http)


async def prepare_store(config: EngineConfig, data_dir: Path) -> None:
    """Open the control API's database once before the processes start:
    its migrations run here, its secrets are made here, and the streams an
    earlier run left live are ended here (no process ends another's)."""
    from control_api.plane import ControlPlane

    key_file = Path(config.server.master_key_file) if config.server.master_key_file else None
    plane = ControlPlane(replace(config.api, data_dir=data_dir, master_key_file=key_file), None)
    await plane.open()
    try:
        if config.api.reconcile_on_start:
            await plane.reconcile(())
    finally:
        await plane.close()


def worker_main(config: EngineConfig, identity: WorkerIdentity) -> None:
    """A node process: one complete engine (runs in the child)."""
    from engine.app.cli import setup_logging
    from engine.app.serve import run_blocking

    setup_logging(config.server.log_level, tag=f"worker {identity.index}")
    try:
        run_blocking(config, identity)
    except KeyboardInterrupt:
        pass


@dataclass
class _Slot:
    """One process of the node, as the supervisor follows it."""

    identity: WorkerIdentity
    process: BaseProcess | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts, watches, restarts and stops the node's engine processes."""

    def __init__(self, config: EngineConfig, reuse_port: Callable[[], bool] = reuse_port_available) -> None:
        """``reuse_port`` says whether the system can share a port."""
        self.config = config
        self._reuse_port = reuse_port
        self.data_dir = Path(config.server.data_dir)
        self._stop = threading.Event()
        self._slots: list[_Slot] = []
        self._context = multiprocessing.get_context("spawn")
        self._worker_config = config

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status."""
        processes = self.config.server.processes
        if not self._reuse_port():
            raise ConfigError(
                f"server.processes = {processes} needs SO_REUSEPORT, which this system does not offer; "
                "use server.processes = 1"
            )
        from drm.keystore import make_private_dir
        from engine.app.serve import hls_root, remove_stale_outputs, stream_directory_path

        config = resolve_ports(self.config)
        make_private_dir(self.data_dir)
        if config.http.api:
            asyncio.run(prepare_store(config, self.data_dir))
        stale = remove_stale_outputs(hls_root(self.data_dir, None), set())
        if stale:
            log.warning("removed HLS output left by an earlier run: %s", ", ".join(stale))
        directory = FileStreamDirectory(stream_directory_path(self.data_dir))
        for name, owner in directory.entries().items():
            directory.forget(owner)
            log.info("stream directory: released %s, left by an earlier run", name)
        # The store was reconciled above: a process that starts again must
        # not end the streams the others have live.
        self._worker_config = config.with_overrides(api={"reconcile_on_start": False})
        ports = tuple(free_port(LOOPBACK) for _ in range(processes))
        secret = secrets.token_urlsafe(32)
        self._slots = [_Slot(WorkerIdentity(i, ports, secret, os.getpid())) for i in range(processes)]
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info(
            "starting %d engine processes sharing RTMP port %s and HTTP port %s",
            processes, config.rtmp.port, config.http.port,
        )
        try:
            for slot in self._slots:
                self._start(slot)
            self._watch(directory)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=worker_main, args=(self._worker_config, slot.identity),
            name=f"fanz-media-worker-{slot.identity.index}",
        )
        process.start()
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        log.info("worker %d started (pid %s)", slot.identity.index, process.pid)

    def _watch(self, directory: FileStreamDirectory) -> None:
        while not self._stop.is_set():
            running = {slot.process.sentinel: slot for slot in self._slots if slot.process is not None}
            for sentinel in multiprocessing.connection.wait(list(running), timeout=POLL_S):
                assert isinstance(sentinel, int)
                self._died(running[sentinel], directory)
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and now >= slot.restart_at and not self._stop.is_set():
                    self._start(slot)

    def _died(self, slot: _Slot, directory: FileStreamDirectory) -> None:
        assert slot.process is not None
        process, slot.process = slot.process, None
        process.join()
        if self._stop.is_set():
            return
        ran = time.monotonic() - slot.started_at
        slot.failures = 1 if ran >= STABLE_S else slot.failures + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (slot.failures - 1))
        slot.restart_at = time.monotonic() + delay
        released = directory.forget(slot.identity.address)
        log.error(
            "worker %d (pid %s) exited with status %s after %.1f s; its %d streams are released; "
            "restarting it in %.0f s",
            slot.identity.index, process.pid, process.exitcode, ran, len(released), delay,
        )

    def _stop_all(self) -> None:
        alive = [slot.process for slot in self._slots if slot.process is not None and slot.process.is_alive()]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop in %.0f s: killing it", process.name, STOP_TIMEOUT_S)
                process.kill()
                process.join()
        log.info("every engine process stopped")
