"""The event log's risk record, as followers of a running daemon read it."""

from __future__ import annotations

from pathlib import Path

from engine.backtest import load_backtest
from engine.messages import Alert, AlertLevel


def test_risk_records_are_counted_past_the_bound_of_the_record() -> None:
    """Followers (the dashboard, the metrics) ask for the records since their count: once
    the bounded record is full they still get exactly the new ones, oldest first."""
    config = Path(__file__).resolve().parents[2] / "config" / "backtest.toml"
    system, _ = load_backtest(config, overrides={"actors.events.keep_risk_records": 3})
    log = system.actors["events"]
    log.on_start()

    def alert(i: int) -> Alert:
        return Alert(
            level=AlertLevel.WARNING, source="t", rule=f"r{i}", message="", ts_event=i, ts_init=i
        )

    for i in range(2):
        log.on_message(alert(i))
    first, seen = log.records_since(0)
    assert [a.rule for a in first] == ["r0", "r1"] and seen == 2
    for i in range(2, 6):
        log.on_message(alert(i))
    new, seen = log.records_since(seen)
    assert [a.rule for a in new] == ["r3", "r4", "r5"] and seen == 6  # r2 left the record
    assert log.records_since(seen) == ([], 6)
