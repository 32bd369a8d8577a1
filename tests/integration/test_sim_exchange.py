"""The simulated exchange actor (:class:`adapters.sim_exchange.SimExchange`) on a replay
clock: order, cancel and market-data latencies, what an order sees when it arrives, the
slippage that latency causes, and DAY orders expiring at the session close, both driven
by hand and through a whole backtest (engine.backtest) with a scripted strategy."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from adapters.sim_exchange import SimExchange, SimExchangeConfig
from engine.actor import Actor as BaseActor
from engine.actor import ActorConfig, RunContext
from engine.backtest import load_backtest, run_backtest
from engine.clock import ReplayClock
from engine.config import AccountConfig
from engine.instruments import Instrument, InstrumentTable
from engine.mailbox import EMPTY
from engine.messages import (
    CancelOrder,
    Message,
    OrderCancelled,
    OrderExpired,
    OrderPartiallyFilled,
    OrderRequest,
    OrderType,
    QuoteTick,
    Side,
    TimeInForce,
    TimerFired,
)
from engine.ticks import QUOTE_DTYPE, QuoteArray

MS = 1_000_000
MINUTE = 60_000 * MS
T = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC

ABC = Instrument(id="ABC.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01)
INSTRUMENTS = InstrumentTable([ABC])

_ids = itertools.count(1)


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp()) * 1_000_000_000


def request(
    side: Side,
    quantity: float,
    *,
    limit: float | None = None,
    tif: TimeInForce = TimeInForce.GTC,
    client_order_id: str | None = None,
    ts: int = T,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id or f"o-{next(_ids)}",
        strategy_id="script",
        instrument_id=ABC.id,
        side=side,
        quantity=quantity,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=limit,
        time_in_force=tif,
        ts_event=ts,
        ts_init=ts,
    )


def cancel(client_order_id: str, ts: int = T) -> CancelOrder:
    return CancelOrder(
        client_order_id=client_order_id,
        strategy_id="script",
        instrument_id=ABC.id,
        ts_event=ts,
        ts_init=ts,
    )


def summary(events: list[Message]) -> list[tuple[Any, ...]]:
    """(event, client order id, ts_event) and for fills (qty, price, leaves, liquidity)."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        row: tuple[Any, ...] = (type(e).__name__, e.client_order_id, e.ts_event)  # type: ignore[attr-defined]
        if isinstance(e, OrderPartiallyFilled):
            row += (e.last_qty, e.last_px, e.leaves_qty, e.liquidity)
        out.append(row)
    return out


class RecordingExchange(SimExchange):
    """The real actor, its events collected instead of sent on."""

    def __init__(self, name: str, config: SimExchangeConfig, ctx: RunContext) -> None:
        super().__init__(name, config, ctx)
        self.sent: list[Message] = []

    def emit(self, port: str, msg: Any) -> None:
        assert port == "events"
        self.sent.append(msg)


class Venue:
    """One SimExchange on a replay clock, driven the way the replay scheduler drives it:
    timers due at or before a quote's time fire (and are handled) before that quote."""

    def __init__(self, start: int = T, **config: Any) -> None:
        self.clock = ReplayClock(start)
        ctx = RunContext(
            self.clock, INSTRUMENTS, AccountConfig(currency="USD", starting_balance=1e6)
        )
        cfg = SimExchangeConfig(kind="sim_exchange", **config)
        self.actor = RecordingExchange("exchange", cfg, ctx)
        self.actor.on_start()

    @property
    def events(self) -> list[Message]:
        return self.actor.sent

    def _handle_inbox(self) -> None:
        while (msg := self.actor.inbox.get_nowait()) is not EMPTY:
            self.actor.on_message(msg)

    def run_until(self, ts: int) -> None:
        while (due := self.clock.next_timer_ts()) is not None and due <= ts:
            self.clock.fire_next()
            self._handle_inbox()
        self.clock.set_time(ts)

    def quote(
        self, ts: int, bid: float, ask: float, bid_size: float = 0.0, ask_size: float = 0.0
    ) -> None:
        self.run_until(ts)
        tick = QuoteTick(
            instrument_id=ABC.id,
            bid=bid,
            ask=ask,
            bid_size=bid_size,
            ask_size=ask_size,
            ts_event=ts,
            ts_init=ts,
        )
        self.actor.on_message(tick)

    def send(self, ts: int, msg: OrderRequest | CancelOrder) -> None:
        self.run_until(ts)
        self.actor.on_message(msg)

    def restart(self) -> None:
        """What the supervisor does to a crashed actor: on_stop, timers cancelled, on_start."""
        self.actor.on_stop()
        self.actor.cancel_all_timers()
        self.actor.on_start()


# --- latency -------------------------------------------------------------------------------


def test_without_latency_an_order_trades_on_receipt() -> None:
    v = Venue()
    v.quote(T, 99.98, 100.00)
    o = request(Side.BUY, 5.0)
    v.send(T + 1 * MS, o)
    assert summary(v.events) == [
        ("OrderAccepted", o.client_order_id, T + MS),
        ("OrderFilled", o.client_order_id, T + MS, 5.0, 100.00, 0.0, "TAKER"),
    ]
    assert v.clock.next_timer_ts() is None


def test_order_arrives_after_order_and_market_data_latency_and_trades_on_the_quote_then() -> None:
    v = Venue(latency_ms=100.0, market_data_latency_ms=50.0)
    v.quote(T, 100.00, 100.02)  # mid 100.01 when the order reaches the gateway
    o = request(Side.BUY, 10.0)
    v.send(T + 10 * MS, o)
    arrival = T + 10 * MS + 150 * MS
    assert v.clock.next_timer_ts() == arrival
    v.quote(T + 100 * MS, 100.04, 100.06)  # the market moves while the order travels
    v.run_until(arrival - 1)
    assert v.events == []  # nothing before it arrives
    v.quote(arrival + 5 * MS, 100.50, 100.52)  # after the arrival: too late for this order
    assert summary(v.events) == [
        ("OrderAccepted", o.client_order_id, arrival),
        ("OrderFilled", o.client_order_id, arrival, 10.0, 100.06, 0.0, "TAKER"),
    ]
    fill = v.events[1]
    assert isinstance(fill, OrderPartiallyFilled)
    assert fill.spread_cost == pytest.approx(0.10)  # (100.06 - 100.05) x 10
    assert fill.slippage_cost == pytest.approx(0.40)  # (100.05 - 100.01) x 10: moved against


def test_a_favourable_move_during_latency_is_negative_slippage() -> None:
    v = Venue(latency_ms=20.0)
    v.quote(T, 100.00, 100.02)
    v.send(T + MS, request(Side.SELL, 4.0))
    v.quote(T + 10 * MS, 100.06, 100.08)  # mid up 0.06: good for a sell
    v.run_until(T + 30 * MS)
    fill = v.events[-1]
    assert isinstance(fill, OrderPartiallyFilled)
    assert (fill.last_px, fill.ts_event) == (100.06, T + 21 * MS)
    assert fill.slippage_cost == pytest.approx(-0.24)  # -(100.07 - 100.01) x 4
    assert fill.spread_cost == pytest.approx(0.04)


def test_a_market_order_in_flight_meets_the_displayed_size_at_arrival() -> None:
    v = Venue(latency_ms=10.0)
    v.quote(T, 99.98, 100.00, 50.0, 30.0)
    o = request(Side.BUY, 10.0)
    v.send(T + MS, o)
    v.quote(T + 5 * MS, 100.00, 100.01, 50.0, 3.0)
    v.quote(T + 20 * MS, 100.02, 100.04, 50.0, 4.0)
    v.quote(T + 30 * MS, 100.05, 100.07, 50.0, 0.0)  # size unknown: the rest
    assert summary(v.events)[1:] == [
        ("OrderPartiallyFilled", o.client_order_id, T + 11 * MS, 3.0, 100.01, 7.0, "TAKER"),
        ("OrderPartiallyFilled", o.client_order_id, T + 20 * MS, 4.0, 100.04, 3.0, "TAKER"),
        ("OrderFilled", o.client_order_id, T + 30 * MS, 3.0, 100.07, 0.0, "TAKER"),
    ]


def test_cancel_that_arrives_before_the_fill_cancels_the_order() -> None:
    v = Venue(latency_ms=5.0, cancel_latency_ms=20.0)
    v.quote(T, 99.90, 100.00)
    o = request(Side.BUY, 3.0, limit=99.50)
    v.send(T, o)
    v.send(T + 10 * MS, cancel(o.client_order_id))  # reaches the venue at T + 30 ms
    v.quote(T + 29 * MS, 99.60, 99.70)
    v.quote(T + 40 * MS, 99.40, 99.50)  # would have filled it
    assert summary(v.events) == [
        ("OrderAccepted", o.client_order_id, T + 5 * MS),
        ("OrderCancelled", o.client_order_id, T + 30 * MS),
    ]
    assert isinstance(v.events[1], OrderCancelled)
    assert not v.actor.venue.working


def test_cancel_that_arrives_after_the_fill_is_rejected_and_changes_nothing() -> None:
    v = Venue(latency_ms=5.0, cancel_latency_ms=20.0)
    v.quote(T, 99.90, 100.00)
    o = request(Side.BUY, 3.0, limit=99.50)
    v.send(T, o)
    v.send(T + 10 * MS, cancel(o.client_order_id))
    v.quote(T + 20 * MS, 99.40, 99.50)  # fills while the cancel is on its way
    v.run_until(T + 60 * MS)
    assert summary(v.events) == [
        ("OrderAccepted", o.client_order_id, T + 5 * MS),
        ("OrderFilled", o.client_order_id, T + 20 * MS, 3.0, 99.50, 0.0, "MAKER"),
        ("OrderCancelRejected", o.client_order_id, T + 30 * MS),
    ]
    assert v.events[-1].reason == f"{o.client_order_id} is not working at SIM"  # type: ignore[attr-defined]
    assert v.clock.next_timer_ts() is None


def test_cancel_latency_defaults_to_the_order_latency_without_market_data_latency() -> None:
    v = Venue(latency_ms=100.0, market_data_latency_ms=50.0)
    v.quote(T, 99.90, 100.00)
    o = request(Side.BUY, 3.0, limit=99.50)
    v.send(T, o)  # arrives at T + 150 ms
    v.send(T + 200 * MS, cancel(o.client_order_id))  # arrives at T + 300 ms
    v.run_until(T + 400 * MS)
    assert summary(v.events) == [
        ("OrderAccepted", o.client_order_id, T + 150 * MS),
        ("OrderCancelled", o.client_order_id, T + 300 * MS),
    ]


def test_orders_sent_together_arrive_in_the_order_sent_and_share_the_displayed_size() -> None:
    v = Venue(latency_ms=10.0)
    v.quote(T, 99.98, 100.00, 50.0, 4.0)
    first, second = request(Side.BUY, 3.0), request(Side.BUY, 3.0)
    v.send(T + MS, first)
    v.send(T + MS, second)
    v.quote(T + 20 * MS, 99.99, 100.01, 50.0, 10.0)
    fills = [s for s in summary(v.events) if s[0] != "OrderAccepted"]
    assert fills == [
        ("OrderFilled", first.client_order_id, T + 11 * MS, 3.0, 100.00, 0.0, "TAKER"),
        ("OrderPartiallyFilled", second.client_order_id, T + 11 * MS, 1.0, 100.00, 2.0, "TAKER"),
        ("OrderFilled", second.client_order_id, T + 20 * MS, 2.0, 100.01, 0.0, "TAKER"),
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latency_ms", -1.0, "latency_ms must not be negative"),
        ("cancel_latency_ms", -0.5, "cancel_latency_ms must not be negative"),
        ("market_data_latency_ms", -2.0, "market_data_latency_ms must not be negative"),
        ("day_close", "4pm", "day_close must be HH:MM"),
        ("day_close", "24:00", "day_close must be HH:MM"),
        ("timezone", "Mars/Olympus", "unknown timezone"),
    ],
)
def test_config_is_checked(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimExchangeConfig(kind="sim_exchange", **{field: value})


# --- DAY orders ----------------------------------------------------------------------------

MONDAY = utc("2013-10-07T14:00:00+00:00")
CLOSE = utc("2013-10-07T20:00:00+00:00")  # 16:00 in New York (EDT)
NEW_YORK = {"day_close": "16:00", "timezone": "America/New_York"}


def test_day_order_expires_at_the_session_close_and_a_gtc_one_keeps_working() -> None:
    v = Venue(MONDAY, latency_ms=100.0, **NEW_YORK)
    v.quote(MONDAY, 99.90, 100.00)
    day = request(Side.BUY, 5.0, limit=99.00, tif=TimeInForce.DAY)
    gtc = request(Side.BUY, 5.0, limit=99.00)
    v.send(MONDAY + MINUTE, day)
    v.send(MONDAY + MINUTE, gtc)
    v.quote(CLOSE - MS, 99.50, 99.60)
    assert [s[0] for s in summary(v.events)] == ["OrderAccepted", "OrderAccepted"]
    # a quote at the close itself comes after the expiry, as in a replay
    v.quote(CLOSE, 98.80, 98.90)
    assert summary(v.events)[2:] == [
        ("OrderExpired", day.client_order_id, CLOSE),
        ("OrderFilled", gtc.client_order_id, CLOSE, 5.0, 99.00, 0.0, "MAKER"),
    ]
    expired = v.events[2]
    assert isinstance(expired, OrderExpired)
    assert expired.reason == "DAY order: the session closed"


def test_day_orders_of_two_sessions_expire_each_at_its_own_close() -> None:
    v = Venue(MONDAY, **NEW_YORK)
    v.quote(MONDAY, 99.90, 100.00)
    monday = request(Side.BUY, 1.0, limit=90.00, tif=TimeInForce.DAY)
    v.send(MONDAY, monday)
    # sent after Monday's close (evening in New York): Tuesday's order
    tuesday = request(Side.BUY, 1.0, limit=90.00, tif=TimeInForce.DAY)
    v.send(CLOSE + 3 * 60 * MINUTE, tuesday)
    v.run_until(CLOSE + 2 * 86_400 * 10**9)
    expiries = [s for s in summary(v.events) if s[0] == "OrderExpired"]
    assert expiries == [
        ("OrderExpired", monday.client_order_id, CLOSE),
        ("OrderExpired", tuesday.client_order_id, CLOSE + 86_400 * 10**9),
    ]
    assert v.clock.next_timer_ts() is None


def test_a_day_order_that_filled_sets_off_no_expiry() -> None:
    v = Venue(MONDAY, **NEW_YORK)
    v.quote(MONDAY, 99.90, 100.00)
    day = request(Side.BUY, 1.0, tif=TimeInForce.DAY)
    v.send(MONDAY, day)
    v.run_until(CLOSE + MINUTE)
    assert [s[0] for s in summary(v.events)] == ["OrderAccepted", "OrderFilled"]


def test_day_order_still_expires_after_the_exchange_actor_restarts() -> None:
    v = Venue(MONDAY, **NEW_YORK)
    v.quote(MONDAY, 99.90, 100.00)
    day = request(Side.BUY, 1.0, limit=90.00, tif=TimeInForce.DAY)
    v.send(MONDAY, day)
    v.restart()  # the venue's working orders survive a restart of its actor
    assert list(v.actor.venue.working) == [day.client_order_id]
    v.quote(CLOSE + MINUTE, 99.90, 100.00)
    assert summary(v.events)[1:] == [("OrderExpired", day.client_order_id, CLOSE)]


# --- through a whole backtest ------------------------------------------------------------------


class Script(BaseActor[ActorConfig]):
    """Sends the orders of ``plan`` at their times (timers set at start)."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ("orders",)
    plan: ClassVar[list[tuple[int, OrderRequest | CancelOrder]]] = []

    def on_start(self) -> None:
        for k, (ts, _) in enumerate(Script.plan):
            self.timer_at(ts, f"send-{k}", k)

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, TimerFired):
            self.emit("orders", Script.plan[msg.payload][1])


class Tape(BaseActor[ActorConfig]):
    """Records every event the exchange sends."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    seen: ClassVar[list[Message]] = []

    def on_message(self, msg: Any) -> None:
        Tape.seen.append(msg)


BACKTEST = """
mode = "backtest"

[account]
currency = "USD"
starting_balance = 1_000_000.0

[[instruments]]
id = "ABC.SIM"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01

[replay]
batch_size = 64

[actors.feed]
kind = "replay_feed"

[actors.script]
kind = "tests.integration.test_sim_exchange:Script"

[actors.exchange]
kind = "sim_exchange"
latency_ms = 100.0
day_close = "16:00"
timezone = "America/New_York"
costs = { by_asset_class = { equity = { per_unit = 0.005, minimum = 1.0, maximum_rate = 0.01 } } }

[actors.tape]
kind = "tests.integration.test_sim_exchange:Tape"

[[edges]]
from = "feed.ticks"
to = "exchange"

[[edges]]
from = "script.orders"
to = "exchange"

[[edges]]
from = "exchange.events"
to = "tape"
"""


def at(hhmm: str) -> int:
    return utc(f"2013-10-07T{hhmm}:00+00:00")


def _monday_quotes() -> QuoteArray:
    rows = [
        ("13:30", 99.98, 100.00, 50.0, 3.0),
        ("14:30", 99.98, 100.00, 50.0, 3.0),
        ("15:00", 100.03, 100.05, 50.0, 4.0),
        ("15:30", 100.08, 100.10, 50.0, 10.0),
        *[(f"{h}:{m}", 100.00, 100.02, 50.0, 50.0) for h in range(16, 20) for m in ("00", "30")],
        ("20:00", 98.80, 98.90, 50.0, 50.0),  # at the close: through both limits
        ("20:30", 99.50, 99.52, 50.0, 50.0),
        ("22:00", 99.50, 99.52, 50.0, 50.0),
    ]
    arr = np.zeros(len(rows), dtype=QUOTE_DTYPE)
    for k, (hhmm, bid, ask, bid_size, ask_size) in enumerate(rows):
        ts = at(hhmm)
        arr[k] = (ts, ts, 0, 0, bid, ask, bid_size, ask_size)
    return arr


@pytest.mark.parametrize(
    ("per_tick", "executor"), [(True, "inline"), (False, "inline"), (False, "tasks")]
)
async def test_backtest_walks_the_book_and_expires_day_orders_at_the_close(
    tmp_path: Path, per_tick: bool, executor: str
) -> None:
    day = request(Side.BUY, 50.0, limit=99.00, tif=TimeInForce.DAY, client_order_id="day")
    gtc = request(Side.BUY, 50.0, limit=99.00, client_order_id="gtc")
    big = request(Side.BUY, 10.0, client_order_id="big")
    Script.plan = [(at("14:05"), day), (at("14:05"), gtc), (at("14:35"), big)]
    Tape.seen = []
    config = tmp_path / "sim.toml"
    config.write_text(BACKTEST)
    system, _ = load_backtest(config, per_tick=per_tick, executor=executor)
    await run_backtest(system, iter([_monday_quotes()]))

    arrive = 100 * MS
    assert summary(Tape.seen) == [
        ("OrderAccepted", "day", at("14:05") + arrive),
        ("OrderAccepted", "gtc", at("14:05") + arrive),
        ("OrderAccepted", "big", at("14:35") + arrive),
        # larger than the 3 shown: the rest works over the next quotes at their prices
        ("OrderPartiallyFilled", "big", at("14:35") + arrive, 3.0, 100.00, 7.0, "TAKER"),
        ("OrderPartiallyFilled", "big", at("15:00"), 4.0, 100.05, 3.0, "TAKER"),
        ("OrderFilled", "big", at("15:30"), 3.0, 100.10, 0.0, "TAKER"),
        # the session closes at 16:00 New York time: the DAY order expires then, exactly,
        # before the quote stamped with the close reaches the book
        ("OrderExpired", "day", CLOSE),
        ("OrderFilled", "gtc", CLOSE, 50.0, 99.00, 0.0, "MAKER"),
    ]
    fills = [e for e in Tape.seen if isinstance(e, OrderPartiallyFilled)]
    # 0.005 a share with a 1.00 minimum: 3 -> 1.00, 4 -> 1.00, 3 -> 1.00, 50 -> 1.00 (0.25)
    assert [f.commission for f in fills] == [1.00, 1.00, 1.00, 1.00]


def test_orders_on_their_way_survive_a_restart_of_the_exchange_actor() -> None:
    v = Venue(latency_ms=50.0)
    v.quote(T, 99.90, 100.00)
    o = request(Side.BUY, 2.0)
    v.send(T, o)
    # the actor crashes and is restarted while the order travels
    v.actor.cancel_all_timers()
    v.actor.on_stop()
    v.actor.on_start()
    v.run_until(T + 100 * MS)
    assert [e[0] for e in summary(v.events)] == ["OrderAccepted", "OrderFilled"]
    assert summary(v.events)[0][2] == T + 50 * MS  # it arrived when it was due
    assert not v.actor.in_flight
