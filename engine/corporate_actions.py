"""Point-in-time corporate actions: split and dividend factors, symbol changes, universes.

Factor tables
-------------
A factor table (QuantConnect Lean's factor file, one per security) is a list of rows
``(date, price_factor, split_factor, reference_price)``. The vendor's rule: for a bar dated
*d*, take the first row dated on or after *d*; the split-adjusted price is ``raw x
split_factor`` and the fully adjusted price ``raw x price_factor x split_factor``. A row
dated *r* is the last session *before* an ex-date: its factors apply to bars up to and
including *r*, and the next row's to the bars after. The last row (``2050-12-31, 1, 1``)
makes the latest prices unadjusted.

The factors are *cumulative up to the day the file was written*: the factor of a 1998 AAPL
bar already contains the 2000, 2005, 2014 and 2020 splits. Adjusting history with the file
as it is therefore uses corporate actions that had not happened yet at the bar's time, which
a backtest must never do.

Point in time
-------------
Adjusting history *as of* a day D must use only what was known at D: the events whose
ex-date is on or before D, that is the rows dated before D. :meth:`FactorTable.known_at`
builds exactly the table a vendor would have published at D: the rows dated before D, each
factor divided by the factor then in force for D (the vendor rule applied to D), and a final
row of 1s. Dividing by D's factor removes every later event from every earlier factor,
because the factors are products of per-event ratios: ``f(d) / f(D)`` is the product of the
ratios of the events with ex-dates in ``(d, D]``. Rows dated D or later never reach a
result, except through that ratio, in which they cancel (to the last bit of a float64:
changing a future row changes as-of-D prices by about 1e-16 relative, never more).
Consequences, each tested:

- the bar of D itself, seen at D, is the raw bar (factor 1): a strategy sees the price that
  traded;
- history seen at D is continuous across every split and dividend before D (an AAPL replay
  shows no split jumps), and a split after D leaves it untouched (a strategy never sees a
  factor before its date);
- :class:`AdjustedHistory` keeps a window of bars adjusted as of the latest bar, by
  multiplying the window by each event's ratio on its ex-date, the way a live system must.

Symbol changes and universes
----------------------------
A map file (one per security, named by its permanent id) lists ``(date, ticker, exchange)``:
the ticker in use *until* that date, inclusive. The same rule finds the ticker on a day: the
first row dated on or after it. The first row's date is when the security enters the data;
a security whose last row is not the far-future sentinel was delisted after that date.
:class:`SecurityMaster` answers, for a day, which ticker a security used
(:meth:`~SecurityMaster.ticker_on`), which security a ticker meant
(:meth:`~SecurityMaster.security_of`), and which securities existed
(:meth:`~SecurityMaster.universe`), so that a universe chosen as of a day includes the
securities later delisted or renamed, under the names they had then: no survivorship bias.

A vendor file named after a ticker holds what traded under that ticker, which over time can
be two securities: Lean's ``goog.zip`` is the original Google share (today's GOOGL) up to
2014-04-02 and the class C share (GOOG) from 2014-04-03. ``security_of("GOOG", day)``
assigns each row to the security that used the ticker that day.

Days are ``datetime.date`` for one value and int64 days since 1970-01-01 for arrays; a bar's
day is its session date in the exchange's time zone (see :func:`session_days`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from engine.ticks import BAR_DTYPE, BarArray

__all__ = [
    "FAR_FUTURE",
    "AdjustedHistory",
    "CorporateAction",
    "FactorRow",
    "FactorTable",
    "MapRow",
    "SecurityMaster",
    "SymbolHistory",
    "day_number",
    "from_day_number",
    "session_days",
]

FAR_FUTURE = dt.date(2050, 12, 31)
"""The date of the last row of a factor or map file: "from here on, as now"."""

_EPOCH = dt.date(1970, 1, 1)
_NS_PER_DAY = 86_400_000_000_000

Adjustment = Literal["raw", "split", "total"]
"""``raw``: as traded; ``split``: split-adjusted; ``total``: splits and dividends."""


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01."""
    return (day - _EPOCH).days


def from_day_number(n: int) -> dt.date:
    """The date ``n`` days after 1970-01-01."""
    return _EPOCH + dt.timedelta(days=int(n))


def session_days(ts_ns: npt.NDArray[np.int64], tz: dt.tzinfo) -> npt.NDArray[np.int64]:
    """The local calendar day (days since 1970-01-01) of each UTC timestamp in ``tz``.

    Computes the UTC offset once per distinct UTC day (at its noon), which is exact for the
    close time of a session (a daily bar's ``ts_event``) in any zone whose offset does not
    change between noon and the close.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    utc_day = ts // _NS_PER_DAY
    out = np.empty_like(utc_day)
    uniq, inverse = np.unique(utc_day, return_inverse=True)
    offsets = np.empty(len(uniq), dtype=np.int64)
    for i, d in enumerate(uniq):
        noon = dt.datetime.combine(from_day_number(int(d)), dt.time(12), tzinfo=dt.UTC)
        off = noon.astimezone(tz).utcoffset()
        offsets[i] = 0 if off is None else off // dt.timedelta(microseconds=1) * 1_000
    out[:] = (ts + offsets[inverse]) // _NS_PER_DAY
    return out


class FactorRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One row of a factor table: the factors in force for bars dated up to ``date``."""

    date: dt.date
    price_factor: float
    split_factor: float
    reference_price: float = 0.0


class CorporateAction(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A split and/or dividend, as a change between two consecutive factor rows.

    ``last_day_before`` is the last session of the old factors; the action is in force for
    bars dated after it and is known from then on. ``split_ratio`` and ``dividend_ratio``
    multiply earlier prices to put them on the new basis (0.25 for a 4:1 split; 0.995 for a
    dividend of 0.5% of the price). ``reference_price`` is the vendor's close on
    ``last_day_before``.
    """

    last_day_before: dt.date
    split_ratio: float
    dividend_ratio: float
    reference_price: float

    @property
    def price_ratio(self) -> float:
        """The total multiplier of earlier prices (split and dividend)."""
        return self.split_ratio * self.dividend_ratio

    @property
    def dividend(self) -> float:
        """Cash paid per share held before the event, in the price's currency: the part of
        the reference close that the dividend ratio takes away (0 for a pure split)."""
        if self.dividend_ratio == 1.0 or not self.reference_price > 0:
            return 0.0
        return self.reference_price * (1.0 - self.dividend_ratio)


@dataclass(frozen=True, slots=True)
class FactorTable:
    """A security's factor rows, in date order, with the vendor's look-up rule.

    ``days`` are int64 days since 1970-01-01, strictly increasing. Build one with
    :meth:`from_rows`.
    """

    days: npt.NDArray[np.int64]
    price_factor: npt.NDArray[np.float64]
    split_factor: npt.NDArray[np.float64]
    reference_price: npt.NDArray[np.float64]

    @classmethod
    def from_rows(cls, rows: Iterable[FactorRow], *, source: str = "factor table") -> FactorTable:
        """Check and index ``rows``: dates strictly increasing, factors finite and positive."""
        rows = list(rows)
        if not rows:
            raise ValueError(f"{source}: no rows")
        for i, row in enumerate(rows):
            for name in ("price_factor", "split_factor"):
                value = getattr(row, name)
                if not (math.isfinite(value) and value > 0.0):
                    raise ValueError(f"{source} row {i + 1}: {name} {value!r} is not positive")
            if i and row.date <= rows[i - 1].date:
                raise ValueError(
                    f"{source} row {i + 1}: date {row.date} is not after {rows[i - 1].date}"
                )
        return cls(
            days=np.array([day_number(r.date) for r in rows], dtype=np.int64),
            price_factor=np.array([r.price_factor for r in rows], dtype=np.float64),
            split_factor=np.array([r.split_factor for r in rows], dtype=np.float64),
            reference_price=np.array([r.reference_price for r in rows], dtype=np.float64),
        )

    @classmethod
    def identity(cls) -> FactorTable:
        """A table with no corporate actions (every factor 1)."""
        return cls.from_rows([FactorRow(date=FAR_FUTURE, price_factor=1.0, split_factor=1.0)])

    def rows(self) -> list[FactorRow]:
        return [
            FactorRow(
                date=from_day_number(int(d)),
                price_factor=float(p),
                split_factor=float(s),
                reference_price=float(r),
            )
            for d, p, s, r in zip(
                self.days, self.price_factor, self.split_factor, self.reference_price, strict=True
            )
        ]

    def __len__(self) -> int:
        return len(self.days)

    def _index(self, days: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        return np.searchsorted(self.days, days, side="left")

    def factors(
        self, days: npt.NDArray[np.int64] | Sequence[int]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(price_factor, split_factor)`` for bars dated ``days``: the vendor rule (first
        row dated on or after the day); 1 after the last row."""
        d = np.asarray(days, dtype=np.int64)
        idx = self._index(d)
        inside = idx < len(self.days)
        safe = np.where(inside, idx, 0)
        pf = np.where(inside, self.price_factor[safe], 1.0)
        sf = np.where(inside, self.split_factor[safe], 1.0)
        return pf, sf

    def multiplier(
        self, days: npt.NDArray[np.int64] | Sequence[int], adjustment: Adjustment
    ) -> npt.NDArray[np.float64]:
        """The price multiplier of bars dated ``days``: 1 (raw), split or split x price."""
        pf, sf = self.factors(days)
        if adjustment == "raw":
            return np.ones_like(pf)
        if adjustment == "split":
            return sf
        if adjustment == "total":
            return pf * sf
        raise ValueError(f"unknown adjustment {adjustment!r}")

    def known_at(self, as_of: dt.date | int) -> FactorTable:
        """The table as a vendor would have published it on ``as_of``: the rows dated before
        it, renormalised so that bars of ``as_of`` (and later) have factor 1, then a final
        row of 1s. Uses nothing dated ``as_of`` or later except through the renormalising
        ratio (see the module docstring)."""
        day = as_of if isinstance(as_of, int) else day_number(as_of)
        pf_now, sf_now = self.factors(np.array([day], dtype=np.int64))
        k = int(np.searchsorted(self.days, day, side="left"))  # rows dated before `day`
        end_day = max(day_number(FAR_FUTURE), day)
        return FactorTable(
            days=np.append(self.days[:k], np.int64(end_day)),
            price_factor=np.append(self.price_factor[:k] / pf_now[0], 1.0),
            split_factor=np.append(self.split_factor[:k] / sf_now[0], 1.0),
            reference_price=np.append(self.reference_price[:k], 0.0),
        )

    def events(self) -> list[CorporateAction]:
        """Every change of factors between consecutive rows, in date order."""
        out: list[CorporateAction] = []
        for i in range(len(self.days) - 1):
            split = float(self.split_factor[i] / self.split_factor[i + 1])
            div = float(self.price_factor[i] / self.price_factor[i + 1])
            if split != 1.0 or div != 1.0:
                out.append(
                    CorporateAction(
                        last_day_before=from_day_number(int(self.days[i])),
                        split_ratio=split,
                        dividend_ratio=div,
                        reference_price=float(self.reference_price[i]),
                    )
                )
        return out

    def adjust(
        self,
        bars: BarArray,
        days: npt.NDArray[np.int64],
        *,
        as_of: dt.date | int | None = None,
        adjustment: Adjustment = "total",
    ) -> BarArray:
        """A copy of ``bars`` (dated ``days``) with prices adjusted as of ``as_of``.

        ``as_of`` None uses the table as it is (everything the vendor knew when writing it:
        fine for research and validation, never for a strategy's decisions). With ``as_of``,
        only the table :meth:`known_at` that day is used, and a bar dated after ``as_of`` is
        an error: it had not happened yet. Volume is divided by the split part of the
        multiplier, so that price x volume is unchanged by a split.
        """
        if bars.dtype != BAR_DTYPE:
            raise TypeError(f"expected BAR_DTYPE bars, got {bars.dtype}")
        d = np.asarray(days, dtype=np.int64)
        if d.shape != bars.shape:
            raise ValueError(f"{len(d)} days for {len(bars)} bars")
        table = self
        if as_of is not None:
            day = as_of if isinstance(as_of, int) else day_number(as_of)
            if len(d) and int(d.max()) > day:
                late = from_day_number(int(d.max()))
                raise ValueError(
                    f"bar dated {late} is after as_of {from_day_number(day)}: it had not "
                    "happened yet"
                )
            table = self.known_at(day)
        out = np.array(bars, dtype=BAR_DTYPE)
        mult = table.multiplier(d, adjustment)
        for col in ("open", "high", "low", "close"):
            out[col] = bars[col] * mult
        if adjustment != "raw":
            _, sf = table.factors(d)
            out["volume"] = bars["volume"] / sf
        return out


class AdjustedHistory:
    """A window of one security's daily bars, kept adjusted as of the latest bar.

    :meth:`append` takes the next raw bar (as it traded) with its session day; before
    appending, every corporate action that came into force since the previous bar is
    applied to the window (prices multiplied by its ratio, volume divided by its split
    ratio). Only actions already in force are used, so the window at any day equals
    ``FactorTable.adjust(bars_so_far, days, as_of=day)``, which is what a live system can
    know. ``maxlen`` bounds the window (None: unbounded).
    """

    def __init__(
        self, table: FactorTable, *, adjustment: Adjustment = "total", maxlen: int | None = None
    ) -> None:
        if adjustment not in ("raw", "split", "total"):
            raise ValueError(f"unknown adjustment {adjustment!r}")
        self._table = table
        self._events = [(day_number(e.last_day_before), e) for e in table.events()]  # in date order
        self._next_event = 0
        self._adjustment = adjustment
        self._maxlen = maxlen
        self._buf = np.zeros(64, dtype=BAR_DTYPE)  # grows by doubling; rows [_lo, _hi) used
        self._day_buf = np.zeros(64, dtype=np.int64)
        self._lo = 0
        self._hi = 0
        self.applied: list[CorporateAction] = []

    @property
    def bars(self) -> BarArray:
        """The window, oldest first, adjusted as of the latest bar (a read-only view)."""
        view = self._buf[self._lo : self._hi].view()
        view.flags.writeable = False
        return view

    @property
    def days(self) -> npt.NDArray[np.int64]:
        view = self._day_buf[self._lo : self._hi].view()
        view.flags.writeable = False
        return view

    def append(self, bar: np.void | BarArray, day: dt.date | int) -> list[CorporateAction]:
        """Add the raw bar of ``day``; returns the actions applied to the window first."""
        d = day if isinstance(day, int) else day_number(day)
        if self._hi > self._lo and d <= int(self._day_buf[self._hi - 1]):
            raise ValueError(f"day {from_day_number(d)} is not after the last bar's")
        applied: list[CorporateAction] = []
        while self._next_event < len(self._events) and self._events[self._next_event][0] < d:
            _, event = self._events[self._next_event]
            self._next_event += 1
            if self._adjustment == "raw":
                continue
            ratio = event.split_ratio
            if self._adjustment == "total":
                ratio *= event.dividend_ratio
            window = self._buf[self._lo : self._hi]
            for col in ("open", "high", "low", "close"):
                window[col] *= ratio
            window["volume"] /= event.split_ratio
            applied.append(event)
        if self._hi == len(self._buf):  # full: move the window to the front, growing if needed
            n = self._hi - self._lo
            size = len(self._buf) if n < len(self._buf) // 2 else 2 * len(self._buf)
            buf = np.zeros(size, dtype=BAR_DTYPE)
            day_buf = np.zeros(size, dtype=np.int64)
            buf[:n] = self._buf[self._lo : self._hi]
            day_buf[:n] = self._day_buf[self._lo : self._hi]
            self._buf, self._day_buf, self._lo, self._hi = buf, day_buf, 0, n
        self._buf[self._hi] = np.asarray(bar, dtype=BAR_DTYPE).reshape(())
        self._day_buf[self._hi] = d
        self._hi += 1
        if self._maxlen is not None and self._hi - self._lo > self._maxlen:
            self._lo = self._hi - self._maxlen
        self.applied.extend(applied)
        return applied


class MapRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One row of a map file: ``ticker`` was in use up to and including ``date``."""

    date: dt.date
    ticker: str
    exchange: str = ""


@dataclass(frozen=True, slots=True)
class SymbolHistory:
    """The tickers one security (``security``, its permanent id) used over time."""

    security: str
    rows: tuple[MapRow, ...]

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError(f"{self.security}: a map file needs at least one row")
        for a, b in zip(self.rows, self.rows[1:], strict=False):
            if b.date <= a.date:
                raise ValueError(f"{self.security}: map rows out of order at {b.date}")

    @property
    def first_day(self) -> dt.date:
        """The first day the security is in the data."""
        return self.rows[0].date

    @property
    def last_day(self) -> dt.date | None:
        """The last day it traded, if it was delisted; None if it still trades."""
        last = self.rows[-1].date
        return None if last >= FAR_FUTURE else last

    def ticker_on(self, day: dt.date) -> str | None:
        """The ticker in use on ``day``, or None outside the security's life."""
        if day < self.first_day:
            return None
        for row in self.rows:
            if row.date >= day:
                return row.ticker.upper()
        return None  # after the last row: delisted

    def changes(self) -> list[tuple[dt.date, str, str]]:
        """``(first_day_of_new_ticker - 1 day, old, new)`` for every ticker change."""
        out: list[tuple[dt.date, str, str]] = []
        for a, b in zip(self.rows, self.rows[1:], strict=False):
            if a.ticker.upper() != b.ticker.upper():
                out.append((a.date, a.ticker.upper(), b.ticker.upper()))
        return out


class SecurityMaster:
    """Every security's ticker history: which ticker meant which security on which day."""

    def __init__(self, histories: Iterable[SymbolHistory]) -> None:
        self._by_id: dict[str, SymbolHistory] = {}
        for h in histories:
            key = h.security.upper()
            if key in self._by_id:
                raise ValueError(f"security {key!r} given twice")
            self._by_id[key] = h

    @property
    def securities(self) -> list[str]:
        return sorted(self._by_id)

    def history(self, security: str) -> SymbolHistory:
        return self._by_id[security.upper()]

    def ticker_on(self, security: str, day: dt.date) -> str | None:
        return self._by_id[security.upper()].ticker_on(day)

    def security_of(self, ticker: str, day: dt.date) -> str | None:
        """The security that used ``ticker`` on ``day``.

        The security whose map file names ``ticker`` for that day; failing that, the
        security whose permanent id is ``ticker``, if it existed that day (vendors often
        store a renamed security's older rows under its current name: Lean's ``bac.zip``
        holds the rows of 1998, when BAC traded as NB); else None.
        """
        t = ticker.upper()
        for sec, h in self._by_id.items():
            if h.ticker_on(day) == t:
                return sec
        own = self._by_id.get(t)
        if own is not None and own.ticker_on(day) is not None:
            return t
        return None

    def universe(self, day: dt.date) -> dict[str, str]:
        """``{security: ticker in use}`` for every security in the data on ``day``,
        including those later delisted or renamed."""
        out: dict[str, str] = {}
        for sec in sorted(self._by_id):
            ticker = self._by_id[sec].ticker_on(day)
            if ticker is not None:
                out[sec] = ticker
        return out

    def to_builtins(self) -> Mapping[str, list[dict[str, str]]]:
        return {
            sec: [
                {"date": r.date.isoformat(), "ticker": r.ticker, "exchange": r.exchange}
                for r in h.rows
            ]
            for sec, h in sorted(self._by_id.items())
        }
