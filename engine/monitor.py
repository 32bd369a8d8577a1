"""The real-time risk monitor's decisions, as pure code: measure the book, compare with the
limits, and say what to do. The actor (``actors/risk_monitor.py``) feeds it and sends what
it returns.

Each evaluation measures NAV (cash plus positions at their marks), the drawdown from the
high-water NAV, VaR and every limit at every level (:func:`engine.limits.utilisation`), and
the correlation regime (:class:`engine.var.RegimeDetector`). Then, in this order:

============  ==================================  =============================================
level         trigger                             action
============  ==================================  =============================================
INFO          position update                     logged (by the actor)
WARNING       a limit ``warn_utilisation`` used    notify (once, until it falls back below)
WARNING       a regime shift                      tighten every limit by ``tighten_margin``
                                                  (sent to the gate), restored when it clears
ERROR         a limit breached                    REDUCING: no new risk-increasing trades;
                                                  ACTIVE again once every limit is back inside
ERROR         VaR over its limit                  deleverage: reduce every position by the
                                                  factor that brings VaR back inside
ERROR         drawdown over ``drawdown_halt``     HALTED
CRITICAL      drawdown over ``drawdown_flatten``  flatten: cancel every working order, then
                                                  close every position; HALTED once flat
CRITICAL      system failure (a CRITICAL alert   the same flatten, when
              from supervision or an adapter)     ``flatten_on_system_failure`` (the default)
============  ==================================  =============================================

A measure that cannot be taken (no mark for a position, no risk model yet) is reported
once as a WARNING; the gate already refuses risk-increasing orders it cannot judge.
Every decision comes out as a :class:`~engine.messages.RiskDecision` with its inputs, and
every alert as an :class:`~engine.messages.Alert` carrying the level, the rule, the figures
and the action, for the journal.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np

from engine.instruments import InstrumentTable
from engine.limits import Book, InstrumentMaster, LimitsConfig, Utilisation, utilisation
from engine.messages import (
    Alert,
    AlertLevel,
    CancelOrder,
    Message,
    OrderRequest,
    OrderType,
    RiskDecision,
    SetLimits,
    SetTradingState,
    Side,
    TimeInForce,
    TradingState,
)
from engine.ticks import last_rows
from engine.var import CovarianceRiskModel, RegimeDetector

__all__ = ["ModelSettings", "MonitorCore", "Outbox", "RegimeSettings"]

NANOS = 1_000_000_000

Port = Literal["orders", "cancels", "control", "events"]
Outbox = list[tuple[Port, Message]]
"""What to send, in order: orders (to the risk gate), cancels (to the router), control
(trading state and limits, to the risk gate), events (decisions and alerts, to the journal)."""


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The risk model's parameters (see :class:`engine.var.CovarianceRiskModel`)."""

    decay: float = 0.94
    confidence: float = 0.99
    method: Literal["parametric", "historical", "max"] = "max"
    history: int = 250
    min_observations: int = 20
    sample_interval_s: float = 86_400.0
    max_age_s: float | None = None

    def build(self, n_instruments: int) -> CovarianceRiskModel:
        return CovarianceRiskModel(
            n_instruments,
            decay=self.decay,
            confidence=self.confidence,
            method=self.method,
            history=self.history,
            min_observations=self.min_observations,
            sample_interval_ns=round(self.sample_interval_s * NANOS),
            max_age_ns=None if self.max_age_s is None else round(self.max_age_s * NANOS),
        )


class RegimeSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The correlation regime-shift detector (see :class:`engine.var.RegimeDetector`);
    ``enabled = false`` turns the tightening off."""

    enabled: bool = True
    short_half_life: float = 5.0
    long_half_life: float = 250.0
    enter_threshold: float = 0.15
    exit_threshold: float = 0.05
    warmup: int = 60

    def build(self) -> RegimeDetector:
        return RegimeDetector(
            short_half_life=self.short_half_life,
            long_half_life=self.long_half_life,
            enter_threshold=self.enter_threshold,
            exit_threshold=self.exit_threshold,
            warmup=self.warmup,
        )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _key(row: Utilisation) -> str:
    return f"{row.level}:{row.key}:{row.rule}"


class MonitorCore:
    """The monitor's state and decisions. Feed it fills, approved orders, order ends, marks
    and corporate actions; call :meth:`evaluate` on the clock."""

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        limits: LimitsConfig,
        currency: str,
        starting_balance: float,
        model: ModelSettings,
        regime: RegimeSettings,
    ) -> None:
        self.name = name
        self.instruments = instruments
        self.master = InstrumentMaster(instruments)
        self.base_limits = limits
        self.limits = limits
        self.currency = currency
        n = len(instruments)
        self.book = Book(n, currency=currency, nav=starting_balance)
        self.cash = starting_balance
        self.hwm = starting_balance
        self.nav = starting_balance
        self.drawdown = 0.0
        self.model = model.build(n)
        self.detector = regime.build() if regime.enabled else None
        self.mult = np.array([inst.multiplier for inst in instruments], dtype=np.float64)
        # client id -> (instrument, signed leaves); and whose order it is
        self.working: dict[str, tuple[int, float]] = {}
        self.owner: dict[str, str] = {}
        self.warned: set[str] = set()
        self.unmeasurable: set[str] = set()
        self.breached: set[str] = set()
        self.reducing = False  # we asked for REDUCING because of a breach
        self.halted = False
        self.flattening = False
        self.flattened = False  # a hard stop happened: not again until a person resumes
        self.tightened = False
        self.deleveraging: set[str] = set()  # our orders still working
        self.flatten_orders: set[str] = set()
        self.flatten_rule = "drawdown_flatten"
        self._seq = 0
        self.evaluations = 0
        self.last: dict[str, float] = {}

    # --- inputs --------------------------------------------------------------------------

    def on_order(self, order: OrderRequest) -> None:
        """An order the risk gate approved: working until it fills or ends."""
        if order.instrument_id in self.instruments:
            i = self.instruments.index(order.instrument_id)
            self.working[order.client_order_id] = (i, order.quantity * order.side.sign)
            self.owner[order.client_order_id] = order.strategy_id
            self._sync_working()

    def on_fill(
        self,
        client_order_id: str,
        instrument_id: str,
        signed_qty: float,
        price: float,
        commission: float,
        leaves: float,
    ) -> None:
        if instrument_id not in self.instruments:
            return
        i = self.instruments.index(instrument_id)
        self.book.position[i] += signed_qty
        if abs(self.book.position[i]) < 0.5 * self.instruments.at(i).size_increment:
            self.book.position[i] = 0.0
        self.cash -= signed_qty * price * float(self.mult[i]) + commission
        if math.isnan(float(self.book.mark[i])):
            self.book.mark[i] = price
        entry = self.working.get(client_order_id)
        if entry is not None:
            if leaves <= 0:
                self.on_done(client_order_id)
            else:
                self.working[client_order_id] = (entry[0], math.copysign(leaves, entry[1]))
        self._sync_working()

    def on_done(self, client_order_id: str) -> None:
        """Cancelled, rejected, denied, expired or filled in full."""
        self.working.pop(client_order_id, None)
        self.owner.pop(client_order_id, None)
        self.deleveraging.discard(client_order_id)
        self.flatten_orders.discard(client_order_id)
        self._sync_working()

    def _sync_working(self) -> None:
        buy = self.book.working_buy
        sell = self.book.working_sell
        buy[:] = 0.0
        sell[:] = 0.0
        for i, signed in self.working.values():
            if signed > 0:
                buy[i] += signed
            else:
                sell[i] -= signed

    def on_marks(self, instrument_col: np.ndarray, price: np.ndarray, ts: np.ndarray) -> None:
        """Prices in time order (mids of quotes, closes of bars)."""
        if len(price) == 0:
            return
        seen, last = last_rows(instrument_col)
        self.book.mark[seen] = price[last]
        self.model.on_prices(instrument_col, price, ts)

    def on_corporate_action(
        self, instrument: int, split_ratio: float, dividend_ratio: float, dividend: float
    ) -> None:
        pos = float(self.book.position[instrument])
        self.cash += pos * dividend * float(self.mult[instrument])
        if split_ratio != 1.0:
            self.book.position[instrument] = pos / split_ratio
            self.book.mark[instrument] *= split_ratio
            for cid, (i, signed) in list(self.working.items()):
                if i == instrument:
                    self.working[cid] = (i, signed / split_ratio)
            self._sync_working()
        self.model.on_corporate_action(instrument, split_ratio * dividend_ratio)

    # --- measures ------------------------------------------------------------------------

    def exposure(self) -> np.ndarray:
        """Signed exposure per instrument, account currency (0 without a mark)."""
        e = self.book.position * self.book.mark * self.mult
        return np.where(np.isnan(e), 0.0, e)

    def measure(self, now: int) -> list[Utilisation]:
        held = self.book.position != 0
        value = float(np.sum(self.book.position[held] * self.book.mark[held] * self.mult[held]))
        self.nav = self.cash + value
        self.book.nav = self.nav
        if math.isfinite(self.nav):
            self.hwm = max(self.hwm, self.nav)
            self.drawdown = 1.0 - self.nav / self.hwm if self.hwm > 0 else 0.0
        self.model.advance_to(now)
        model = None if self.model.is_stale(now) else self.model
        return utilisation(self.book, self.limits, self.master, model)

    # --- decisions -----------------------------------------------------------------------

    def evaluate(self, now: int) -> Outbox:
        """Measure everything and decide (see the module docstring)."""
        self.evaluations += 1
        out: Outbox = []
        rows = self.measure(now)
        figures = {"nav": self.nav, "high_water": self.hwm, "drawdown": self.drawdown}
        stale = self.model.is_stale(now)
        var = math.nan if stale else self.model.var(self.exposure())
        figures["var"] = var
        self.last = dict(figures)
        self._regime(now, out, figures)
        settings = self.limits.monitor
        # drawdown: the hard stop first
        if (
            settings.drawdown_flatten is not None
            and self.drawdown >= settings.drawdown_flatten
            and not self.flattening
            and not self.flattened
        ):
            self._flatten(now, out, figures)
        elif (
            settings.drawdown_halt is not None
            and self.drawdown >= settings.drawdown_halt
            and not self.halted
            and not self.flattening
        ):
            self.halted = True
            reason = (
                f"drawdown {_pct(self.drawdown)} from the high-water NAV "
                f"{self.hwm:,.2f} {self.currency} reached the halt level "
                f"{_pct(settings.drawdown_halt)}"
            )
            self._state(now, out, TradingState.HALTED, reason)
            self._decide(now, out, "drawdown_halt", AlertLevel.ERROR, "halt", reason, figures)
        if self.flattening:
            self._flatten_progress(now, out, figures)
            return out
        self._limits(now, out, rows, figures, settings.warn_utilisation)
        return out

    def _regime(self, now: int, out: Outbox, figures: dict[str, float]) -> None:
        if self.detector is None:
            return
        shifted = self.detector.update(self.model, self.exposure())
        figures["regime_statistic"] = self.detector.value
        margin = self.base_limits.monitor.tighten_margin
        if shifted and not self.tightened:
            self.tightened = True
            self.limits = self.base_limits.tightened(1.0 - margin)
            reason = f"{self.detector.reason}; every limit tightened by {_pct(margin)}"
            out.append(
                (
                    "control",
                    SetLimits(
                        limits=self.limits,
                        reason=reason,
                        origin=self.name,
                        ts_event=now,
                        ts_init=now,
                    ),
                )
            )
            self._decide(now, out, "regime_shift", AlertLevel.WARNING, "tighten", reason, figures)
        elif not shifted and self.tightened:
            self.tightened = False
            self.limits = self.base_limits
            reason = "the correlation regime shift has cleared; limits restored"
            out.append(
                (
                    "control",
                    SetLimits(
                        limits=self.limits,
                        reason=reason,
                        origin=self.name,
                        ts_event=now,
                        ts_init=now,
                    ),
                )
            )
            self._decide(now, out, "regime_shift", AlertLevel.INFO, "restore", reason, figures)

    def _limits(
        self,
        now: int,
        out: Outbox,
        rows: list[Utilisation],
        figures: dict[str, float],
        warn: float,
    ) -> None:
        breached: set[str] = set()
        for row in rows:
            key = _key(row)
            frac = row.fraction
            inputs = {**figures, "used": row.used, "limit": row.limit, "fraction": frac}
            if math.isnan(frac):
                if key not in self.unmeasurable:
                    self.unmeasurable.add(key)
                    self._decide(
                        now,
                        out,
                        row.rule,
                        AlertLevel.WARNING,
                        "notify",
                        f"{row.level} {row.key}: {row.rule} cannot be measured now "
                        "(no mark, no daily volume or no risk model yet)",
                        inputs,
                    )
                continue
            self.unmeasurable.discard(key)
            if frac > 1.0 + 1e-9:
                breached.add(key)
                if key not in self.breached:
                    if row.rule.endswith("var_limit"):
                        self._deleverage(now, out, row, inputs)
                    else:
                        self._decide(
                            now,
                            out,
                            row.rule,
                            AlertLevel.ERROR,
                            "reduce",
                            f"{row.level} {row.key}: {row.rule} breached, {row.used:.4g} "
                            f"against {row.limit:.4g} ({_pct(frac)}); no new risk",
                            inputs,
                        )
            if frac >= warn and key not in self.warned:
                self.warned.add(key)
                if frac <= 1.0 + 1e-9:
                    self._decide(
                        now,
                        out,
                        row.rule,
                        AlertLevel.WARNING,
                        "notify",
                        f"{row.level} {row.key}: {row.rule} at {_pct(frac)} of its limit",
                        inputs,
                    )
            elif frac < warn:
                self.warned.discard(key)
        self.breached = breached
        if breached and not self.reducing and not self.halted:
            self.reducing = True
            self._state(now, out, TradingState.REDUCING, f"{len(breached)} limit(s) breached")
        elif not breached and self.reducing and not self.halted and not self.deleveraging:
            self.reducing = False
            self._state(now, out, TradingState.ACTIVE, "every limit is back inside")
            self._decide(
                now,
                out,
                "limits",
                AlertLevel.INFO,
                "restore",
                "every limit is back inside: trading ACTIVE again",
                figures,
            )

    def _deleverage(
        self, now: int, out: Outbox, row: Utilisation, inputs: dict[str, float]
    ) -> None:
        if self.deleveraging:
            return
        # as the limit is measured: positions and working orders, at their marks
        book = self.book
        signed = book.position + book.working_buy - book.working_sell
        exposure = np.nan_to_num(signed * book.mark * self.mult)
        limit_money = row.limit * self.nav
        factor = self.model.deleverage_factor(exposure, limit_money)
        inputs = {**inputs, "deleverage_factor": factor}
        reason = (
            f"VaR {row.used:.4g} of NAV over its limit {row.limit:.4g}: every position "
            f"scaled by {factor:.3f}"
        )
        if not self.reducing:
            self.reducing = True
            self._state(now, out, TradingState.REDUCING, "VaR over its limit: deleveraging")
        self._decide(now, out, row.rule, AlertLevel.ERROR, "deleverage", reason, inputs)
        for i, pos in enumerate(self.book.position.tolist()):
            if pos == 0.0:
                continue
            inst = self.instruments.at(i)
            cut = math.floor(abs(pos) * (1.0 - factor) / inst.size_increment + 1e-9)
            if cut <= 0:
                continue
            qty = round(cut * inst.size_increment, 12)
            cid = self._order(now, out, i, Side.SELL if pos > 0 else Side.BUY, qty)
            self.deleveraging.add(cid)

    def on_limits_changed(self, now: int, limits: LimitsConfig, origin: str) -> Outbox:
        """The gate's limits were changed by someone else (a person, a reload): they are
        the new base. While a regime shift holds, the gate gets them tightened."""
        out: Outbox = []
        self.base_limits = limits
        if not self.tightened:
            self.limits = limits
            return out
        margin = self.limits.monitor.tighten_margin
        self.limits = limits.tightened(1 - margin)
        reason = f"new limits from {origin}, tightened by {_pct(margin)} for the regime shift"
        out.append(
            (
                "control",
                SetLimits(
                    limits=self.limits, reason=reason, origin=self.name, ts_event=now, ts_init=now
                ),
            )
        )
        return out

    def on_system_failure(self, now: int, alert: Alert) -> Outbox:
        """A CRITICAL alert from elsewhere (a critical actor crashed, the broker connection
        was lost): flatten the book, as a hard drawdown stop does, when
        ``flatten_on_system_failure``; otherwise the failure is only recorded."""
        out: Outbox = []
        figures = {"nav": self.nav, "high_water": self.hwm, "drawdown": self.drawdown}
        what = f"system failure from {alert.source} ({alert.rule}): {alert.message}"
        if not self.limits.monitor.flatten_on_system_failure:
            self._decide(now, out, "system_failure", AlertLevel.CRITICAL, "none", what, figures)
        elif not (self.flattening or self.flattened):
            self._flatten(now, out, figures, rule="system_failure", cause=what)
        return out

    def _flatten(
        self,
        now: int,
        out: Outbox,
        figures: dict[str, float],
        *,
        rule: str = "drawdown_flatten",
        cause: str | None = None,
    ) -> None:
        self.flattening = True
        self.flattened = True
        self.halted = True
        self.flatten_rule = rule
        if cause is None:
            settings = self.limits.monitor
            assert settings.drawdown_flatten is not None
            cause = (
                f"drawdown {_pct(self.drawdown)} reached the hard stop "
                f"{_pct(settings.drawdown_flatten)}"
            )
        reason = f"{cause}: cancel every order, close every position"
        # REDUCING lets only the closing orders through, even after a halt
        self._state(now, out, TradingState.REDUCING, "flattening the book")
        self._decide(now, out, rule, AlertLevel.CRITICAL, "flatten", reason, figures)
        for cid, (i, _) in sorted(self.working.items()):
            out.append(
                (
                    "cancels",
                    CancelOrder(
                        client_order_id=cid,
                        strategy_id=self.owner.get(cid, ""),
                        instrument_id=self.instruments.at(i).id,
                        ts_event=now,
                        ts_init=now,
                    ),
                )
            )
        self._close_all(now, out)

    def _close_all(self, now: int, out: Outbox) -> None:
        for i, pos in enumerate(self.book.position.tolist()):
            if pos != 0.0:
                side = Side.SELL if pos > 0 else Side.BUY
                self.flatten_orders.add(self._order(now, out, i, side, abs(pos)))

    def _flatten_progress(self, now: int, out: Outbox, figures: dict[str, float]) -> None:
        if self.flatten_orders:
            return
        if np.any(self.book.position != 0.0):
            self._close_all(now, out)  # what the first orders did not close
            return
        if self.halted and self.flattening:
            self.flattening = False
            self._state(now, out, TradingState.HALTED, "the book is flat after a hard stop")
            self._decide(
                now,
                out,
                self.flatten_rule,
                AlertLevel.CRITICAL,
                "halt",
                "the book is flat; trading HALTED until a person resumes it",
                figures,
            )

    # --- output --------------------------------------------------------------------------

    def _order(self, now: int, out: Outbox, i: int, side: Side, qty: float) -> str:
        self._seq += 1
        cid = f"{self.name}-{self._seq}"
        out.append(
            (
                "orders",
                OrderRequest(
                    client_order_id=cid,
                    strategy_id=self.name,
                    instrument_id=self.instruments.at(i).id,
                    side=side,
                    quantity=qty,
                    order_type=OrderType.MARKET,
                    time_in_force=TimeInForce.GTC,
                    ts_event=now,
                    ts_init=now,
                ),
            )
        )
        return cid

    def _state(self, now: int, out: Outbox, state: TradingState, reason: str) -> None:
        out.append(
            (
                "control",
                SetTradingState(
                    state=state, reason=reason, origin=self.name, ts_event=now, ts_init=now
                ),
            )
        )

    def _decide(
        self,
        now: int,
        out: Outbox,
        rule: str,
        level: AlertLevel,
        action: str,
        reason: str,
        inputs: dict[str, float],
    ) -> None:
        clean = {k: float(v) for k, v in inputs.items()}
        out.append(
            (
                "events",
                RiskDecision(
                    source=self.name,
                    rule=rule,
                    level=level,
                    action=action,
                    reason=reason,
                    inputs=clean,
                    ts_event=now,
                    ts_init=now,
                ),
            )
        )
        if level >= AlertLevel.WARNING:
            out.append(
                (
                    "events",
                    Alert(
                        level=level,
                        source=self.name,
                        rule=rule,
                        message=reason,
                        action=action,
                        figures=clean,
                        ts_event=now,
                        ts_init=now,
                    ),
                )
            )
