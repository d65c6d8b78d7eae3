"""An S3-protocol server on loopback for the tests: moto in server mode
(``python -m moto.server``), run as a subprocess.

Production uses MinIO or any S3 service; moto speaks the same protocol
(signatures, multipart uploads, presigned URLs, batch deletes) and keeps
its objects in memory. With ``record`` on, it also appends every request
to a file (moto's recorder), and :meth:`MotoServer.restart` replays that
file into the new process: the objects survive a stop and restart on the
same port, as they would on a real object store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ACCESS_KEY = "fanz-test-access-key"
SECRET_KEY = "fanz-test-secret-key"


class MotoServer:
    """One moto server process on ``127.0.0.1:port``."""

    def __init__(self, port: int, workdir: Path, *, record: bool = False) -> None:
        self.port = port
        self.workdir = workdir
        self.record = record
        self.recording = workdir / "moto-recording.jsonl"
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_DEFAULT_REGION": "us-east-1"})
        if self.record:
            env.update({"MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(self.recording)})
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not listen on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """Kill the server at once (as a crash or network loss would)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port; with ``record`` on, replay every
        request the earlier process took, so its objects are back."""
        self.stop()
        self.start()
        if self.record and self.recording.exists():
            request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST")
            with urllib.request.urlopen(request, timeout=60) as resp:
                resp.read()
