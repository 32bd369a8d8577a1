"""Instruments: what is traded, and the increments prices and quantities are rounded to."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator

import msgspec

__all__ = ["AssetClass", "Instrument", "InstrumentTable"]

AssetClass = str  # "equity", "fx", "crypto", "future", "option", "fixed_income", "commodity"


@functools.lru_cache(maxsize=256)
def _decimals(increment: float) -> int:
    return max(0, -math.floor(math.log10(increment) + 1e-9))


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One tradable instrument.

    ``id`` is ``SYMBOL.VENUE`` (``EURUSD.SIM``, ``BTCUSDT.BINANCE``). Prices are in
    ``quote_currency`` per unit; quantities are in units of the instrument (shares,
    contracts, coins, units of base currency). ``multiplier`` turns price x quantity into
    notional in the quote currency (1 for spot and equities).
    """

    id: str
    asset_class: AssetClass
    quote_currency: str
    price_increment: float
    size_increment: float = 1.0
    multiplier: float = 1.0
    base_currency: str | None = None
    region: str | None = None
    """Where the instrument trades or is domiciled, for attribution in reports
    (``"US"``, ``"EU"``, ``"APAC"``, ...; free text, one label per region). None: unknown,
    and a report then leaves the region out."""
    sector: str | None = None
    """Industry sector (``"technology"``, ``"financials"``, ...), for the sector limits of
    equities. None: unknown."""
    adv: float | None = None
    """Average daily volume in units of the instrument (shares, contracts), for the
    liquidity limits. None: unknown."""
    broker: str | None = None
    """The counterparty the instrument is traded and held with (``"IB"``), for the
    counterparty limits. None: unknown."""

    def __post_init__(self) -> None:
        if "." not in self.id:
            raise ValueError(f"instrument id {self.id!r} must be SYMBOL.VENUE")
        for name in ("price_increment", "size_increment", "multiplier"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.adv is not None and not (self.adv > 0 and math.isfinite(self.adv)):
            raise ValueError(f"adv must be a positive number of units a day, got {self.adv!r}")

    @property
    def symbol(self) -> str:
        return self.id.rsplit(".", 1)[0]

    @property
    def venue(self) -> str:
        return self.id.rsplit(".", 1)[1]

    @property
    def price_precision(self) -> int:
        """Decimal places of the price increment (5 for 0.00001)."""
        return _decimals(self.price_increment)

    @property
    def size_precision(self) -> int:
        """Decimal places of the size increment (5 for 0.00001)."""
        return _decimals(self.size_increment)

    def round_size(self, quantity: float) -> float:
        """Round to the nearest size increment (lot), so sums of partial fills do not
        leave dust like 1e-17 where nothing is left."""
        inc = self.size_increment
        if inc == 1.0:
            # whole units: the product is a whole number already, which rounding to 0
            # decimals returns as it is (and round() with digits is slow: it prints)
            return round(quantity / inc) * inc
        return round(round(quantity / inc) * inc, _decimals(inc))

    def round_price(self, price: float) -> float:
        """Round to the nearest price increment, as a float with the increment's decimals."""
        inc = self.price_increment
        return round(round(price / inc) * inc, _decimals(inc))

    def price_ticks(self, price: float) -> int:
        """The price as a whole number of increments (exact for any rounded price)."""
        return round(price / self.price_increment)

    def notional(self, price: float, quantity: float) -> float:
        return abs(price * quantity) * self.multiplier


class InstrumentTable:
    """The instruments of one run, numbered in the order given (the ``instrument`` column)."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._by_index: list[Instrument] = []
        self._index: dict[str, int] = {}
        for inst in instruments:
            if inst.id in self._index:
                raise ValueError(f"instrument {inst.id!r} is defined twice")
            self._index[inst.id] = len(self._by_index)
            self._by_index.append(inst)

    def __len__(self) -> int:
        return len(self._by_index)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_index)

    def __contains__(self, instrument_id: object) -> bool:
        return instrument_id in self._index

    def index(self, instrument_id: str) -> int:
        try:
            return self._index[instrument_id]
        except KeyError:
            raise KeyError(f"unknown instrument {instrument_id!r}") from None

    def find(self, instrument_id: str) -> int | None:
        """The index of ``instrument_id``, or None if it is not in the table: one lookup
        where ``in`` then ``index`` would take two."""
        return self._index.get(instrument_id)

    def get(self, instrument_id: str) -> Instrument:
        return self._by_index[self.index(instrument_id)]

    def at(self, index: int) -> Instrument:
        return self._by_index[index]
