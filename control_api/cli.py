"""``fanz-media api``: the control API on its own (no media engine, so
kicks and bans end the stream records but disconnect no encoder), and
``fanz-media api create-admin`` for the first admin account."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from control_api.app import run_api
from control_api.bootstrap import create_admin
from control_api.config import ApiConfig
from control_api.errors import ControlApiError
from engine.app.config import load_config
from engine.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanz-media api", description="Fanz control API")
    parser.add_argument("--config", type=Path, help="the engine's TOML config file (its [api] section is used)")
    parser.add_argument("--data-dir", type=Path, help="where the SQLite file and secret live (server.data_dir)")
    parser.add_argument("--database-url", help="sqlite:///PATH or postgresql://... (api.database_url, DATABASE_URL)")
    parser.add_argument("--public-url", help="the engine's public base URL for playback links (api.public_base_url)")
    parser.add_argument("--webhook-host", action="append", default=[],
                        help="a host (or host:port) webhooks may target; repeat (api.webhook_allowed_hosts)")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081)
    admin = sub.add_parser("create-admin", help="create an admin account")
    admin.add_argument("username")
    parser.set_defaults(command="serve", host="127.0.0.1", port=8081)
    return parser


def config_from_args(args: argparse.Namespace) -> ApiConfig:
    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.public_url:
        overrides["public_base_url"] = args.public_url
    if args.webhook_host:
        overrides["webhook_allowed_hosts"] = tuple(args.webhook_host)
    engine_config = load_config(args.config)
    data_dir = args.data_dir if args.data_dir is not None else engine_config.server.data_dir
    key_file = engine_config.server.master_key_file
    overrides["master_key_file"] = Path(key_file) if key_file else None
    config = replace(engine_config.api, data_dir=Path(data_dir), **overrides)  # type: ignore[arg-type]
    config.check()
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        if args.command == "create-admin":
            password = os.environ.get("FANZ_ADMIN_PASSWORD") or getpass.getpass("password: ")
            if len(password) < 8:
                parser.exit(2, "fanz-media api: the password needs at least 8 characters\n")
            user_id = asyncio.run(create_admin(config, args.username, password, time.time()))
            print(user_id)
            return 0
        asyncio.run(run_api(config, args.host, args.port))
    except (ControlApiError, ConfigError) as exc:
        parser.exit(2, f"fanz-media api: {exc}\n")
    except KeyboardInterrupt:
        pass
    return 0
