"""The risk monitor's circuit breakers, each fired by a replay of real daily data that should
trigger it (config/daily_equities.toml on the Lean files, 1998-2021), with the journal (the
event log's risk record) holding the decision, with its inputs, and the alert."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters.cli import main
from adapters.store_replay import replay_source
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.messages import (
    Alert,
    AlertLevel,
    LimitsChanged,
    RiskDecision,
    TradingState,
    TradingStateChanged,
)
from tests.shared_data import shared_data_dir

pytestmark = pytest.mark.shared_data

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "daily_equities.toml"

MONITOR = """
[actors.monitor]
kind = "risk_monitor"
{limits}

[[edges]]
from = "validator.ticks"
to = "monitor"

[[edges]]
from = "risk.approved"
to = "monitor"

[[edges]]
from = "risk.events"
to = "monitor"

[[edges]]
from = "exchange.events"
to = "monitor"

[[edges]]
from = "monitor.orders"
to = "risk"

[[edges]]
from = "monitor.cancels"
to = "router"

[[edges]]
from = "monitor.control"
to = "risk"

[[edges]]
from = "monitor.events"
to = "events"
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor") / "store"
    usa = shared_data_dir() / "lean/Data/equity/usa"
    code = main(
        ["data", "import", "--store", str(root), "--format", "lean-daily", "--path", str(usa)]
    )
    assert code == 0
    return root


class Run:
    def __init__(self, result: BacktestResult, system: Any) -> None:
        self.result = result
        self.system = system
        self.records = list(system.actors["events"].risk_records)

    def decisions(self, rule: str, action: str | None = None) -> list[RiskDecision]:
        return [
            r
            for r in self.records
            if isinstance(r, RiskDecision)
            and r.rule == rule
            and (action is None or r.action == action)
        ]

    def alerts(self, rule: str) -> list[Alert]:
        return [r for r in self.records if isinstance(r, Alert) and r.rule == rule]

    def states(self) -> list[TradingStateChanged]:
        return [r for r in self.records if isinstance(r, TradingStateChanged)]


def _run(tmp: Path, store: Path, limits: str, **replay: Any) -> Run:
    text = CONFIG.read_text().replace('store = "../store"', f'store = "{store}"')
    text += MONITOR.replace("{limits}", limits)
    path = tmp / "monitored.toml"
    path.write_text(text)
    overrides = {f"replay.{k}": v for k, v in replay.items()} or None
    system, _ = load_backtest(path, overrides=overrides)
    result = asyncio.run(run_backtest(system, replay_source(system)))
    return Run(result, system)


def test_a_drawdown_over_its_limit_halts_trading(tmp_path: Path, store: Path) -> None:
    run = _run(tmp_path, store, "limits = { monitor = { drawdown_halt = 0.10 } }")
    (halt,) = run.decisions("drawdown_halt", "halt")
    assert halt.level is AlertLevel.ERROR
    assert halt.inputs["drawdown"] >= 0.10
    assert halt.inputs["nav"] < 0.9 * halt.inputs["high_water"] + 1e-6
    (alert,) = run.alerts("drawdown_halt")
    assert alert.action == "halt" and alert.figures["drawdown"] == halt.inputs["drawdown"]
    halted = [s for s in run.states() if s.state is TradingState.HALTED]
    assert halted and halted[0].ts_event == halt.ts_event
    # nothing the strategy asked for afterwards was approved
    gate = run.system.actors["risk"]
    assert gate.risk.state is TradingState.HALTED
    assert run.result.denied > 0


def test_a_hard_drawdown_stop_cancels_then_flattens_then_halts(tmp_path: Path, store: Path) -> None:
    run = _run(
        tmp_path,
        store,
        "limits = { monitor = { drawdown_halt = 0.08, drawdown_flatten = 0.12 } }",
    )
    (flatten,) = run.decisions("drawdown_flatten", "flatten")
    assert flatten.level is AlertLevel.CRITICAL and flatten.inputs["drawdown"] >= 0.12
    assert run.alerts("drawdown_flatten")[0].level is AlertLevel.CRITICAL
    (flat,) = run.decisions("drawdown_flatten", "halt")
    assert flat.ts_event >= flatten.ts_event
    portfolio = run.system.actors["portfolio"].portfolio
    assert all(q == 0.0 for q in portfolio.qty.tolist())  # the book was closed
    assert run.system.actors["risk"].risk.state is TradingState.HALTED


def test_var_over_its_limit_deleverages_back_inside(tmp_path: Path, store: Path) -> None:
    run = _run(tmp_path, store, "limits = { portfolio = { var_limit = 0.012 } }")
    cuts = run.decisions("portfolio.var_limit", "deleverage")
    assert cuts, "VaR never went over 1.2% of NAV"
    first = cuts[0]
    assert first.inputs["used"] > first.inputs["limit"] == 0.012
    assert 0.0 < first.inputs["deleverage_factor"] < 1.0
    monitor = run.system.actors["monitor"]
    orders = [r for r in monitor.core.working]  # nothing of ours left working at the end
    assert not [o for o in orders if o.startswith("monitor-")]
    assert run.result.orders > 0


def test_a_breached_limit_stops_new_risk_and_a_regime_shift_tightens_the_limits(
    tmp_path: Path, store: Path
) -> None:
    run = _run(
        tmp_path,
        store,
        "limits = { security = { max_position_fraction = 0.16 } }",
    )
    warned = [
        a for a in run.records if isinstance(a, Alert) and a.rule.endswith("max_position_fraction")
    ]
    assert any(a.level is AlertLevel.WARNING and a.action == "notify" for a in warned)
    assert any(a.level is AlertLevel.ERROR and a.action == "reduce" for a in warned)
    reducing = [s for s in run.states() if s.state is TradingState.REDUCING]
    assert reducing
    tightened = run.decisions("regime_shift", "tighten")
    assert tightened
    changes = [r for r in run.records if isinstance(r, LimitsChanged)]
    assert changes and changes[0].origin == "monitor"
    assert any(
        d.ts_event // 86_400_000_000_000 * 86_400_000_000_000 >= 1_221_436_800_000_000_000
        and d.ts_event < 1_225_497_600_000_000_000
        for d in tightened
    ), "no tightening between 2008-09-15 and 2008-11-01"


def test_a_system_failure_cancels_then_flattens_then_halts(tmp_path: Path, store: Path) -> None:
    """A critical actor crashing part way through (CRITICAL ``critical_actor_crash`` from the
    supervisor) is a system failure: the monitor cancels every working order, closes every
    position through the gate and the router, and leaves trading HALTED."""
    crash = (
        '\n[actors.session]\nkind = "tests.system.crashing_actors:CrashOnce"\nafter = 4000\n'
        '\n[[edges]]\nfrom = "validator.ticks"\nto = "session"\n'
    )
    text = CONFIG.read_text().replace('store = "../store"', f'store = "{store}"')
    text += MONITOR.replace("{limits}", "") + crash
    path = tmp_path / "failing.toml"
    path.write_text(text)
    system, _ = load_backtest(path)
    result = asyncio.run(run_backtest(system, replay_source(system)))
    run = Run(result, system)
    (failure,) = run.alerts("critical_actor_crash")
    assert failure.level is AlertLevel.CRITICAL and "session" in failure.message
    (flatten,) = run.decisions("system_failure", "flatten")
    assert flatten.level is AlertLevel.CRITICAL
    assert flatten.ts_event == failure.ts_event
    assert "critical_actor_crash" in flatten.reason
    assert run.alerts("system_failure")[0].action == "flatten"
    (flat,) = run.decisions("system_failure", "halt")
    assert flat.ts_event >= flatten.ts_event
    # closing orders were sent, all of them are done, and the book is flat
    monitor = system.actors["monitor"].core
    assert monitor._seq > 0 and not monitor.flatten_orders
    assert all(q == 0.0 for q in result.positions.values())
    assert system.actors["risk"].risk.state is TradingState.HALTED
    assert run.states()[-1].state is TradingState.HALTED
