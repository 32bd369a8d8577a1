"""The simulated venue's matching, as pure code: our orders against replayed top of book.

Fills
- An order that can trade on arrival is a taker and trades at the touch (buys at the ask,
  sells at the bid) for at most the **displayed size**; several orders on one quote share
  it. A displayed size of 0 means the source does not publish sizes (Oanda FX): unlimited.
- What a market order could not take keeps working and trades against the following
  quotes at their prices and sizes (it walks the book over time, as far as top-of-book
  data can show). A limit order's remainder rests at its limit.
- A resting limit order fills at its own price (maker) on a quote that crosses it: a buy
  when the ask is at or below the limit, a sell when the bid is at or above it, for at
  most the size displayed on that side.
- Stops: a buy stop triggers when the ask reaches the stop price, a sell stop when the bid
  does; it then works as a market order (STOP) or a limit order (STOP_LIMIT) that has just
  arrived.

Queue position (prints)
- A resting limit order joins the queue at its price behind what is displayed there: the
  bid size if a buy joins the bid, nothing if it improves on it; behind the touch the
  queue cannot be seen, and is taken from the first quote that shows the level at the
  touch. The queue ahead shrinks when a quote shows less at the level (risk averse: we
  assume the cancels were ahead of us) and is gone when the touch moves away through our
  price (everyone ahead has left the level).
- A print at our price by the other side (a seller's print for our buy; a print without
  aggressor counts for both sides) first clears the queue ahead of us; only what is left
  of it fills us, at our price. A print through our price fills us for up to its size:
  the level was taken out. No fill at a price that did not trade or was not quoted.

Bars (an instrument with bars and no quotes)
- An order decided on a bar works from the next bar of its instrument: a market order
  fills at the bar's open, a buy limit at the open if it opened below the limit or else at
  the limit if the low reached it (sells alike), a buy stop triggers if the high reaches
  the stop and fills at the later of the stop and the open. Each bar fills at most
  ``bar_participation`` of its volume across our orders; the rest works on later bars.

Corporate actions
- On a split, working orders of the instrument are put on the new basis: quantities
  divided by the split ratio (down to the lot), limit and stop prices multiplied by it.

Time in force
- GTC works until filled or cancelled. DAY expires at the venue's session close
  (``day_close`` in ``timezone``), through a timer the venue's actor sets.
- IOC trades what it can on arrival and expires the rest; FOK trades in full on arrival or
  expires untouched.

Costs, each reported on the fill (account currency, positive is a cost)
- commission: a schedule per instrument or asset class: a rate on notional (taker and
  maker), a fee per unit (share or contract), a minimum and a maximum per fill, rounded;
- spread: what the fill paid away from the mid (half the spread for a taker, against the
  book it hit; negative for a maker, who earns it, against the book it rested in);
- slippage: how far the mid moved between the decision (the order reaching the venue's
  gateway) and the fill, against the order;
- impact: what the order's own trading cost it, where a :class:`MarketImpact` model is
  configured for the instrument: square-root temporary impact on this fill and the
  permanent impact of earlier fills still in the price. The replayed quotes do not show
  our impact, so it is applied to our fill prices.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
from numba import njit

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)
from engine.ticks import QUOTE_DTYPE, TRADE_DTYPE, last_rows

__all__ = [
    "CommissionSchedule",
    "MarketImpact",
    "SimulatedVenue",
    "VenueCosts",
    "next_session_close",
    "warm_up",
]


# Enum members as module constants, read on every order: on Python 3.11 ``Enum.MEMBER``
# goes through the enum metaclass's ``__getattr__`` hook, ten times the cost of a global.
_BUY = Side.BUY
_MARKET = OrderType.MARKET
_LIMITS = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_STOPS = (OrderType.STOP, OrderType.STOP_LIMIT)
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_DAY = TimeInForce.DAY


class CommissionSchedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Commission of one fill: ``taker_rate`` (or ``maker_rate``) times notional plus
    ``per_unit`` times quantity (per share, per contract), then at least ``minimum`` and at
    most ``maximum_rate`` times notional, rounded to ``rounding`` (cents). A negative
    ``maker_rate`` is a rebate (paid to us; no minimum applies)."""

    taker_rate: float = 0.0
    maker_rate: float | None = None  # None: same as taker
    per_unit: float = 0.0
    minimum: float = 0.0
    maximum_rate: float | None = None
    rounding: float = 0.01

    def __post_init__(self) -> None:
        for name in ("taker_rate", "per_unit", "minimum", "rounding"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def commission(self, notional: float, quantity: float, *, maker: bool) -> float:
        rate = self.maker_rate if (maker and self.maker_rate is not None) else self.taker_rate
        fee = notional * rate + quantity * self.per_unit
        if 0.0 <= fee < self.minimum:  # a negative fee is a rebate: no minimum applies
            fee = self.minimum
        if self.maximum_rate is not None and fee > notional * self.maximum_rate:
            fee = notional * self.maximum_rate
        step = self.rounding
        if step == 0.01:
            return round(fee, 2)
        if step <= 0:
            return fee
        return round(round(fee / step) * step, 10)


class VenueCosts(CommissionSchedule, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The venue's default commission schedule, with overrides by asset class and by
    instrument id (the instrument's own wins)."""

    by_asset_class: dict[str, CommissionSchedule] = {}
    by_instrument: dict[str, CommissionSchedule] = {}

    def schedule_for(self, instrument: Instrument) -> CommissionSchedule:
        own = self.by_instrument.get(instrument.id)
        if own is not None:
            return own
        return self.by_asset_class.get(instrument.asset_class, self)


class MarketImpact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Square-root market impact (Almgren-Chriss) of a taker fill of ``q`` units.

    ``daily_volatility`` is a fraction (0.02 is 2 %), ``daily_volume`` the average daily
    volume in units. The temporary part moves this fill's own price against it by
    ``eta * daily_volatility * sqrt(q / daily_volume)`` of the price; the permanent part
    moves the price of every later fill in the same instrument by ``gamma *
    daily_volatility * q / daily_volume`` of the price (signed by the direction traded),
    halving every ``permanent_half_life_s`` of data time if one is set. Passive (maker)
    fills have none.
    """

    daily_volume: float
    daily_volatility: float
    eta: float = 0.1
    gamma: float = 0.0
    permanent_half_life_s: float | None = None

    def __post_init__(self) -> None:
        if not self.daily_volume > 0:
            raise ValueError("daily_volume must be positive")
        for name in ("daily_volatility", "eta", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.permanent_half_life_s is not None and not self.permanent_half_life_s > 0:
            raise ValueError("permanent_half_life_s must be positive")

    def temporary(self, quantity: float) -> float:
        """Fraction of the price this fill pays for its own impact."""
        return self.eta * self.daily_volatility * math.sqrt(quantity / self.daily_volume)

    def permanent(self, quantity: float) -> float:
        """Fraction of the price the market moves for good after this fill."""
        return self.gamma * self.daily_volatility * quantity / self.daily_volume


def next_session_close(ts: int, close: str, timezone: str) -> int:
    """The first session close (``HH:MM`` local time in ``timezone``) after ``ts`` (ns)."""
    zone = ZoneInfo(timezone)
    hour, minute = (int(part) for part in close.split(":"))
    local = dt.datetime.fromtimestamp(ts / 1e9, tz=zone)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() * 1e9 <= ts:
        day = local.date() + dt.timedelta(days=1)
        candidate = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    return int(candidate.timestamp()) * 1_000_000_000


class _Working:
    """One order at the venue and what is left of it."""

    __slots__ = (
        "decision_mid",
        "expire_ts",
        "instrument",
        "is_buy",
        "leaves",
        "limit",
        "maker",
        "order",
        "queue_ahead",
        "stop",
        "venue_order_id",
    )

    def __init__(
        self, order: OrderRequest, instrument: int, venue_order_id: str, decision_mid: float
    ) -> None:
        self.order = order
        self.instrument = instrument
        self.venue_order_id = venue_order_id
        self.is_buy = order.side is _BUY
        self.leaves = order.quantity
        # a market order (or a triggered stop) trades at any price
        if order.order_type in _LIMITS:
            assert order.limit_price is not None
            self.limit = order.limit_price
        else:
            self.limit = math.inf if self.is_buy else -math.inf
        self.stop = order.stop_price if order.order_type in _STOPS else None
        self.maker = False  # resting: fills at its own price
        self.expire_ts: int | None = None
        self.decision_mid = decision_mid
        # a resting limit's queue ahead of it at its price (units); NaN: not seen yet
        self.queue_ahead = math.nan


class SimulatedVenue:
    """Our orders against the replayed top of book. ``emit`` receives each event."""

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        costs: VenueCosts,
        currency: str,
        emit: Callable[[Message], None],
        *,
        day_close: str = "00:00",
        timezone: str = "UTC",
        impact: dict[str, MarketImpact] | None = None,
        bar_participation: float = 0.1,
    ) -> None:
        if not (0.0 < bar_participation <= 1.0):
            raise ValueError(f"bar_participation must be in (0, 1], got {bar_participation}")
        self.name = name
        self.bar_participation = bar_participation
        self.instruments = instruments
        self.costs = costs
        # each instrument's commission schedule, looked up once rather than on every fill
        self._schedules = [costs.schedule_for(inst) for inst in instruments]
        self.currency = currency
        self.emit = emit
        self.day_close = day_close
        self.timezone = timezone
        n = len(instruments)
        # the book per instrument, as Python floats: read on every order
        self.bid = [math.nan] * n
        self.ask = [math.nan] * n
        self.bid_size = [0.0] * n
        self.ask_size = [0.0] * n
        self.prev_mid = [math.nan] * n  # the book before the latest quote, per instrument
        self.working: dict[str, _Working] = {}
        self.impact: list[MarketImpact | None] = [
            (impact or {}).get(inst.id) for inst in instruments
        ]
        # permanent impact still in the price (a signed fraction) and when it last decayed
        self.permanent = [0.0] * n
        self.permanent_ts = [0] * n
        # per instrument, for the look-ahead: the highest price a working buy would pay,
        # the lowest a sell would take, the lowest untriggered buy stop, the highest sell stop
        self.buy_cross = np.full(n, -np.inf)
        self.sell_cross = np.full(n, np.inf)
        self.buy_stop = np.full(n, np.inf)
        self.sell_stop = np.full(n, -np.inf)
        # resting limits (makers) per instrument, in arrival order, and the highest resting
        # buy and lowest resting sell price: what a print must reach to matter
        self.makers: list[list[_Working]] = [[] for _ in range(n)]
        self.buy_rest = np.full(n, -np.inf)
        self.sell_rest = np.full(n, np.inf)
        # working orders per instrument, and the last bar's close (bar-driven instruments)
        self.n_working = np.zeros(n, dtype=np.int64)
        self.bar_close = [math.nan] * n
        self._order_seq = 0
        self._trade_seq = 0
        self.now = 0

    @property
    def resting(self) -> dict[str, _Working]:
        """Working orders (resting limits, market remainders, untriggered stops)."""
        return self.working

    # --- market data ---------------------------------------------------------------------

    def on_quote(
        self,
        instrument: int,
        bid: float,
        ask: float,
        ts: int,
        bid_size: float = 0.0,
        ask_size: float = 0.0,
    ) -> None:
        self.now = ts
        self.prev_mid[instrument] = (self.bid[instrument] + self.ask[instrument]) * 0.5
        self.bid[instrument] = bid
        self.ask[instrument] = ask
        self.bid_size[instrument] = bid_size
        self.ask_size[instrument] = ask_size
        if self.makers[instrument]:
            self._queue_on_quotes(
                instrument,
                np.array([bid]),
                np.array([ask]),
                np.array([bid_size]),
                np.array([ask_size]),
            )
        if (
            ask > self.buy_cross[instrument]
            and bid < self.sell_cross[instrument]
            and ask < self.buy_stop[instrument]
            and bid > self.sell_stop[instrument]
        ):
            return
        self._match(instrument, ts)

    def on_quote_batch(
        self,
        instrument_col: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        ts: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
    ) -> None:
        """Ticks in order, exactly as :meth:`on_quote` one at a time: quotes that reach no
        working order only update the book; the ones that do are matched."""
        n = len(bid)
        start = 0
        while start < n and self.working:
            k = self.scan(instrument_col, bid, ask, start)
            if k >= n:
                break
            self._set_quotes(instrument_col, bid, ask, bid_size, ask_size, start, k)
            self._queue_on_batch(instrument_col, bid, ask, bid_size, ask_size, start, k)
            self.on_quote(
                int(instrument_col[k]),
                float(bid[k]),
                float(ask[k]),
                int(ts[k]),
                float(bid_size[k]),
                float(ask_size[k]),
            )
            start = k + 1
        if start < n:
            self._set_quotes(instrument_col, bid, ask, bid_size, ask_size, start, n)
            self._queue_on_batch(instrument_col, bid, ask, bid_size, ask_size, start, n)
            self.now = int(ts[-1])

    def _queue_on_batch(
        self,
        instrument_col: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
        start: int,
        end: int,
    ) -> None:
        """Queue positions after quotes ``start:end``, as if seen one at a time."""
        if end <= start:
            return
        single = len(self.makers) == 1
        for i, makers in enumerate(self.makers):
            if not makers:
                continue
            if single:
                rows = slice(start, end)
                self._queue_on_quotes(i, bid[rows], ask[rows], bid_size[rows], ask_size[rows])
                continue
            idx = start + np.flatnonzero(instrument_col[start:end] == i)
            if len(idx):
                self._queue_on_quotes(i, bid[idx], ask[idx], bid_size[idx], ask_size[idx])

    def _queue_on_quotes(
        self,
        instrument: int,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
    ) -> None:
        """What quotes of ``instrument``, in order, tell each resting limit of its queue.
        The order of the quotes does not change the result: a level seen with less
        lowers the queue to that (the least wins), a touch away through our price empties
        it for good, and the first sight of the level sets an unseen queue."""
        for w in self.makers[instrument]:
            q = w.queue_ahead
            if q == 0.0:
                continue
            px, size = (bid, bid_size) if w.is_buy else (ask, ask_size)
            through = px < w.limit if w.is_buy else px > w.limit
            if through.any():
                w.queue_ahead = 0.0
                continue
            at = px == w.limit
            if at.any():
                shown = max(float(size[at].min()), 0.0)
                w.queue_ahead = shown if math.isnan(q) else min(q, shown)

    def _set_quotes(
        self,
        instrument_col: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
        start: int,
        end: int,
    ) -> None:
        """The last quote of each instrument among rows ``start:end`` becomes its book."""
        if end <= start:
            return
        if len(self.bid) == 1:
            last = end - 1
            self.bid[0] = float(bid[last])
            self.ask[0] = float(ask[last])
            self.bid_size[0] = float(bid_size[last])
            self.ask_size[0] = float(ask_size[last])
            return
        seen, rows = last_rows(instrument_col, start, end)
        for inst, row in zip(seen.tolist(), rows.tolist(), strict=True):
            self.bid[inst] = float(bid[row])
            self.ask[inst] = float(ask[row])
            self.bid_size[inst] = float(bid_size[row])
            self.ask_size[inst] = float(ask_size[row])

    def set_book(
        self, instrument: int, bid: float, ask: float, bid_size: float, ask_size: float, ts: int
    ) -> None:
        """Take a quote as the book without matching (the caller knows nothing is working)."""
        self.now = ts
        self.bid[instrument] = bid
        self.ask[instrument] = ask
        self.bid_size[instrument] = bid_size
        self.ask_size[instrument] = ask_size

    def scan(
        self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray, start: int = 0
    ) -> int:
        """Index of the first tick (from ``start``) at which a working order trades or a
        stop triggers, else ``len(bid)``."""
        if not self.working:
            return len(bid)
        return int(
            _first_cross(
                instrument_col,
                bid,
                ask,
                self.buy_cross,
                self.sell_cross,
                self.buy_stop,
                self.sell_stop,
                start,
            )
        )

    def on_trade(self, instrument: int, price: float, size: float, aggressor: int, ts: int) -> None:
        """A print: it fills resting limits whose queue it clears (see module docstring)."""
        self.now = ts
        makers = self.makers[instrument]
        if not makers:
            return
        inst = self.instruments.at(instrument)
        taken = 0.0  # of this print, by our orders already
        done = False
        for w in list(makers):
            if w.is_buy:
                if aggressor > 0 or price > w.limit:
                    continue
            elif aggressor < 0 or price < w.limit:
                continue
            if price == w.limit:
                q = w.queue_ahead
                if math.isnan(q):  # the level was never seen at the touch
                    continue
                left = size - taken - q
                w.queue_ahead = max(0.0, q - size)
            else:  # traded through our price: the level is gone
                left = size - taken
                w.queue_ahead = 0.0
            if left <= 0:
                continue
            qty = _floor_to_lot(min(w.leaves, left), inst.size_increment)
            if qty <= 0:
                continue
            taken += qty
            self._trade(w, qty, w.limit, ts, mid=self.mid(instrument))
            if w.leaves <= 0:
                self.working.pop(w.order.client_order_id, None)
                done = True
        if done:
            self._refresh(instrument)

    def on_trade_batch(
        self,
        instrument_col: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        aggressor: np.ndarray,
        ts: np.ndarray,
    ) -> None:
        """Prints in order, exactly as :meth:`on_trade` one at a time."""
        n = len(price)
        start = 0
        while start < n:
            k = self.scan_trades(instrument_col, price, aggressor, start)
            if k >= n:
                break
            self.on_trade(
                int(instrument_col[k]),
                float(price[k]),
                float(size[k]),
                int(aggressor[k]),
                int(ts[k]),
            )
            start = k + 1
        if n:
            self.now = int(ts[-1])

    def scan_trades(
        self, instrument_col: np.ndarray, price: np.ndarray, aggressor: np.ndarray, start: int = 0
    ) -> int:
        """Index of the first print (from ``start``) at or through a resting limit's price
        (it may fill it, or move its queue), else ``len(price)``."""
        if not self.working:
            return len(price)
        return int(
            _first_print(instrument_col, price, aggressor, self.buy_rest, self.sell_rest, start)
        )

    # --- bars ----------------------------------------------------------------------------

    def bar_driven(self, instrument: int) -> bool:
        """Whether orders in ``instrument`` fill against bars: it has bars and no quotes."""
        return not math.isfinite(self.bid[instrument]) and not math.isnan(
            self.bar_close[instrument]
        )

    def on_bar(
        self,
        instrument: int,
        o: float,
        h: float,
        lo: float,
        c: float,
        volume: float,
        ts: int,
    ) -> None:
        """A bar closed at ``ts``: working orders of its instrument trade within it."""
        self.now = ts
        if self.n_working[instrument] and not math.isfinite(self.bid[instrument]):
            self._match_bar(instrument, o, h, lo, volume, ts)
        self.bar_close[instrument] = c

    def _match_bar(
        self, instrument: int, o: float, h: float, lo: float, volume: float, ts: int
    ) -> None:
        inst = self.instruments.at(instrument)
        cap = self.bar_participation * volume
        used = 0.0
        changed = False
        for w in [w for w in self.working.values() if w.instrument == instrument]:
            if w.stop is not None:
                hit = h >= w.stop if w.is_buy else lo <= w.stop
                if not hit:
                    continue
                trigger = max(o, w.stop) if w.is_buy else min(o, w.stop)
                w.stop = None  # triggered: a market or limit order from here on
                changed = True
                if (w.is_buy and trigger > w.limit) or (not w.is_buy and trigger < w.limit):
                    # a stop-limit whose limit the market gapped past: it rests at its limit
                    w.maker = True
                    continue
                price, maker = trigger, False
            elif w.is_buy:
                if o <= w.limit:
                    price, maker = o, False
                elif lo <= w.limit:
                    price, maker = w.limit, True
                else:
                    continue
            elif o >= w.limit:
                price, maker = o, False
            elif h >= w.limit:
                price, maker = w.limit, True
            else:
                continue
            qty = _floor_to_lot(min(w.leaves, cap - used), inst.size_increment)
            if qty <= 0:
                continue
            used += qty
            w.maker = maker
            # measured against the price the decision saw (the previous close)
            self._trade(w, qty, price, ts, mid=price)
            if w.leaves <= 0:
                self.working.pop(w.order.client_order_id, None)
                changed = True
        if changed:
            self._refresh(instrument)

    def on_bar_batch(
        self,
        instrument_col: np.ndarray,
        o: np.ndarray,
        h: np.ndarray,
        lo: np.ndarray,
        c: np.ndarray,
        volume: np.ndarray,
        ts: np.ndarray,
    ) -> None:
        """Bars in order, exactly as :meth:`on_bar` one at a time."""
        n = len(c)
        start = 0
        while start < n:
            k = self.scan_bars(instrument_col, start)
            self._set_closes(instrument_col, c, start, k)
            if k >= n:
                break
            self.on_bar(
                int(instrument_col[k]),
                float(o[k]),
                float(h[k]),
                float(lo[k]),
                float(c[k]),
                float(volume[k]),
                int(ts[k]),
            )
            start = k + 1
        if n:
            self.now = int(ts[-1])

    def _set_closes(self, instrument_col: np.ndarray, c: np.ndarray, start: int, end: int) -> None:
        if end <= start:
            return
        seen, rows = last_rows(instrument_col, start, end)
        for inst, row in zip(seen.tolist(), rows.tolist(), strict=True):
            self.bar_close[inst] = float(c[row])

    def scan_bars(self, instrument_col: np.ndarray, start: int = 0) -> int:
        """Index of the first bar (from ``start``) of an instrument with working orders,
        else ``len(instrument_col)``."""
        n = len(instrument_col)
        if not self.working or start >= n:
            return n
        hits = np.flatnonzero(self.n_working[instrument_col[start:]] > 0)
        return start + int(hits[0]) if len(hits) else n

    # --- corporate actions ---------------------------------------------------------------

    def on_corporate_action(self, instrument: int, split_ratio: float, ts: int) -> None:
        """Put working orders of ``instrument`` on the basis after a split."""
        self.now = ts
        if split_ratio == 1.0:
            return
        inst = self.instruments.at(instrument)
        if not math.isnan(self.bar_close[instrument]):
            self.bar_close[instrument] *= split_ratio
        for w in self.working.values():
            if w.instrument != instrument:
                continue
            w.leaves = _floor_to_lot(w.leaves / split_ratio, inst.size_increment)
            if math.isfinite(w.limit):
                w.limit = inst.round_price(w.limit * split_ratio)
            if w.stop is not None:
                w.stop = inst.round_price(w.stop * split_ratio)
            if not math.isnan(w.queue_ahead):
                w.queue_ahead /= split_ratio
            w.decision_mid *= split_ratio
        self._refresh(instrument)

    # --- orders --------------------------------------------------------------------------

    def mid(self, instrument: int) -> float:
        """The quote's mid, or the last bar's close for an instrument without quotes."""
        mid = (self.bid[instrument] + self.ask[instrument]) * 0.5
        if math.isnan(mid):  # no quote
            return self.bar_close[instrument]
        return mid

    def submit(self, order: OrderRequest, ts: int, decision_mid: float | None = None) -> None:
        """An order arrives at the matching engine at ``ts``. ``decision_mid`` is the mid
        when it left the gateway (for slippage); default: the mid now."""
        self.now = ts
        inst_id = order.instrument_id
        if inst_id not in self.instruments:
            self._reject(order, ts, f"{self.name} does not list {inst_id}")
            return
        if order.client_order_id in self.working:
            self._reject(order, ts, f"duplicate client order id {order.client_order_id}")
            return
        i = self.instruments.index(inst_id)
        kind = order.order_type
        if kind in _LIMITS and not (order.limit_price is not None and order.limit_price > 0):
            self._reject(order, ts, f"a {kind.value} order needs a positive limit price")
            return
        if kind in _STOPS and not (order.stop_price is not None and order.stop_price > 0):
            self._reject(order, ts, f"a {kind.value} order needs a positive stop price")
            return
        if (
            kind is _MARKET
            and not math.isfinite(self.ask[i] if order.side is _BUY else self.bid[i])
            and not self.bar_driven(i)
        ):
            self._reject(order, ts, f"no market in {inst_id} yet")
            return
        if kind in _STOPS and order.time_in_force in (_IOC, _FOK):
            self._reject(order, ts, f"{order.time_in_force.value} makes no sense for a stop order")
            return
        mid = self.mid(i) if decision_mid is None else decision_mid
        self._order_seq += 1
        w = _Working(order, i, f"{self.name}-{self._order_seq}", mid)
        self.emit(
            OrderAccepted(
                client_order_id=order.client_order_id,
                venue_order_id=w.venue_order_id,
                strategy_id=order.strategy_id,
                instrument_id=inst_id,
                ts_event=ts,
                ts_init=ts,
            )
        )
        if order.time_in_force is _DAY:
            w.expire_ts = next_session_close(ts, self.day_close, self.timezone)
        if w.stop is not None and not self._triggered(w):
            self._rest(w)
            return
        self._arrive(w, ts)

    def _arrive(self, w: _Working, ts: int) -> None:
        """An order that can trade now (new, or a stop just triggered)."""
        order = w.order
        tif = order.time_in_force
        i = w.instrument
        if w.is_buy:
            touch, size = self.ask[i], self.ask_size[i]
            marketable = touch <= w.limit  # False for NaN: no market
        else:
            touch, size = self.bid[i], self.bid_size[i]
            marketable = touch >= w.limit
        available = math.inf if size == 0.0 else max(size, 0.0)
        if tif is _FOK and marketable and available < w.leaves:
            self._expire(w, ts, "FOK: not enough displayed size to fill in full")
            return
        if marketable and available > 0:
            self._trade(w, w.leaves if w.leaves <= available else available, touch, ts)
        if w.leaves <= 0:
            return
        if tif is _IOC or tif is _FOK:
            self._expire(w, ts, f"{tif.value}: the rest could not trade on arrival")
            return
        w.maker = order.order_type in _LIMITS
        if w.maker:
            w.queue_ahead = self._join_queue(w)
        self._rest(w)

    def _join_queue(self, w: _Working) -> float:
        """The queue ahead of a limit order that starts resting now."""
        i = w.instrument
        touch = self.bid[i] if w.is_buy else self.ask[i]
        if not math.isfinite(touch):
            return math.nan
        if (w.limit > touch) if w.is_buy else (w.limit < touch):
            return 0.0  # it improves on the touch: first in its own level
        if w.limit == touch:
            return max(float(self.bid_size[i] if w.is_buy else self.ask_size[i]), 0.0)
        return math.nan  # behind the touch: not visible in top-of-book data

    def cancel(self, request: CancelOrder, ts: int) -> bool:
        """Cancel a working order; a cancel for one that is not working (filled, expired,
        or not arrived yet) is answered with OrderCancelRejected."""
        w = self.working.pop(request.client_order_id, None)
        if w is None:
            self.emit(
                OrderCancelRejected(
                    client_order_id=request.client_order_id,
                    strategy_id=request.strategy_id,
                    instrument_id=request.instrument_id,
                    reason=f"{request.client_order_id} is not working at {self.name}",
                    ts_event=ts,
                    ts_init=ts,
                )
            )
            return False
        self._refresh(w.instrument)
        o = w.order
        self.emit(
            OrderCancelled(
                client_order_id=o.client_order_id,
                strategy_id=o.strategy_id,
                instrument_id=o.instrument_id,
                reason="cancelled on request",
                ts_event=ts,
                ts_init=ts,
            )
        )
        return True

    def expire_day_orders(self, ts: int) -> int:
        """Expire DAY orders whose session has closed by ``ts``; return how many."""
        due = [w for w in self.working.values() if w.expire_ts is not None and w.expire_ts <= ts]
        for w in due:
            self.working.pop(w.order.client_order_id, None)
            self._expire(w, ts, "DAY order: the session closed")
            self._refresh(w.instrument)
        return len(due)

    def next_expiry(self) -> int | None:
        times = [w.expire_ts for w in self.working.values() if w.expire_ts is not None]
        return min(times) if times else None

    # --- internals -----------------------------------------------------------------------

    def _touch(self, w: _Working) -> float:
        return float(self.ask[w.instrument] if w.is_buy else self.bid[w.instrument])

    def _available(self, w: _Working) -> float:
        """Displayed size left on the side ``w`` takes: 0 published means unknown
        (unlimited); taken down to nothing it is stored as -1 (none left on this quote)."""
        size = float(self.ask_size[w.instrument] if w.is_buy else self.bid_size[w.instrument])
        if size == 0.0:
            return math.inf
        return max(size, 0.0)

    def _marketable(self, w: _Working) -> bool:
        touch = self._touch(w)
        if not math.isfinite(touch):
            return False
        return touch <= w.limit if w.is_buy else touch >= w.limit

    def _triggered(self, w: _Working) -> bool:
        assert w.stop is not None
        i = w.instrument
        if w.is_buy:
            return bool(self.ask[i] >= w.stop)
        return bool(self.bid[i] <= w.stop)

    def _rest(self, w: _Working) -> None:
        self.working[w.order.client_order_id] = w
        self._refresh(w.instrument)

    def _match(self, instrument: int, ts: int) -> None:
        """A quote that reaches at least one working order of ``instrument``."""
        candidates = [w for w in self.working.values() if w.instrument == instrument]
        for w in candidates:
            if w.stop is not None and self._triggered(w):
                w.stop = None  # triggered: from now on a market or limit order
                del self.working[w.order.client_order_id]
                self._arrive(w, ts)
                continue
            if w.stop is not None or not self._marketable(w):
                continue
            available = self._available(w)
            if available <= 0:
                continue
            price = w.limit if w.maker else self._touch(w)
            self._trade(w, min(w.leaves, available), price, ts)
            if w.leaves <= 0:
                self.working.pop(w.order.client_order_id, None)
        self._refresh(instrument)

    def _trade(
        self, w: _Working, qty: float, price: float, ts: int, mid: float | None = None
    ) -> None:
        order = w.order
        i = w.instrument
        inst = self.instruments.at(i)
        if qty == w.leaves:
            w.leaves = 0.0
        else:  # a partial fill: keep quantities on the lot grid (no 0.008879999999999983)
            qty = inst.round_size(qty)
            w.leaves = max(0.0, inst.round_size(w.leaves - qty))
        # the displayed size this fill took is gone for the next order on this quote
        sizes = self.ask_size if w.is_buy else self.bid_size
        if sizes[i] > 0:
            sizes[i] = max(0.0, inst.round_size(sizes[i] - qty)) or -1.0
        self._trade_seq += 1
        sign = 1.0 if w.is_buy else -1.0
        mult = inst.multiplier
        # a taker is measured against the book it hit; a maker against the book it rested
        # in (the quote that crossed it has already moved through its price)
        if mid is None:
            mid = self.prev_mid[i] if w.maker else self.mid(i)
        spread_cost = (price - mid) * sign * qty * mult if not math.isnan(mid) else 0.0
        decision = w.decision_mid
        slippage = (mid - decision) * sign * qty * mult if not math.isnan(decision) else 0.0
        impact_cost = 0.0
        model = self.impact[i]
        if model is not None and not w.maker:
            touch = price
            price = self._impacted_price(w, inst, model, price, qty, ts)
            impact_cost = (price - touch) * sign * qty * mult
        notional = inst.notional(price, qty)
        fill_type = OrderFilled if w.leaves <= 0 else OrderPartiallyFilled
        self.emit(
            fill_type(
                client_order_id=order.client_order_id,
                venue_order_id=w.venue_order_id,
                trade_id=f"{self.name}-T{self._trade_seq}",
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                side=order.side,
                last_qty=qty,
                last_px=price,
                leaves_qty=w.leaves,
                commission=self._schedules[i].commission(notional, qty, maker=w.maker),
                commission_currency=self.currency,
                liquidity="MAKER" if w.maker else "TAKER",
                spread_cost=spread_cost,
                slippage_cost=slippage,
                impact_cost=impact_cost,
                ts_event=ts,
                ts_init=ts,
            )
        )

    def _impacted_price(
        self, w: _Working, inst: Instrument, model: MarketImpact, touch: float, qty: float, ts: int
    ) -> float:
        """The touch moved by the permanent impact still in the market and by this fill's
        temporary impact, on the price grid, never past a limit order's limit."""
        i = w.instrument
        sign = 1.0 if w.is_buy else -1.0
        if model.permanent_half_life_s is not None and self.permanent[i]:
            elapsed_s = (ts - self.permanent_ts[i]) / 1e9
            self.permanent[i] *= 0.5 ** (elapsed_s / model.permanent_half_life_s)
        self.permanent_ts[i] = ts
        moved = touch * (1.0 + self.permanent[i] + sign * model.temporary(qty))
        self.permanent[i] += sign * model.permanent(qty)
        price = inst.round_price(moved)
        if w.is_buy:
            return min(price, w.limit)
        return max(price, w.limit)

    def _expire(self, w: _Working, ts: int, reason: str) -> None:
        o = w.order
        self.emit(
            OrderExpired(
                client_order_id=o.client_order_id,
                strategy_id=o.strategy_id,
                instrument_id=o.instrument_id,
                reason=reason,
                ts_event=ts,
                ts_init=ts,
            )
        )

    def _reject(self, order: OrderRequest, ts: int, reason: str) -> None:
        self.emit(
            OrderRejected(
                client_order_id=order.client_order_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                reason=reason,
                ts_event=ts,
                ts_init=ts,
            )
        )

    def _refresh(self, instrument: int) -> None:
        buy_cross, sell_cross = -math.inf, math.inf
        buy_stop, sell_stop = math.inf, -math.inf
        buy_rest, sell_rest = -math.inf, math.inf
        makers: list[_Working] = []
        count = 0
        for w in self.working.values():
            if w.instrument != instrument:
                continue
            count += 1
            if w.stop is not None:
                if w.is_buy:
                    buy_stop = min(buy_stop, w.stop)
                else:
                    sell_stop = max(sell_stop, w.stop)
                continue
            if w.is_buy:
                buy_cross = max(buy_cross, w.limit)
            else:
                sell_cross = min(sell_cross, w.limit)
            if w.maker:
                makers.append(w)
                if w.is_buy:
                    buy_rest = max(buy_rest, w.limit)
                else:
                    sell_rest = min(sell_rest, w.limit)
        self.buy_cross[instrument] = buy_cross
        self.sell_cross[instrument] = sell_cross
        self.buy_stop[instrument] = buy_stop
        self.sell_stop[instrument] = sell_stop
        self.buy_rest[instrument] = buy_rest
        self.sell_rest[instrument] = sell_rest
        self.makers[instrument] = makers
        self.n_working[instrument] = count


def _floor_to_lot(qty: float, increment: float) -> float:
    """``qty`` down to a whole number of lots (never up: we cannot fill what was not
    there), on the lot grid."""
    lots = math.floor(qty / increment + 1e-9)
    return round(lots * increment, 12) if lots > 0 else 0.0


@njit(cache=True, nogil=True)
def _first_print(
    instrument_col: np.ndarray,
    price: np.ndarray,
    aggressor: np.ndarray,
    buy_rest: np.ndarray,
    sell_rest: np.ndarray,
    start: int,
) -> int:  # pragma: no cover - compiled
    for t in range(start, price.shape[0]):
        i = instrument_col[t]
        if (aggressor[t] <= 0 and price[t] <= buy_rest[i]) or (
            aggressor[t] >= 0 and price[t] >= sell_rest[i]
        ):
            return t
    n: int = price.shape[0]
    return n


@njit(cache=True, nogil=True)
def _first_cross(
    instrument_col: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    buy_cross: np.ndarray,
    sell_cross: np.ndarray,
    buy_stop: np.ndarray,
    sell_stop: np.ndarray,
    start: int,
) -> int:  # pragma: no cover - compiled
    for t in range(start, bid.shape[0]):
        i = instrument_col[t]
        if (
            ask[t] <= buy_cross[i]
            or bid[t] >= sell_cross[i]
            or ask[t] >= buy_stop[i]
            or bid[t] <= sell_stop[i]
        ):
            return t
    n: int = bid.shape[0]
    return n


def warm_up() -> None:
    """Load the compiled kernel now rather than on the first tick. Column views of a batch
    are strided, except in a one-row batch; numba compiles each layout apart."""
    for rows in (1, 2):
        b = np.zeros(rows, dtype=QUOTE_DTYPE)
        _first_cross(
            b["instrument"],
            b["bid"],
            b["ask"],
            np.full(1, -np.inf),
            np.full(1, np.inf),
            np.full(1, np.inf),
            np.full(1, -np.inf),
            0,
        )
        t = np.zeros(rows, dtype=TRADE_DTYPE)
        _first_print(
            t["instrument"], t["price"], t["aggressor"], np.full(1, -np.inf), np.full(1, np.inf), 0
        )
