"""Risk limits: the hierarchy from ``config/limits.toml``, the book they are measured on, and
how much of each limit is used.

The hierarchy, each level checked against the instrument master (region, asset class,
sector, broker, multiplier, average daily volume of every instrument):

- **portfolio**: 1-day VaR as a fraction of NAV, gross and net leverage, and the days it
  takes to unwind the whole book trading ``unwind_participation`` of each instrument's
  average daily volume (ADV) a day;
- **region**, **asset class**, **sector** (equities only) and **counterparty** (the
  instrument's broker): gross exposure of the group as a fraction of NAV;
- **security**: one position's gross exposure as a fraction of NAV, and its size in days of
  ADV;
- **correlation**: the exposure of an instrument together with every instrument whose
  correlation with it is beyond a threshold, as a fraction of NAV.

Fractions are of NAV unless said otherwise; a limit left out (None, or a missing table) is
not checked. A table that is given must name every group traded: an instrument whose region
(asset class, sector, broker) is not in a non-empty ``[region]`` table, or that has no
region in the master, cannot get new risk (fail closed).

**What is measured.** Exposure is ``quantity x mark x multiplier`` in the account currency.
Working orders count as if they filled, each side apart: an instrument's *long side* is its
position plus every working buy, its *short side* its position minus every working sell, and
its gross quantity is the larger of the two in size, ``max(long, -short)``. So a buy and a
sell working together cannot hide each other (quoting both sides counts the worse one), and
an order reduces a measure only once it has filled. Net exposure is the larger in size of
the all-long-sides sum and the all-short-sides sum. A cluster of correlated instruments
counts every long side that moves with it and every short side that moves against it.

VaR is a model figure of the whole book rather than a sum, so it is taken on the book as if
every working order filled (position + working buys - working sells, the order included):
what the book would be, signed, instead of a worst case over which orders fill. With no
working orders all of these are the plain signed position.

Pre-trade checks live in :mod:`engine.pretrade`; :func:`utilisation` is what a monitor
reads every second.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import msgspec
import numpy as np
from numba import njit

from engine.config import convert_section
from engine.errors import ConfigError
from engine.instruments import InstrumentTable

__all__ = [
    "GROUP_SECTIONS",
    "Book",
    "ClusterIndex",
    "CorrelationLimits",
    "GroupCaps",
    "InstrumentMaster",
    "LimitsConfig",
    "LiquidityLimits",
    "MonitorSettings",
    "PortfolioLimits",
    "RateLimits",
    "RiskModel",
    "SecurityLimits",
    "Utilisation",
    "load_limits",
    "parse_limits",
    "utilisation",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(func))


# --- configuration ---------------------------------------------------------------------------


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive, got {value!r} - at `$.{name}`")


def _in_unit(name: str, value: float | None, *, closed_top: bool = True) -> None:
    """0 < value <= 1 (or < 1)."""
    if value is None:
        return
    ok = value > 0 and (value <= 1 if closed_top else value < 1)
    if not ok:
        top = "1" if closed_top else "below 1"
        raise ValueError(
            f"{name} must be a fraction above 0 and up to {top}, got {value!r} - at `$.{name}`"
        )


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RateLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """At most ``max_orders`` approved orders (``max_orders_per_strategy`` per strategy)
    within any ``window_s`` seconds of clock time. Denied orders do not count."""

    window_s: float = 1.0
    max_orders: int | None = None
    max_orders_per_strategy: int | None = None

    def __post_init__(self) -> None:
        _positive("window_s", self.window_s)
        for name in ("max_orders", "max_orders_per_strategy"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value} - at `$.{name}`")

    @property
    def window_ns(self) -> int:
        return round(self.window_s * 1e9)

    @property
    def enabled(self) -> bool:
        return self.max_orders is not None or self.max_orders_per_strategy is not None


class PortfolioLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``var_limit``: 1-day VaR as a fraction of NAV. Leverage: gross (sum of absolute
    exposures) and net (absolute sum of signed exposures) over NAV. ``max_days_to_unwind``:
    trading ``unwind_participation`` of each instrument's ADV a day, every position in
    parallel, the book is flat within this many days (so it holds exactly when every
    position is within it)."""

    var_limit: float | None = None
    max_gross_leverage: float | None = None
    max_net_leverage: float | None = None
    max_days_to_unwind: float | None = None
    unwind_participation: float = 0.1

    def __post_init__(self) -> None:
        for name in ("var_limit", "max_gross_leverage", "max_net_leverage", "max_days_to_unwind"):
            _positive(name, getattr(self, name))
        _in_unit("unwind_participation", self.unwind_participation)


class SecurityLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One instrument: gross exposure as a fraction of NAV, and gross quantity in days of
    its average daily volume."""

    max_position_fraction: float | None = None
    max_adv_days: float | None = None

    def __post_init__(self) -> None:
        _positive("max_position_fraction", self.max_position_fraction)
        _positive("max_adv_days", self.max_adv_days)


class CorrelationLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """No more than ``max_cluster_fraction`` of NAV in an instrument together with the
    instruments whose correlation with it is beyond ``threshold`` in size (see
    :func:`utilisation` for how signs count)."""

    threshold: float
    max_cluster_fraction: float

    def __post_init__(self) -> None:
        _in_unit("threshold", self.threshold, closed_top=False)
        _positive("max_cluster_fraction", self.max_cluster_fraction)


class LiquidityLimits(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An order may be at most ``max_order_adv_fraction`` of the instrument's ADV."""

    max_order_adv_fraction: float | None = 0.1

    def __post_init__(self) -> None:
        _positive("max_order_adv_fraction", self.max_order_adv_fraction)


class MonitorSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """For the risk monitor: how often it measures (seconds of clock time), the fraction of
    a limit at which it warns, the drawdowns (fractions of the high-water NAV) at which it
    halts trading and at which it flattens the book, by how much a regime shift
    tightens the limits (``LimitsConfig.tightened(1 - tighten_margin)``), and whether a
    system failure (a CRITICAL alert from elsewhere: a critical actor crashed, the broker
    connection lost) flattens the book."""

    interval_s: float = 1.0
    warn_utilisation: float = 0.8
    drawdown_halt: float | None = None
    drawdown_flatten: float | None = None
    tighten_margin: float = 0.2
    flatten_on_system_failure: bool = True

    def __post_init__(self) -> None:
        _positive("interval_s", self.interval_s)
        _in_unit("warn_utilisation", self.warn_utilisation)
        _in_unit("drawdown_halt", self.drawdown_halt, closed_top=False)
        _in_unit("drawdown_flatten", self.drawdown_flatten, closed_top=False)
        if (
            self.drawdown_halt is not None
            and self.drawdown_flatten is not None
            and self.drawdown_flatten < self.drawdown_halt
        ):
            raise ValueError(
                f"drawdown_flatten ({self.drawdown_flatten}) must not be below drawdown_halt "
                f"({self.drawdown_halt}): the book is flattened at a deeper drawdown than the "
                "one that halts trading - at `$.drawdown_flatten`"
            )
        if not 0 <= self.tighten_margin < 1:
            raise ValueError(
                f"tighten_margin must be at least 0 and below 1, got {self.tighten_margin!r}"
                " - at `$.tighten_margin`"
            )


GROUP_SECTIONS = ("region", "asset_class", "sector", "counterparty")
"""The group limit tables, in the order of :attr:`InstrumentMaster.codes`' rows."""
REGION, ASSET_CLASS, SECTOR, COUNTERPARTY = 0, 1, 2, 3
_MASTER_FIELD = ("region", "asset_class", "sector", "broker")


class LimitsConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every risk limit, as decoded from ``config/limits.toml`` (or inline in the risk
    gate's configuration). None or an empty table: no such limit.

    Order sanity, at the top: ``max_order_notional`` (account currency), ``max_order_quantity``
    (units), ``price_collar`` (a limit buy more than this fraction above the ask, or a sell
    below the bid, is refused as a fat finger), ``restricted`` (instrument ids no order may
    touch), ``short_locates`` (units of each equity that may be sold short; when the table is
    given, an equity order that would take its short side below zero, or further below,
    needs a locate for the whole resulting short).
    """

    max_order_notional: float | None = None
    max_order_quantity: float | None = None
    price_collar: float | None = None
    restricted: list[str] = []
    short_locates: dict[str, float] | None = None
    rates: RateLimits = RateLimits()
    portfolio: PortfolioLimits = PortfolioLimits()
    region: dict[str, float] = {}
    asset_class: dict[str, float] = {}
    sector: dict[str, float] = {}
    security: SecurityLimits = SecurityLimits()
    correlation: CorrelationLimits | None = None
    liquidity: LiquidityLimits | None = None
    counterparty: dict[str, float] = {}
    monitor: MonitorSettings = MonitorSettings()

    def __post_init__(self) -> None:
        _positive("max_order_notional", self.max_order_notional)
        _positive("max_order_quantity", self.max_order_quantity)
        _positive("price_collar", self.price_collar)
        for section in GROUP_SECTIONS:
            for key, value in getattr(self, section).items():
                if not (value > 0 and math.isfinite(value)):
                    raise ValueError(
                        f"a {section} limit must be a positive fraction of NAV, got {value!r}"
                        f" - at `$.{section}.{key}`"
                    )
        for key, value in (self.short_locates or {}).items():
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(
                    f"a short locate must be a number of units, 0 or more, got {value!r}"
                    f" - at `$.short_locates.{key}`"
                )

    # --- what the limits need -----------------------------------------------------------

    @property
    def needs_nav(self) -> bool:
        """Whether any limit is a fraction of NAV (then an unknown NAV denies every order)."""
        p = self.portfolio
        return (
            p.var_limit is not None
            or p.max_gross_leverage is not None
            or p.max_net_leverage is not None
            or self.security.max_position_fraction is not None
            or self.correlation is not None
            or any(getattr(self, s) for s in GROUP_SECTIONS)
        )

    @property
    def needs_risk_model(self) -> bool:
        return self.portfolio.var_limit is not None or self.correlation is not None

    def tightened(self, factor: float) -> LimitsConfig:
        """These limits with every fractional limit multiplied by ``factor`` (0 < factor <= 1):
        VaR, leverage, region, asset class, sector, counterparty, single position and cluster
        fractions of NAV, and the order's fraction of ADV. Counts and sizes (order notional
        and quantity, days of ADV, rates, locates) and the model settings (correlation
        threshold, unwind participation, collar) are unchanged."""
        if not (0 < factor <= 1):
            raise ValueError(f"a tightening factor must be above 0 and at most 1, got {factor!r}")

        def scale(x: float | None) -> float | None:
            return None if x is None else x * factor

        rep = msgspec.structs.replace
        p = self.portfolio
        liquidity = self.liquidity
        correlation = self.correlation
        return rep(
            self,
            portfolio=rep(
                p,
                var_limit=scale(p.var_limit),
                max_gross_leverage=scale(p.max_gross_leverage),
                max_net_leverage=scale(p.max_net_leverage),
            ),
            region={k: v * factor for k, v in self.region.items()},
            asset_class={k: v * factor for k, v in self.asset_class.items()},
            sector={k: v * factor for k, v in self.sector.items()},
            counterparty={k: v * factor for k, v in self.counterparty.items()},
            security=rep(
                self.security, max_position_fraction=scale(self.security.max_position_fraction)
            ),
            correlation=None
            if correlation is None
            else rep(correlation, max_cluster_fraction=correlation.max_cluster_fraction * factor),
            liquidity=None
            if liquidity is None
            else rep(liquidity, max_order_adv_fraction=scale(liquidity.max_order_adv_fraction)),
        )


_TABLES = (*("region", "asset_class", "sector", "counterparty"), "short_locates")


def parse_limits(text: str, *, file: str | None = None) -> LimitsConfig:
    """Check a limits document (TOML). Raises ConfigError naming the file and ``$.key``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    try:
        return convert_section(raw, LimitsConfig, file=file)
    except ConfigError as exc:
        # msgspec cannot say which key of a table held a value of the wrong type
        # (`$.region[...]`): find it, so the message names it
        for table in _TABLES:
            if exc.path == f"$.{table}[...]" and isinstance(raw.get(table), dict):
                for key, value in raw[table].items():
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        path = f"$.{table}.{key}"
                        text = str(exc).replace(f"`{exc.path}`", f"`{path}`")
                        raise ConfigError(text.removeprefix(f"{file}: "), path=path,
                                          file=file) from None  # fmt: skip
        raise


def load_limits(path: str | Path) -> LimitsConfig:
    """Read and check a limits file. Raises ConfigError naming the file and the bad key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the limits: {exc.strerror}", file=str(p)) from None
    return parse_limits(text, file=str(p))


def check_limits_source(limits: LimitsConfig | None, limits_file: str | None) -> None:
    """An actor's configuration gives its limits inline or in a file, not both."""
    if limits is not None and limits_file is not None:
        raise ValueError(
            "give the limits inline (`limits`) or in a file (`limits_file`), not both"
            " - at `$.limits_file`"
        )


def resolve_limits(
    limits: LimitsConfig | None, limits_file: str | None, base_dir: Path | None
) -> LimitsConfig:
    """The limits an actor's configuration names: ``limits`` inline, or ``limits_file``
    (relative to ``base_dir``, the configuration's folder); neither: no limits. A missing
    file is a ValueError naming ``$.limits_file``; a bad key in it names that file."""
    if limits_file is None:
        return limits or LimitsConfig()
    path = Path(limits_file)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ValueError(f"no limits file {str(path)!r} - at `$.limits_file`")
    return load_limits(path)


# --- the instrument master as arrays ---------------------------------------------------------

_MISSING = -1  # the instrument has no value for the field
_NOT_APPLICABLE = -2  # the field does not apply (the sector of anything but an equity)


class GroupCaps:
    """One :class:`LimitsConfig`'s group tables laid over an :class:`InstrumentMaster`'s
    group codes, made once per limits and kept (see :meth:`InstrumentMaster.caps`).

    ``caps[f][code]`` is the limit (fraction of NAV) of group ``code`` of section ``f`` (see
    :data:`GROUP_SECTIONS`), NaN where the table does not name the group; ``limited[f]``
    is whether section ``f`` has a table at all. ``of[i]`` is instrument ``i``'s limit in
    each section: infinite where no limit applies (no table; the sector of anything but an
    equity), NaN where one should but cannot (the instrument has no value for the field, or
    the table does not name its group: fail closed). ``restricted`` is the restricted list
    as a set; ``needs_nav`` whether any limit is a fraction of NAV, ``needs_book`` whether
    any check beyond order sanity is set."""

    __slots__ = ("caps", "limited", "needs_book", "needs_nav", "of", "restricted")

    def __init__(self, limits: LimitsConfig, master: InstrumentMaster) -> None:
        self.needs_nav = limits.needs_nav
        p = limits.portfolio
        self.needs_book = (
            self.needs_nav
            or p.max_days_to_unwind is not None
            or limits.security.max_adv_days is not None
            or limits.liquidity is not None
        )
        self.limited = tuple(bool(getattr(limits, s)) for s in GROUP_SECTIONS)
        self.caps = tuple(
            np.array([getattr(limits, s).get(name, math.nan) for name in master.names[f]])
            for f, s in enumerate(GROUP_SECTIONS)
        )
        of = np.full((master.n, 4), math.inf)
        for f in range(4):
            if not self.limited[f]:
                continue
            codes = master.codes[f]
            known = codes >= 0
            of[codes == _MISSING, f] = math.nan
            of[known, f] = self.caps[f][codes[known]]
        self.of: list[list[float]] = of.tolist()
        self.restricted = frozenset(limits.restricted)


class ClusterIndex:
    """The pairs of instruments whose correlation is beyond a threshold in size, as
    compressed rows (``indptr``, ``indices``) with the sign of each correlation (of the
    matrix made symmetric), and the instruments the matrix has no figure for (a NaN in their
    row)."""

    __slots__ = ("indices", "indptr", "no_figure", "signs", "source", "threshold")

    def __init__(self, correlation: np.ndarray, threshold: float) -> None:
        corr = np.asarray(correlation, dtype=np.float64)
        corr = 0.5 * (corr + corr.T)
        n = corr.shape[0]
        beyond = np.abs(corr) > threshold  # NaN compares False: no pair
        np.fill_diagonal(beyond, False)
        rows, cols = np.nonzero(beyond)
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=self.indptr[1:])
        self.indices = cols.astype(np.int64)
        self.signs = np.sign(corr[rows, cols]).astype(np.float64)
        self.no_figure: np.ndarray = np.asarray(np.isnan(corr).any(axis=1))
        self.source = correlation
        self.threshold = threshold

    def neighbours(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]


class InstrumentMaster:
    """The instrument master of one run as arrays, in the order of its
    :class:`InstrumentTable`: multiplier, lot, ADV (NaN: unknown), whether it is an equity,
    and one row of group codes per section of :data:`GROUP_SECTIONS` (region, asset class,
    sector, broker): an index into ``names[f]``, -1 where the instrument has no value and
    -2 where the section does not apply (the sector of anything but an equity). Group
    sums are then ``np.bincount`` over a row."""

    def __init__(self, instruments: InstrumentTable) -> None:
        self.instruments = instruments
        self.ids = [inst.id for inst in instruments]
        n = len(self.ids)
        self.n = n
        self.multiplier = np.array([inst.multiplier for inst in instruments], dtype=np.float64)
        self.multiplier_list: list[float] = self.multiplier.tolist()
        self.lot = np.array([inst.size_increment for inst in instruments], dtype=np.float64)
        self.adv = np.array(
            [math.nan if inst.adv is None else inst.adv for inst in instruments], dtype=np.float64
        )
        self.is_equity = np.array([inst.asset_class == "equity" for inst in instruments])
        self.codes = np.full((4, n), _MISSING, dtype=np.int64)
        names: list[list[str]] = [[], [], [], []]
        for f, field in enumerate(_MASTER_FIELD):
            index: dict[str, int] = {}
            for i, inst in enumerate(instruments):
                if f == SECTOR and not self.is_equity[i]:
                    self.codes[f, i] = _NOT_APPLICABLE
                    continue
                value = getattr(inst, field)
                if value is None:
                    continue
                code = index.setdefault(value, len(index))
                if code == len(names[f]):
                    names[f].append(value)
                self.codes[f, i] = code
        self.names = (names[0], names[1], names[2], names[3])
        # where each instrument's gross exposure adds up in BookCache.sums: after the
        # three book totals, one slot per group of each section in turn (-1: in none)
        self.slots = np.full((4, n), -1, dtype=np.int64)
        offset = 3
        for f in range(4):
            mine = self.codes[f] >= 0
            self.slots[f, mine] = offset + self.codes[f, mine]
            offset += len(self.names[f])
        self.n_slots = offset
        self.slot_list: list[list[int]] = self.slots.T.tolist()
        self.cache = BookCache(self)
        self._caps_for: LimitsConfig | None = None
        self._caps: GroupCaps | None = None
        self._clusters: ClusterIndex | None = None

    def caps(self, limits: LimitsConfig) -> GroupCaps:
        """The group tables of ``limits`` over this master (kept for the last limits seen)."""
        if self._caps is None or self._caps_for is not limits:
            self._caps = GroupCaps(limits, self)
            self._caps_for = limits
        return self._caps

    def clusters(self, correlation: np.ndarray, threshold: float) -> ClusterIndex:
        """The :class:`ClusterIndex` of a correlation matrix, kept while the risk model
        returns the same array (see :class:`RiskModel`)."""
        c = self._clusters
        if c is None or c.source is not correlation or c.threshold != threshold:
            c = self._clusters = ClusterIndex(correlation, threshold)
        return c

    def group_name(self, f: int, i: int) -> str | None:
        code = int(self.codes[f, i])
        return self.names[f][code] if code >= 0 else None


# --- the book ----------------------------------------------------------------------------


class Book:
    """What the limits are measured on, per instrument of an :class:`InstrumentTable`: the
    signed position (units), the working orders' leaves with buys and sells apart (units, 0
    or more), the mark (quote currency per unit; NaN: unknown) and the touch; and the
    account's NAV in ``currency`` (NaN: unknown).

    The arrays may be written directly (in place); every measure is computed from them
    when asked, so there is no cache to keep in step. Position, working buys, working sells
    and mark are the rows of one (4, n) array, ``state``, which the kernels take whole.
    """

    __slots__ = ("ask", "bid", "currency", "nav", "state")

    def __init__(self, n: int, *, currency: str = "", nav: float = math.nan) -> None:
        self.state = np.zeros((4, n), dtype=np.float64)
        self.state[3] = np.nan
        self.bid = np.full(n, np.nan)
        self.ask = np.full(n, np.nan)
        self.currency = currency
        self.nav = nav

    @property
    def position(self) -> np.ndarray:
        """Signed position per instrument, units."""
        row: np.ndarray = self.state[0]
        return row

    @property
    def working_buy(self) -> np.ndarray:
        """Leaves of the working buys per instrument, units (0 or more)."""
        row: np.ndarray = self.state[1]
        return row

    @property
    def working_sell(self) -> np.ndarray:
        """Leaves of the working sells per instrument, units (0 or more)."""
        row: np.ndarray = self.state[2]
        return row

    @property
    def mark(self) -> np.ndarray:
        """Mark per instrument, quote currency per unit (NaN: unknown)."""
        row: np.ndarray = self.state[3]
        return row

    def __len__(self) -> int:
        return len(self.position)

    @property
    def working(self) -> np.ndarray:
        """Signed net leaves of the working orders (buys minus sells)."""
        net: np.ndarray = self.working_buy - self.working_sell
        return net

    @property
    def long_side(self) -> np.ndarray:
        """Position with every working buy filled."""
        side: np.ndarray = self.position + self.working_buy
        return side

    @property
    def short_side(self) -> np.ndarray:
        """Position with every working sell filled."""
        side: np.ndarray = self.position - self.working_sell
        return side

    def set_quote(self, i: int, bid: float, ask: float) -> None:
        """The touch of instrument ``i``; the mark is the mid, NaN unless both sides are
        positive numbers."""
        self.bid[i] = bid
        self.ask[i] = ask
        self.mark[i] = 0.5 * (bid + ask) if (bid > 0 and ask > 0) else math.nan

    def set_quotes(self, index: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
        """:meth:`set_quote` for many instruments at once (each index once)."""
        self.bid[index] = bid
        self.ask[index] = ask
        with np.errstate(invalid="ignore"):
            ok = (bid > 0) & (ask > 0)
        self.mark[index] = np.where(ok, 0.5 * (bid + ask), np.nan)

    def market_value(self, multiplier: np.ndarray) -> float:
        """Sum of position x mark x multiplier over the positions held; NaN when a
        position held has no mark."""
        return float(_market_value(self.position, self.mark, multiplier))


# --- the risk model ------------------------------------------------------------------------


class RiskModel(Protocol):
    """What the VaR and correlation limits ask of a risk model (implemented elsewhere).

    Instruments are in the order of the run's :class:`InstrumentTable`. ``correlation()``
    returns a new array whenever the model changes and never changes an array it has
    returned: the gate derives its cluster index from it once and keeps it while the same
    array comes back.
    """

    def is_stale(self, now_ns: int) -> bool:
        """True when there is no model yet or it is too old to trust (then deny)."""
        ...

    def var(self, exposure: np.ndarray) -> float:
        """1-day VaR in the account currency, 0 or more, of signed exposures
        (quantity x price x multiplier) per instrument."""
        ...

    def correlation(self) -> np.ndarray:
        """The n x n correlation matrix of the instruments."""
        ...


# --- book measures kept up to date ---------------------------------------------------------

_FULL_REFRESH_EVERY = 10_000  # instrument updates between exact recomputations


class BookCache:
    """Sums over one book that a pre-trade check needs, kept between checks so that an
    order costs what it touches, not the size of the book:

    - ``sums[0]``: gross exposure, long-sides sum and short-sides sum of the book (account
      currency), then the gross exposure of each group (at ``InstrumentMaster.slots``);
      ``sums[1]``: how many instruments held have no usable mark, in the same places;
    - ``exposure``: each instrument's position plus its working orders (signed) x mark x
      multiplier (0 for one held without a usable mark), what VaR is computed on;
    - ``clusters``: per instrument, its cluster's up and down exposure and its members held
      without a usable mark, for the correlation index last asked about.

    :meth:`refresh` finds, in one pass, the instruments whose position, working orders or
    mark changed since the last call and moves their terms; a different book, many changes
    at once or every 10,000 moved terms recompute everything exactly. Nothing outside sees
    the difference: the figures are those of the book as it is now.
    """

    def __init__(self, master: InstrumentMaster) -> None:
        n = master.n
        self._slots = master.slots
        self._mult = master.multiplier
        self._book: Book | None = None
        self._snapshot = np.empty((4, n))
        size = max(16, n // 8)
        self._changed = np.empty(size, dtype=np.int64)
        self._updates = 0
        self.sums = np.zeros((2, master.n_slots))
        self.exposure = np.zeros(n)
        self.exposure_view = self.exposure.view()  # what a risk model is given: read-only
        self.exposure_view.flags.writeable = False
        self._index: ClusterIndex | None = None
        self.clusters = np.zeros((3, n))

    def refresh(self, book: Book) -> None:
        """Bring every sum up to date with ``book``."""
        c = self._index
        if self._book is book and self._updates < _FULL_REFRESH_EVERY:
            index = c if c is not None else _NO_CLUSTERS
            count = _refresh(book.state, self._mult, self._slots, self._snapshot, self._changed,
                             self.sums, self.exposure, c is not None, index.indptr,
                             index.indices, index.signs, self.clusters)  # fmt: skip
            if count >= 0:
                self._updates += count
                return
        _full_sums(book.state, self._mult, self._slots, self._snapshot, self.sums, self.exposure)
        self._book = book
        self._updates = 0
        if c is not None:  # recompute the clusters too
            self._index = None
            self.track(c)

    def track(self, index: ClusterIndex) -> np.ndarray:
        """The cluster sums of ``index`` for the book last refreshed: (3, n), per instrument
        its cluster's up and down exposure and how many members are held without a usable
        mark."""
        book = self._book
        assert book is not None, "refresh(book) first"
        if index is not self._index:
            _cluster_full(book.state, self._mult, index.indptr, index.indices, index.signs,
                          self.clusters)  # fmt: skip
            self._index = index
        return self.clusters


_NO_CLUSTERS = ClusterIndex(np.eye(1), 0.5)


# --- kernels -------------------------------------------------------------------------------


@_jit
def _market_value(position: np.ndarray, mark: np.ndarray, mult: np.ndarray) -> float:
    total = 0.0
    for i in range(position.shape[0]):
        q = position[i]
        if q != 0.0:
            total += q * mark[i] * mult[i]  # NaN mark: NaN total, the account is not seen
    return total


@_jit
def _signed_exposure(
    position: np.ndarray,
    wbuy: np.ndarray,
    wsell: np.ndarray,
    mark: np.ndarray,
    mult: np.ndarray,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Each instrument's position plus working orders (signed) x mark x multiplier, into
    ``out`` (0 where nothing is held). Returns the first instrument held (or with orders
    working) without a usable mark, or -1."""
    miss = -1
    for i in range(position.shape[0]):
        p = position[i]
        side = p + wbuy[i] - wsell[i]
        if p == 0.0 and wbuy[i] == 0.0 and wsell[i] == 0.0:
            out[i] = 0.0
            continue
        m = mark[i]
        if not (m > 0.0 and m < np.inf):
            if miss < 0:
                miss = i
            out[i] = 0.0
            continue
        out[i] = side * m * mult[i]
    return miss


@_jit
def _cluster_of(
    j: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    signs: np.ndarray,
    position: np.ndarray,
    wbuy: np.ndarray,
    wsell: np.ndarray,
    mark: np.ndarray,
    mult: np.ndarray,
) -> tuple[float, int]:  # pragma: no cover - compiled
    """Cluster exposure of instrument ``j``, summed member by member (the reference for
    :meth:`ClusterIndex.sums`): the larger of what gains when ``j`` rises (long sides of
    positively correlated members, short sides of negatively correlated ones) and what
    gains when it falls; and the first member held without a usable mark, or -1."""
    up = 0.0
    down = 0.0
    miss = -1
    start = indptr[j]
    for t in range(start - 1, indptr[j + 1]):
        if t < start:
            i = j
            s = 1.0
        else:
            i = indices[t]
            s = signs[t]
        p = position[i]
        lo = p + wbuy[i]
        sh = p - wsell[i]
        if lo == 0.0 and sh == 0.0:
            continue
        m = mark[i]
        if not (m > 0.0 and m < np.inf):
            if miss < 0:
                miss = i
            continue
        v = m * mult[i]
        long_part = lo * v if lo > 0.0 else 0.0
        short_part = -sh * v if sh < 0.0 else 0.0
        if s > 0.0:
            up += long_part
            down += short_part
        else:
            up += short_part
            down += long_part
    return (up if up > down else down), miss


@_jit
def _terms(
    p: float, wb: float, ws: float, m: float, mult: float
) -> tuple[float, float, float, float, float]:  # pragma: no cover - compiled
    """One instrument's terms in the book's sums, from its position ``p``, working buys
    ``wb`` and sells ``ws`` (units), mark ``m`` and multiplier: (gross exposure, long-side
    value, short-side value, 1 if held without a usable mark else 0, value of the position
    with every working order filled). All 0 when nothing is held or working; only the flag
    when the mark is not usable."""
    lo = p + wb
    sh = p - ws
    if lo == 0.0 and sh == 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    if not (m > 0.0 and m < np.inf):
        return 0.0, 0.0, 0.0, 1.0, 0.0
    v = m * mult
    lo_v = lo * v
    sh_v = sh * v
    gross = lo_v if lo >= -sh else -sh_v
    return gross, lo_v, sh_v, 0.0, (p + wb - ws) * v


@_jit
def _add_terms(
    i: int,
    sign: float,
    terms: tuple[float, float, float, float, float],
    slots: np.ndarray,
    sums: np.ndarray,
) -> None:  # pragma: no cover - compiled
    g, lo_v, sh_v, unmarked, _ = terms
    sums[0, 0] += sign * g
    sums[0, 1] += sign * lo_v
    sums[0, 2] += sign * sh_v
    sums[1, 0] += sign * unmarked
    for f in range(4):
        slot = slots[f, i]
        if slot >= 0:
            sums[0, slot] += sign * g
            sums[1, slot] += sign * unmarked


@_jit
def _full_sums(
    state: np.ndarray,
    mult: np.ndarray,
    slots: np.ndarray,
    snapshot: np.ndarray,
    sums: np.ndarray,
    exposure: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """:class:`BookCache`'s sums and exposures from scratch, and the snapshot they are of."""
    sums[:, :] = 0.0
    snapshot[:, :] = state
    for i in range(state.shape[1]):
        terms = _terms(state[0, i], state[1, i], state[2, i], state[3, i], mult[i])
        _add_terms(i, 1.0, terms, slots, sums)
        exposure[i] = terms[4]


@_jit
def _refresh(
    state: np.ndarray,
    mult: np.ndarray,
    slots: np.ndarray,
    snapshot: np.ndarray,
    changed: np.ndarray,
    sums: np.ndarray,
    exposure: np.ndarray,
    with_clusters: bool,
    indptr: np.ndarray,
    indices: np.ndarray,
    signs: np.ndarray,
    clusters: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Find the instruments whose position, working orders or mark differ from the snapshot
    and move their terms in the sums (and the cluster sums). Returns how many changed, or
    -1 when more than ``changed`` holds (then nothing was moved: recompute in full)."""
    count = 0
    for i in range(state.shape[1]):
        m = state[3, i]
        m0 = snapshot[3, i]
        if (
            state[0, i] == snapshot[0, i]
            and state[1, i] == snapshot[1, i]
            and state[2, i] == snapshot[2, i]
            and (m == m0 or (m != m and m0 != m0))  # noqa: PLR0124 - both NaN: unchanged
        ):
            continue
        if count == changed.shape[0]:
            return -1
        changed[count] = i
        count += 1
    for c in range(count):
        i = changed[c]
        before = _terms(snapshot[0, i], snapshot[1, i], snapshot[2, i], snapshot[3, i], mult[i])
        after = _terms(state[0, i], state[1, i], state[2, i], state[3, i], mult[i])
        _add_terms(i, -1.0, before, slots, sums)
        _add_terms(i, 1.0, after, slots, sums)
        exposure[i] = after[4]
        if with_clusters:
            op, on, om = _cluster_parts(before)
            np_, nn, nm = _cluster_parts(after)
            _spread(i, np_ - op, nn - on, nm - om, indptr, indices, signs, clusters)
        for r in range(4):
            snapshot[r, i] = state[r, i]
    return count


@_jit
def _cluster_parts(
    terms: tuple[float, float, float, float, float],
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """(long part, short part, unmarked) of one instrument in a cluster, from its
    :func:`_terms`: its long side's value if above zero, minus its short side's value if
    below zero, 1 if held without a usable mark."""
    _, lo_v, sh_v, unmarked, _ = terms
    return (lo_v if lo_v > 0.0 else 0.0), (-sh_v if sh_v < 0.0 else 0.0), unmarked


@_jit
def _spread(
    i: int,
    dp: float,
    dn: float,
    dm: float,
    indptr: np.ndarray,
    indices: np.ndarray,
    signs: np.ndarray,
    sums: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add instrument ``i``'s change of cluster terms to every cluster it is in."""
    sums[0, i] += dp
    sums[1, i] += dn
    sums[2, i] += dm
    for t in range(indptr[i], indptr[i + 1]):
        j = indices[t]
        if signs[t] > 0.0:
            sums[0, j] += dp
            sums[1, j] += dn
        else:
            sums[0, j] += dn
            sums[1, j] += dp
        sums[2, j] += dm


@_jit
def _cluster_full(
    state: np.ndarray,
    mult: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    signs: np.ndarray,
    sums: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Every cluster's sums from scratch."""
    sums[:, :] = 0.0
    for i in range(state.shape[1]):
        dp, dn, dm = _cluster_parts(_terms(state[0, i], state[1, i], state[2, i], state[3, i],
                                           mult[i]))  # fmt: skip
        if dp != 0.0 or dn != 0.0 or dm != 0.0:
            _spread(i, dp, dn, dm, indptr, indices, signs, sums)


@_jit
def _cluster_check(
    k: int,
    dp: float,
    dn: float,
    cap: float,
    indptr: np.ndarray,
    indices: np.ndarray,
    signs: np.ndarray,
    sums: np.ndarray,
) -> tuple[int, int, float, float]:  # pragma: no cover - compiled
    """Every cluster instrument ``k`` is in (its own and each correlated instrument's),
    with ``k``'s long part changing by ``dp`` and its short part by ``dn`` (currency).
    Returns the cluster that the change takes over ``cap`` and makes larger (the largest
    such; -1 if none), a cluster with a member held without a usable mark (-1: none), and
    the first one's exposure before and after."""
    worst = -1
    worst_after = 0.0
    worst_before = 0.0
    start = indptr[k]
    for t in range(start - 1, indptr[k + 1]):
        if t < start:
            j = k
            s = 1.0
        else:
            j = indices[t]
            s = signs[t]
        if sums[2, j] > 0.5:
            return -1, j, 0.0, 0.0
        up = sums[0, j]
        down = sums[1, j]
        was = up if up > down else down
        if s > 0.0:
            up += dp
            down += dn
        else:
            up += dn
            down += dp
        now = up if up > down else down
        if now > cap and now > was and (worst < 0 or now > worst_after):
            worst = j
            worst_after = now
            worst_before = was
    return worst, -1, worst_before, worst_after


@_jit
def _all_clusters(
    indptr: np.ndarray,
    indices: np.ndarray,
    signs: np.ndarray,
    position: np.ndarray,
    wbuy: np.ndarray,
    wsell: np.ndarray,
    mark: np.ndarray,
    mult: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Cluster exposure of every instrument into ``out`` (NaN where a member held has no
    usable mark)."""
    n = position.shape[0]
    for j in range(n):
        value, miss = _cluster_of(j, indptr, indices, signs, position, wbuy, wsell, mark, mult)
        out[j] = np.nan if miss >= 0 else value


# --- utilisation -------------------------------------------------------------------------


class Utilisation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How much of one limit the book uses. ``used`` and ``limit`` are in the limit's own
    unit (a fraction of NAV, leverage x NAV, days); ``fraction`` is ``used / limit`` (1.0:
    at the limit). NaN ``used``: it cannot be measured (no NAV, a position with no mark, an
    instrument with no ADV, no risk model), which a monitor treats as a breach.

    ``level`` is the level of the hierarchy (``portfolio``, ``region``, ``asset_class``,
    ``sector``, ``security``, ``correlation``, ``counterparty``), ``key`` the group, the
    instrument or the portfolio measure, and ``rule`` the limit's key in the limits file,
    as a pre-trade denial names it.
    """

    level: str
    key: str
    rule: str
    used: float
    limit: float
    fraction: float


def _nav_or_nan(book: Book) -> float:
    nav = book.nav
    return nav if (nav > 0 and math.isfinite(nav)) else math.nan


def utilisation(
    book: Book,
    limits: LimitsConfig,
    master: InstrumentMaster,
    risk_model: RiskModel | None = None,
) -> list[Utilisation]:
    """Every configured limit at every level, measured on ``book`` (see the module
    docstring for the measures).

    Portfolio measures and every group named in a table come always (0 where nothing is
    held); per-instrument measures (security, correlation) come for the instruments held,
    including those held only through working orders. A limit needing the risk model comes
    with NaN when there is none; whether the model is stale is for the caller to judge.
    """
    rows: list[Utilisation] = []

    def add(level: str, key: str, rule: str, used: float, limit: float) -> None:
        rows.append(
            Utilisation(
                level=level, key=key, rule=rule, used=used, limit=limit, fraction=used / limit
            )
        )

    nav = _nav_or_nan(book)
    lo = book.position + book.working_buy
    sh = book.position - book.working_sell
    q = np.maximum(lo, -sh)
    held = q > 0
    unit = book.mark * master.multiplier
    with np.errstate(invalid="ignore"):
        gross_i = np.where(held, q * unit, 0.0)
        long_sum = float(np.sum(np.where(held, lo * unit, 0.0)))
        short_sum = float(np.sum(np.where(held, sh * unit, 0.0)))
    p = limits.portfolio

    if p.var_limit is not None:
        var = math.nan
        if risk_model is not None:
            e = np.empty(master.n)
            wb, ws = book.working_buy, book.working_sell
            if _signed_exposure(book.position, wb, ws, book.mark, master.multiplier, e) < 0:
                var = float(risk_model.var(e))
        add("portfolio", "var", "portfolio.var_limit", var / nav, p.var_limit)
    if p.max_gross_leverage is not None:
        gross = float(np.sum(gross_i))
        add("portfolio", "gross_leverage", "portfolio.max_gross_leverage", gross / nav,
            p.max_gross_leverage)  # fmt: skip
    if p.max_net_leverage is not None:
        net = max(abs(long_sum), abs(short_sum))
        add("portfolio", "net_leverage", "portfolio.max_net_leverage", net / nav,
            p.max_net_leverage)  # fmt: skip
    if p.max_days_to_unwind is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            days = q[held] / (p.unwind_participation * master.adv[held])
        worst = float(np.max(days)) if days.size else 0.0  # NaN when an ADV is missing
        add("portfolio", "days_to_unwind", "portfolio.max_days_to_unwind", worst,
            p.max_days_to_unwind)  # fmt: skip

    for f, section in enumerate(GROUP_SECTIONS):
        table: dict[str, float] = getattr(limits, section)
        if not table:
            continue
        codes = master.codes[f]
        member = codes >= 0
        sums = np.bincount(codes[member], weights=gross_i[member], minlength=len(master.names[f]))
        index = {name: c for c, name in enumerate(master.names[f])}
        for key, cap in table.items():
            code = index.get(key)
            used = float(sums[code]) if code is not None else 0.0
            add(section, key, section, used / nav, cap)

    held_ix = np.flatnonzero(held)
    sec = limits.security
    if sec.max_position_fraction is not None:
        for i in held_ix:
            add("security", master.ids[i], "security.max_position_fraction",
                float(gross_i[i]) / nav, sec.max_position_fraction)  # fmt: skip
    if sec.max_adv_days is not None:
        for i in held_ix:
            add("security", master.ids[i], "security.max_adv_days",
                float(q[i] / master.adv[i]), sec.max_adv_days)  # fmt: skip

    corr = limits.correlation
    if corr is not None:
        cluster = np.full(master.n, np.nan)
        if risk_model is not None:
            c = master.clusters(risk_model.correlation(), corr.threshold)
            _all_clusters(c.indptr, c.indices, c.signs, book.position, book.working_buy,
                          book.working_sell, book.mark, master.multiplier, cluster)  # fmt: skip
            cluster[c.no_figure] = np.nan
        with np.errstate(invalid="ignore"):
            shown = (cluster > 0) | (held & np.isnan(cluster))
        for j in np.flatnonzero(shown):
            add("correlation", master.ids[j], "correlation.max_cluster_fraction",
                float(cluster[j]) / nav, corr.max_cluster_fraction)  # fmt: skip
    return rows
