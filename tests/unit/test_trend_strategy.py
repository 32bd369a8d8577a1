"""The trend-following strategy driven directly with bars, corporate actions and order
events: its orders are read from an inbox wired to its ``orders`` port."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from actors.strategies.trend import TrendConfig, TrendStrategy
from engine.actor import RunContext
from engine.clock import ReplayClock
from engine.config import AccountConfig, parse_config
from engine.errors import ConfigError
from engine.instruments import Instrument, InstrumentTable
from engine.mailbox import EMPTY, Edge, Mailbox, Overflow, Quiescence
from engine.messages import (
    Bar,
    BarBatch,
    CorporateActionEvent,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    OrderType,
    QuoteBatch,
    Side,
    TimeInForce,
)
from engine.ticks import BAR_DTYPE, DAILY_NS, empty_bars, empty_quotes
from engine.wiring import System, resolve_kind

AAA, BBB, CCC = "AAA.SIM", "BBB.SIM", "CCC.SIM"
INSTRUMENTS = InstrumentTable(
    Instrument(id=i, asset_class="equity", quote_currency="USD", price_increment=0.01)
    for i in (AAA, BBB, CCC)
)
T0 = 946_684_800 * 10**9 + 21 * 3_600 * 10**9  # 2000-01-01 21:00 UTC, a close


class Harness:
    """One strategy on a replay clock, its orders going into an inbox we read."""

    def __init__(self, *, wire_orders: bool = True, **config: Any) -> None:
        settings: dict[str, Any] = {
            "instruments": [AAA],
            "fast": 3,
            "slow": 5,
            "notional": 10_000.0,
        }
        settings.update(config)
        self.clock = ReplayClock(start_ns=T0)
        ctx = RunContext(
            self.clock, INSTRUMENTS, AccountConfig(currency="USD", starting_balance=1e6)
        )
        self.strategy = TrendStrategy("trend", TrendConfig(kind="trend", **settings), ctx)
        self.strategy.check_config()
        self.sink = Mailbox("sink", 1_000_000, Quiescence())
        if wire_orders:
            self.strategy.ports["orders"].append(Edge("trend.orders", self.sink, Overflow.BLOCK))
        self.strategy.on_start()
        self.ts = T0

    def send(self, msg: Any) -> list[OrderRequest]:
        """Deliver ``msg``; return the orders the strategy sent while handling it."""
        self.strategy.on_message(msg)
        return self.orders()

    def orders(self) -> list[OrderRequest]:
        out = []
        while (msg := self.sink.get_nowait()) is not EMPTY:
            out.append(msg)
        return out

    def bar(self, close: float, instrument: str = AAA, volume: float = 1e6) -> list[OrderRequest]:
        """The next day's bar of ``instrument`` closing at ``close``."""
        self.ts += DAILY_NS
        self.clock.set_time(self.ts)
        return self.send(
            Bar(
                instrument_id=instrument,
                interval_ns=DAILY_NS,
                open=close,
                high=close,
                low=close,
                close=close,
                volume=volume,
                ts_event=self.ts,
                ts_init=self.ts,
            )
        )

    def bars(self, closes: list[float], instrument: str = AAA) -> list[list[OrderRequest]]:
        return [self.bar(c, instrument) for c in closes]

    def fill(
        self,
        order: OrderRequest,
        qty: float,
        *,
        px: float = 10.0,
        leaves: float | None = None,
        strategy_id: str | None = None,
    ) -> None:
        """A fill of ``qty`` of ``order``; complete unless ``leaves`` says what is left."""
        cls = OrderFilled if not leaves else OrderPartiallyFilled
        self.strategy.on_message(
            cls(
                client_order_id=order.client_order_id,
                venue_order_id="v-" + order.client_order_id,
                trade_id=f"t-{self.ts}",
                strategy_id=strategy_id or order.strategy_id,
                instrument_id=order.instrument_id,
                side=order.side,
                last_qty=qty,
                last_px=px,
                leaves_qty=leaves or 0.0,
                commission=0.0,
                commission_currency="USD",
                liquidity="TAKER",
                ts_event=self.ts,
                ts_init=self.ts,
            )
        )

    def corporate_action(self, instrument: str = AAA, **ratios: float) -> list[OrderRequest]:
        return self.send(
            CorporateActionEvent(
                instrument_id=instrument, ts_event=self.ts + 1, ts_init=self.ts + 1, **ratios
            )
        )


def reference_sign(closes: list[float], fast: int, slow: int) -> list[int]:
    """+1/-1/0 per bar for fast SMA above/below/equal the slow one (0 before ``slow`` bars),
    computed with numpy, independently of the strategy's windows."""
    c = np.asarray(closes, dtype=np.float64)
    out = [0] * len(c)
    for i in range(slow - 1, len(c)):
        f = c[i - fast + 1 : i + 1].mean()
        s = c[i - slow + 1 : i + 1].mean()
        out[i] = int(np.sign(f - s))
    return out


def first(flags: list[list[OrderRequest]]) -> int:
    """The index of the first bar that produced an order."""
    return next(i for i, orders in enumerate(flags) if orders)


# --- configuration -------------------------------------------------------------------------


def test_config_is_checked() -> None:
    base = {"kind": "trend", "instruments": [AAA], "notional": 1_000.0}
    with pytest.raises(ValueError, match="0 < fast < slow"):
        TrendConfig(**base, fast=5, slow=5)
    with pytest.raises(ValueError, match="MARKET"):
        TrendConfig(**base, fast=2, slow=5, order_type=OrderType.LIMIT)
    with pytest.raises(ValueError, match="notional"):
        TrendConfig(**{**base, "notional": 0.0}, fast=2, slow=5)
    with pytest.raises(ValueError, match="repeat"):
        TrendConfig(**{**base, "instruments": [AAA, AAA]}, fast=2, slow=5)


TOML = """\
mode = "backtest"

[account]
currency = "USD"
starting_balance = 100_000.0

[[instruments]]
id = "AAPL.NASDAQ"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01

[[instruments]]
id = "SPY.ARCA"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01

[actors.trend]
kind = "trend"
instruments = ["AAPL.NASDAQ", "SPY.ARCA"]
fast = 50
slow = 200
notional = 10_000

[actors.events]
kind = "event_log"

[[edges]]
from = "trend.orders"
to = "events"
"""


def test_builds_from_configuration_as_kind_trend() -> None:
    assert resolve_kind("trend") is TrendStrategy
    system = System(parse_config(TOML), ReplayClock())
    trend = system.actors["trend"]
    assert isinstance(trend, TrendStrategy)
    assert trend.config.slow == 200
    assert trend.config.time_in_force is TimeInForce.GTC
    assert trend.may_act_on_market_data


def test_an_unknown_instrument_is_named_by_its_index() -> None:
    text = TOML.replace('"SPY.ARCA"]', '"SPY.NYSE"]')
    with pytest.raises(ConfigError) as caught:
        System(parse_config(text), ReplayClock())
    assert caught.value.path == "$.actors.trend.instruments[1]"
    assert "SPY.NYSE" in str(caught.value)


# --- decisions -----------------------------------------------------------------------------


def test_no_order_before_slow_bars_then_the_target_quantity() -> None:
    h = Harness()
    sent = h.bars([10.0, 11.0, 12.0, 13.0])
    assert sent == [[], [], [], []]
    assert h.strategy.averages(AAA) is None
    (order,) = h.bar(14.0)
    assert order.client_order_id == "trend-1"
    assert order.strategy_id == "trend"
    assert order.instrument_id == AAA
    assert order.side is Side.BUY
    assert order.quantity == 714.0  # 10_000 / 14 = 714.28..., rounded down to whole shares
    assert order.order_type is OrderType.MARKET
    assert order.time_in_force is TimeInForce.GTC
    assert order.ts_event == h.ts  # decided at the bar's close
    assert h.strategy.averages(AAA) == (13.0, 12.0)


def test_buys_on_the_cross_up_and_sells_to_flat_on_the_cross_down() -> None:
    down_up = [20.0, 19.0, 18.0, 17.0, 16.0, 15.0, 15.5, 16.5, 17.0, 18.0, 19.0]
    up_down = [19.5, 19.0, 18.0, 17.0, 16.0]
    closes = down_up + up_down
    signs = reference_sign(closes, 3, 5)
    cross_up = signs.index(1)
    cross_down = signs.index(-1, cross_up)
    h = Harness()
    sent = h.bars(down_up)
    assert first(sent) == cross_up  # long only: nothing while the fast average is below
    (buy,) = sent[cross_up]
    assert (buy.side, buy.quantity) == (Side.BUY, math.floor(10_000 / closes[cross_up]))
    h.fill(buy, buy.quantity)
    assert h.strategy.position(AAA) == buy.quantity
    later = h.bars(up_down)
    assert first(later) + len(down_up) == cross_down
    (sell,) = later[first(later)]
    assert (sell.side, sell.quantity) == (Side.SELL, buy.quantity)  # flat, not short
    assert sell.client_order_id == "trend-2"


def test_short_targets_minus_notional_and_reverses_through_zero() -> None:
    closes = [20.0, 19.0, 18.0, 17.0, 16.0, 17.0, 18.0, 20.0]
    signs = reference_sign(closes, 3, 5)
    assert signs[4] == -1
    h = Harness(allow_short=True)
    (sell,) = h.bars(closes[:5])[-1]
    assert (sell.side, sell.quantity) == (Side.SELL, 625.0)  # 10_000 / 16
    h.fill(sell, 625.0)
    assert h.strategy.position(AAA) == -625.0
    sent = h.bars(closes[5:])
    assert first(sent) + 5 == signs.index(1)
    (buy,) = sent[first(sent)]
    assert (buy.side, buy.quantity) == (Side.BUY, 625.0 + 500.0)  # to +10_000 / 20


@pytest.mark.parametrize(
    "terminal", [OrderFilled, OrderRejected, OrderDenied, OrderExpired, OrderCancelled]
)
def test_no_order_while_one_is_working(terminal: type) -> None:
    h = Harness(allow_short=True)
    (buy,) = h.bars([10.0, 11.0, 12.0, 13.0, 14.0])[-1]
    h.send(
        OrderAccepted(
            client_order_id=buy.client_order_id,
            venue_order_id="v-1",
            strategy_id="trend",
            instrument_id=AAA,
            ts_event=h.ts,
            ts_init=h.ts,
        )
    )
    # the target moves, then turns short (at 8), but the order is still working: wait
    assert h.bars([9.0, 8.0, 7.0]) == [[], [], []]
    h.fill(buy, 100.0, leaves=buy.quantity - 100.0)
    assert h.bar(6.0) == []  # a partial fill leaves it working
    fields = {"client_order_id": buy.client_order_id, "strategy_id": "trend"}
    fields |= {"instrument_id": AAA, "ts_event": h.ts, "ts_init": h.ts}
    if terminal is OrderFilled:
        h.fill(buy, buy.quantity - 100.0)
    elif terminal in (OrderRejected, OrderDenied):
        h.send(terminal(**fields, reason="test"))
    else:
        h.send(terminal(**fields))
    position = h.strategy.position(AAA)
    assert position == (buy.quantity if terminal is OrderFilled else 100.0)
    (sell,) = h.bar(5.0)
    assert (sell.side, sell.quantity) == (Side.SELL, position + 2_000.0)  # to -10_000 / 5


def test_position_follows_partial_fills_and_the_gap_is_ordered_again() -> None:
    h = Harness()
    (buy,) = h.bars([10.0, 11.0, 12.0, 13.0, 14.0])[-1]
    assert buy.quantity == 714.0
    h.fill(buy, 300.0, leaves=414.0)
    assert h.strategy.position(AAA) == 300.0
    assert h.strategy.working_orders(AAA) == {"trend-1": 414.0}
    h.fill(buy, 200.0, leaves=214.0)
    assert h.strategy.position(AAA) == 500.0
    h.fill(buy, 50.0, strategy_id="other")  # another strategy's fill is not ours
    assert h.strategy.position(AAA) == 500.0
    h.send(
        OrderExpired(
            client_order_id="trend-1",
            strategy_id="trend",
            instrument_id=AAA,
            ts_event=h.ts,
            ts_init=h.ts,
        )
    )
    assert h.strategy.working_orders(AAA) == {}
    (rest,) = h.bar(14.0)
    assert (rest.side, rest.quantity) == (Side.BUY, 214.0)  # 714 - 500, above 25 % of 714


def test_rebalance_threshold_keeps_small_gaps() -> None:
    h = Harness()
    (buy,) = h.bars([10.0, 11.0, 12.0, 13.0, 14.0])[-1]
    h.fill(buy, 714.0)
    # rising: still long, the target shrinks as the price rises
    assert h.bar(16.0) == []  # target 625: gap 89 < 0.25 x 625
    assert h.bar(17.0) == []  # target 588: gap 126 < 147
    (sell,) = h.bar(18.0)  # target 555: gap 159 >= 138.75
    assert (sell.side, sell.quantity) == (Side.SELL, 159.0)


def test_threshold_zero_trades_every_gap() -> None:
    h = Harness(rebalance_threshold=0.0)
    (buy,) = h.bars([10.0, 11.0, 12.0, 13.0, 14.0])[-1]
    h.fill(buy, 714.0)
    (sell,) = h.bar(14.5)  # target 689
    assert (sell.side, sell.quantity) == (Side.SELL, 25.0)
    h.fill(sell, 25.0)
    assert h.bar(14.5) == []  # no gap, no order


def test_a_restart_keeps_the_book_and_warms_the_averages_up_again() -> None:
    h = Harness()
    (buy,) = h.bars([10.0, 11.0, 12.0, 13.0, 14.0])[-1]
    h.fill(buy, 300.0, leaves=414.0)
    h.strategy.on_stop()
    h.strategy.on_start()  # what the supervisor does after a crash
    assert h.strategy.position(AAA) == 300.0
    assert h.strategy.working_orders(AAA) == {"trend-1": 414.0}
    assert h.strategy.averages(AAA) is None
    h.fill(buy, 414.0)
    assert h.bars([10.0, 11.0, 12.0, 13.0]) == [[], [], [], []]
    (sell,) = h.bar(5.0)
    assert sell.client_order_id == "trend-2"  # never an id already used
    assert (sell.side, sell.quantity) == (Side.SELL, 714.0)


# --- corporate actions ---------------------------------------------------------------------


def test_a_split_keeps_the_averages_continuous_and_doubles_the_position() -> None:
    raw = [10.0, 11.0, 12.0, 13.0, 14.0]
    after = [7.1, 7.2, 7.3, 7.4, 7.5]  # the same rise, on the new basis
    # unadjusted, the averages would cross down at the first bar after the split
    assert reference_sign(raw + after, 3, 5)[5] == -1
    h = Harness()
    (buy,) = h.bars(raw)[-1]
    h.fill(buy, 714.0)
    fast, slow = h.strategy.averages(AAA) or (0.0, 0.0)
    assert h.corporate_action(BBB, split_ratio=0.5) == []  # another instrument's
    assert h.strategy.averages(AAA) == (fast, slow)
    assert h.corporate_action(split_ratio=0.5) == []
    assert h.strategy.averages(AAA) == (fast * 0.5, slow * 0.5)
    assert h.strategy.position(AAA) == 1_428.0
    # history already on the new basis: the averages a strategy would have had
    reference = Harness()
    reference.bars([c * 0.5 for c in raw])
    for close in after:
        assert h.bar(close) == []  # no spurious cross; target ~1_400 shares, held 1_428
        reference.bar(close)
        assert h.strategy.averages(AAA) == reference.strategy.averages(AAA)
    assert h.strategy.position(AAA) == 1_428.0


def test_a_split_rescales_working_orders_and_a_dividend_only_prices() -> None:
    h = Harness()
    closes = [10.0, 11.0, 12.0, 13.0, 14.0]
    (buy,) = h.bars(closes)[-1]
    h.fill(buy, 300.0, leaves=414.0)
    h.corporate_action(split_ratio=0.5)
    assert h.strategy.position(AAA) == 600.0
    assert h.strategy.working_orders(AAA) == {"trend-1": 828.0}  # the venue does the same
    h.fill(buy, 828.0)
    assert h.strategy.position(AAA) == 1_428.0
    assert h.strategy.working_orders(AAA) == {}
    h.corporate_action(dividend_ratio=0.99)
    assert h.strategy.position(AAA) == 1_428.0  # a dividend changes no quantity
    window = [c * 0.5 * 0.99 for c in closes]
    assert h.strategy.averages(AAA) == (math.fsum(window[2:]) / 3, math.fsum(window) / 5)


# --- batches -------------------------------------------------------------------------------

IDS = (CCC, "ZZZ.SIM", AAA, BBB)
"""The batch's ``instrument`` column indexes these: another order than the instrument
table's, and an instrument the strategy does not trade."""


def random_walk(seed: int, days: int, *, split_bbb_on: int | None = None) -> np.ndarray:
    """Daily bars of the four instruments of ``IDS``, in a shuffled order each day.
    With ``split_bbb_on``, BBB splits 2:1 before that day's bar (raw prices halve)."""
    gen = np.random.default_rng(seed)
    rows = []
    close = np.full(len(IDS), 50.0)
    for day in range(days):
        ts = T0 + day * DAILY_NS
        for col in gen.permutation(len(IDS)):
            if day == split_bbb_on and IDS[col] == BBB:
                close[col] *= 0.5
            open_ = round(close[col] * math.exp(gen.normal(0.0, 0.005)), 2)
            close[col] = round(close[col] * math.exp(gen.normal(0.0, 0.03)), 2)
            volume = float(gen.integers(1_000, 20_000))
            rows.append((ts, ts, col, DAILY_NS, open_, close[col], close[col], close[col], volume))
    return np.array(rows, dtype=BAR_DTYPE)


def batch_of(bars: np.ndarray) -> BarBatch:
    ts = int(bars["ts_event"][-1])
    return BarBatch(data=bars, instrument_ids=IDS, ts_event=ts, ts_init=ts)


def bar_of(row: np.void) -> Bar:
    return Bar(
        instrument_id=IDS[int(row["instrument"])],
        interval_ns=int(row["interval_ns"]),
        open=float(row["open"]),
        high=float(row["high"]),
        low=float(row["low"]),
        close=float(row["close"]),
        volume=float(row["volume"]),
        ts_event=int(row["ts_event"]),
        ts_init=int(row["ts_init"]),
    )


def book(strategy: TrendStrategy) -> tuple[Any, ...]:
    """Everything the strategy decides from, as plain values."""
    return (
        {k: list(v) for k, v in strategy.closes.items()},
        dict(strategy.positions),
        {k: (v.instrument_id, v.side, v.leaves) for k, v in strategy.working.items()},
        strategy.order_seq,
    )


MULTI: dict[str, Any] = {
    "instruments": [AAA, BBB, CCC],
    "fast": 3,
    "slow": 10,
    "allow_short": True,
}


def test_scan_batch_finds_the_row_on_message_acts_on_and_changes_nothing(rand_seed: int) -> None:
    bars = random_walk(rand_seed, 60)
    per_bar = Harness(**MULTI)
    expected = []
    for i, row in enumerate(bars):
        per_bar.clock.set_time(int(row["ts_event"]))
        expected.extend((i, o) for o in per_bar.send(bar_of(row)))
    assert len(expected) >= 3, f"too few orders to test (rand_seed={rand_seed})"

    h = Harness(**MULTI)
    acted = []
    start = 0
    while start < len(bars):
        before = book(h.strategy)
        k = h.strategy.scan_batch(bars[start:], IDS)
        assert book(h.strategy) == before
        assert h.strategy.scan_batch(bars[start:], IDS) == k  # so the same answer again
        n = min(k + 1, len(bars) - start)
        h.clock.set_time(int(bars["ts_event"][start + n - 1]))
        sent = h.send(batch_of(bars[start : start + n]))
        if k < len(bars) - start:
            assert len(sent) == 1, f"row {start + k}: scan said an order, got {sent}"
        else:
            assert sent == []
        acted.extend((start + k, o) for o in sent)
        start += n
    assert acted == expected


def test_other_market_data_is_not_acted_on() -> None:
    h = Harness(**MULTI)
    assert h.strategy.scan_batch(empty_quotes(5), IDS) == 5
    before = book(h.strategy)
    assert (
        h.send(QuoteBatch(data=empty_quotes(5), instrument_ids=IDS, ts_event=T0, ts_init=T0)) == []
    )
    assert book(h.strategy) == before
    assert h.strategy.scan_batch(empty_bars(0), IDS) == 0


def test_with_orders_unwired_it_keeps_its_averages_and_never_acts(rand_seed: int) -> None:
    bars = random_walk(rand_seed, 30)
    quiet = Harness(wire_orders=False, **MULTI)
    assert not quiet.strategy.may_act_on_market_data
    assert quiet.strategy.scan_batch(bars, IDS) == len(bars)
    quiet.send(batch_of(bars))
    loud = Harness(**MULTI)
    for row in bars:
        loud.send(bar_of(row))
    assert quiet.strategy.averages(AAA) == loud.strategy.averages(AAA) is not None
    assert quiet.strategy.order_seq == 0


class FakeVenue:
    """Fills market orders at the open of the next bar of their instrument, for at most
    ``participation`` x that bar's volume (whole shares); the rest keeps working."""

    def __init__(self, participation: float) -> None:
        self.participation = participation
        self.working: dict[str, list[Any]] = {}  # client order id: [order, leaves]

    def accept(self, orders: list[OrderRequest]) -> None:
        for order in orders:
            self.working[order.client_order_id] = [order, order.quantity]

    def scan(self, bars: np.ndarray) -> int:
        busy = {order.instrument_id for order, _ in self.working.values()}
        for i, col in enumerate(bars["instrument"]):
            if IDS[col] in busy:
                return i
        return len(bars)

    def on_bars(self, bars: np.ndarray) -> list[OrderPartiallyFilled]:
        fills: list[OrderPartiallyFilled] = []
        for row in bars:
            inst = IDS[int(row["instrument"])]
            for coid, entry in list(self.working.items()):
                order, leaves = entry
                qty = min(leaves, math.floor(self.participation * float(row["volume"])))
                if order.instrument_id != inst or qty <= 0:
                    continue
                leaves -= qty
                cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
                ts = int(row["ts_event"])
                fills.append(
                    cls(
                        client_order_id=coid,
                        venue_order_id=f"v-{coid}",
                        trade_id=f"{coid}-{len(fills)}",
                        strategy_id=order.strategy_id,
                        instrument_id=inst,
                        side=order.side,
                        last_qty=qty,
                        last_px=float(row["open"]),
                        leaves_qty=leaves,
                        commission=0.0,
                        commission_currency="USD",
                        liquidity="TAKER",
                        ts_event=ts,
                        ts_init=ts,
                    )
                )
                if leaves == 0:
                    del self.working[coid]
                else:
                    entry[1] = leaves
        return fills

    def split(self, inst: str, ratio: float) -> None:
        for entry in self.working.values():
            if entry[0].instrument_id == inst:
                entry[1] /= ratio


def replay(
    bars: np.ndarray, split: CorporateActionEvent, *, batched: bool
) -> tuple[list[OrderRequest], list[OrderPartiallyFilled], tuple[Any, ...], int]:
    """Bars through the strategy and the fake venue, as the replay would: one at a time, or
    in batches cut just after the first row at which either would act (and never across
    the corporate action, which comes before its ex-date's bars)."""
    h = Harness(**MULTI, notional=30_000.0)
    venue = FakeVenue(participation=0.1)
    orders: list[OrderRequest] = []
    fills: list[OrderPartiallyFilled] = []
    ex_row = int(np.searchsorted(bars["ts_event"], split.ts_event))
    start = batches = 0
    while start < len(bars):
        if start == ex_row:
            h.send(split)
            venue.split(split.instrument_id, split.split_ratio)
        end = ex_row if start < ex_row else len(bars)
        if batched:
            window = bars[start:end]
            k = min(h.strategy.scan_batch(window, IDS), venue.scan(window))
            n = min(k + 1, len(window))
        else:
            n = 1
        batch = bars[start : start + n]
        h.clock.set_time(int(batch["ts_event"][-1]))
        for fill in venue.on_bars(batch):
            h.send(fill)
            fills.append(fill)
        sent = h.send(batch_of(batch) if batched else bar_of(batch[0]))
        assert len(sent) <= 1  # at most one row acts: the last
        venue.accept(sent)
        orders.extend(sent)
        start += n
        batches += 1
    return orders, fills, book(h.strategy), batches


def test_batched_and_per_bar_replays_decide_the_same(rand_seed: int) -> None:
    days = 250
    bars = random_walk(rand_seed, days, split_bbb_on=120)
    ex_ts = T0 + 120 * DAILY_NS - DAILY_NS // 2
    split = CorporateActionEvent(instrument_id=BBB, split_ratio=0.5, ts_event=ex_ts, ts_init=ex_ts)
    orders, fills, final, one_by_one = replay(bars, split, batched=False)
    b_orders, b_fills, b_final, in_batches = replay(bars, split, batched=True)
    seed = f"(rand_seed={rand_seed})"
    assert len(orders) >= 20, f"too few orders to compare {seed}"
    assert sum(type(f) is OrderPartiallyFilled for f in fills) >= 5, f"no partial fills {seed}"
    assert {o.instrument_id for o in orders} == {AAA, BBB, CCC}
    assert in_batches < one_by_one / 2, f"batches were not batched {seed}"
    assert b_orders == orders, seed
    assert b_fills == fills, seed
    assert b_final == final, seed
    # positions are the fills, signed (AAA and CCC had no split)
    positions = final[1]
    for inst in (AAA, CCC):
        signed = sum(f.side.sign * f.last_qty for f in fills if f.instrument_id == inst)
        assert positions[inst] == signed, seed
