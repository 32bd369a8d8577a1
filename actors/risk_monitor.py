"""The real-time risk monitor: measures the book on the clock and pulls the circuit breakers.

It follows the market (quotes, bars, corporate actions), the orders the risk gate approved
and what became of them, and the trading state; every ``monitor.interval_s`` of clock time
in which something changed it evaluates (:class:`engine.monitor.MonitorCore`): VaR,
drawdown from the high-water NAV, every limit at every level, the correlation regime. It
acts through its ports:

- ``control`` (to the risk gate): ``SetTradingState`` (REDUCING, HALTED, ACTIVE again) and
  ``SetLimits`` (tightened while the correlation regime has shifted);
- ``orders`` (to the risk gate): deleveraging and flattening orders, market, its own
  strategy id;
- ``cancels`` (to the router): every working order, when it flattens;
- ``events`` (to the journal): a ``RiskDecision`` with its inputs for every decision and an
  ``Alert`` (level, rule, figures, action) for every warning and worse.

The same in live trading and in a replay: evaluations run on the clock's timers, which a
replay fires at their exact data time. Nothing the monitor measures changes without a
message (a price, a fill, an order), so it evaluates once per interval in which something
happened: the first message after a quiet spell sets the timer, one interval after the last
evaluation at the earliest. Not a timer every second of a quiet night: a 23-year daily
replay would spend its time on them. In a replay that first message may sit inside a
batch, so the monitor's look-ahead (``scan_batch``) cuts the batch at the first tick while
no evaluation is due, and batched and tick-by-tick replays evaluate at the same times.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import numpy as np

from engine.actor import Actor, ActorConfig
from engine.limits import LimitsConfig, check_limits_source, resolve_limits
from engine.messages import (
    Alert,
    AlertLevel,
    Bar,
    BarBatch,
    CorporateActionEvent,
    LimitsChanged,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    QuoteBatch,
    QuoteTick,
    TimerFired,
    TradingState,
    TradingStateChanged,
)
from engine.monitor import ModelSettings, MonitorCore, RegimeSettings
from engine.ticks import BAR_DTYPE, QUOTE_DTYPE

__all__ = ["RiskMonitor", "RiskMonitorConfig"]

_EVALUATE = "evaluate"


class RiskMonitorConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``limits`` inline or ``limits_file`` (as the risk gate's; its ``[monitor]`` section
    sets the interval, the warning level, the drawdown stops and the tightening margin);
    ``model`` the risk model, ``regime`` the regime-shift detector."""

    limits: LimitsConfig | None = None
    limits_file: str | None = None
    model: ModelSettings = ModelSettings()
    regime: RegimeSettings = RegimeSettings()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_limits_source(self.limits, self.limits_file)


class RiskMonitor(Actor[RiskMonitorConfig]):
    Config = RiskMonitorConfig
    outputs: ClassVar[tuple[str, ...]] = ("orders", "cancels", "control", "events")
    receives_system_alerts = True
    """The supervisor sends it its alerts: a CRITICAL one is a system failure (flatten)."""

    def check_config(self) -> None:
        self._limits = self._load_limits()

    def _load_limits(self) -> LimitsConfig:
        return resolve_limits(self.config.limits, self.config.limits_file, self.ctx.base_dir)

    def on_start(self) -> None:
        if getattr(self, "core", None) is None:
            # kept across restarts: the book, the high-water mark and the breakers' state
            limits = getattr(self, "_limits", None) or self._load_limits()
            account = self.ctx.account
            self.core = MonitorCore(
                self.name,
                self.ctx.instruments,
                limits,
                account.currency,
                account.starting_balance,
                self.config.model,
                self.config.regime,
            )
            self.last_evaluation: int | None = None
        self.interval_ns = round(self.core.limits.monitor.interval_s * 1_000_000_000)
        self.armed = False
        self._arm()

    def _arm(self) -> None:
        """Evaluate at the next interval's time (not before one interval after the last)."""
        if self.armed:
            return
        now = self.clock.now()
        due = (
            now
            if self.last_evaluation is None
            else max(now, self.last_evaluation + self.interval_ns)
        )
        self.armed = True
        self.timer_at(due, _EVALUATE)

    def on_message(self, msg: Any) -> None:
        core = self.core
        instruments = self.ctx.instruments
        match msg:
            case TimerFired(name=name) if name == _EVALUATE:
                self.armed = False
                now = self.clock.now()
                self.last_evaluation = now
                for port, out in core.evaluate(now):
                    self.emit(port, out)
                return
            case QuoteBatch(data=data):
                core.on_marks(
                    data["instrument"], (data["bid"] + data["ask"]) * 0.5, data["ts_event"]
                )
            case BarBatch(data=data):
                core.on_marks(data["instrument"], data["close"], data["ts_event"])
            case QuoteTick(instrument_id=inst_id) if inst_id in instruments:
                core.on_marks(
                    np.array([instruments.index(inst_id)], dtype=np.uint32),
                    np.array([(msg.bid + msg.ask) * 0.5]),
                    np.array([msg.ts_event], dtype=np.int64),
                )
            case Bar(instrument_id=inst_id) if inst_id in instruments:
                core.on_marks(
                    np.array([instruments.index(inst_id)], dtype=np.uint32),
                    np.array([msg.close]),
                    np.array([msg.ts_event], dtype=np.int64),
                )
            case CorporateActionEvent(instrument_id=inst_id) if inst_id in instruments:
                core.on_corporate_action(
                    instruments.index(inst_id), msg.split_ratio, msg.dividend_ratio, msg.dividend
                )
            case OrderRequest():
                core.on_order(msg)
            case OrderFilled() | OrderPartiallyFilled():
                core.on_fill(
                    msg.client_order_id,
                    msg.instrument_id,
                    msg.last_qty * msg.side.sign,
                    msg.last_px,
                    msg.commission,
                    msg.leaves_qty,
                )
                self.log.info(
                    "position",
                    instrument=msg.instrument_id,
                    position=float(core.book.position[instruments.index(msg.instrument_id)]),
                )
            case OrderRejected() | OrderCancelled() | OrderExpired() | OrderDenied():
                core.on_done(msg.client_order_id)
            case LimitsChanged(limits=limits, origin=origin) if origin != self.name:
                try:
                    new = msgspec.convert(limits, LimitsConfig)
                except (msgspec.ValidationError, ValueError) as exc:
                    self.log.error("limits announced by the gate not understood", error=str(exc))
                    return
                for port, out in core.on_limits_changed(self.clock.now(), new, origin):
                    self.emit(port, out)
            case Alert(level=level, source=source) if (
                level >= AlertLevel.CRITICAL and source != self.name
            ):
                for port, out in core.on_system_failure(self.clock.now(), msg):
                    self.emit(port, out)
            case TradingStateChanged(state=state, origin=origin) if origin != self.name:
                if state is TradingState.ACTIVE:  # a person resumed: the breakers re-arm
                    core.halted = False
                    core.flattened = False
                    core.reducing = False
                    core.breached = set()
            case _:
                return
        self._arm()

    @property
    def may_act_on_market_data(self) -> bool:
        return not getattr(self, "armed", True)

    def scan_batch(self, batch: np.ndarray, instrument_ids: tuple[str, ...]) -> int:
        """With no evaluation due, the first quote or bar sets one: act on it."""
        if self.armed or not len(batch):
            return len(batch)
        dtype = batch.dtype
        if dtype in (QUOTE_DTYPE, BAR_DTYPE):
            return 0
        return len(batch)
