"""Pre-trade checks: pure functions from an order and the book to approve or deny, with a
reason a person can read.

Each check measures the book the order would leave: position plus working orders plus this
order (see :mod:`engine.limits` for how working orders count). The checks:

1. :func:`check_exposure`: single security (fraction of NAV, days of ADV), region, asset
   class, sector, gross and net leverage;
2. :func:`check_var`: portfolio VaR through the :class:`~engine.limits.RiskModel`;
3. :func:`check_correlation`: exposure to clusters of correlated instruments;
4. :func:`check_liquidity`: the order's share of ADV, days to unwind;
5. :func:`check_counterparty`: gross exposure per broker;
6. :func:`check_order_sanity`: trading state, instrument, quantity and lot, prices, restricted
   list, order notional and quantity, price collar, order rates, short-sale locates.

:func:`check_order` runs them cheapest first (6, 1, 4, 5, 3, 2) and returns the first
denial.

**Fail closed.** An unknown instrument, a missing price for a position a limit has to value,
a NAV that is unknown or not positive (the account cannot be seen), a missing or stale risk
model while a VaR or correlation limit is set, or an instrument without the master data a
limit needs (no ADV, no region, a region the table does not name) deny, naming what is
missing.

**Only added risk is denied.** Checks 1 to 5 (all but the order's share of ADV) deny an order
only when it makes the breached measure larger: a book over a limit (after a price move, or
a limit tightened) can always be reduced. For the gross measures (security, groups, gross leverage,
counterparty, days of ADV) that is when the order's instrument's gross quantity grows; for
net leverage, VaR and a cluster, when that figure grows. The order-level limits (size,
collar, share of ADV, rates, restricted, locates) apply to every order.
"""

from __future__ import annotations

import bisect
import math

import msgspec
import numpy as np

from engine.clock import stopwatch_ns
from engine.instruments import Instrument
from engine.limits import (
    ASSET_CLASS,
    COUNTERPARTY,
    GROUP_SECTIONS,
    REGION,
    SECTOR,
    Book,
    CorrelationLimits,
    InstrumentMaster,
    LimitsConfig,
    LiquidityLimits,
    PortfolioLimits,
    RateLimits,
    RiskModel,
    SecurityLimits,
    _cluster_check,
)
from engine.messages import OrderRequest, OrderType, Side, TradingState

__all__ = [
    "APPROVED",
    "Decision",
    "FixedCovarianceModel",
    "OrderImpact",
    "RateWindow",
    "bench_pre_trade",
    "check_correlation",
    "check_counterparty",
    "check_exposure",
    "check_liquidity",
    "check_order",
    "check_order_sanity",
    "check_var",
]


class Decision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Approve, or deny with the ``rule`` (the limit's key in the limits file, or what
    failed: ``trading_state``, ``instrument``, ``nav``, ``risk_model``...) and a ``reason``
    for a person."""

    approved: bool
    rule: str = ""
    reason: str = ""


APPROVED = Decision(approved=True)

# Enum members read on every order, as module constants: a member read as
# ``OrderType.MARKET`` goes through the enum metaclass, several times slower than a global.
_BUY = Side.BUY
_SELL = Side.SELL
_MARKET = OrderType.MARKET
_STOP = OrderType.STOP
_STOP_LIMIT = OrderType.STOP_LIMIT
_LIMITS = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_STOPS = (OrderType.STOP, OrderType.STOP_LIMIT)
_HALTED = TradingState.HALTED
_REDUCING = TradingState.REDUCING


def _deny(rule: str, reason: str) -> Decision:
    return Decision(approved=False, rule=rule, reason=reason)


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _pct(x: float) -> str:
    return f"{x:.2%}"


# --- state: order rates ----------------------------------------------------------------------


class RateWindow:
    """The approved orders of the recent past, for the rate limits: explicit state, kept by
    the caller. Checking reads it; :meth:`record` (for an approved order) is the only
    change. Times are clock nanoseconds, in the order they come."""

    __slots__ = ("_all", "_by_strategy")

    def __init__(self) -> None:
        self._all: list[int] = []
        self._by_strategy: dict[str, list[int]] = {}

    def count(self, now_ns: int, window_ns: int, strategy_id: str | None = None) -> int:
        """Approved orders in ``(now - window, now]``, of one strategy or of all."""
        times = self._all if strategy_id is None else self._by_strategy.get(strategy_id, [])
        return len(times) - bisect.bisect_right(times, now_ns - window_ns)

    def record(self, now_ns: int, strategy_id: str, window_ns: int) -> None:
        """An approved order at ``now_ns``; forgets what has left the window."""
        horizon = now_ns - window_ns
        for times in (self._all, self._by_strategy.setdefault(strategy_id, [])):
            del times[: bisect.bisect_right(times, horizon)]
            times.append(now_ns)


# --- the order's effect on the book ----------------------------------------------------------


class OrderImpact:
    """What one order does to one book: instrument ``i``'s long and short sides (units)
    before and after the order is working, the gross quantities (``max(long, -short)``), and
    its mark value per unit (mark x multiplier; NaN when there is no mark).

    Sums over the whole book are made once, when a check first asks for them.
    """

    __slots__ = (
        "_refreshed",
        "book",
        "gross_after",
        "gross_before",
        "i",
        "instrument",
        "long_after",
        "long_before",
        "master",
        "order",
        "quantity",
        "short_after",
        "short_before",
        "slots",
        "unit_value",
    )

    def __init__(self, order: OrderRequest, book: Book, master: InstrumentMaster) -> None:
        i = master.instruments.index(order.instrument_id)
        self.order = order
        self.book = book
        self.master = master
        self.i = i
        self.instrument: Instrument = master.instruments.at(i)
        self.quantity = order.quantity
        values: list[float] = book.state[:, i].tolist()
        p, wb, ws, mark = values
        lo = p + wb
        sh = p - ws
        self.long_before = lo
        self.short_before = sh
        if order.side is _BUY:
            self.long_after, self.short_after = lo + order.quantity, sh
        else:
            self.long_after, self.short_after = lo, sh - order.quantity
        self.gross_before = max(lo, -sh)
        self.gross_after = max(self.long_after, -self.short_after)
        self.unit_value = mark * master.multiplier_list[i] if mark > 0 else math.nan
        self._refreshed = False
        self.slots: list[int] = master.slot_list[i]

    @property
    def adds_gross(self) -> bool:
        """Whether the order makes the instrument's gross quantity larger."""
        return self.gross_after > self.gross_before

    @property
    def net_after(self) -> float:
        """Position plus every working order plus this order, signed (units): what VaR
        sees."""
        return self.long_after + self.short_after - float(self.book.position[self.i])

    def sums(self) -> np.ndarray:
        """The book's sums before the order (see :class:`~engine.limits.BookCache`),
        brought up to date once per order."""
        cache = self.master.cache
        if not self._refreshed:
            cache.refresh(self.book)
            self._refreshed = True
        return cache.sums

    def unmarked(self, slot: int) -> int:
        """An instrument held without a usable mark that adds up in ``slot`` of the sums
        (0: anywhere in the book)."""
        book = self.book
        held = (book.position + book.working_buy != 0) | (book.position - book.working_sell != 0)
        with np.errstate(invalid="ignore"):
            bad = held & ~((book.mark > 0) & (book.mark < np.inf))
        if slot > 0:
            bad &= (self.master.slots == slot).any(axis=0)
        return int(np.flatnonzero(bad)[0])


# --- shared fail-closed checks ---------------------------------------------------------------


def _nav_denial(book: Book, what: str) -> Decision | None:
    nav = book.nav
    if math.isnan(nav):
        return _deny("nav", f"the account cannot be seen: NAV is unknown; {what} cannot be checked")
    if not (nav > 0 and math.isfinite(nav)):
        return _deny(
            "nav",
            f"the account cannot be seen: NAV is {_money(nav)} {book.currency}, not a positive "
            f"amount; {what} cannot be checked",
        )
    return None


def _mark_denial(impact: OrderImpact, what: str) -> Decision | None:
    if impact.unit_value > 0 and math.isfinite(impact.unit_value):
        return None
    return _deny(
        "market_price",
        f"no mark price for {impact.instrument.id}; {what} cannot be checked without one",
    )


def _unmarked_among(book: Book, members: np.ndarray) -> int:
    """The first of ``members`` held without a usable mark."""
    for i in members:
        lo = book.position[i] + book.working_buy[i]
        sh = book.position[i] - book.working_sell[i]
        if (lo != 0 or sh != 0) and not (0 < book.mark[i] < math.inf):
            return int(i)
    return int(members[0])


def _missing_mark(master: InstrumentMaster, index: int, what: str) -> Decision:
    return _deny(
        "market_price",
        f"no mark price for {master.ids[index]}, which is held; {what} cannot be checked "
        "without one",
    )


def _adv_denial(impact: OrderImpact, what: str) -> Decision | None:
    adv = impact.master.adv[impact.i]
    if adv > 0:
        return None
    return _deny(
        "instrument_master",
        f"{impact.instrument.id} has no average daily volume (adv) in the instrument master; "
        f"{what} cannot be checked without it",
    )


def _model_denial(model: RiskModel | None, now_ns: int, what: str) -> Decision | None:
    if model is None:
        return _deny("risk_model", f"no risk model; {what} cannot be checked without one")
    try:
        stale = model.is_stale(now_ns)
    except Exception as exc:  # a failing model denies; it does not stop the gate
        return _model_failed(exc, what)
    if stale:
        return _deny("risk_model", f"the risk model is stale; {what} cannot be checked")
    return None


def _model_failed(exc: Exception, what: str) -> Decision:
    return _deny("risk_model", f"the risk model failed ({exc!r}); {what} cannot be checked")


def _group_denial(impact: OrderImpact, f: int) -> Decision:
    """Why the order's instrument has no limit in section ``f`` (``GroupCaps.of`` is NaN)."""
    section = GROUP_SECTIONS[f]
    master = impact.master
    code = int(master.codes[f, impact.i])
    field = "broker" if f == COUNTERPARTY else section
    if code < 0:
        return _deny(
            "instrument_master",
            f"{impact.instrument.id} has no {field} in the instrument master, and the "
            f"{section} limits need one",
        )
    name = master.names[f][code]
    return _deny(
        section,
        f"{field} {name!r} of {impact.instrument.id} has no limit in [{section}]; every "
        f"{field} traded needs one",
    )


# --- 1. exposure -----------------------------------------------------------------------------


def check_exposure(impact: OrderImpact, limits: LimitsConfig) -> Decision:
    """Check 1: single security (fraction of NAV and days of ADV), region, asset class,
    sector (equities), gross and net leverage, on the book the order would leave."""
    sec: SecurityLimits = limits.security
    port: PortfolioLimits = limits.portfolio
    master, book, ident = impact.master, impact.book, impact.instrument.id
    adds = impact.adds_gross
    if sec.max_adv_days is not None:
        denial = _adv_denial(impact, "the security.max_adv_days limit")
        if denial is not None:
            return denial
        days = impact.gross_after / master.adv[impact.i]
        if adds and days > sec.max_adv_days:
            return _deny(
                "security.max_adv_days",
                f"{ident} would be {impact.gross_after:g} units, {days:.2f} days of its average "
                f"daily volume (limit {sec.max_adv_days:g} days)",
            )
    caps = master.caps(limits)
    grouped = caps.limited[REGION] or caps.limited[ASSET_CLASS] or caps.limited[SECTOR]
    gross_cap, net_cap = port.max_gross_leverage, port.max_net_leverage
    need_book = gross_cap is not None or net_cap is not None
    if not (need_book or grouped or sec.max_position_fraction is not None):
        return APPROVED
    denial = _nav_denial(book, "the exposure limits") or _mark_denial(impact, "the exposure limits")
    if denial is not None:
        return denial
    mine = caps.of[impact.i]  # this instrument's region, asset class, sector limits
    for f in (REGION, ASSET_CLASS, SECTOR):
        if math.isnan(mine[f]):  # a limit applies but cannot be found
            return _group_denial(impact, f)
    nav = book.nav
    ccy = book.currency
    g_before = impact.gross_before * impact.unit_value
    g_after = impact.gross_after * impact.unit_value
    cap = sec.max_position_fraction
    if cap is not None and adds and g_after > cap * nav:
        return _deny(
            "security.max_position_fraction",
            f"{ident} would be {_pct(g_after / nav)} of NAV (limit {_pct(cap)}): "
            f"{_money(g_after)} {ccy} of {_money(nav)} {ccy}",
        )
    if not (need_book or grouped):
        return APPROVED
    sums = impact.sums()
    if need_book and sums[1, 0] > 0:
        return _missing_mark(master, impact.unmarked(0), "the leverage limits")
    slots = impact.slots
    for f in (REGION, ASSET_CLASS, SECTOR):
        if mine[f] < math.inf and sums[1, slots[f]] > 0:
            return _missing_mark(master, impact.unmarked(slots[f]), "the group limits")
    if adds:
        for f in (REGION, ASSET_CLASS, SECTOR):
            limit = mine[f]
            if limit == math.inf:
                continue
            after = float(sums[0, slots[f]]) - g_before + g_after
            if after > limit * nav:
                section = GROUP_SECTIONS[f]
                name = master.names[f][master.codes[f, impact.i]]
                return _deny(
                    section,
                    f"{section.replace('_', ' ')} {name} would be {_pct(after / nav)} of NAV "
                    f"gross (limit {_pct(limit)}); the order adds {_money(g_after - g_before)} "
                    f"{ccy} in {ident}",
                )
        if gross_cap is not None:
            after = float(sums[0, 0]) - g_before + g_after
            if after > gross_cap * nav:
                return _deny(
                    "portfolio.max_gross_leverage",
                    f"gross leverage would be {after / nav:.3f}x NAV (limit {gross_cap:g}x); the "
                    f"order adds {_money(g_after - g_before)} {ccy} in {ident}",
                )
    if net_cap is not None:
        v = impact.unit_value
        long_sum, short_sum = float(sums[0, 1]), float(sums[0, 2])
        before = max(abs(long_sum), abs(short_sum))
        long_after = long_sum + (impact.long_after - impact.long_before) * v
        short_after = short_sum + (impact.short_after - impact.short_before) * v
        after = max(abs(long_after), abs(short_after))
        if after > net_cap * nav and after > before:
            return _deny(
                "portfolio.max_net_leverage",
                f"net leverage would be {after / nav:.3f}x NAV (limit {net_cap:g}x), up from "
                f"{before / nav:.3f}x",
            )
    return APPROVED


# --- 2. VaR ----------------------------------------------------------------------------------


def check_var(
    impact: OrderImpact, limits: LimitsConfig, risk_model: RiskModel | None, now_ns: int
) -> Decision:
    """Check 2: portfolio VaR after the order within ``portfolio.var_limit`` x NAV, unless
    the order lowers it. The book is taken as if every working order, and this one, filled
    (see engine.limits)."""
    cap = limits.portfolio.var_limit
    if cap is None:
        return APPROVED
    what = "the VaR limit"
    denial = (
        _model_denial(risk_model, now_ns, what)
        or _nav_denial(impact.book, what)
        or _mark_denial(impact, what)
    )
    if denial is not None:
        return denial
    assert risk_model is not None
    book, master = impact.book, impact.master
    if impact.sums()[1, 0] > 0:
        return _missing_mark(master, impact.unmarked(0), what)
    exposure = master.cache.exposure  # the model gets a read-only view; k is put back below
    view = master.cache.exposure_view
    before_e = float(exposure[impact.i])
    exposure[impact.i] = impact.net_after * impact.unit_value
    try:
        var_after = float(risk_model.var(view))
        if not (var_after >= 0 and math.isfinite(var_after)):
            return _deny("risk_model", f"the risk model gave a VaR of {var_after}; cannot use it")
        if var_after <= cap * book.nav:
            return APPROVED
        exposure[impact.i] = before_e
        var_before = float(risk_model.var(view))
    except Exception as exc:  # a failing model denies; it does not stop the gate
        return _model_failed(exc, what)
    finally:
        exposure[impact.i] = before_e
    if var_after <= var_before:
        return APPROVED  # it lowers VaR: always allowed
    ccy = book.currency
    return _deny(
        "portfolio.var_limit",
        f"1-day VaR would be {_money(var_after)} {ccy}, {_pct(var_after / book.nav)} of NAV "
        f"(limit {_pct(cap)}), up from {_money(var_before)} {ccy}",
    )


# --- 3. correlation --------------------------------------------------------------------------


def check_correlation(
    impact: OrderImpact, limits: LimitsConfig, risk_model: RiskModel | None, now_ns: int
) -> Decision:
    """Check 3: no cluster of correlated instruments over ``max_cluster_fraction`` of NAV.

    The cluster of an instrument is itself and every instrument whose correlation with it is
    beyond ``threshold`` in size. Its exposure is counted in each direction: what gains when
    the instrument rises (long positions in positively correlated names, short positions in
    negatively correlated ones) and what gains when it falls; the cluster's exposure is the
    larger of the two. Same-direction exposure adds up fully; the other direction does not
    offset it, since correlation below 1 is no hedge to rely on. The order is denied when it
    takes any cluster it belongs to (its own or a correlated instrument's) over the limit
    and makes that cluster larger.
    """
    corr: CorrelationLimits | None = limits.correlation
    if corr is None:
        return APPROVED
    what = "the correlation limit"
    denial = (
        _model_denial(risk_model, now_ns, what)
        or _nav_denial(impact.book, what)
        or _mark_denial(impact, what)
    )
    if denial is not None:
        return denial
    assert risk_model is not None
    book, master = impact.book, impact.master
    try:
        matrix = np.asarray(risk_model.correlation())
    except Exception as exc:  # a failing model denies; it does not stop the gate
        return _model_failed(exc, what)
    if matrix.shape != (master.n, master.n):
        return _deny(
            "risk_model",
            f"the risk model's correlation matrix is {matrix.shape}, the run has "
            f"{master.n} instruments",
        )
    clusters = master.clusters(matrix, corr.threshold)
    if clusters.no_figure[impact.i]:
        return _deny(
            "risk_model", f"the risk model has no correlation figures for {impact.instrument.id}"
        )
    impact.sums()
    cluster_sums = master.cache.track(clusters)
    v = impact.unit_value
    lo_b, sh_b, lo_a, sh_a = (
        impact.long_before, impact.short_before, impact.long_after, impact.short_after,
    )  # fmt: skip
    cap = corr.max_cluster_fraction * book.nav
    worst, unmarked, before, after = _cluster_check(
        impact.i, (max(lo_a, 0.0) - max(lo_b, 0.0)) * v, (max(-sh_a, 0.0) - max(-sh_b, 0.0)) * v,
        cap, clusters.indptr, clusters.indices, clusters.signs, cluster_sums,
    )  # fmt: skip
    if unmarked >= 0:
        cluster = np.concatenate(([unmarked], clusters.neighbours(unmarked)))
        return _missing_mark(master, _unmarked_among(book, cluster), what)
    if worst < 0:
        return APPROVED
    members = len(clusters.neighbours(worst))
    ident = impact.instrument.id
    among = "" if worst == impact.i else f", {ident} among them,"
    return _deny(
        "correlation.max_cluster_fraction",
        f"{master.ids[worst]} and the {members} instruments correlated with it beyond "
        f"{corr.threshold:g}{among} would be {_pct(after / book.nav)} of NAV exposed in one "
        f"direction (limit {_pct(corr.max_cluster_fraction)}), up from "
        f"{_pct(before / book.nav)}; the order is for {impact.quantity:g} {ident}",
    )


# --- 4. liquidity ----------------------------------------------------------------------------


def check_liquidity(impact: OrderImpact, limits: LimitsConfig) -> Decision:
    """Check 4: the order at most ``max_order_adv_fraction`` of ADV; the instrument's
    position within ``portfolio.max_days_to_unwind`` days at ``unwind_participation`` of ADV
    a day (the book unwinds within the limit exactly when every position does)."""
    liq: LiquidityLimits | None = limits.liquidity
    port = limits.portfolio
    ident = impact.instrument.id
    if liq is not None and liq.max_order_adv_fraction is not None:
        denial = _adv_denial(impact, "the liquidity.max_order_adv_fraction limit")
        if denial is not None:
            return denial
        adv = float(impact.master.adv[impact.i])
        share = impact.quantity / adv
        if share > liq.max_order_adv_fraction:
            return _deny(
                "liquidity.max_order_adv_fraction",
                f"the order for {impact.quantity:g} {ident} is {_pct(share)} of its average "
                f"daily volume {adv:g} (limit {_pct(liq.max_order_adv_fraction)})",
            )
    if port.max_days_to_unwind is not None:
        denial = _adv_denial(impact, "the portfolio.max_days_to_unwind limit")
        if denial is not None:
            return denial
        daily = port.unwind_participation * float(impact.master.adv[impact.i])
        days = impact.gross_after / daily
        if impact.adds_gross and days > port.max_days_to_unwind:
            return _deny(
                "portfolio.max_days_to_unwind",
                f"{ident} would take {days:.2f} days to unwind at "
                f"{_pct(port.unwind_participation)} of its daily volume (limit "
                f"{port.max_days_to_unwind:g} days)",
            )
    return APPROVED


# --- 5. counterparty -------------------------------------------------------------------------


def check_counterparty(impact: OrderImpact, limits: LimitsConfig) -> Decision:
    """Check 5: gross exposure with the instrument's broker within its fraction of NAV."""
    if not limits.counterparty:
        return APPROVED
    what = "the counterparty limits"
    denial = _nav_denial(impact.book, what) or _mark_denial(impact, what)
    if denial is not None:
        return denial
    master, book = impact.master, impact.book
    limit = master.caps(limits).of[impact.i][COUNTERPARTY]
    if math.isnan(limit):
        return _group_denial(impact, COUNTERPARTY)
    if not impact.adds_gross:
        return APPROVED
    sums = impact.sums()  # the pass check 1 made, if it needed one
    slot = impact.slots[COUNTERPARTY]
    if sums[1, slot] > 0:
        return _missing_mark(master, impact.unmarked(slot), what)
    g_before = impact.gross_before * impact.unit_value
    g_after = impact.gross_after * impact.unit_value
    after = float(sums[0, slot]) - g_before + g_after
    if after > limit * book.nav:
        name = master.names[COUNTERPARTY][master.codes[COUNTERPARTY, impact.i]]
        return _deny(
            "counterparty",
            f"exposure with broker {name} would be {_pct(after / book.nav)} of NAV gross (limit "
            f"{_pct(limit)}); the order adds {_money(g_after - g_before)} {book.currency} in "
            f"{impact.instrument.id}",
        )
    return APPROVED


# --- 6. order sanity ------------------------------------------------------------------------


def _order_price(order: OrderRequest, book: Book, i: int) -> float | Decision:
    """What the order is valued at for its notional: market orders at the touch, limits at
    their limit, stops at the worse of their stop and the touch."""
    kind = order.order_type
    if kind in _LIMITS and not (order.limit_price is not None and order.limit_price > 0):
        return _deny("order_price", f"a {kind.value} order needs a positive limit price")
    if kind in _STOPS and not (order.stop_price is not None and order.stop_price > 0):
        return _deny("order_price", f"a {kind.value} order needs a positive stop price")
    if kind is _MARKET or kind is _STOP:
        touch: float = book.ask.item(i) if order.side is _BUY else book.bid.item(i)
        if not (touch > 0 and math.isfinite(touch)):
            return _deny(
                "market_price",
                f"no market price for {order.instrument_id}; "
                f"cannot value a {kind.value.lower()} order",
            )
        if kind is _STOP:
            # it trades at the touch once triggered: value it at the worse of the two
            assert order.stop_price is not None
            if order.side is _BUY:
                return max(touch, order.stop_price)
            return min(touch, order.stop_price)
        return touch
    assert order.limit_price is not None
    return order.limit_price


def _collar_denial(order: OrderRequest, book: Book, i: int, collar: float) -> Decision | None:
    """A limit buy more than ``collar`` above the ask (a sell below the bid) is a fat finger.
    A stop-limit's limit is measured from its stop, where it starts to work."""
    if order.order_type not in _LIMITS:
        return None
    assert order.limit_price is not None
    buy = order.side is _BUY
    if order.order_type is _STOP_LIMIT:
        assert order.stop_price is not None
        ref, name = order.stop_price, "its stop"
    else:
        ref = float(book.ask[i] if buy else book.bid[i])
        name = "the ask" if buy else "the bid"
        if not (ref > 0 and math.isfinite(ref)):
            return _deny(
                "price_collar",
                f"no quote for {order.instrument_id} ({name}); the price collar needs one",
            )
    limit = order.limit_price
    off = limit / ref - 1.0 if buy else 1.0 - limit / ref
    if off > collar + 1e-12:  # at the collar exactly, give or take binary fractions: passes
        where = "above" if buy else "below"
        return _deny(
            "price_collar",
            f"limit {limit:g} is {_pct(off)} {where} {name} {ref:g} (collar {_pct(collar)}): "
            "a fat finger?",
        )
    return None


def _rate_denial(
    order: OrderRequest, rates: RateLimits, window: RateWindow | None, now_ns: int
) -> Decision | None:
    if window is None or not rates.enabled:
        return None
    span = rates.window_ns
    cap = rates.max_orders
    if cap is not None and window.count(now_ns, span) >= cap:
        return _deny(
            "rates.max_orders",
            f"{cap} orders already approved in the last {rates.window_s:g} s (limit {cap})",
        )
    cap = rates.max_orders_per_strategy
    if cap is not None and window.count(now_ns, span, order.strategy_id) >= cap:
        return _deny(
            "rates.max_orders_per_strategy",
            f"strategy {order.strategy_id} already has {cap} orders approved in the last "
            f"{rates.window_s:g} s (limit {cap})",
        )
    return None


def _short_denial(order: OrderRequest, book: Book, master: InstrumentMaster, i: int,
                  locates: dict[str, float]) -> Decision | None:  # fmt: skip
    """Reg SHO: an equity sale that would take the short side below zero, or further below,
    needs a locate for the whole resulting short."""
    if order.side is not _SELL or not master.is_equity[i]:
        return None
    short_after = float(book.position[i] - book.working_sell[i]) - order.quantity
    if short_after >= 0:
        return None
    need = -short_after
    have = locates.get(order.instrument_id)
    if have is None:
        return _deny(
            "short_locates",
            f"no locate for {order.instrument_id}: this sale would leave a short of {need:g} "
            "(with the sells working), and a short sale needs a locate (Reg SHO)",
        )
    if need > have + 1e-9 * max(1.0, have):
        return _deny(
            "short_locates",
            f"this sale would leave {order.instrument_id} short {need:g} (with the sells "
            f"working); the locate covers {have:g} (Reg SHO)",
        )
    return None


def check_order_sanity(
    order: OrderRequest,
    book: Book,
    limits: LimitsConfig,
    master: InstrumentMaster,
    *,
    state: TradingState = TradingState.ACTIVE,
    state_reason: str = "",
    rates: RateWindow | None = None,
    now_ns: int = 0,
) -> Decision:
    """Check 6: the trading state, a known and unrestricted instrument, a positive quantity
    on the lot size within ``max_order_quantity``, the prices the order type needs, its
    notional within ``max_order_notional``, the price collar, REDUCING (only orders that
    shrink the position, working orders counted as filled), the order rates and short-sale
    locates."""
    if state is _HALTED:
        return _deny(
            "trading_state",
            f"trading is HALTED ({state_reason}); no orders until it is resumed",
        )
    ident = order.instrument_id
    i = master.instruments.find(ident)
    if i is None:
        return _deny("instrument", f"unknown instrument {ident}")
    if ident in master.caps(limits).restricted:
        return _deny("restricted", f"{ident} is on the restricted list; no orders in it")
    inst = master.instruments.at(i)
    qty = order.quantity
    if not (qty > 0 and math.isfinite(qty)):
        return _deny("quantity", f"quantity must be a positive number, got {qty}")
    lots = qty / inst.size_increment
    if abs(lots - round(lots)) > 1e-9 * max(1.0, abs(lots)):
        return _deny(
            "quantity", f"quantity {qty} is not a multiple of the lot size {inst.size_increment}"
        )
    if limits.max_order_quantity is not None and qty > limits.max_order_quantity:
        cap_qty = limits.max_order_quantity
        return _deny("max_order_quantity", f"quantity {qty:g} exceeds the limit {cap_qty:g}")
    price = _order_price(order, book, i)
    if isinstance(price, Decision):
        return price
    notional = inst.notional(price, qty)
    cap = limits.max_order_notional
    if cap is not None and notional > cap:
        ccy = book.currency
        return _deny(
            "max_order_notional",
            f"order notional {_money(notional)} {ccy} exceeds the limit {_money(cap)} {ccy}",
        )
    if limits.price_collar is not None:
        denial = _collar_denial(order, book, i, limits.price_collar)
        if denial is not None:
            return denial
    if state is _REDUCING:
        exposure = float(book.position[i]) + float(book.working_buy[i] - book.working_sell[i])
        after = exposure + qty * order.side.sign
        if not (abs(after) < abs(exposure) and (after == 0 or (after > 0) == (exposure > 0))):
            return _deny(
                "trading_state",
                f"trading is REDUCING ({state_reason}): only orders that shrink a "
                f"position pass; this one takes {ident} from {exposure:g} to {after:g}",
            )
    denial = _rate_denial(order, limits.rates, rates, now_ns)
    if denial is not None:
        return denial
    if limits.short_locates is not None:
        denial = _short_denial(order, book, master, i, limits.short_locates)
        if denial is not None:
            return denial
    return APPROVED


# --- all of them -----------------------------------------------------------------------------


def check_order(
    order: OrderRequest,
    book: Book,
    limits: LimitsConfig,
    master: InstrumentMaster,
    *,
    risk_model: RiskModel | None = None,
    rates: RateWindow | None = None,
    state: TradingState = TradingState.ACTIVE,
    state_reason: str = "",
    now_ns: int,
) -> Decision:
    """Every pre-trade check, cheapest first (6, 1, 4, 5, 3, 2); the first denial, or
    :data:`APPROVED`. Changes nothing: booking an approved order as working and recording
    it in the rate window are the caller's."""
    decision = check_order_sanity(
        order, book, limits, master, state=state, state_reason=state_reason, rates=rates,
        now_ns=now_ns,
    )  # fmt: skip
    if not decision.approved or not master.caps(limits).needs_book:
        return decision
    impact = OrderImpact(order, book, master)
    decision = check_exposure(impact, limits)
    if decision.approved:
        decision = check_liquidity(impact, limits)
    if decision.approved:
        decision = check_counterparty(impact, limits)
    if decision.approved:
        decision = check_correlation(impact, limits, risk_model, now_ns)
    if decision.approved:
        decision = check_var(impact, limits, risk_model, now_ns)
    return decision


# --- a fixed covariance, for tests and the benchmark ---------------------------------------


class FixedCovarianceModel:
    """A :class:`~engine.limits.RiskModel` from a given covariance of 1-day returns, for
    tests and benchmarks (the estimated model is another module's): VaR is
    ``z * sqrt(e' S e)`` for exposures ``e``.

    ``S`` is given either whole (``covariance``, n x n) or as a factor model
    ``B F B' + diag(specific)`` (``loadings`` B n x k, ``factor_cov`` F k x k, ``specific``
    n), which costs O(n k) per VaR instead of O(n^2). It is stale when ``as_of_ns`` is None
    or older than ``max_age_ns``.
    """

    def __init__(
        self,
        covariance: np.ndarray | None = None,
        *,
        loadings: np.ndarray | None = None,
        factor_cov: np.ndarray | None = None,
        specific: np.ndarray | None = None,
        z: float = 2.326,
        as_of_ns: int | None = 0,
        max_age_ns: int | None = None,
    ) -> None:
        self.z = z
        self.as_of_ns = as_of_ns
        self.max_age_ns = max_age_ns
        self.covariance = covariance
        self.loadings = loadings
        if covariance is None:
            if loadings is None or factor_cov is None or specific is None:
                raise ValueError("give a covariance, or loadings, factor_cov and specific")
            self._root = np.linalg.cholesky(factor_cov)  # F = R R'
            self._bl = loadings @ self._root
            self._specific = specific
            full = self._bl @ self._bl.T + np.diag(specific)
        else:
            full = covariance
        sd = np.sqrt(np.diag(full))
        self._correlation: np.ndarray = full / np.outer(sd, sd)

    def is_stale(self, now_ns: int) -> bool:
        if self.as_of_ns is None:
            return True
        return self.max_age_ns is not None and now_ns - self.as_of_ns > self.max_age_ns

    def var(self, exposure: np.ndarray) -> float:
        if self.covariance is not None:
            variance = float(exposure @ self.covariance @ exposure)
        else:
            f = exposure @ self._bl
            variance = float(f @ f) + float(np.dot(exposure * exposure, self._specific))
        return self.z * math.sqrt(max(variance, 0.0))

    def correlation(self) -> np.ndarray:
        return self._correlation


# --- benchmark -----------------------------------------------------------------------------


def bench_workload(
    n_positions: int = 1000, n_orders: int = 20_000, seed: int = 20_240_601
) -> tuple[Book, LimitsConfig, InstrumentMaster, FixedCovarianceModel, list[OrderRequest]]:
    """A book of ``n_positions`` held instruments across 4 regions, 4 asset classes, 11
    equity sectors and 3 brokers, about 0.9x NAV gross with some orders working, limits
    like ``config/limits.toml``, a 15-factor covariance (names of a sector or an asset class
    correlate at about 0.6 to 0.9), and random orders against it (market and limit, buys
    and sells, 0.001% to 0.5% of NAV each)."""
    from engine.instruments import InstrumentTable  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    regions = ["US", "EU", "APAC", "LATAM"]
    classes = ["equity", "fixed_income", "commodity", "fx"]
    sectors = [
        "technology", "financials", "healthcare", "consumer_discretionary", "consumer_staples",
        "industrials", "energy", "materials", "utilities", "real_estate", "communication",
    ]  # fmt: skip
    brokers = ["IB", "GS", "MS"]
    n = n_positions
    region = rng.choice(4, n, p=[0.4, 0.3, 0.25, 0.05])
    klass = rng.choice(4, n, p=[0.5, 0.3, 0.15, 0.05])
    sector = rng.integers(0, len(sectors), n)
    broker = rng.integers(0, 3, n)
    table = InstrumentTable(
        Instrument(
            id=f"I{i:04d}.SIM",
            asset_class=classes[klass[i]],
            quote_currency="USD",
            price_increment=0.01,
            region=regions[region[i]],
            sector=sectors[sector[i]] if klass[i] == 0 else None,
            adv=float(rng.uniform(2e5, 2e7)),
            broker=brokers[broker[i]],
        )
        for i in range(n)
    )
    master = InstrumentMaster(table)
    nav = 1e9
    book = Book(n, currency="USD", nav=nav)
    mid = rng.uniform(10.0, 500.0, n)
    book.set_quotes(np.arange(n), mid * 0.9995, mid * 1.0005)
    weight = rng.uniform(0.2, 1.8, n) * 0.9 / n  # fraction of NAV, about 0.9 in all
    sign = np.where(rng.random(n) < 0.8, 1.0, -1.0)
    book.position[:] = np.round(sign * weight * nav / book.mark)
    working = rng.random(n) < 0.1
    book.working_buy[working] = np.round(0.2 * np.abs(book.position[working]))
    # factor model: a market factor, one per equity sector, one per other asset class
    k = 1 + len(sectors) + 3
    group = np.where(klass == 0, 1 + sector, 1 + len(sectors) + klass - 1)
    loadings = np.zeros((n, k))
    loadings[:, 0] = rng.uniform(0.6, 1.2, n) * 0.01
    loadings[np.arange(n), group] = rng.uniform(0.8, 1.2, n) * 0.012
    model = FixedCovarianceModel(
        loadings=loadings,
        factor_cov=np.eye(k),
        specific=(rng.uniform(0.003, 0.01, n)) ** 2,
    )
    limits = LimitsConfig(
        max_order_notional=2e7,
        max_order_quantity=1e6,
        price_collar=0.05,
        restricted=["I0007.SIM"],
        short_locates={f"I{i:04d}.SIM": 1e5 for i in range(0, n, 2)},
        rates=RateLimits(window_s=1.0, max_orders=1_000_000, max_orders_per_strategy=1_000_000),
        portfolio=PortfolioLimits(
            var_limit=0.03, max_gross_leverage=1.0, max_net_leverage=0.8, max_days_to_unwind=5.0
        ),
        region={"US": 0.40, "EU": 0.30, "APAC": 0.25, "LATAM": 0.05},
        asset_class={"equity": 0.50, "fixed_income": 0.30, "commodity": 0.15, "fx": 0.05},
        sector={s: 0.15 for s in sectors},
        security=SecurityLimits(max_position_fraction=0.05, max_adv_days=2.0),
        correlation=CorrelationLimits(threshold=0.7, max_cluster_fraction=0.1),
        liquidity=LiquidityLimits(max_order_adv_fraction=0.1),
        counterparty={"IB": 0.6, "GS": 0.5, "MS": 0.5},
    )
    orders = []
    which = rng.integers(0, n, n_orders)
    buys = rng.random(n_orders) < 0.5
    limit_orders = rng.random(n_orders) < 0.5
    fraction = 10 ** rng.uniform(-5, np.log10(0.005), n_orders)
    for t in range(n_orders):
        i = int(which[t])
        side = Side.BUY if buys[t] else Side.SELL
        qty = max(1.0, float(round(fraction[t] * nav / book.mark[i])))
        price = None
        kind = OrderType.MARKET
        if limit_orders[t]:
            kind = OrderType.LIMIT
            price = round(float(book.mark[i]) * (1.001 if buys[t] else 0.999), 2)
        orders.append(
            OrderRequest(
                client_order_id=f"b-{t}",
                strategy_id=f"s{t % 4}",
                instrument_id=master.ids[i],
                side=side,
                quantity=qty,
                order_type=kind,
                limit_price=price,
                ts_event=t,
                ts_init=t,
            )
        )
    return book, limits, master, model, orders


def bench_pre_trade(
    n_positions: int = 1000, n_orders: int = 20_000, seed: int = 20_240_601
) -> dict[str, float]:
    """Time :func:`check_order` on :func:`bench_workload`, with every limit of every level
    set, so each order runs every check its outcome reaches.

    The book does not stand still, as in trading: before each order one instrument's quote
    moves, and each approved order is booked as working (the oldest is cancelled once 50
    work), so the sums kept between checks have something to catch up with each time. Only
    the check is timed, with the stopwatch (which never feeds a decision). Returns the
    median and the 99th percentile in microseconds, and the share of orders approved."""
    book, limits, master, model, orders = bench_workload(n_positions, n_orders, seed)
    rng = np.random.default_rng(seed + 1)
    ticks = rng.integers(0, n_positions, len(orders))
    moves = 1.0 + rng.normal(0.0, 0.0005, len(orders))
    window = RateWindow()
    for order in orders[:200]:  # compile the kernels, warm the caches
        check_order(order, book, limits, master, risk_model=model, rates=window, now_ns=0)
    took = np.empty(len(orders), dtype=np.int64)
    approved = 0
    working: list[tuple[int, float]] = []
    for t, order in enumerate(orders):
        i = int(ticks[t])
        mid = float(book.mark[i]) * moves[t]
        book.set_quote(i, mid * 0.9995, mid * 1.0005)
        start = stopwatch_ns()
        decision = check_order(
            order, book, limits, master, risk_model=model, rates=window, now_ns=t
        )
        took[t] = stopwatch_ns() - start
        if decision.approved:
            approved += 1
            k = master.instruments.index(order.instrument_id)
            signed = order.quantity * order.side.sign
            _book_working(book, k, signed)
            working.append((k, signed))
            if len(working) > 50:
                _book_working(book, *working.pop(0), cancel=True)
    return {
        "n_positions": n_positions,
        "n_orders": len(orders),
        "approved_fraction": approved / len(orders),
        "p50_us": float(np.percentile(took, 50)) / 1e3,
        "p99_us": float(np.percentile(took, 99)) / 1e3,
    }


def _book_working(book: Book, i: int, signed: float, *, cancel: bool = False) -> None:
    if signed > 0:
        book.working_buy[i] += -signed if cancel else signed
    else:
        book.working_sell[i] += signed if cancel else -signed
