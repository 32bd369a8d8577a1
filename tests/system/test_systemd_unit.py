"""The service unit, as systemd's own tools judge it (``systemd-analyze``, offline).

Skipped when systemd-analyze is not installed (a non-Linux or minimal machine).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "tradingd.service"
INSTALLED_BINARY = "/opt/tradingd/.venv/bin/tradingd"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, values in order (comments and sections dropped)."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_has_an_overall_exposure_of_at_most_2() -> None:
    proc = _analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    output = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for tradingd\.service: (\d+\.\d+)", output)
    assert match, f"no overall exposure line in:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, output
    # what is still exposed is what the daemon needs: the network, and run-time compilation
    exposed = {line.split()[1] for line in output.splitlines() if line.startswith("✗")}
    assert "MemoryDenyWriteExecute=" in exposed
    assert "PrivateNetwork=" in exposed
    assert not {"NoNewPrivileges=", "ProtectSystem=", "SystemCallFilter=~@privileged"} & exposed


def test_the_unit_declares_what_the_daemon_relies_on() -> None:
    unit = _directives(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["10s"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["KillSignal"] == ["SIGTERM"]
    # a watchdog kill (SIGABRT) leaves the stacks of all threads in the journal
    assert "PYTHONFAULTHANDLER=1" in unit["Environment"]
    assert unit["StateDirectory"] == ["tradingd"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["ExecStart"] == [
        f"{INSTALLED_BINARY} run --config /etc/tradingd/paper.toml --state-dir ${{STATE_DIRECTORY}}"
    ]
    assert sorted(unit["LoadCredential"]) == [
        "control-token:/etc/tradingd/control-token",
        "webhook-url:/etc/tradingd/webhook-url",
    ]
    # numba writes machine code and then executes it: this must stay off
    assert unit["MemoryDenyWriteExecute"] == ["no"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # the cached numba kernels need a writable directory; /opt is read-only to the daemon
    assert "NUMBA_CACHE_DIR=/var/cache/tradingd/numba" in unit["Environment"]
    assert unit["CacheDirectory"] == ["tradingd"]


def test_systemd_analyze_verify_finds_nothing_but_the_missing_installed_binary(
    tmp_path: Path,
) -> None:
    # On a development machine the daemon is not installed in /opt/tradingd: verify
    # reports that, and must report nothing else.
    proc = _analyze("verify", "--no-pager", str(UNIT))
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    missing = f"tradingd.service: Command {INSTALLED_BINARY} is not executable"
    if Path(INSTALLED_BINARY).exists():
        assert proc.returncode == 0, complaints
    else:
        assert complaints, "verify should have reported the missing binary"
        assert all(line.startswith(missing) for line in complaints), complaints

    # The same unit with ExecStart pointing at this checkout's tradingd (installed by
    # scripts/test into the virtualenv) must verify cleanly.
    local_binary = Path(sys.executable).parent / "tradingd"
    if not local_binary.exists():
        pytest.skip(f"{local_binary} is missing: the project is not installed in this venv")
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) == 1
    copy = tmp_path / "tradingd.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(local_binary)))
    proc = _analyze("verify", "--no-pager", str(copy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).strip() == ""
