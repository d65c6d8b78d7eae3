"""The ``fanz-media`` command (also ``python -m engine``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drm.model import KeyProvider
from engine.app import features
from engine.app.config import EngineConfig, load_config, settings_markdown
from engine.errors import ConfigError
from transcode.errors import TranscodeConfigError

# Sub-commands that belong to other packages: name -> (module, help). Each
# module has ``main(argv) -> int``; imported only when used, so a node that
# never transcodes never loads the encoders.
DELEGATED = {
    "transcode": ("engine.app.transcode_command", "transcode a file into a VOD HLS ladder"),
    "effects": ("effects.cli", "list effects, or apply them to a file"),
    "api": ("control_api.cli", "run the control API on its own"),
    "recordings": ("engine.app.recordings_command", "list or delete recordings (list --json, delete ID)"),
}


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the media engine (RTMP ingest, HLS, metrics)")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--data-dir", type=Path, help="where HLS output and data live (server.data_dir)")
    p.add_argument("--host", help="address to bind (server.host)")
    p.add_argument("--rtmp-port", type=int, help="RTMP port (rtmp.port)")
    p.add_argument("--rtmps-port", type=int, help="RTMPS port (rtmp.tls_port)")
    p.add_argument("--http-port", type=int, help="HTTP port (http.port)")
    p.add_argument("--processes", type=int, help="engine processes sharing the ports (server.processes)")
    p.add_argument("--dev", action="store_true", help="accept any stream key (development only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanz-media", description="Fanz Media Engine")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    cfg = sub.add_parser("config", help="print every setting, its environment variable and default")
    cfg.add_argument("--config", type=Path, help="also validate this TOML file")
    cfg.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="only validate FILE (with the environment) and open the H.264 encoder with every ladder's "
        "settings; exit 1 on any problem",
    )
    for name, (_module, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def check_config(path: Path, env: dict[str, str] | None = None) -> int:
    """``fanz-media config --check FILE``: 0 and one line on stdout when the
    file loads and every ladder's settings open libx264; 1 with each problem
    on stderr otherwise."""
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    # Imported here: the encoders load PyAV, which nothing else in this command needs.
    from transcode.encoders import check_ladder

    problems = [p for ladder in config.transcode.all_ladders().values() for p in check_ladder(ladder)]
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: ok")
    return 0


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    config = load_config(args.config)
    server: dict[str, Any] = {}
    if args.data_dir is not None:
        server["data_dir"] = args.data_dir
    if args.host is not None:
        server["host"] = args.host
    if args.dev:
        server["dev"] = True
    if args.processes is not None:
        server["processes"] = args.processes
    rtmp: dict[str, Any] = {}
    if args.rtmp_port is not None:
        rtmp["port"] = args.rtmp_port
    if args.rtmps_port is not None:
        rtmp["tls_port"] = args.rtmps_port
    http: dict[str, Any] = {}
    if args.http_port is not None:
        http["port"] = args.http_port
    return config.with_overrides(server=server, rtmp=rtmp, http=http)


def open_config_key_provider(config: EngineConfig) -> KeyProvider:
    """The key provider ``serve`` would open for ``config``."""
    from drm.setup import open_key_provider

    key_file = Path(config.server.master_key_file) if config.server.master_key_file else None
    return open_key_provider(config.drm, Path(config.server.data_dir), key_file)


def setup_logging(level: str, tag: str = "") -> None:
    """Log to stderr; ``tag`` marks each line (which process of a node)."""
    prefix = f"[{tag}] " if tag else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run_serve(config: EngineConfig) -> int:
    if config.server.processes > 1:
        from engine.app.workers import Supervisor

        return Supervisor(config).run()
    from engine.app.serve import run_blocking

    run_blocking(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        name = DELEGATED[argv[0]][0]
        if argv[0] == "effects":
            effects_cli = features.load(features.EFFECTS, name)
            if effects_cli is None:
                return 2
            return int(effects_cli.main(argv[1:]))
        module = importlib.import_module(name)
        if argv[0] == "transcode":
            # --protection takes its keys from the engine's own provider (the
            # config's data dir), so /keys and /drm/clearkey serve the asset.
            return int(module.main(argv[1:], open_provider=open_config_key_provider))
        return int(module.main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "config":
            if args.check is not None:
                return check_config(args.check)
            if args.config is not None:
                load_config(args.config)
            sys.stdout.write(settings_markdown())
            return 0
        config = config_from_args(args)
    except ConfigError as exc:
        parser.exit(2, f"fanz-media: configuration error: {exc}\n")
    setup_logging(config.server.log_level)
    try:
        return _run_serve(config)
    except KeyboardInterrupt:
        return 0
    except TranscodeConfigError as exc:
        # Found at start-up, e.g. a GPU decoder named in the config that
        # does not work on this machine.
        parser.exit(2, f"fanz-media: configuration error: {exc}\n")
