"""Starting ``tradingd run`` as a process for system tests, on a copy of the paper config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def own_config(tmp_path: Path, *, replace: dict[str, str] | None = None) -> Path:
    """config/paper.toml and its limits file copied into ``tmp_path`` (where a test may
    edit them), the sample data path made absolute and ``replace`` applied."""
    text = (ROOT / "config" / "paper.toml").read_text()
    text = text.replace("../data/sample", str(ROOT / "data" / "sample"))
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "paper.toml").write_text(text)
    limits = (ROOT / "config" / "paper_limits.toml").read_text()
    (tmp_path / "paper_limits.toml").write_text(limits)
    return tmp_path / "paper.toml"


def start_daemon(
    config: Path,
    state: Path,
    log: Path,
    *,
    speed: float = 20.0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``tradingd run`` at ``speed`` times real time, logging JSON lines to ``log``
    (appended); outside systemd unless ``env`` says otherwise."""
    base = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "STATE_DIRECTORY")}
    args = ["run", "--config", str(config), "--state-dir", str(state), "--speed", str(speed)]
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", *args, "--log-json"],
            cwd=config.parent,
            env={**base, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
