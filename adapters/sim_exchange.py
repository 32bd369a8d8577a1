"""The simulated exchange: fills our orders against replayed (or live) quotes.

Orders and cancels reach the matching engine after their latencies, applied on the clock
(timers), so a backtest sees the market move while an order travels:

- ``latency_ms``: router to matching engine for a new order;
- ``cancel_latency_ms``: the same for a cancel (default: ``latency_ms``);
- ``market_data_latency_ms``: how late the strategy saw the quote it reacted to. The
  venue runs on the true market, so an order arrives this much later again.

DAY orders expire at ``day_close`` (``HH:MM`` in ``timezone``). Matching, displayed size,
queue position against prints, fills against bars (``bar_participation`` of each bar's
volume at most), stops, time in force, splits and costs are
:class:`engine.matching.SimulatedVenue`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.broker_ledger import BrokerLedger
from engine.actor import Actor, ActorConfig
from engine.matching import MarketImpact, SimulatedVenue, VenueCosts, warm_up
from engine.messages import (
    Bar,
    BarBatch,
    CancelOrder,
    CorporateActionEvent,
    Message,
    OrderRejected,
    OrderRequest,
    QuoteBatch,
    QuoteTick,
    TimeInForce,
    TimerFired,
    TradeBatch,
    TradeTick,
)
from engine.ticks import BAR_DTYPE, QUOTE_DTYPE, TRADE_DTYPE

__all__ = ["SimExchange", "SimExchangeConfig"]

_EXPIRE = "day-close"


class SimExchangeConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Latencies in milliseconds; ``costs`` is the commission schedule (see VenueCosts)."""

    venue: str = "SIM"
    latency_ms: float = 0.0
    cancel_latency_ms: float | None = None
    market_data_latency_ms: float = 0.0
    day_close: str = "00:00"
    timezone: str = "UTC"
    costs: VenueCosts = VenueCosts()
    impact: dict[str, MarketImpact] = {}
    """Market impact model per instrument id (none: no impact)."""
    bar_participation: float = 0.1
    """The most of a bar's volume our orders may fill in it (instruments traded on bars)."""
    ledger: str | None = None
    """Paper trading: the broker's own books, a directory (relative to the configuration
    file; the daemon puts it in the state directory). Every acceptance, rejection, fill,
    cancel and expiry is written there (fsync) before it is reported, so the broker
    outlives a crash of the daemon, as a real one does: the daemon reconciles with it on
    start. A client order id the ledger has seen is refused (no order is taken twice)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("latency_ms", "cancel_latency_ms", "market_data_latency_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        try:
            hour, minute = (int(p) for p in self.day_close.split(":"))
        except ValueError:
            raise ValueError(f"day_close must be HH:MM, got {self.day_close!r}") from None
        if not (0 <= hour < 24 and 0 <= minute < 60):
            raise ValueError(f"day_close must be HH:MM, got {self.day_close!r}")
        for instrument_id in self.impact:
            if "." not in instrument_id:
                raise ValueError(
                    f"impact is keyed by instrument id (SYMBOL.VENUE), got {instrument_id!r}"
                )
        if not 0.0 < self.bar_participation <= 1.0:
            raise ValueError(f"bar_participation must be in (0, 1], got {self.bar_participation}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None


def _ns(ms: float) -> int:
    return round(ms * 1_000_000)


class SimExchange(Actor[SimExchangeConfig]):
    Config = SimExchangeConfig
    outputs: ClassVar[tuple[str, ...]] = ("events",)
    broker_session = True

    def on_start(self) -> None:
        cfg = self.config
        if getattr(self, "venue", None) is None:
            # kept across restarts: the venue's working orders are the exchange's, not ours
            self.venue = SimulatedVenue(
                cfg.venue,
                self.ctx.instruments,
                cfg.costs,
                self.ctx.account.currency,
                self._emit_event,
                day_close=cfg.day_close,
                timezone=cfg.timezone,
                impact=cfg.impact,
                bar_participation=cfg.bar_participation,
            )
            warm_up()
        if getattr(self, "ledger", None) is None:
            self._open_ledger()
        self._single_instrument = len(self.ctx.instruments) == 1
        self.order_latency_ns = _ns(cfg.latency_ms) + _ns(cfg.market_data_latency_ms)
        cancel = cfg.latency_ms if cfg.cancel_latency_ms is None else cfg.cancel_latency_ms
        self.cancel_latency_ns = _ns(cancel)
        self._expiry_timer: int | None = None
        # A restart cancels our timers, but orders on their way to the venue and DAY
        # orders in it are the exchange's, not ours: they must still arrive and expire.
        if getattr(self, "in_flight", None) is None:
            self.in_flight: dict[str, tuple[int, OrderRequest | CancelOrder, float]] = {}
            self._arrivals = 0
        for name, (due, msg, mid) in sorted(self.in_flight.items(), key=lambda kv: kv[1][0]):
            self.timer_at(due, name, (msg, mid), drain=True)
        self._arm_expiry()

    def _emit_event(self, event: Message) -> None:
        if self.ledger is None:
            self.emit("events", event)
            return
        # the broker's books first, then the report (committed at the end of the message)
        self.ledger.append(event, self.clock.now())
        self.ledger_held.append(event)

    def _open_ledger(self) -> None:
        """The broker's books: what it was told and did, kept across crashes of the daemon."""
        self.ledger: BrokerLedger | None = None
        self.ledger_held: list[Message] = []
        if self.config.ledger is None:
            return
        path = Path(self.config.ledger)
        if not path.is_absolute():
            path = (self.ctx.base_dir or Path.cwd()) / path
        self.ledger = BrokerLedger(path)
        # venue order ids and trade ids go on from the books: unique across sessions
        self.venue._order_seq = max(self.venue._order_seq, self.ledger.orders_taken)
        self.venue._trade_seq = max(self.venue._trade_seq, len(self.ledger.executions))

    def on_message(self, msg: Any) -> None:
        if self.ledger is None:
            self._handle(msg)
            return
        if isinstance(msg, OrderRequest) and self.ledger.seen(msg.client_order_id):
            # the broker refuses an id it has taken before: an order is never taken twice
            now = self.clock.now()
            self._emit_event(
                OrderRejected(
                    client_order_id=msg.client_order_id,
                    strategy_id=msg.strategy_id,
                    instrument_id=msg.instrument_id,
                    reason=f"duplicate client order id {msg.client_order_id}",
                    ts_event=now,
                    ts_init=now,
                )
            )
        else:
            self._handle(msg)
        if self.ledger_held:
            self.ledger.commit()
            held, self.ledger_held = self.ledger_held, []
            for event in held:
                self.emit("events", event)

    def _handle(self, msg: Any) -> None:
        venue = self.venue
        # quotes and orders first, the messages of a replay: the types are disjoint, so the
        # order of the cases changes nothing but how many are tried
        match msg:
            case QuoteBatch(data=data):
                if not venue.working and self._single_instrument:
                    # nothing to match: the book is the batch's last quote
                    ts, _, _, _, bid, ask, bid_size, ask_size = data[-1].item()
                    venue.set_book(0, bid, ask, bid_size, ask_size, ts)
                    return
                venue.on_quote_batch(
                    data["instrument"],
                    data["bid"],
                    data["ask"],
                    data["ts_event"],
                    data["bid_size"],
                    data["ask_size"],
                )
            case OrderRequest(instrument_id=inst_id):
                decision_mid = (
                    venue.mid(self.ctx.instruments.index(inst_id))
                    if inst_id in self.ctx.instruments
                    else float("nan")
                )
                self._send(msg, decision_mid, self.order_latency_ns)
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask, ts_event=ts):
                if inst_id in self.ctx.instruments:
                    venue.on_quote(
                        self.ctx.instruments.index(inst_id),
                        bid,
                        ask,
                        ts,
                        msg.bid_size,
                        msg.ask_size,
                    )
            case TradeBatch(data=data):
                if venue.working:
                    venue.on_trade_batch(
                        data["instrument"],
                        data["price"],
                        data["size"],
                        data["aggressor"],
                        data["ts_event"],
                    )
            case BarBatch(data=data):
                venue.on_bar_batch(
                    data["instrument"],
                    data["open"],
                    data["high"],
                    data["low"],
                    data["close"],
                    data["volume"],
                    data["ts_event"],
                )
            case TradeTick(instrument_id=inst_id):
                if inst_id in self.ctx.instruments and venue.working:
                    venue.on_trade(
                        self.ctx.instruments.index(inst_id),
                        msg.price,
                        msg.size,
                        msg.aggressor,
                        msg.ts_event,
                    )
            case Bar(instrument_id=inst_id):
                if inst_id in self.ctx.instruments:
                    venue.on_bar(
                        self.ctx.instruments.index(inst_id),
                        msg.open,
                        msg.high,
                        msg.low,
                        msg.close,
                        msg.volume,
                        msg.ts_event,
                    )
            case CorporateActionEvent(instrument_id=inst_id):
                if inst_id in self.ctx.instruments:
                    venue.on_corporate_action(
                        self.ctx.instruments.index(inst_id), msg.split_ratio, msg.ts_event
                    )
            case CancelOrder():
                self._send(msg, float("nan"), self.cancel_latency_ns)
            case TimerFired(name=name, payload=payload):
                if name == _EXPIRE:
                    self._expiry_timer = None
                    venue.expire_day_orders(self.clock.now())
                else:
                    self.in_flight.pop(name, None)
                    self._arrive(*payload)
                self._arm_expiry()
            case _:
                pass

    def _send(self, msg: OrderRequest | CancelOrder, decision_mid: float, latency_ns: int) -> None:
        if latency_ns:
            self._arrivals += 1
            name = f"arrive-{self._arrivals}"
            due = self.clock.now() + latency_ns
            self.in_flight[name] = (due, msg, decision_mid)
            self.timer_at(due, name, (msg, decision_mid), drain=True)
        else:
            self._arrive(msg, decision_mid)

    def _arrive(self, msg: OrderRequest | CancelOrder, decision_mid: float) -> None:
        now = self.clock.now()
        if isinstance(msg, OrderRequest):
            self.venue.submit(msg, now, decision_mid)
            if msg.time_in_force is TimeInForce.DAY:
                self._arm_expiry()
        else:
            self.venue.cancel(msg, now)

    def _arm_expiry(self) -> None:
        due = self.venue.next_expiry()
        if due is not None and due != self._expiry_timer:
            self._expiry_timer = due
            self.timer_at(due, _EXPIRE)

    @property
    def may_act_on_market_data(self) -> bool:
        return bool(self.venue.working)

    def scan_batch(self, batch: Any, instrument_ids: tuple[str, ...]) -> int:
        dtype = batch.dtype
        if dtype is QUOTE_DTYPE or dtype == QUOTE_DTYPE:
            return self.venue.scan(batch["instrument"], batch["bid"], batch["ask"])
        if dtype == TRADE_DTYPE:
            return self.venue.scan_trades(batch["instrument"], batch["price"], batch["aggressor"])
        if dtype == BAR_DTYPE:
            return self.venue.scan_bars(batch["instrument"])
        return len(batch)
