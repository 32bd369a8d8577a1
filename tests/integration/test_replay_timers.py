"""Timers in a replay live in the data's time: set at start, they are anchored at the first
tick, fire in order between ticks, and the ticks before a timer are released before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from adapters.reference_workload import REFERENCE_START_NS, reference_quotes
from engine.actor import Actor, ActorConfig
from engine.backtest import load_backtest, run_backtest
from engine.messages import QuoteBatch, QuoteTick, TimerFired

ROOT = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
N = 3_000  # 100 ms apart: 300 seconds of data


class ClockWatchConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: float = 1.0


class ClockWatch(Actor[ClockWatchConfig]):
    """Sets a repeating timer at start; records when it fires and the last tick seen then."""

    Config = ClockWatchConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    fired: ClassVar[list[tuple[int, int, int]]] = []

    def on_start(self) -> None:
        self.last_tick_ts = 0
        self.timer_every(int(self.config.interval_s * SECOND), "heartbeat")

    def on_message(self, msg: Any) -> None:
        match msg:
            case QuoteBatch(data=data):
                self.last_tick_ts = int(data["ts_event"][-1])
            case QuoteTick(ts_event=ts):
                self.last_tick_ts = ts
            case TimerFired(ts_event=ts):
                ClockWatch.fired.append((ts, self.clock.now(), self.last_tick_ts))


def _config(tmp_path: Path) -> Path:
    text = (ROOT / "config" / "reference.toml").read_text()
    text += (
        '\n[actors.watch]\nkind = "tests.integration.test_replay_timers:ClockWatch"\n'
        '\n[[edges]]\nfrom = "validator.ticks"\nto = "watch"\n'
    )
    path = tmp_path / "timers.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("executor", "per_tick"), [("inline", False), ("inline", True), ("tasks", False)]
)
async def test_a_repeating_timer_set_at_start_fires_once_a_second_of_data_time(
    tmp_path: Path, executor: str, per_tick: bool
) -> None:
    ClockWatch.fired = []
    system, _ = load_backtest(_config(tmp_path), executor=executor, per_tick=per_tick)
    result = await run_backtest(system, reference_quotes(N, chunk_rows=1_000))
    last_tick = REFERENCE_START_NS + (N - 1) * 100_000_000
    fired = ClockWatch.fired
    # anchored at the first tick, not at the epoch: 299 whole seconds fit before the last tick
    assert [ts for ts, _, _ in fired] == [REFERENCE_START_NS + k * SECOND for k in range(1, 300)]
    for ts, now, last_seen in fired:
        assert now == ts  # the clock reads the timer's time while it is handled
        # every tick stamped before the timer was delivered first, none at or after it
        assert last_seen == ts - 100_000_000
    assert fired[-1][0] < last_tick
    assert result.fills > 0  # the rest of the system traded as usual meanwhile
