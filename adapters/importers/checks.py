"""Validation on import: the engine's checks applied with an import's policy, counted.

Quotes go through :class:`engine.validation.QuoteValidator` (reasons ``nan_price``,
``non_positive_price``, ``bad_size``, ``crossed``, ``locked``, ``wide_spread``,
``out_of_order``) and :func:`engine.bar_validation.quote_flags` (``duplicate_quote``,
``suspicious``, ``stale``); trades and bars through :mod:`engine.bar_validation`. Every row
is counted under exactly one name: ``ok``, a rejection or a flag. Locked and crossed
quotes that the policy allows are kept and counted as ``locked_allowed`` and
``crossed_allowed``; rejected ones as ``locked`` and ``crossed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.importers.spec import ValidationPolicy
from engine.bar_validation import (
    BarRules,
    Check,
    TradeRules,
    quote_flags,
    validate_bars,
    validate_trades,
)
from engine.validation import QuoteValidator, RejectReason, ValidatorConfig

__all__ = ["Checked", "check_bars", "check_quotes", "check_trades", "fmt_ts"]

MAX_EXAMPLES = 50
"""Rejected rows listed by name per import (the counts cover all of them)."""


@dataclass(slots=True)
class Checked:
    """What validation made of a set of rows: which to keep, counts by name, examples."""

    keep: npt.NDArray[np.bool_]
    counts: dict[str, int]
    rejected_examples: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return int(len(self.keep) - np.count_nonzero(self.keep))


def fmt_ts(ts_ns: int) -> str:
    """A timestamp in ns as ISO 8601 UTC with milliseconds."""
    when = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC)
    ms = (ts_ns % 1_000_000_000) // 1_000_000
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def _examples(
    names: npt.NDArray[Any],
    keep: npt.NDArray[np.bool_],
    describe: Callable[[int], str],
) -> list[str]:
    rows = np.flatnonzero(~keep)[:MAX_EXAMPLES]
    return [f"{names[i]}: {describe(int(i))}" for i in rows]


def _count(names: npt.NDArray[Any]) -> dict[str, int]:
    uniq, n = np.unique(names, return_counts=True)
    return {str(k): int(v) for k, v in zip(uniq, n, strict=True)}


def check_quotes(quotes: npt.NDArray[Any], policy: ValidationPolicy, label: str) -> Checked:
    """Validate ``quotes`` (one instrument, in source order) under ``policy``."""
    config = ValidatorConfig(
        allow_locked=policy.allow_locked, max_spread_fraction=policy.max_spread_fraction
    )
    n_inst = int(quotes["instrument"].max()) + 1 if len(quotes) else 1
    reasons = QuoteValidator(config, n_inst).validate_reasons(quotes)
    names = np.array([r.name.lower() for r in RejectReason], dtype=object)[reasons]
    keep = reasons == RejectReason.OK
    stale = None if policy.stale_after_s is None else int(policy.stale_after_s * 1e9)
    flags = quote_flags(quotes, stale_after_ns=stale).codes
    flag_names = np.array([c.name.lower() for c in Check], dtype=object)[flags]
    names = np.where(keep & (flags != 0), flag_names, names)
    with np.errstate(invalid="ignore"):
        names = np.where(keep & (quotes["bid"] == quotes["ask"]), "locked_allowed", names)
    if policy.allow_crossed:
        crossed = reasons == RejectReason.CROSSED
        names = np.where(crossed, "crossed_allowed", names)
        keep = keep | crossed
    accepted = keep
    if not policy.drop_rejected:
        keep = np.ones(len(quotes), dtype=np.bool_)

    def describe(i: int) -> str:
        q = quotes[i]
        return f"{label} {fmt_ts(int(q['ts_event']))} bid {q['bid']} ask {q['ask']}"

    return Checked(keep, _count(names), _examples(names, accepted, describe))


def _shared_rules(policy: ValidationPolicy, base: TradeRules | BarRules) -> dict[str, Any]:
    """The rules trades and bars have in common, from an import policy (the defaults of
    ``base`` where the policy says None)."""
    return {
        "absurd_ratio": policy.absurd_ratio or base.absurd_ratio,
        "spike_window": policy.spike_window or base.spike_window,
        "spike_min_move": policy.spike_min_move or base.spike_min_move,
        "spike_sigmas": policy.spike_sigmas or base.spike_sigmas,
        "spike_revert": base.spike_revert if policy.spike_confirm else None,
        "stale_after_ns": None if policy.stale_after_s is None else int(policy.stale_after_s * 1e9),
    }


def _trade_rules(policy: ValidationPolicy) -> TradeRules:
    return TradeRules(**_shared_rules(policy, TradeRules()))


def bar_rules(policy: ValidationPolicy) -> BarRules:
    """The bar rules of an import policy (defaults where the policy says None)."""
    base = BarRules()
    return BarRules(
        max_wick_fraction=policy.max_wick_fraction or base.max_wick_fraction,
        **_shared_rules(policy, base),
    )


def _check_names(codes: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
    return np.array([c.name.lower() for c in Check], dtype=object)[codes]


def check_trades(trades: npt.NDArray[Any], policy: ValidationPolicy, label: str) -> Checked:
    """Validate ``trades`` (in source order) under ``policy``. Repeats are kept."""
    result = validate_trades(trades, _trade_rules(policy))
    names = _check_names(result.codes)
    keep = result.keep if policy.drop_rejected else np.ones(len(trades), dtype=np.bool_)

    def describe(i: int) -> str:
        t = trades[i]
        return f"{label} {fmt_ts(int(t['ts_event']))} price {t['price']} size {t['size']}"

    return Checked(keep, _count(names), _examples(names, result.keep, describe))


def check_bars(
    bars: npt.NDArray[Any],
    policy: ValidationPolicy,
    labels: Sequence[str] | str,
    *,
    multiplier: npt.NDArray[np.float64] | None = None,
    daily: bool = False,
) -> Checked:
    """Validate ``bars`` (in time order) under ``policy``; ``labels`` names each bar's
    instrument (one string for all), ``multiplier`` puts prices on a split-adjusted basis."""
    result = validate_bars(bars, bar_rules(policy), multiplier=multiplier)
    names = _check_names(result.codes)
    keep = result.keep if policy.drop_rejected else np.ones(len(bars), dtype=np.bool_)

    def describe(i: int) -> str:
        b = bars[i]
        label = labels if isinstance(labels, str) else labels[i]
        when = fmt_ts(int(b["ts_event"]))
        if daily:
            when = when[:10]
        return (
            f"{label} {when} O {b['open']:g} H {b['high']:g} L {b['low']:g} C {b['close']:g} "
            f"V {b['volume']:g}"
        )

    return Checked(keep, _count(names), _examples(names, result.keep, describe))
