"""Pre-trade risk: the risk gate's state and its decisions. The gate fails closed.

:class:`PreTradeRisk` keeps what the checks in :mod:`engine.pretrade` measure: positions,
working orders (booked when approved, released by fills, cancels, rejections and
expiries), the touch and mark of every instrument, cash and hence NAV, the window of
recent approvals for the rate limits, and the trading state (ACTIVE / REDUCING / HALTED).
Every decision is :func:`engine.pretrade.check_order` on that state; a denial comes back
as a sentence a person can act on.

NAV is cash plus every position at its mark: cash starts at the account's starting
balance and moves with fills (``-quantity x price x multiplier - commission``) and
dividends; :meth:`PreTradeRisk.on_account` re-anchors it to the broker's figure. While a
position has no mark, NAV is unknown, and every limit measured against NAV denies.

REDUCING counts working orders as if filled, so two reducing orders cannot together flip
a position.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from engine.instruments import InstrumentTable
from engine.limits import Book, InstrumentMaster, LimitsConfig, RiskModel
from engine.messages import FillEvent, OrderRequest, TradingState
from engine.pretrade import Decision, RateWindow, check_order
from engine.ticks import last_rows

__all__ = ["PreTradeRisk", "RiskLimits"]

RiskLimits = LimitsConfig
"""The name this had when it held only the order-level limits; the same type."""


class PreTradeRisk:
    """The risk gate's decisions and the state they depend on.

    ``starting_cash`` (account currency) is where NAV starts; None leaves NAV unknown until
    :meth:`on_account`. ``risk_model`` is needed as soon as a VaR or correlation limit is
    set; without one such limits deny every order.
    """

    def __init__(
        self,
        instruments: InstrumentTable,
        limits: LimitsConfig,
        currency: str,
        state: TradingState = TradingState.ACTIVE,
        *,
        starting_cash: float | None = None,
        risk_model: RiskModel | None = None,
    ) -> None:
        self.instruments = instruments
        self.master = InstrumentMaster(instruments)
        self.limits = _validated(limits)
        self.currency = currency
        self.state = state
        self.state_reason = "start"
        self.risk_model = risk_model
        self.book = Book(len(instruments), currency=currency)
        self.position = self.book.position
        self.bid = self.book.bid
        self.ask = self.book.ask
        self.mark = self.book.mark
        # the rows of the working totals, as views (rows 1 and 2 of ``book.state``)
        self._working_rows = (self.book.working_buy, self.book.working_sell)
        self._lot = [inst.size_increment for inst in instruments]
        self._half_lot = [0.5 * lot for lot in self._lot]
        self._multiplier = [inst.multiplier for inst in instruments]
        self.working: dict[str, tuple[int, float]] = {}  # client id -> (instrument, signed leaves)
        self.cash = math.nan if starting_cash is None else float(starting_cash)
        self.rates = RateWindow()

    # --- state ---------------------------------------------------------------------------

    def set_state(self, state: TradingState, reason: str) -> TradingState | None:
        """Change the trading state; return the previous state, or None if unchanged."""
        if state is self.state:
            return None
        previous = self.state
        self.state = state
        self.state_reason = reason
        return previous

    def set_limits(self, limits: LimitsConfig) -> LimitsConfig:
        """Check ``limits`` and put them in force from the next order; return the previous
        ones. Raises ValueError (naming the field) and keeps the old limits if they do not
        check."""
        new = _validated(limits)
        self.master.caps(new)  # laid over the instrument master now, not at the next order
        previous, self.limits = self.limits, new
        return previous

    def adopt(self, previous: PreTradeRisk) -> None:
        """Take over what a previous gate (before a restart) knew of the account: positions,
        working orders, cash, the recent approvals and the limits in force (a tightening
        survives a crash). Marks are not taken: prices come again from the feed."""
        self.position[:] = previous.position
        self.book.working_buy[:] = previous.book.working_buy
        self.book.working_sell[:] = previous.book.working_sell
        self.working.update(previous.working)
        self.cash = previous.cash
        self.rates = previous.rates
        self.limits = previous.limits
        if self.risk_model is None:
            self.risk_model = previous.risk_model

    # --- market data, fills, the account -------------------------------------------------

    def on_quote(self, instrument: int, bid: float, ask: float) -> None:
        self.book.set_quote(instrument, bid, ask)

    def on_quote_batch(self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
        """Keep the last quote of each instrument in the batch."""
        if len(bid) == 0:
            return
        if len(self.bid) == 1:
            self.book.set_quote(0, float(bid[-1]), float(ask[-1]))
            return
        seen, last = last_rows(instrument_col)
        self.book.set_quotes(seen, bid[last], ask[last])

    def on_fill(self, fill: FillEvent) -> None:
        i = self.instruments.index(fill.instrument_id)
        signed = fill.last_qty * fill.side.sign
        position = self.position.item(i) + signed
        if abs(position) < 0.5 * self._lot[i]:  # partial fills that close it leave no dust
            position = 0.0
        self.position[i] = position
        self.cash -= signed * fill.last_px * self._multiplier[i] + fill.commission
        entry = self.working.get(fill.client_order_id)
        if entry is not None:
            leaves = fill.leaves_qty * fill.side.sign if fill.leaves_qty > 0 else 0.0
            self._set_working(fill.client_order_id, entry[0], leaves)

    def on_order_done(self, client_order_id: str) -> None:
        """Cancelled, rejected or expired: nothing more will fill."""
        entry = self.working.get(client_order_id)
        if entry is not None:
            self._set_working(client_order_id, entry[0], 0.0)

    def on_corporate_action(self, instrument: int, split_ratio: float, dividend: float) -> None:
        """A split and/or dividend goes ex (see ``CorporateActionEvent``): the dividend per
        unit held before the split is paid into cash, then quantities divide by the split
        ratio and prices multiply by it."""
        i = instrument
        if dividend:
            self.cash += dividend * float(self.position[i]) * self._multiplier[i]
        if split_ratio == 1.0:
            return
        book = self.book
        self.position[i] /= split_ratio
        book.working_buy[i] /= split_ratio
        book.working_sell[i] /= split_ratio
        for cid, (j, leaves) in list(self.working.items()):
            if j == i:
                self.working[cid] = (j, leaves / split_ratio)
        for prices in (book.bid, book.ask, book.mark):
            prices[i] *= split_ratio

    def on_account(self, nav: float) -> bool:
        """The account's NAV as the broker reports it (account currency): cash is set so
        that NAV at the current marks equals it. While a position has no mark the report
        cannot be lined up with the marks, and is not used (returns False)."""
        cash = nav - self.book.market_value(self.master.multiplier)
        if math.isnan(cash):
            return False
        self.cash = cash
        return True

    @property
    def nav(self) -> float:
        """Cash plus every position at its mark (account currency); NaN when unknown."""
        return self.cash + self.book.market_value(self.master.multiplier)

    def _set_working(self, client_order_id: str, i: int, signed_leaves: float) -> None:
        """Book an order's signed leaves (0: it is done) in the working totals."""
        buys, sells = self._working_rows
        previous = self.working.pop(client_order_id, None)
        if previous is not None:
            old = previous[1]
            row = buys if old > 0 else sells
            left = row.item(i) - abs(old)
            # sums of many partial fills leave no dust where nothing works
            row[i] = left if left >= self._half_lot[i] else 0.0
        if signed_leaves != 0:
            self.working[client_order_id] = (i, signed_leaves)
            row = buys if signed_leaves > 0 else sells
            row[i] = row.item(i) + abs(signed_leaves)

    # --- the check -----------------------------------------------------------------------

    def decide(self, order: OrderRequest, now_ns: int | None = None) -> Decision:
        """Every pre-trade check on ``order`` at clock time ``now_ns`` (default: the order's
        ``ts_init``). Approval books the order as working and counts it for the rates."""
        now = order.ts_init if now_ns is None else now_ns
        limits = self.limits
        if self.master.caps(limits).needs_nav:
            self.book.nav = self.nav
        decision = check_order(
            order,
            self.book,
            limits,
            self.master,
            risk_model=self.risk_model,
            rates=self.rates,
            state=self.state,
            state_reason=self.state_reason,
            now_ns=now,
        )
        if decision.approved:
            i = self.instruments.index(order.instrument_id)
            self._set_working(order.client_order_id, i, order.quantity * order.side.sign)
            if limits.rates.enabled:
                self.rates.record(now, order.strategy_id, limits.rates.window_ns)
        return decision

    def check(self, order: OrderRequest, now_ns: int | None = None) -> str | None:
        """None to approve, else the reason for denial (see :meth:`decide`)."""
        decision = self.decide(order, now_ns)
        return None if decision.approved else decision.reason


def _validated(limits: LimitsConfig) -> LimitsConfig:
    """``limits`` checked field by field, as if read from a file (a Struct built in code
    with ``msgspec.structs.replace`` may have skipped its checks)."""
    if not isinstance(limits, LimitsConfig):
        raise TypeError(f"expected LimitsConfig, got {type(limits).__name__}")
    try:
        return msgspec.convert(msgspec.to_builtins(limits), LimitsConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
