"""Every message that travels between actors, in one place.

Messages are frozen msgspec Structs, tagged so that a union of them decodes, with
integer-nanosecond timestamps: ``ts_event`` is when the thing happened at its source,
``ts_init`` is when tradingd created the message (virtual time in a replay). Prices are
in the instrument's quote currency per unit, quantities in units of the instrument
(shares, contracts, coins, units of base currency), both unsigned: direction is ``side``.
Money amounts (commission, P&L) are in the named currency.

A consumer dispatches on the type with ``match``::

    match msg:
        case QuoteTick():
            ...
        case OrderFilled(last_qty=qty):
            ...
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = [
    "Alert",
    "AlertLevel",
    "Bar",
    "BarBatch",
    "CancelOrder",
    "ControlCommand",
    "ControlReply",
    "CorporateActionEvent",
    "FillEvent",
    "LimitsChanged",
    "Message",
    "OrderAccepted",
    "OrderCancelRejected",
    "OrderCancelled",
    "OrderDenied",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderPartiallyFilled",
    "OrderRejected",
    "OrderRequest",
    "OrderType",
    "PortfolioSnapshot",
    "PositionRow",
    "QuoteBatch",
    "QuoteTick",
    "RiskDecision",
    "SetLimits",
    "SetTradingState",
    "Side",
    "Signal",
    "StrategyPnl",
    "TargetPosition",
    "TimeInForce",
    "TimerFired",
    "TradeBatch",
    "TradeTick",
    "TradingState",
    "TradingStateChanged",
]


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell."""
        return 1 if self is _BUY else -1


_BUY = Side.BUY  # for Side.sign, read per fill: ``Side.BUY`` goes through the enum metaclass


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    DAY = "DAY"
    IOC = "IOC"
    FOK = "FOK"


class TradingState(enum.StrEnum):
    """ACTIVE trades freely; REDUCING only lets orders through that shrink a position;
    HALTED lets nothing through."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class AlertLevel(enum.IntEnum):
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every message: when it happened and when tradingd made it (ns, UTC)."""

    ts_event: int
    ts_init: int


# --- market data -------------------------------------------------------------------------


class QuoteTick(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """Best bid and ask with displayed sizes."""

    instrument_id: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float


class TradeTick(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A print. ``aggressor`` is +1 if the buyer crossed the spread, -1 the seller, 0 unknown."""

    instrument_id: str
    price: float
    size: float
    aggressor: int = 0


class Bar(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """OHLCV over ``interval_ns``; ``ts_event`` is the bar's close time."""

    instrument_id: str
    interval_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class QuoteBatch(Message, frozen=True, kw_only=True, tag=True):
    """Consecutive quote ticks as one numpy structured array (``engine.ticks.QUOTE_DTYPE``).

    Used in replay, where delivering ticks in bulk is what makes full speed possible. The
    replay scheduler guarantees that no consumer acts on any tick of a batch but the last,
    so a consumer may process all of it in one go. ``ts_event`` is the last tick's.
    ``instrument_ids`` maps the ``instrument`` column to instrument ids. Never encoded.
    """

    data: Any  # numpy structured array, QUOTE_DTYPE
    instrument_ids: tuple[str, ...]


class TradeBatch(Message, frozen=True, kw_only=True, tag=True):
    """Consecutive prints as one numpy structured array (``engine.ticks.TRADE_DTYPE``), with
    the same guarantees as :class:`QuoteBatch`."""

    data: Any  # numpy structured array, TRADE_DTYPE
    instrument_ids: tuple[str, ...]


class BarBatch(Message, frozen=True, kw_only=True, tag=True):
    """Consecutive bars as one numpy structured array (``engine.ticks.BAR_DTYPE``), with the
    same guarantees as :class:`QuoteBatch`. A bar's ``ts_event`` is its close time."""

    data: Any  # numpy structured array, BAR_DTYPE
    instrument_ids: tuple[str, ...]


class CorporateActionEvent(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """An instrument goes ex a split and/or a dividend at ``ts_event`` (before the first
    market data of its ex-date), as a live data vendor announces it.

    ``split_ratio`` and ``dividend_ratio`` multiply earlier prices to put them on the new
    basis (0.25 for a 4:1 split, 0.995 for a dividend of 0.5 % of the price): what a
    strategy applies to the history it keeps. A holder's position becomes ``quantity /
    split_ratio`` units at ``price * split_ratio``, and receives ``dividend`` in cash per
    unit held *before* the split (the quote currency; 0 for a pure split).
    """

    instrument_id: str
    split_ratio: float = 1.0
    dividend_ratio: float = 1.0
    dividend: float = 0.0


# --- decisions ---------------------------------------------------------------------------


class Signal(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy's view, for monitoring and for strategies that trade other strategies' views."""

    strategy_id: str
    instrument_id: str
    name: str
    value: float


class TargetPosition(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """The position a strategy wants to hold, signed (+ long, - short), in instrument units."""

    strategy_id: str
    instrument_id: str
    quantity: float


class OrderRequest(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A strategy asks for an order. Goes through the risk gate before anything else."""

    client_order_id: str
    strategy_id: str
    instrument_id: str
    side: Side
    quantity: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.GTC


class CancelOrder(Message, frozen=True, kw_only=True, tag=True, gc=False):
    client_order_id: str
    strategy_id: str
    instrument_id: str


# --- order events ------------------------------------------------------------------------


class OrderDenied(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """The risk gate refused the order; it never left tradingd. ``reason`` is for a person."""

    client_order_id: str
    strategy_id: str
    instrument_id: str
    reason: str


class OrderAccepted(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue took the order."""

    client_order_id: str
    venue_order_id: str
    strategy_id: str
    instrument_id: str


class OrderRejected(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """The venue refused the order."""

    client_order_id: str
    strategy_id: str
    instrument_id: str
    reason: str


class OrderPartiallyFilled(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A fill that leaves part of the order working. Fills are these and :class:`OrderFilled`.

    ``last_qty`` at ``last_px`` is this fill; ``leaves_qty`` is what is still working;
    ``commission`` is in ``commission_currency``, as are the cost figures (positive is a
    cost), which are measured, not charged: they are already in ``last_px``.
    """

    client_order_id: str
    venue_order_id: str
    trade_id: str
    strategy_id: str
    instrument_id: str
    side: Side
    last_qty: float
    last_px: float
    leaves_qty: float
    commission: float
    commission_currency: str
    liquidity: str  # "MAKER" or "TAKER"
    spread_cost: float = 0.0
    """What the fill paid away from the mid at the fill (negative: spread earned)."""
    slippage_cost: float = 0.0
    """How far the mid moved against the order between decision and fill."""
    impact_cost: float = 0.0
    """What the order's own market impact added to the fill price."""


class OrderFilled(OrderPartiallyFilled, frozen=True, kw_only=True, tag=True, gc=False):
    """The fill that completes the order (``leaves_qty`` is 0)."""


class OrderCancelled(Message, frozen=True, kw_only=True, tag=True, gc=False):
    client_order_id: str
    strategy_id: str
    instrument_id: str
    reason: str = ""


class OrderCancelRejected(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A cancel that found nothing to cancel (already filled or expired, or not arrived)."""

    client_order_id: str
    strategy_id: str
    instrument_id: str
    reason: str


class OrderExpired(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A time-in-force ran out (IOC/FOK remainder, end of DAY)."""

    client_order_id: str
    strategy_id: str
    instrument_id: str
    reason: str = ""


FillEvent = OrderPartiallyFilled | OrderFilled
OrderEvent = (
    OrderDenied
    | OrderAccepted
    | OrderRejected
    | OrderPartiallyFilled
    | OrderFilled
    | OrderCancelled
    | OrderCancelRejected
    | OrderExpired
)


# --- portfolio ---------------------------------------------------------------------------


class PositionRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One instrument's line of a :class:`PortfolioSnapshot`. ``quantity`` is signed (+ long,
    - short) in instrument units; prices in the quote currency; P&L in the account
    currency. ``mark`` is the mid it is valued at, None before its first price."""

    instrument_id: str
    quantity: float
    avg_price: float
    mark: float | None
    unrealized_pnl: float
    realized_pnl: float


class StrategyPnl(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What one strategy's fills realised, and the commissions they paid (account currency).
    Unrealised P&L is the book's, not a strategy's: positions are netted per instrument."""

    strategy_id: str
    realized_pnl: float
    commissions: float


class PortfolioSnapshot(Message, frozen=True, kw_only=True, tag=True):
    """The account as the portfolio books it, for processes that follow the daemon (the
    Redis mirror, the dashboard), so none of them re-derives the accounting. Money is in
    ``currency``; ``equity`` is ``balance`` plus the unrealised P&L of every position."""

    currency: str
    balance: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    commissions: float
    max_drawdown: float
    fills: int
    """Executions booked so far, partial ones included."""
    positions: list[PositionRow]
    """Every instrument of the run, flat ones included, in the instrument table's order."""
    strategies: list[StrategyPnl] = []
    """Per strategy, in the order each first traded."""


# --- risk --------------------------------------------------------------------------------


class Alert(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """Something a person should know: which rule, what the figures were, what was done."""

    level: AlertLevel
    source: str
    rule: str
    message: str
    action: str = ""
    figures: dict[str, float] = {}
    """The numbers behind it (utilisation, VaR, drawdown, ...), by name."""


class RiskDecision(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """A risk monitor's decision with the inputs it was taken on, for the journal: which
    rule, at which level, what was done (``action``: none, notify, reduce, halt,
    deleverage, tighten, flatten, restore) and why."""

    source: str
    rule: str
    level: AlertLevel
    action: str
    reason: str
    inputs: dict[str, float] = {}


class SetLimits(Message, frozen=True, kw_only=True, tag=True):
    """Replace the risk gate's limits (``limits``: an ``engine.limits.LimitsConfig``), from
    the control API or a monitor's breaker. The gate validates, applies and announces it."""

    limits: Any
    reason: str
    origin: str


class LimitsChanged(Message, frozen=True, kw_only=True, tag=True):
    """The risk gate's limits changed: to what (``limits``, as plain data), why, on whose
    request. Journaled."""

    limits: dict[str, Any]
    reason: str
    origin: str


class SetTradingState(Message, frozen=True, kw_only=True, tag=True, gc=False):
    """Ask the risk gate to change the trading state (from control, a monitor, supervision)."""

    state: TradingState
    reason: str
    origin: str


class TradingStateChanged(Message, frozen=True, kw_only=True, tag=True, gc=False):
    previous: TradingState
    state: TradingState
    reason: str
    origin: str


# --- control -----------------------------------------------------------------------------


class ControlCommand(Message, frozen=True, kw_only=True, tag=True):
    """A console or API command. ``origin`` says who asked (peer credentials, token name)."""

    request_id: str
    command: str
    args: dict[str, Any] = {}
    origin: str = ""


class ControlReply(Message, frozen=True, kw_only=True, tag=True):
    request_id: str
    ok: bool
    data: dict[str, Any] = {}
    error: str = ""


# --- runtime -----------------------------------------------------------------------------


class TimerFired(Message, frozen=True, kw_only=True, tag=True):
    """A timer an actor set with ``timer_at`` / ``timer_every`` came due."""

    name: str
    payload: Any = None
