"""Prometheus metrics: a scrape parses with the client library's own parser and shows what
the daemon's callables returned, the counters the daemon increments, a broken source, and
the handling-time histograms of a real backtest, whose counts are the messages handled."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import DaemonMetrics
from engine.actor import HandleTimes
from engine.backtest import load_backtest, run_backtest
from engine.messages import AlertLevel

REPO = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: DaemonMetrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"{key} appears twice"
            out[key] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def actor_snapshot(name: str, **overrides: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "name": name,
        "state": "RUNNING",
        "processed": 1200,
        "errors": 2,
        "restarts": 1,
        "handle_ns": 9_000_000,
        "max_handle_ns": 80_000,
        "inbox_depth": 3,
        "inbox_high_water": 17,
        "inbox_capacity": 1024,
        "blocked": 4,
        "conflated": 5,
        "dropped": 6,
    }
    snap.update(overrides)
    return snap


PORTFOLIO = {
    "currency": "USD",
    "equity": 101_250.5,
    "balance": 99_000.0,
    "realized": 750.25,
    "unrealized": 2_250.5,
    "positions": {"AAPL.NASDAQ": 100.0, "SPY.ARCA": -40.0, "IBM.NYSE": 0.0},
}
RISK = {
    "trading_state": "REDUCING",
    "var": math.inf,  # an instrument without a price: VaR cannot be measured
    "drawdown": 0.031,
    "nav": None,  # not known yet
    "high_water": 104_000.0,
    "limits": [
        {"level": "account", "group": "", "measure": "gross_leverage", "utilisation": 0.82},
        {"level": "sector", "group": "technology", "measure": "gross", "utilisation": 1.05},
    ],
}


def test_a_scrape_shows_what_the_daemon_s_callables_return() -> None:
    metrics = DaemonMetrics(
        actors=lambda: [actor_snapshot("risk"), actor_snapshot("feed", state="FAULTED")],
        portfolio=lambda: PORTFOLIO,
        risk=lambda: RISK,
    )
    s = scrape(metrics)

    assert value(s, "tradingd_actor_messages_total", actor="risk") == 1200
    assert value(s, "tradingd_actor_errors_total", actor="risk") == 2
    assert value(s, "tradingd_actor_restarts_total", actor="risk") == 1
    assert value(s, "tradingd_actor_blocked_total", actor="risk") == 4
    assert value(s, "tradingd_actor_conflated_total", actor="risk") == 5
    assert value(s, "tradingd_actor_dropped_total", actor="risk") == 6
    assert value(s, "tradingd_actor_inbox_depth", actor="risk") == 3
    assert value(s, "tradingd_actor_inbox_high_water", actor="risk") == 17
    assert value(s, "tradingd_actor_inbox_capacity", actor="risk") == 1024
    assert value(s, "tradingd_actor_state", actor="risk", state="RUNNING") == 1
    assert value(s, "tradingd_actor_state", actor="feed", state="FAULTED") == 1
    assert value(s, "tradingd_actor_state", actor="feed", state="RUNNING") == 0
    # handling times are not tracked by these actors: no histogram for them
    assert not [k for k in s if k[0].startswith("tradingd_actor_handle_seconds")]

    assert value(s, "tradingd_equity") == 101_250.5
    assert value(s, "tradingd_balance") == 99_000.0
    assert value(s, "tradingd_pnl_realized") == 750.25
    assert value(s, "tradingd_pnl_unrealized") == 2_250.5
    assert value(s, "tradingd_positions") == 2, "a flat instrument is not an open position"
    assert value(s, "tradingd_position", instrument="AAPL.NASDAQ") == 100.0
    assert value(s, "tradingd_position", instrument="SPY.ARCA") == -40.0

    assert value(s, "tradingd_var") == math.inf
    assert value(s, "tradingd_drawdown") == 0.031
    assert not [k for k in s if k[0] == "tradingd_nav"], "an unknown NAV is left out, not 0"
    assert {
        state: value(s, "tradingd_trading_state", state=state)
        for state in ("ACTIVE", "REDUCING", "HALTED")
    } == {"ACTIVE": 0, "REDUCING": 1, "HALTED": 0}
    assert (
        value(
            s,
            "tradingd_limit_utilisation",
            level="sector",
            group="technology",
            measure="gross",
        )
        == 1.05
    )
    assert (
        value(s, "tradingd_limit_utilisation", level="account", group="", measure="gross_leverage")
        == 0.82
    )


def test_the_sources_are_read_at_every_scrape() -> None:
    equity = [100.0]
    metrics = DaemonMetrics(portfolio=lambda: {"equity": equity[0], "positions": []})
    assert value(scrape(metrics), "tradingd_equity") == 100.0
    equity[0] = 95.5
    assert value(scrape(metrics), "tradingd_equity") == 95.5
    # the control API's list of positions is understood too
    metrics.bind(
        portfolio=lambda: {"positions": [{"instrument": "EURUSD.IDEALPRO", "quantity": 5e5}]}
    )
    s = scrape(metrics)
    assert value(s, "tradingd_position", instrument="EURUSD.IDEALPRO") == 5e5
    assert value(s, "tradingd_positions") == 1


def test_what_the_daemon_counts() -> None:
    metrics = DaemonMetrics()
    for _ in range(3):
        metrics.order_sent()
    metrics.fill(notional=6_400.0, commission=6.4)
    metrics.fill(notional=3_200.0, commission=3.2)
    metrics.denied("max_order_notional")
    metrics.denied("max_order_notional")
    metrics.denied("restricted_list")
    metrics.alert(AlertLevel.CRITICAL)
    metrics.alert("warning")
    metrics.alert("WARNING")
    metrics.set_event_loop_lag(0.012)
    s = scrape(metrics)
    assert value(s, "tradingd_orders_total") == 3
    assert value(s, "tradingd_fills_total") == 2
    assert value(s, "tradingd_fill_notional_total") == 9_600.0
    assert value(s, "tradingd_commission_total") == pytest.approx(9.6)
    assert value(s, "tradingd_orders_denied_total", rule="max_order_notional") == 2
    assert value(s, "tradingd_orders_denied_total", rule="restricted_list") == 1
    assert value(s, "tradingd_alerts_total", level="CRITICAL") == 1
    assert value(s, "tradingd_alerts_total", level="WARNING") == 2
    assert value(s, "tradingd_alerts_total", level="INFO") == 0, "every level is there at 0"
    assert value(s, "tradingd_event_loop_lag_seconds") == 0.012
    # the registry of its own carries the process metrics too
    assert value(s, "process_resident_memory_bytes") > 0
    with pytest.raises(ValueError, match="unknown alert level 'SEVERE'"):
        metrics.alert("SEVERE")
    with pytest.raises(ValueError, match="event loop lag"):
        metrics.set_event_loop_lag(-1.0)


def test_a_broken_source_costs_only_its_own_metrics() -> None:
    def broken_risk() -> dict[str, Any]:
        raise RuntimeError("risk monitor not started")

    metrics = DaemonMetrics(
        portfolio=lambda: {"equity": 1.0, "positions": {}, "balance": "lots"},
        risk=broken_risk,
        actors=lambda: [actor_snapshot("router")],
    )
    s = scrape(metrics)
    assert value(s, "tradingd_actor_messages_total", actor="router") == 1200
    assert not [k for k in s if k[0] in {"tradingd_var", "tradingd_equity"}]
    assert value(s, "tradingd_metrics_source_errors_total", source="risk") == 1
    assert value(s, "tradingd_metrics_source_errors_total", source="portfolio") == 1
    s = scrape(metrics)
    assert value(s, "tradingd_metrics_source_errors_total", source="risk") == 2


def test_openmetrics_is_served_when_asked_for() -> None:
    metrics = DaemonMetrics(registry=None)
    metrics.order_sent()
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"tradingd_orders_total 1.0" in body


def test_histogram_buckets_are_powers_of_two_of_nanoseconds() -> None:
    times = HandleTimes()
    for took in (0, 5, 255, 256, 300, 511, 512, 1_000_000, 2**40):
        times.record(took)
    metrics = DaemonMetrics(
        actors=lambda: [
            actor_snapshot(
                "ema",
                processed=times.count,
                handle_times={"counts": times.counts, "sum_ns": times.sum_ns},
            )
        ]
    )
    s = scrape(metrics)

    def bucket(le: str) -> float:
        return value(s, "tradingd_actor_handle_seconds_bucket", actor="ema", le=le)

    assert bucket("2.56e-07") == 3  # 0, 5, 255 ns: below 256 ns
    assert bucket("5.12e-07") == 6  # and 256, 300, 511
    assert bucket("1.024e-06") == 7  # and 512
    assert bucket("0.001048576") == 8  # and 1 ms
    assert bucket("17.179869184") == 8
    assert bucket("+Inf") == 9  # 2**40 ns (18 minutes) only here
    assert value(s, "tradingd_actor_handle_seconds_count", actor="ema") == 9
    assert value(s, "tradingd_actor_handle_seconds_sum", actor="ema") == pytest.approx(
        (0 + 5 + 255 + 256 + 300 + 511 + 512 + 1_000_000 + 2**40) / 1e9
    )


@pytest.mark.parametrize("executor", ["inline", "tasks"])
def test_the_handle_time_histograms_count_every_message_of_a_backtest(executor: str) -> None:
    system, _ = load_backtest(REPO / "config" / "backtest.toml", executor=executor)
    for actor in system.actors.values():
        actor.stats.track_handle_times()
    result = asyncio.run(run_backtest(system))
    assert result.fills > 0, "the sample trades: orders and fills went through every actor"
    metrics = DaemonMetrics(actors=system.snapshot)
    s = scrape(metrics)

    handled = {a["name"]: a["processed"] for a in system.snapshot()}
    assert sum(handled.values()) > 1000
    for name, processed in handled.items():
        count = value(s, "tradingd_actor_handle_seconds_count", actor=name)
        assert count == processed, name
        assert value(s, "tradingd_actor_messages_total", actor=name) == processed
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (metric, labels), v in s.items()
            if metric == "tradingd_actor_handle_seconds_bucket" and dict(labels)["actor"] == name
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{name}: buckets must be cumulative"
        assert buckets[-1] == (math.inf, processed)
        total = value(s, "tradingd_actor_handle_seconds_sum", actor=name)
        assert (total > 0) == (processed > 0), name
        # per-message times add up to no more than the time the actor spent handling
        if executor == "tasks":
            # (the sum is exported in seconds: compare in whole nanoseconds)
            assert round(total * 1e9) <= system.actors[name].stats.handle_ns, name
