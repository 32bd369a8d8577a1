"""Stress tests: a portfolio under historical scenarios and hypothetical shocks.

A scenario is a return per instrument. Applied to a book of signed positions valued at
current prices, it gives each position's P&L (``quantity x multiplier x price x return``),
the totals by region, asset class and sector, and the book after the move (prices moved,
NAV reduced by the loss), which the limit hierarchy then judges: which limits would break.

- **Historical** scenarios replay what the market did between two dates: each instrument's
  return over the window, on prices adjusted for the splits and dividends inside it (a split
  is not a loss). An instrument without data over the whole window is *uncovered*: it is
  listed, its P&L is left out, and the result says so rather than pretending it is flat.
- **Hypothetical** shocks move groups: ``asset_class = {equity = -0.20}``, ``sector =
  {technology = -0.30}``, ``region``, ``instrument``. The most specific shock that matches an
  instrument applies (instrument, then sector, then region, then asset class); shocks do
  not compound. ``volatility = 2.0`` scales every return's volatility: it moves no price but
  doubles a VaR measured on the scenario's book (parametric VaR is linear in volatility).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from engine.instruments import Instrument, InstrumentTable

__all__ = [
    "DEFAULT_HISTORICAL",
    "HistoricalScenario",
    "HypotheticalShock",
    "StressResult",
    "apply_scenario",
    "shock_returns",
]


class HistoricalScenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The market's moves from the close of ``start`` (or the last session before it) to the
    close of ``end`` (or the last session before it)."""

    name: str
    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"scenario {self.name!r}: end {self.end} is not after {self.start}")


class HypotheticalShock(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Returns by group (fractions: -0.2 is a 20% fall); the most specific match wins."""

    name: str
    asset_class: dict[str, float] = {}
    region: dict[str, float] = {}
    sector: dict[str, float] = {}
    instrument: dict[str, float] = {}
    volatility: float = 1.0

    def __post_init__(self) -> None:
        for group in ("asset_class", "region", "sector", "instrument"):
            for key, value in getattr(self, group).items():
                if not (math.isfinite(value) and value > -1.0):
                    raise ValueError(
                        f"shock {self.name!r}: {group}.{key} = {value} (a return above -1)"
                    )
        if not (math.isfinite(self.volatility) and self.volatility > 0):
            raise ValueError(f"shock {self.name!r}: volatility must be positive")


DEFAULT_HISTORICAL = (
    HistoricalScenario(
        name="Lehman, Sep-Oct 2008", start=dt.date(2008, 9, 15), end=dt.date(2008, 10, 15)
    ),
    HistoricalScenario(
        name="Covid crash, Feb-Mar 2020", start=dt.date(2020, 2, 20), end=dt.date(2020, 3, 23)
    ),
    HistoricalScenario(
        name="Dot-com, Mar-Apr 2000", start=dt.date(2000, 3, 24), end=dt.date(2000, 4, 14)
    ),
    HistoricalScenario(
        name="US downgrade, Jul-Aug 2011", start=dt.date(2011, 7, 22), end=dt.date(2011, 8, 10)
    ),
)
"""The crises the bundled daily data covers."""


class StressResult(msgspec.Struct, kw_only=True):
    """A scenario applied to a book (money in the account currency)."""

    scenario: str
    pnl: float
    pnl_fraction: float  # of NAV before
    nav_before: float
    nav_after: float
    by_instrument: dict[str, float]
    by_region: dict[str, float]
    by_asset_class: dict[str, float]
    by_sector: dict[str, float]
    returns: dict[str, float]
    uncovered: list[str]
    volatility_multiplier: float = 1.0


def shock_returns(
    instruments: InstrumentTable, shock: HypotheticalShock
) -> npt.NDArray[np.float64]:
    """The return of each instrument under ``shock`` (0 where nothing matches)."""
    out = np.zeros(len(instruments), dtype=np.float64)
    for i, inst in enumerate(instruments):
        for table, key in (
            (shock.instrument, inst.id),
            (shock.sector, getattr(inst, "sector", None)),
            (shock.region, inst.region),
            (shock.asset_class, inst.asset_class),
        ):
            if key is not None and key in table:
                out[i] = table[key]
                break
    return out


def _group(inst: Instrument, field: str) -> str:
    value = getattr(inst, field, None)
    return str(value) if value else "unknown"


def apply_scenario(
    name: str,
    instruments: InstrumentTable,
    quantity: Sequence[float] | npt.NDArray[np.float64],
    price: Sequence[float] | npt.NDArray[np.float64],
    returns: Sequence[float] | npt.NDArray[np.float64],
    nav: float,
    *,
    volatility_multiplier: float = 1.0,
) -> StressResult:
    """P&L of a book of signed ``quantity`` at ``price`` when each instrument moves by its
    ``returns`` (NaN: no data, the instrument is uncovered). Positions of zero are left
    out of every table."""
    qty = np.asarray(quantity, dtype=np.float64)
    px = np.asarray(price, dtype=np.float64)
    ret = np.asarray(returns, dtype=np.float64)
    n = len(instruments)
    if not (len(qty) == len(px) == len(ret) == n):
        raise ValueError(f"{n} instruments but {len(qty)} quantities, {len(px)} prices")
    by_instrument: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {"region": {}, "asset_class": {}, "sector": {}}
    moved: dict[str, float] = {}
    uncovered: list[str] = []
    total = 0.0
    for i, inst in enumerate(instruments):
        if qty[i] == 0.0:
            continue
        if not math.isfinite(px[i]):
            raise ValueError(f"no price for {inst.id}, which the book holds")
        if not math.isfinite(ret[i]):
            uncovered.append(inst.id)
            continue
        pnl = float(qty[i] * inst.multiplier * px[i] * ret[i])
        by_instrument[inst.id] = pnl
        moved[inst.id] = float(ret[i])
        total += pnl
        for field, table in groups.items():
            key = _group(inst, field)
            table[key] = table.get(key, 0.0) + pnl
    return StressResult(
        scenario=name,
        pnl=total,
        pnl_fraction=total / nav if nav > 0 else math.nan,
        nav_before=nav,
        nav_after=nav + total,
        by_instrument=by_instrument,
        by_region=groups["region"],
        by_asset_class=groups["asset_class"],
        by_sector=groups["sector"],
        returns=moved,
        uncovered=uncovered,
        volatility_multiplier=volatility_multiplier,
    )
