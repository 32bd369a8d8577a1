"""``tradingd run``: start the daemon (see adapters/daemon.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from engine.config import LoggingConfig, load_config
from engine.errors import ConfigError
from engine.logs import configure_logging

__all__ = ["register"]


def load_logging_config(path: str) -> LoggingConfig:
    """The ``[logging]`` section alone (defaults when the file cannot be read: the full
    load that follows reports that, naming the key)."""
    try:
        return load_config(Path(path)).logging
    except (ConfigError, OSError):
        return LoggingConfig()


def _default_config() -> str:
    return str(Path(__file__).resolve().parents[1] / "config" / "paper.toml")


def _cmd_run(args: argparse.Namespace) -> int:
    from adapters.cli import _install_event_loop  # noqa: PLC0415 - the CLI's loop policy
    from adapters.daemon import load_daemon  # noqa: PLC0415 - aiohttp only when running

    overrides: dict[str, Any] = {}
    if args.speed is not None:
        overrides["replay.speed"] = args.speed
    # logging first: actors bind their loggers when they are built
    logging = load_logging_config(args.config)
    level = args.log_level or os.environ.get("TRADINGD_LOG_LEVEL") or logging.level
    fmt = "json" if args.log_json else os.environ.get("TRADINGD_LOG_FORMAT") or logging.format
    configure_logging(level, fmt)  # type: ignore[arg-type]
    daemon = load_daemon(args.config, state_dir=args.state_dir, overrides=overrides or None)
    _install_event_loop()
    return asyncio.run(daemon.run())


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the daemon until it is stopped (SIGTERM: orderly stop; SIGHUP: reload)",
        description=(
            "Run the daemon: the configured actors on the live clock, the control API on a "
            "Unix socket in the state directory (tradingd ctl talks to it), systemd "
            "notification when NOTIFY_SOCKET is set. In paper mode the configured tick "
            "files are replayed in real time into the simulated exchange."
        ),
    )
    run.add_argument(
        "--config", default=_default_config(), help="configuration (default: config/paper.toml)"
    )
    run.add_argument(
        "--state-dir",
        default=None,
        help="journal and control socket (default: $STATE_DIRECTORY, else daemon.state_dir)",
    )
    run.add_argument(
        "--speed", type=float, default=None, help="paper mode: replay this many times real time"
    )
    run.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    run.set_defaults(func=_cmd_run)
