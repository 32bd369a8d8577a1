"""The quote validator: each rule, its priority order, and per-tick vs batch equivalence."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from engine.ticks import QUOTE_DTYPE, QuoteArray
from engine.validation import QuoteValidator, RejectReason, ValidatorConfig

NAN = math.nan
INF = math.inf


def quotes(*rows: tuple[int, int, float, float, float, float]) -> QuoteArray:
    """A QUOTE_DTYPE batch from (ts_event, instrument, bid, ask, bid_size, ask_size) rows."""
    out = np.zeros(len(rows), dtype=QUOTE_DTYPE)
    for i, (ts, inst, bid, ask, bsz, asz) in enumerate(rows):
        out[i] = (ts, ts, inst, 0, bid, ask, bsz, asz)
    return out


def decide_both_ways(
    config: ValidatorConfig, rows: list[tuple[int, int, float, float, float, float]]
) -> list[RejectReason]:
    """Reasons from per-tick ``check``, asserted equal to a one-batch ``validate_reasons``."""
    one = QuoteValidator(config, n_instruments=2)
    per_tick = [one.check(*row) for row in rows]
    batch = QuoteValidator(config, n_instruments=2)
    reasons = batch.validate_reasons(quotes(*rows))
    assert [RejectReason(int(r)) for r in reasons] == per_tick
    assert batch.counts() == one.counts()
    return per_tick


R = RejectReason


@pytest.mark.parametrize(
    ("bid", "ask", "bid_size", "ask_size", "expected"),
    [
        pytest.param(100.0, 100.5, 3.0, 4.0, R.OK, id="normal"),
        pytest.param(100.0, 100.5, 0.0, 0.0, R.OK, id="zero-sizes-mean-unknown"),
        pytest.param(NAN, 100.5, 3.0, 4.0, R.NAN_PRICE, id="nan-bid"),
        pytest.param(100.0, NAN, 3.0, 4.0, R.NAN_PRICE, id="nan-ask"),
        pytest.param(100.0, INF, 3.0, 4.0, R.NAN_PRICE, id="inf-ask"),
        pytest.param(-INF, 100.5, 3.0, 4.0, R.NAN_PRICE, id="minus-inf-bid"),
        pytest.param(0.0, 100.5, 3.0, 4.0, R.NON_POSITIVE_PRICE, id="zero-bid"),
        pytest.param(100.0, -100.5, 3.0, 4.0, R.NON_POSITIVE_PRICE, id="negative-ask"),
        pytest.param(100.0, 100.5, NAN, 4.0, R.BAD_SIZE, id="nan-bid-size"),
        pytest.param(100.0, 100.5, 3.0, -1.0, R.BAD_SIZE, id="negative-ask-size"),
        pytest.param(100.0, 100.5, 3.0, INF, R.BAD_SIZE, id="inf-ask-size"),
        pytest.param(100.5, 100.0, 3.0, 4.0, R.CROSSED, id="crossed"),
        pytest.param(100.0, 100.0, 3.0, 4.0, R.OK, id="locked-allowed-by-default"),
        # priority: the first failing rule names the reason
        pytest.param(NAN, -1.0, -1.0, 4.0, R.NAN_PRICE, id="nan-before-non-positive"),
        pytest.param(-1.0, -2.0, 3.0, 4.0, R.NON_POSITIVE_PRICE, id="non-positive-before-crossed"),
        pytest.param(101.0, 100.0, -3.0, 4.0, R.BAD_SIZE, id="bad-size-before-crossed"),
    ],
)
def test_each_price_and_size_rule(
    bid: float, ask: float, bid_size: float, ask_size: float, expected: RejectReason
) -> None:
    reasons = decide_both_ways(ValidatorConfig(), [(1_000, 0, bid, ask, bid_size, ask_size)])
    assert reasons == [expected]


def test_locked_rejected_when_not_allowed_and_crossed_wins_over_locked_rules() -> None:
    config = ValidatorConfig(allow_locked=False)
    rows = [
        (1, 0, 100.0, 100.0, 1.0, 1.0),
        (2, 0, 100.01, 100.0, 1.0, 1.0),
        (3, 0, 100.0, 100.01, 1.0, 1.0),
    ]
    assert decide_both_ways(config, rows) == [R.LOCKED, R.CROSSED, R.OK]


def test_spread_limit_is_a_fraction_of_mid_and_the_limit_itself_passes() -> None:
    config = ValidatorConfig(max_spread_fraction=0.01)
    rows = [
        (1, 0, 99.0, 101.0, 1.0, 1.0),  # 2 / 100 = 2% of mid
        (2, 0, 99.5, 100.5, 1.0, 1.0),  # exactly 1%: not more than the limit
        (3, 0, 99.4, 100.5, 1.0, 1.0),  # 1.1 / 99.95 = 1.1%
        (4, 0, 100.0, 100.0, 1.0, 1.0),  # locked, allowed, zero spread
    ]
    assert decide_both_ways(config, rows) == [R.WIDE_SPREAD, R.OK, R.WIDE_SPREAD, R.OK]
    no_limit = decide_both_ways(ValidatorConfig(), rows)
    assert no_limit == [R.OK, R.OK, R.OK, R.OK]


def test_out_of_order_is_per_instrument_against_the_last_accepted_tick() -> None:
    rows = [
        (100, 0, 10.0, 10.1, 1.0, 1.0),  # accepted, instrument 0 at 100
        (50, 1, 20.0, 20.1, 1.0, 1.0),  # instrument 1 has its own clock
        (99, 0, 10.0, 10.1, 1.0, 1.0),  # earlier than 100: out of order
        (100, 0, 10.0, 10.1, 1.0, 1.0),  # equal is in order
        (300, 0, 10.2, 10.1, 1.0, 1.0),  # crossed: rejected, so 300 is not remembered
        (200, 0, 10.0, 10.1, 1.0, 1.0),  # in order against 100, the last *accepted*
        (150, 0, 10.2, 10.1, 1.0, 1.0),  # crossed and out of order: content comes first
        (49, 1, 20.0, 20.1, 1.0, 1.0),
    ]
    assert decide_both_ways(ValidatorConfig(), rows) == [
        R.OK,
        R.OK,
        R.OUT_OF_ORDER,
        R.OK,
        R.CROSSED,
        R.OK,
        R.CROSSED,
        R.OUT_OF_ORDER,
    ]
    v = QuoteValidator(ValidatorConfig(), n_instruments=2)
    v.validate(quotes(*rows))
    assert v.last_accepted_ts.tolist() == [200, 50]
    assert v.counts() == {
        "accepted": 4,
        "non_positive_price": 0,
        "nan_price": 0,
        "bad_size": 0,
        "crossed": 2,
        "locked": 0,
        "wide_spread": 0,
        "out_of_order": 2,
    }


def test_config_is_checked_at_the_boundary() -> None:
    decoded = msgspec.toml.decode(
        b"allow_locked = false\nmax_spread_fraction = 0.02\n", type=ValidatorConfig
    )
    assert decoded == ValidatorConfig(allow_locked=False, max_spread_fraction=0.02)
    with pytest.raises(msgspec.ValidationError, match="allow_lockd"):
        msgspec.toml.decode(b"allow_lockd = false\n", type=ValidatorConfig)
    with pytest.raises(msgspec.ValidationError, match="max_spread_fraction"):
        msgspec.toml.decode(b"max_spread_fraction = -0.1\n", type=ValidatorConfig)
    with pytest.raises(ValueError, match="max_spread_fraction"):
        ValidatorConfig(max_spread_fraction=math.nan)


def test_bad_batches_are_refused_before_any_state_changes() -> None:
    v = QuoteValidator(ValidatorConfig(), n_instruments=2)
    good_then_unknown = quotes((5, 0, 1.0, 2.0, 1.0, 1.0), (6, 2, 1.0, 2.0, 1.0, 1.0))
    with pytest.raises(IndexError, match="instrument 2"):
        v.validate(good_then_unknown)
    with pytest.raises(IndexError, match="instrument 2"):
        v.check(6, 2, 1.0, 2.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="QUOTE_DTYPE"):
        v.validate(np.zeros(3, dtype=[("ts_event", np.int64)]))
    assert v.counts()["accepted"] == 0
    assert v.last_accepted_ts.tolist() == [np.iinfo(np.int64).min] * 2
    assert v.validate(np.zeros(0, dtype=QUOTE_DTYPE)).shape == (0,)


# --- a seeded random stream -------------------------------------------------------------------


def reference_reason(
    config: ValidatorConfig, row: np.void, last_ts: dict[int, int]
) -> RejectReason:
    """The rules written out a second, plain way: the oracle for the compiled kernel."""
    ts, inst = int(row["ts_event"]), int(row["instrument"])
    bid, ask = float(row["bid"]), float(row["ask"])
    sizes = (float(row["bid_size"]), float(row["ask_size"]))
    if math.isnan(bid) or math.isnan(ask) or math.isinf(bid) or math.isinf(ask):
        return R.NAN_PRICE
    if min(bid, ask) <= 0:
        return R.NON_POSITIVE_PRICE
    if any(math.isnan(s) or math.isinf(s) or s < 0 for s in sizes):
        return R.BAD_SIZE
    if bid > ask:
        return R.CROSSED
    if bid == ask and not config.allow_locked:
        return R.LOCKED
    limit = config.max_spread_fraction
    if limit is not None and (ask - bid) / ((ask + bid) / 2) > limit:
        return R.WIDE_SPREAD
    if inst in last_ts and ts < last_ts[inst]:
        return R.OUT_OF_ORDER
    last_ts[inst] = ts
    return R.OK


def random_stream(seed: int, n: int, n_instruments: int) -> QuoteArray:
    """Quotes of interleaved instruments with every kind of defect mixed in."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=QUOTE_DTYPE)
    # mostly rising clock with equal stamps and some steps back
    steps = rng.choice(
        [0, 0, 1_000, 5_000, -3_000, -20_000], size=n, p=[0.1, 0.1, 0.4, 0.3, 0.06, 0.04]
    )
    out["ts_event"] = 1_700_000_000_000_000_000 + np.cumsum(steps)
    out["ts_init"] = out["ts_event"]
    out["instrument"] = rng.integers(0, n_instruments, size=n)
    mid = 100.0 + rng.integers(-500, 500, size=n) * 0.01
    half = rng.choice([0.0, 0.005, 0.01, 0.02, 0.5, 2.0], size=n)
    out["bid"] = np.round(mid - half, 3)
    out["ask"] = np.round(mid + half, 3)
    out["bid_size"] = rng.integers(0, 500, size=n)
    out["ask_size"] = rng.integers(0, 500, size=n)
    defect = rng.random(n)
    cuts = np.cumsum([0.03, 0.02, 0.02, 0.02, 0.02, 0.02, 0.04, 0.02])
    kinds = np.searchsorted(cuts, defect, side="right")
    out["bid"][kinds == 0] = np.nan
    out["ask"][kinds == 1] = np.inf
    out["bid"][kinds == 2] = 0.0
    out["ask"][kinds == 3] = -out["ask"][kinds == 3]
    out["bid_size"][kinds == 4] = np.nan
    out["ask_size"][kinds == 5] = -1.0
    crossed = kinds == 6
    out["bid"][crossed], out["ask"][crossed] = out["ask"][crossed] + 0.01, out["bid"][crossed]
    out["ask"][kinds == 7] = out["bid"][kinds == 7]  # locked
    return out


CONFIGS = {
    "default": ValidatorConfig(),
    "strict": ValidatorConfig(allow_locked=False, max_spread_fraction=0.005),
}


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [20261124, 7, 424242], ids=lambda s: f"seed={s}")
def test_per_tick_and_batched_give_identical_decisions_and_counts(
    seed: int, config_name: str
) -> None:
    config = CONFIGS[config_name]
    n_instruments = 3
    stream = random_stream(seed, 4_000, n_instruments)

    oracle_state: dict[int, int] = {}
    expected = [reference_reason(config, row, oracle_state) for row in stream]

    per_tick = QuoteValidator(config, n_instruments)
    tick_reasons = [per_tick.check(*_fields(row)) for row in stream]
    assert tick_reasons == expected

    seen = {r for r in expected}
    must_occur = set(RejectReason) - (
        set() if config_name == "strict" else {R.LOCKED, R.WIDE_SPREAD}
    )
    assert must_occur <= seen, f"stream lacks {must_occur - seen}: the test would prove little"

    expected_mask = np.array([r is R.OK for r in expected])
    rng = np.random.default_rng(seed + 1)
    for _split in range(5):
        batched = QuoteValidator(config, n_instruments)
        cuts = np.sort(rng.integers(0, len(stream) + 1, size=rng.integers(1, 60)))
        masks = []
        for part in np.split(stream, cuts):  # includes empty and one-row batches
            before_counts = batched.counts()
            before_state = batched.last_accepted_ts
            previewed = batched.preview(part)
            assert batched.counts() == before_counts
            assert np.array_equal(batched.last_accepted_ts, before_state)
            masks.append(batched.validate(part))
            assert np.array_equal(previewed, masks[-1])
        mask = np.concatenate(masks)
        assert np.array_equal(mask, expected_mask)
        assert batched.counts() == per_tick.counts()
        assert np.array_equal(batched.last_accepted_ts, per_tick.last_accepted_ts)

    counts = per_tick.counts()
    assert counts["accepted"] == int(expected_mask.sum())
    assert sum(counts.values()) == len(stream)
    for reason in RejectReason:
        if reason is not R.OK:
            assert counts[reason.name.lower()] == expected.count(reason)


def test_preview_is_a_look_ahead_that_a_partial_validate_agrees_with() -> None:
    stream = random_stream(20261124, 500, 2)
    v = QuoteValidator(ValidatorConfig(), 2)
    v.validate(stream[:100])
    counts, state = v.counts(), v.last_accepted_ts
    ahead = v.preview_reasons(stream[100:])
    assert v.counts() == counts and np.array_equal(v.last_accepted_ts, state)
    # act at the 50th tick of the look-ahead: validate only up to it, then the rest
    first = v.validate_reasons(stream[100:150])
    rest = v.validate_reasons(stream[150:])
    assert np.array_equal(np.concatenate([first, rest]), ahead)


def _fields(row: np.void) -> tuple[int, int, float, float, float, float]:
    return (
        int(row["ts_event"]),
        int(row["instrument"]),
        float(row["bid"]),
        float(row["ask"]),
        float(row["bid_size"]),
        float(row["ask_size"]),
    )
