"""The tradingd command as a process: exit codes and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tradingd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _config_with_router(tmp_path: Path, router_kind: str, budget: int) -> Path:
    text = (ROOT / "config" / "backtest.toml").read_text()
    text = text.replace("../data/sample", str(ROOT / "data" / "sample"))
    text = text.replace(
        '[actors.router]\nkind = "router"',
        f'[actors.router]\nkind = "{router_kind}"\nrestart_budget = {budget}',
    )
    assert router_kind in text
    path = tmp_path / "backtest.toml"
    path.write_text(text)
    return path


def test_a_crashing_router_halts_trading_so_no_later_order_is_routed(tmp_path: Path) -> None:
    config = _config_with_router(tmp_path, "tests.system.crashing_actors:CrashOnOrder", 2)
    proc = _tradingd("backtest", "--config", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # the first order crashed the router (restarted); the crash halted trading, so the
    # risk gate denied every later order and none reached the router or the venue
    assert out["orders"] > 1
    assert out["fills"] == 0
    assert out["denied"] == out["orders"] - 1
    assert any("actor_restart" in alert and "router" in alert for alert in out["alerts"])


def test_critical_actor_past_its_budget_exits_70_after_halting_trading(tmp_path: Path) -> None:
    config = _config_with_router(tmp_path, "router", 3)
    text = config.read_text() + (
        '\n[actors.monitor]\nkind = "tests.system.crashing_actors:CrashOnQuote"\n'
        "restart_budget = 2\n"
        '\n[[edges]]\nfrom = "validator.ticks"\nto = "monitor"\n'
    )
    config.write_text(text)
    proc = _tradingd("backtest", "--config", str(config), "--log-json")
    assert proc.returncode == 70, proc.stderr
    assert "critical actor 'monitor' failed past its restart budget" in proc.stderr
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    events = [entry.get("event") for entry in logs]
    # the first crash halts trading at once
    halted = next(e for e in logs if e.get("event") == "trading state changed")
    assert halted["state"] == "HALTED"
    assert "monitor" in halted["reason"]
    second_crash = [i for i, e in enumerate(events) if e == "actor crashed"][1]
    assert events.index("trading state changed") < second_crash
    # two restarts, then the third crash is past the budget of 2
    assert events.count("actor crashed") == 3
    final = [e for e in logs if e.get("rule") == "restart_budget_spent"]
    assert len(final) == 1
    assert final[0]["level"] == "critical"


def test_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    text = (ROOT / "config" / "backtest.toml").read_text().replace("fast = 200", 'fast = "fast"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = _tradingd("backtest", "--config", str(path))
    assert proc.returncode == 78
    assert "$.actors.ema.fast" in proc.stderr
    assert "Expected `int`, got `str`" in proc.stderr


def test_unknown_command_is_a_usage_error() -> None:
    proc = _tradingd("bakctest")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


@pytest.mark.parametrize("executor", ["inline", "tasks"])
def test_relative_config_path_is_taken_from_the_callers_directory(
    tmp_path: Path, executor: str
) -> None:
    config = _config_with_router(tmp_path, "router", 3)
    text = config.read_text().replace(
        "per_tick = false", f'per_tick = false\nexecutor = "{executor}"'
    )
    config.write_text(text)
    proc = _tradingd("backtest", "--config", "backtest.toml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ticks"] == 73_174
    assert out["orders"] > 0
    assert out["orders_filled"] + out["orders_open"] == out["orders"]  # no order lost
    assert out["fills"] >= out["orders_filled"]  # partial fills against displayed size


def test_tradingd_ctl_starts_without_the_backtest_machinery(tmp_path: Path) -> None:
    """`tradingd ctl` (the console script's entry point) loads only the control client:
    an operator's command answers at once, and scripts looping on it stay cheap."""
    code = (
        "import sys\n"
        "from adapters.entry import main\n"
        f"status = main(['ctl', '--socket', {str(tmp_path / 'none.sock')!r}, 'status'])\n"
        "heavy = ('numba', 'numpy', 'pyarrow', 'engine.backtest')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr  # unreachable: no daemon there
    assert proc.stdout.strip() == "[]", proc.stdout
    assert "none.sock" in proc.stderr
