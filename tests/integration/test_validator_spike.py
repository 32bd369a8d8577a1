"""The validator's spike and stale-data checks set from the configuration, through the whole
backtest pipeline on the bundled sample (``config/backtest.toml``, 73,174 Binance BTCUSDT
quotes), batched and one tick at a time.

The sample is a quiet market: no quote moves its mid 0.2% from the previous one and no gap
between quotes reaches a second, so rules at 0.2% and 5 s find nothing. At 1.5 bp and half a
second they do find some, which a plain count over the file below agrees with.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKTEST = REPO_ROOT / "config" / "backtest.toml"
QUOTES = REPO_ROOT / "data" / "sample" / "binance-btcusdt" / "quotes.npy"
SAMPLE_TICKS = 73_174

RULES: dict[str, dict[str, Any]] = {
    "wide": {"allow_locked": False, "max_move_fraction": 0.002, "stale_after_s": 5.0},
    "tight": {"allow_locked": False, "max_move_fraction": 0.00015, "stale_after_s": 0.5},
}
# what the tight rules find in the sample (checked against plain_count below)
TIGHT_SPIKES = 18  # quotes rejected; 6 more moves were confirmed by the third quote in a row
TIGHT_CONFIRMED = 6
TIGHT_STALE = 4


def replay(rules: dict[str, Any], *, per_tick: bool) -> tuple[BacktestResult, int]:
    """The backtest's result and how many ticks reached the strategy."""
    system, _ = load_backtest(
        BACKTEST, per_tick=per_tick, overrides={"actors.validator.rules": rules}
    )
    result = asyncio.run(run_backtest(system))
    return result, int(system.actors["ema"].signal.count)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], tuple[BacktestResult, int]]:
    return {
        (name, mode): replay(rules, per_tick=mode == "per tick")
        for name, rules in RULES.items()
        for mode in ("batched", "per tick")
    }


def plain_count(max_move: float, stale_after_s: float, confirm: int = 3) -> dict[str, int]:
    """The spike and stale rules of engine/validation.py, counted over the sample in plain
    Python (one instrument, and every quote of the sample is otherwise sound)."""
    q = np.load(QUOTES)
    reference: float | None = None
    in_a_row = 0
    last_ts: int | None = None
    out = {"accepted": 0, "spike": 0, "confirmed": 0, "stale": 0}
    columns = (q["ts_event"].tolist(), q["bid"].tolist(), q["ask"].tolist())
    for ts, bid, ask in zip(*columns, strict=True):
        mid = (bid + ask) / 2
        if reference is not None and abs(mid / reference - 1) > max_move:
            in_a_row += 1
            if in_a_row < confirm:
                out["spike"] += 1
                continue
            out["confirmed"] += 1
        in_a_row = 0
        reference = mid
        if last_ts is not None and ts - last_ts > round(stale_after_s * 1e9):
            out["stale"] += 1
        last_ts = ts
        out["accepted"] += 1
    return out


def test_the_plain_count_finds_spikes_confirmed_moves_and_gaps_at_the_tight_rules() -> None:
    tight = RULES["tight"]
    assert plain_count(tight["max_move_fraction"], tight["stale_after_s"]) == {
        "accepted": SAMPLE_TICKS - TIGHT_SPIKES,
        "spike": TIGHT_SPIKES,
        "confirmed": TIGHT_CONFIRMED,
        "stale": TIGHT_STALE,
    }
    wide = RULES["wide"]
    assert plain_count(wide["max_move_fraction"], wide["stale_after_s"]) == {
        "accepted": SAMPLE_TICKS,
        "spike": 0,
        "confirmed": 0,
        "stale": 0,
    }


def no_rejections(**changes: int) -> dict[str, int]:
    counts = {
        "accepted": SAMPLE_TICKS,
        "non_positive_price": 0,
        "nan_price": 0,
        "bad_size": 0,
        "crossed": 0,
        "locked": 0,
        "wide_spread": 0,
        "out_of_order": 0,
        "spike": 0,
    }
    return counts | changes


@pytest.mark.parametrize("mode", ["batched", "per tick"])
def test_wide_rules_find_nothing_in_the_quiet_sample(
    runs: dict[tuple[str, str], tuple[BacktestResult, int]], mode: str
) -> None:
    result, strategy_ticks = runs["wide", mode]
    assert result.validation == no_rejections()  # "stale" is left out when there are none
    assert result.ticks == SAMPLE_TICKS and result.ticks_rejected == 0
    assert strategy_ticks == SAMPLE_TICKS


@pytest.mark.parametrize("mode", ["batched", "per tick"])
def test_tight_rules_drop_spikes_and_count_stale_quotes_that_still_go_on(
    runs: dict[tuple[str, str], tuple[BacktestResult, int]], mode: str
) -> None:
    result, strategy_ticks = runs["tight", mode]
    assert result.validation == no_rejections(
        accepted=SAMPLE_TICKS - TIGHT_SPIKES, spike=TIGHT_SPIKES, stale=TIGHT_STALE
    )
    assert result.ticks == SAMPLE_TICKS
    assert result.ticks_rejected == TIGHT_SPIKES  # stale quotes are flagged, not rejected
    assert strategy_ticks == SAMPLE_TICKS - TIGHT_SPIKES


@pytest.mark.parametrize("rules", sorted(RULES))
def test_batched_and_per_tick_replays_agree(
    runs: dict[tuple[str, str], tuple[BacktestResult, int]], rules: str
) -> None:
    batched, batched_ticks = runs[rules, "batched"]
    per_tick, per_tick_ticks = runs[rules, "per tick"]
    assert not batched.per_tick and per_tick.per_tick
    assert batched.batches < per_tick.batches == SAMPLE_TICKS
    assert batched.orders > 0  # the strategy trades, so the event logs have something in them
    assert batched.events_sha256 == per_tick.events_sha256
    assert batched.validation == per_tick.validation
    assert batched_ticks == per_tick_ticks
    assert (batched.fills, batched.final_equity) == (per_tick.fills, per_tick.final_equity)


def test_the_dropped_spikes_change_what_the_strategy_does(
    runs: dict[tuple[str, str], tuple[BacktestResult, int]],
) -> None:
    assert runs["tight", "batched"][0].events_sha256 != runs["wide", "batched"][0].events_sha256


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"max_move_fraction": 0.0}, "max_move_fraction must be a finite number > 0"),
        ({"max_move_fraction": float("inf")}, "max_move_fraction must be a finite number > 0"),
        ({"spike_confirm_ticks": 0}, "spike_confirm_ticks must be at least 1"),
        ({"stale_after_s": -1.0}, "stale_after_s must be a finite number > 0"),
        ({"stale_after_s": float("nan")}, "stale_after_s must be a finite number > 0"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_key(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"{message}.*\$\.actors\.validator\.rules"):
        load_backtest(BACKTEST, overrides={"actors.validator.rules": rules})
