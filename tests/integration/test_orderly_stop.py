"""Orders in flight at stop: nothing is lost when the data ends or the daemon stops.

A simulated exchange with latency holds every order on a clock timer until it "arrives".
When the replay runs out of ticks, or an orderly stop begins, some orders are still on
those timers; the stop must let them arrive, fill and reach the portfolio and the event
log before the actors stop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import numpy as np
import pytest

from engine.actor import Actor, ActorConfig
from engine.backtest import run_backtest
from engine.clock import LiveClock, ReplayClock
from engine.config import parse_config
from engine.messages import (
    OrderAccepted,
    OrderFilled,
    OrderRequest,
    QuoteTick,
    Side,
)
from engine.supervisor import Supervisor
from engine.ticks import QUOTE_DTYPE, QuoteArray
from engine.wiring import System
from tests.helpers import eventually

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14, any fixed start works


class RecorderConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Recorder(Actor[RecorderConfig]):
    """Keeps every message it receives (wired into a system as a ``module:Class`` kind)."""

    Config = RecorderConfig
    outputs: ClassVar[tuple[str, ...]] = ()

    def on_start(self) -> None:
        if not hasattr(self, "seen"):
            self.seen: list[Any] = []

    def on_message(self, msg: Any) -> None:
        self.seen.append(msg)

    def of(self, cls: type) -> list[Any]:
        return [m for m in self.seen if type(m) is cls]


RECORDER = f"{__name__}:Recorder"

BACKTEST = f"""\
mode = "backtest"

[account]
currency = "USD"
starting_balance = 100_000.0

[[instruments]]
id = "EURUSD.SIM"
asset_class = "fx"
quote_currency = "USD"
price_increment = 0.00001
size_increment = 1.0

[replay]
executor = "EXECUTOR"

[actors.feed]
kind = "replay_feed"

[actors.validator]
kind = "validator"

[actors.ema]
kind = "ema_cross"
instrument = "EURUSD.SIM"
fast = 3
slow = 8
warmup = 10
quantity = 1000.0

[actors.risk]
kind = "risk_gate"

[actors.router]
kind = "router"

[actors.exchange]
kind = "sim_exchange"
venue = "SIM"
latency_ms = 25.0
costs = {{ taker_rate = 0.0001 }}

[actors.portfolio]
kind = "portfolio"

[actors.events]
kind = "event_log"

[actors.requests]
kind = "{RECORDER}"

[actors.venue_events]
kind = "{RECORDER}"

[[edges]]
from = "feed.ticks"
to = "validator"

[[edges]]
from = "validator.ticks"
to = "exchange"

[[edges]]
from = "validator.ticks"
to = "risk"

[[edges]]
from = "validator.ticks"
to = "ema"

[[edges]]
from = "validator.ticks"
to = "portfolio"

[[edges]]
from = "ema.orders"
to = "risk"

[[edges]]
from = "ema.orders"
to = "events"

[[edges]]
from = "ema.orders"
to = "requests"

[[edges]]
from = "risk.approved"
to = "router"

[[edges]]
from = "risk.events"
to = "events"

[[edges]]
from = "router.venue"
to = "exchange"

[[edges]]
from = "router.events"
to = "events"

[[edges]]
from = "exchange.events"
to = "portfolio"
only = ["OrderFilled", "OrderPartiallyFilled"]

[[edges]]
from = "exchange.events"
to = "risk"
only = ["OrderFilled", "OrderPartiallyFilled", "OrderRejected", "OrderCancelled", "OrderExpired"]

[[edges]]
from = "exchange.events"
to = "events"

[[edges]]
from = "exchange.events"
to = "venue_events"
"""


def sine_quotes(n: int, period: int, spacing_ns: int) -> QuoteArray:
    """A mid price swinging around 1.1 (so the EMAs cross about twice a period)."""
    out = np.zeros(n, dtype=QUOTE_DTYPE)
    ts = T0 + np.arange(n, dtype=np.int64) * spacing_ns
    mid = 1.1 + 0.001 * np.sin(2 * math.pi * np.arange(n) / period)
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["bid"] = np.round(mid - 0.00005, 5)
    out["ask"] = np.round(mid + 0.00005, 5)
    out["bid_size"] = 1e6
    out["ask_size"] = 1e6
    return out


@pytest.mark.parametrize("executor", ["inline", "tasks"])
async def test_orders_in_flight_when_the_data_ends_are_all_filled(executor: str) -> None:
    config = parse_config(BACKTEST.replace("EXECUTOR", executor))
    system = System(config, ReplayClock())
    # 1 ms between ticks, 25 ms latency, a cross about every 20 ticks: the last orders
    # are still travelling when the ticks run out
    ticks = sine_quotes(600, period=40, spacing_ns=MS)
    last_tick_ts = int(ticks["ts_event"][-1])

    result = await asyncio.wait_for(run_backtest(system, source=iter([ticks])), 30.0)

    requests: Recorder = system.actors["requests"]  # type: ignore[assignment]
    venue_events: Recorder = system.actors["venue_events"]  # type: ignore[assignment]
    sent = requests.of(OrderRequest)
    accepted = venue_events.of(OrderAccepted)
    fills = venue_events.of(OrderFilled)
    in_flight = [o for o in sent if o.ts_init + 25 * MS > last_tick_ts]
    assert len(sent) >= 10, "the strategy should have traded on this data"
    assert in_flight, "test setup: no order was in flight when the data ended"

    # every request got its terminal events, none lost at stop
    assert result.orders == len(sent)
    assert result.orders == result.orders_filled + result.denied + result.rejected
    assert result.orders_open == 0
    assert (result.denied, result.rejected) == (0, 0)
    assert sorted(a.client_order_id for a in accepted) == sorted(o.client_order_id for o in sent)
    assert sorted(f.client_order_id for f in fills) == sorted(o.client_order_id for o in sent)
    late = {f.client_order_id: f for f in fills if f.ts_event > last_tick_ts}
    assert sorted(late) == sorted(o.client_order_id for o in in_flight)
    for order in in_flight:
        # arriving after the last tick: filled at the last quote, one latency later
        fill = late[order.client_order_id]
        assert fill.ts_event == order.ts_init + 25 * MS
        assert fill.last_px == (ticks["ask"][-1] if fill.side is Side.BUY else ticks["bid"][-1])

    # the portfolio saw the same fills as the exchange
    portfolio = system.actors["portfolio"].portfolio  # type: ignore[attr-defined]
    assert portfolio.fills == len(fills) == result.fills
    signed = sum(f.last_qty * f.side.sign for f in fills)
    assert result.positions.get("EURUSD.SIM", 0.0) == pytest.approx(signed)
    assert result.commissions == pytest.approx(sum(f.commission for f in fills))

    # nothing queued, nothing on a timer, everyone stopped
    assert system.quiescence.pending == 0
    assert system.clock.pending_drain_timers() == 0  # type: ignore[attr-defined]
    assert {a["state"] for a in result.actors} == {"STOPPED"}
    assert all(a["inbox_depth"] == 0 for a in result.actors)


# --- a live-clock system stopped with orders on the venue's latency timers --------------

LIVE = f"""\
mode = "paper"

[account]
currency = "USD"
starting_balance = 100_000.0

[[instruments]]
id = "EURUSD.SIM"
asset_class = "fx"
quote_currency = "USD"
price_increment = 0.00001
size_increment = 1.0

[actors.feed]
kind = "replay_feed"
per_tick = true

[actors.risk]
kind = "risk_gate"

[actors.router]
kind = "router"

[actors.exchange]
kind = "sim_exchange"
venue = "SIM"
latency_ms = 50.0

[actors.portfolio]
kind = "portfolio"

[actors.events]
kind = "event_log"

[actors.journal]
kind = "{RECORDER}"

[[edges]]
from = "feed.ticks"
to = "exchange"

[[edges]]
from = "feed.ticks"
to = "risk"

[[edges]]
from = "feed.ticks"
to = "portfolio"

[[edges]]
from = "risk.approved"
to = "router"

[[edges]]
from = "risk.events"
to = "events"

[[edges]]
from = "router.venue"
to = "exchange"

[[edges]]
from = "exchange.events"
to = "portfolio"
only = ["OrderFilled", "OrderPartiallyFilled"]

[[edges]]
from = "exchange.events"
to = "risk"
only = ["OrderFilled", "OrderPartiallyFilled", "OrderRejected", "OrderCancelled", "OrderExpired"]

[[edges]]
from = "exchange.events"
to = "events"

[[edges]]
from = "exchange.events"
to = "journal"
"""


@pytest.fixture
async def live_system() -> AsyncIterator[tuple[System, Supervisor, asyncio.Task[None]]]:
    clock = LiveClock()
    system = System(parse_config(LIVE), clock)
    supervisor = Supervisor(
        system.start_order,
        clock,
        system.quiescence,
        trading_state_owner=system.trading_state_owner(),
    )
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(supervisor.started(), 2.0)
    yield system, supervisor, task
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_live_stop_waits_for_orders_on_the_venue_latency_timers(
    live_system: tuple[System, Supervisor, asyncio.Task[None]],
) -> None:
    system, supervisor, task = live_system
    clock = system.clock
    feed, risk = system.actors["feed"], system.actors["risk"]
    events = system.actors["events"]
    journal: Recorder = system.actors["journal"]  # type: ignore[assignment]
    now = clock.now()
    feed.inbox.put_nowait(
        QuoteTick(
            instrument_id="EURUSD.SIM",
            bid=1.10000,
            ask=1.10002,
            bid_size=1e6,
            ask_size=1e6,
            ts_event=now,
            ts_init=now,
        )
    )
    await eventually(lambda: system.quiescence.quiet)
    n = 5
    for i in range(n):
        risk.inbox.put_nowait(
            OrderRequest(
                client_order_id=f"live-{i}",
                strategy_id="manual",
                instrument_id="EURUSD.SIM",
                side=Side.BUY if i % 2 == 0 else Side.SELL,
                quantity=1000.0,
                ts_event=now,
                ts_init=now,
            )
        )
    # all approved and routed; now they travel on the exchange's latency timers
    await eventually(lambda: system.quiescence.quiet and risk.approved == n)  # type: ignore[attr-defined]
    assert events.digest.counts["accepted"] == 0, "test setup: orders arrived before the stop"  # type: ignore[attr-defined]

    drained = await asyncio.wait_for(supervisor.stop(sources=[feed], drain_timeout_s=2.0), 5.0)
    await asyncio.wait_for(task, 2.0)

    assert drained is True
    counts = events.digest.counts  # type: ignore[attr-defined]
    assert (counts["accepted"], counts["fills"]) == (n, n), "orders in flight were lost at stop"
    assert sorted(f.client_order_id for f in journal.of(OrderFilled)) == [
        f"live-{i}" for i in range(n)
    ]
    assert system.actors["portfolio"].portfolio.fills == n  # type: ignore[attr-defined]
    assert all(a.state.value == "STOPPED" for a in system.actors.values())


async def test_live_stop_after_orders_arrived_loses_nothing(
    live_system: tuple[System, Supervisor, asyncio.Task[None]],
) -> None:
    """The same system, stopped once the latency has passed: every order is accounted
    for and every actor stops (the control case for the test above)."""
    system, supervisor, task = live_system
    clock = system.clock
    feed, risk = system.actors["feed"], system.actors["risk"]
    events = system.actors["events"]
    now = clock.now()
    feed.inbox.put_nowait(
        QuoteTick(
            instrument_id="EURUSD.SIM",
            bid=1.10000,
            ask=1.10002,
            bid_size=1e6,
            ask_size=1e6,
            ts_event=now,
            ts_init=now,
        )
    )
    await eventually(lambda: system.quiescence.quiet)
    for i in range(3):
        risk.inbox.put_nowait(
            OrderRequest(
                client_order_id=f"live-{i}",
                strategy_id="manual",
                instrument_id="EURUSD.SIM",
                side=Side.BUY,
                quantity=1000.0,
                ts_event=now,
                ts_init=now,
            )
        )
    await eventually(lambda: events.digest.counts["fills"] == 3, timeout=3.0)  # type: ignore[attr-defined]
    assert await asyncio.wait_for(supervisor.stop(sources=[feed], drain_timeout_s=2.0), 5.0)
    await asyncio.wait_for(task, 2.0)
    assert events.digest.counts["accepted"] == 3  # type: ignore[attr-defined]
    assert system.actors["portfolio"].portfolio.position("EURUSD.SIM").quantity == 3000.0  # type: ignore[attr-defined]
    assert all(a.state.value == "STOPPED" for a in system.actors.values())
