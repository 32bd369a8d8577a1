"""The quote validator: each rule, its priority order, spikes and stale data, and per-tick vs
batch equivalence."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from engine.ticks import QUOTE_DTYPE, QuoteArray
from engine.validation import FLAGS, QuoteValidator, RejectReason, ValidatorConfig

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
        "spike": 0,
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


def test_spike_and_stale_settings_are_checked_at_the_boundary() -> None:
    decoded = msgspec.toml.decode(
        b"max_move_fraction = 0.002\nspike_confirm_ticks = 4\nstale_after_s = 5.0\n",
        type=ValidatorConfig,
    )
    assert decoded == ValidatorConfig(
        max_move_fraction=0.002, spike_confirm_ticks=4, stale_after_s=5.0
    )
    assert ValidatorConfig().max_move_fraction is None and ValidatorConfig().stale_after_s is None
    for toml in (b"max_move_fraction = 0.0\n", b"max_move_fraction = -0.01\n"):
        with pytest.raises(msgspec.ValidationError, match="max_move_fraction"):
            msgspec.toml.decode(toml, type=ValidatorConfig)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="max_move_fraction"):
            ValidatorConfig(max_move_fraction=bad)
        with pytest.raises(ValueError, match="stale_after_s"):
            ValidatorConfig(stale_after_s=bad)
    with pytest.raises(msgspec.ValidationError, match="spike_confirm_ticks"):
        msgspec.toml.decode(b"spike_confirm_ticks = 0\n", type=ValidatorConfig)
    with pytest.raises(msgspec.ValidationError, match="spike_confirm_ticks"):
        msgspec.toml.decode(b"spike_confirm_ticks = 1.5\n", type=ValidatorConfig)
    for toml in (b"stale_after_s = 0.0\n", b"stale_after_s = -5.0\n"):
        with pytest.raises(msgspec.ValidationError, match="stale_after_s"):
            msgspec.toml.decode(toml, type=ValidatorConfig)


# --- spikes -------------------------------------------------------------------------------------

MOVES = ValidatorConfig(max_move_fraction=0.01)  # 1% of the reference mid; 3 ticks confirm


def test_a_spike_is_rejected_counted_and_does_not_move_the_reference() -> None:
    rows = [
        (1, 0, 100.0, 100.2, 1.0, 1.0),  # mid 100.1: the first quote has no reference
        (2, 0, 102.0, 102.2, 1.0, 1.0),  # mid 102.1: 2.0% from 100.1
        (3, 0, 100.9, 101.1, 1.0, 1.0),  # mid 101.0: 0.9% from 100.1 (1.08% from the spike)
        (4, 0, 101.9, 102.1, 1.0, 1.0),  # mid 102.0: 0.99% from 101.0, the last accepted mid
        (5, 1, 50.0, 50.1, 1.0, 1.0),  # another instrument: its own first quote
    ]
    assert decide_both_ways(MOVES, rows) == [R.OK, R.SPIKE, R.OK, R.OK, R.OK]
    v = QuoteValidator(MOVES, n_instruments=2)
    v.check(*rows[0])
    v.check(*rows[1])
    assert v.reference_mid[0] == (100.0 + 100.2) * 0.5
    assert v.unconfirmed_moves.tolist() == [1, 0]
    for row in rows[2:]:
        v.check(*row)
    assert v.reference_mid.tolist() == [(101.9 + 102.1) * 0.5, (50.0 + 50.1) * 0.5]
    assert v.last_accepted_ts.tolist() == [4, 5]
    assert v.unconfirmed_moves.tolist() == [0, 0]
    assert v.counts()["spike"] == 1
    assert v.counts()["accepted"] == 4
    # without the setting the same quotes all pass, and no reference is kept
    assert decide_both_ways(ValidatorConfig(), rows) == [R.OK] * 5
    off = QuoteValidator(ValidatorConfig(), n_instruments=2)
    off.validate(quotes(*rows))
    assert np.isnan(off.reference_mid).all()


def test_the_limit_itself_is_within_the_band() -> None:
    config = ValidatorConfig(max_move_fraction=0.25)  # exact in binary, as are the mids
    rows = [
        (1, 0, 100.0, 100.0, 1.0, 1.0),
        (2, 0, 125.0, 125.0, 1.0, 1.0),  # exactly 25% up: not more than the limit
        (3, 0, 156.5, 156.5, 1.0, 1.0),  # 25.2% up from 125
        (4, 0, 93.75, 93.75, 1.0, 1.0),  # exactly 25% down from 125
    ]
    assert decide_both_ways(config, rows) == [R.OK, R.OK, R.SPIKE, R.OK]


@pytest.mark.parametrize("confirm", [1, 2, 3, 5])
def test_a_real_move_is_accepted_on_the_nth_quote_in_a_row(confirm: int) -> None:
    config = ValidatorConfig(max_move_fraction=0.01, spike_confirm_ticks=confirm)
    moved = [(2 + i, 0, 103.0 + 0.01 * i, 103.2, 1.0, 1.0) for i in range(confirm)]
    rows = [
        (1, 0, 100.0, 100.2, 1.0, 1.0),
        *moved,  # 3% up, `confirm` times in a row: the last of them is the new level
        (20, 0, 103.1, 103.3, 1.0, 1.0),  # within 1% of the new reference
        (21, 0, 100.0, 100.2, 1.0, 1.0),  # the old level is now the move
    ]
    expected = [R.OK, *[R.SPIKE] * (confirm - 1), R.OK, R.OK, R.OK if confirm == 1 else R.SPIKE]
    assert decide_both_ways(config, rows) == expected
    v = QuoteValidator(config, n_instruments=1)
    v.validate(quotes(*rows[: confirm + 1]))
    last = moved[-1]
    assert v.reference_mid.tolist() == [(last[2] + last[3]) * 0.5]
    assert v.counts()["spike"] == confirm - 1


def test_a_quote_within_the_band_breaks_the_run_and_other_rejections_leave_it() -> None:
    rows = [
        (1, 0, 100.0, 100.2, 1.0, 1.0),  # reference 100.1
        (2, 0, 103.0, 103.2, 1.0, 1.0),  # move 1
        (3, 0, 100.1, 100.3, 1.0, 1.0),  # back within the band: the run starts again
        (4, 0, 103.0, 103.2, 1.0, 1.0),  # move 1
        (5, 0, 103.3, 103.2, 1.0, 1.0),  # crossed: not counted towards the move
        (2, 0, 103.0, 103.2, 1.0, 1.0),  # earlier than 3: out of order before it is a move
        (6, 1, 50.0, 50.1, 1.0, 1.0),  # another instrument in between
        (7, 0, 103.0, 103.2, 1.0, 1.0),  # move 2
        (8, 0, 103.0, 103.2, 1.0, 1.0),  # move 3: confirmed
    ]
    assert decide_both_ways(MOVES, rows) == [
        R.OK,
        R.SPIKE,
        R.OK,
        R.SPIKE,
        R.CROSSED,
        R.OUT_OF_ORDER,
        R.OK,
        R.SPIKE,
        R.OK,
    ]


# --- stale data ---------------------------------------------------------------------------------

S = 1_000_000_000  # ns per second


def test_a_stale_quote_is_flagged_counted_and_kept() -> None:
    config = ValidatorConfig(stale_after_s=5.0)
    rows = [
        (0, 0, 100.0, 100.2, 1.0, 1.0),  # the first quote: nothing to be late after
        (5 * S, 0, 100.0, 100.2, 1.0, 1.0),  # 5 s exactly: not more than the limit
        (10 * S + 1, 0, 100.0, 100.2, 1.0, 1.0),  # 1 ns more than 5 s: stale
        (12 * S, 1, 50.0, 50.1, 1.0, 1.0),  # another instrument's first quote
        (20 * S, 0, 100.3, 100.2, 1.0, 1.0),  # crossed: rejected, so its time is not kept
        (21 * S, 0, 100.0, 100.2, 1.0, 1.0),  # 11 s after the last accepted quote: stale
        (21 * S + 1, 0, 100.0, 100.2, 1.0, 1.0),
    ]
    assert decide_both_ways(config, rows) == [R.OK, R.OK, R.OK, R.OK, R.CROSSED, R.OK, R.OK]
    v = QuoteValidator(config, n_instruments=2)
    mask = v.validate(quotes(*rows))
    assert mask.tolist() == [True, True, True, True, False, True, True]  # stale ones go on
    counts = v.counts()
    assert counts["stale"] == 2
    assert counts["accepted"] == 6 and counts["crossed"] == 1
    assert sum(v for k, v in counts.items() if k not in FLAGS) == len(rows)
    # not checked, not counted: the key is left out
    plain = QuoteValidator(ValidatorConfig(), n_instruments=2)
    plain.validate(quotes(*rows))
    assert "stale" not in plain.counts()
    assert {k: v for k, v in counts.items() if k != "stale"} == plain.counts()


def test_the_stale_limit_is_rounded_to_the_nanosecond() -> None:
    config = ValidatorConfig(stale_after_s=1.2e-7)  # 119.99999999999999 ns in binary
    rows = [(ts, 0, 100.0, 100.2, 1.0, 1.0) for ts in (0, 120, 241)]  # gaps of 120, 121 ns
    v = QuoteValidator(config, n_instruments=1)
    assert v.validate(quotes(*rows)).all()
    assert v.counts()["stale"] == 1


def test_a_rejected_spike_is_never_stale_and_a_confirmed_move_can_be() -> None:
    config = ValidatorConfig(max_move_fraction=0.01, spike_confirm_ticks=2, stale_after_s=1.0)
    rows = [
        (0, 0, 100.0, 100.2, 1.0, 1.0),
        (10 * S, 0, 103.0, 103.2, 1.0, 1.0),  # 10 s late, and a move: rejected, not stale
        (10 * S, 0, 103.0, 103.2, 1.0, 1.0),  # the move confirmed, 10 s after the last
        (10 * S, 0, 103.0, 103.2, 1.0, 1.0),
    ]
    assert decide_both_ways(config, rows) == [R.OK, R.SPIKE, R.OK, R.OK]
    v = QuoteValidator(config, n_instruments=1)
    for row in rows:
        v.check(*row)
    assert v.counts()["stale"] == 1 and v.counts()["spike"] == 1


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


class Oracle:
    """The rules written out a second, plain way: the oracle for the compiled kernel."""

    def __init__(self, config: ValidatorConfig) -> None:
        self.config = config
        self.last_ts: dict[int, int] = {}
        self.reference: dict[int, float] = {}
        self.moves_in_a_row: dict[int, int] = {}
        self.stale = 0
        self.confirmed_moves = 0

    def reason(self, row: np.void) -> RejectReason:
        config = self.config
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
        if inst in self.last_ts and ts < self.last_ts[inst]:
            return R.OUT_OF_ORDER
        move = config.max_move_fraction
        if move is not None:
            mid = (bid + ask) / 2
            if inst in self.reference and abs(mid / self.reference[inst] - 1) > move:
                self.moves_in_a_row[inst] = self.moves_in_a_row.get(inst, 0) + 1
                if self.moves_in_a_row[inst] < config.spike_confirm_ticks:
                    return R.SPIKE
                self.confirmed_moves += 1
            self.moves_in_a_row[inst] = 0
            self.reference[inst] = mid
        late = config.stale_after_s
        if (
            late is not None
            and inst in self.last_ts
            and ts - self.last_ts[inst] > round(late * 1e9)
        ):
            self.stale += 1
        self.last_ts[inst] = ts
        return R.OK


def random_stream(seed: int, n: int, n_instruments: int, *, moving: bool = False) -> QuoteArray:
    """Quotes of interleaved instruments with every kind of defect mixed in. ``moving``: mids
    that walk per instrument, with lone spikes (0.5% to 3%) and lasting jumps (0.3% to 2%)."""
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
    if moving:
        walk = np.random.default_rng([seed, 1])  # its own draws: the other columns stay put
        log_level = np.cumsum(walk.normal(0.0, 1e-4, size=n))
        jumps = walk.random(n) < 0.004
        log_level += np.cumsum(jumps * walk.choice([-1, 1], n) * walk.uniform(0.003, 0.02, n))
        lone = walk.random(n) < 0.03
        spike = 1.0 + lone * walk.choice([-1, 1], n) * walk.uniform(0.005, 0.03, n)
        mid = 100.0 * (1.0 + out["instrument"]) * np.exp(log_level) * spike
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
    # 0.2% moves, confirmed by the 3rd in a row; stale after 8 µs (the clock steps by µs)
    "moves": ValidatorConfig(max_move_fraction=0.002, stale_after_s=8e-6),
    "strict-moves": ValidatorConfig(
        allow_locked=False,
        max_spread_fraction=0.005,
        max_move_fraction=0.004,
        spike_confirm_ticks=2,
        stale_after_s=1.2e-5,
    ),
    "stale-only": ValidatorConfig(stale_after_s=8e-6),
}


def expected_reasons(
    config: ValidatorConfig, stream: QuoteArray
) -> tuple[list[RejectReason], Oracle]:
    oracle = Oracle(config)
    return [oracle.reason(row) for row in stream], oracle


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [20261124, 7, 424242], ids=lambda s: f"seed={s}")
def test_per_tick_and_batched_give_identical_decisions_and_counts(
    seed: int, config_name: str
) -> None:
    config = CONFIGS[config_name]
    n_instruments = 3
    stream = random_stream(seed, 4_000, n_instruments, moving=config.max_move_fraction is not None)
    expected, oracle = expected_reasons(config, stream)

    per_tick = QuoteValidator(config, n_instruments)
    tick_reasons = [per_tick.check(*_fields(row)) for row in stream]
    assert tick_reasons == expected

    seen = {r for r in expected}
    must_occur = set(RejectReason)
    if config.allow_locked:
        must_occur -= {R.LOCKED}
    if config.max_spread_fraction is None:
        must_occur -= {R.WIDE_SPREAD}
    if config.max_move_fraction is None:
        must_occur -= {R.SPIKE}
    else:
        assert oracle.confirmed_moves > 0, "no move was confirmed: the test would prove little"
    assert must_occur <= seen, f"stream lacks {must_occur - seen}: the test would prove little"
    if config.stale_after_s is not None:
        assert 0 < oracle.stale < expected.count(R.OK), "the stream tests staleness poorly"

    expected_mask = np.array([r is R.OK for r in expected])
    rng = np.random.default_rng(seed + 1)
    for _split in range(5):
        batched = QuoteValidator(config, n_instruments)
        cuts = np.sort(rng.integers(0, len(stream) + 1, size=rng.integers(1, 60)))
        masks = []
        for part in np.split(stream, cuts):  # includes empty and one-row batches
            before = _snapshot(batched)
            previewed = batched.preview(part)
            previewed_reasons = batched.preview_reasons(part)
            assert _same(_snapshot(batched), before)
            reasons = batched.validate_reasons(part)
            assert np.array_equal(previewed_reasons, reasons)
            masks.append(reasons == 0)
            assert np.array_equal(previewed, masks[-1])
        mask = np.concatenate(masks)
        assert np.array_equal(mask, expected_mask)
        assert batched.counts() == per_tick.counts()
        assert _same(_snapshot(batched), _snapshot(per_tick))

    counts = per_tick.counts()
    assert counts["accepted"] == int(expected_mask.sum())
    assert sum(v for k, v in counts.items() if k not in FLAGS) == len(stream)
    for reason in RejectReason:
        if reason is not R.OK:
            assert counts[reason.name.lower()] == expected.count(reason)
    assert counts.get("stale", 0) == oracle.stale


@pytest.mark.parametrize("config_name", ["default", "moves"])
def test_preview_is_a_look_ahead_that_a_partial_validate_agrees_with(config_name: str) -> None:
    config = CONFIGS[config_name]
    stream = random_stream(20261124, 500, 2, moving=True)
    v = QuoteValidator(config, 2)
    v.validate(stream[:100])
    before = _snapshot(v)
    ahead = v.preview_reasons(stream[100:])
    mask, rejected = v.preview_mask(stream[100:])
    assert _same(_snapshot(v), before)
    assert np.array_equal(mask, ahead == 0) and rejected == int((ahead != 0).sum())
    # act at the 50th tick of the look-ahead: validate only up to it, then the rest
    first = v.validate_reasons(stream[100:150])
    rest = v.validate_reasons(stream[150:])
    assert np.array_equal(np.concatenate([first, rest]), ahead)
    if config.max_move_fraction is not None:
        assert R.SPIKE in ahead.tolist() and "stale" in v.counts()


def _snapshot(v: QuoteValidator) -> tuple[dict[str, int], list[np.ndarray]]:
    return v.counts(), [v.last_accepted_ts, v.reference_mid, v.unconfirmed_moves]


def _same(
    a: tuple[dict[str, int], list[np.ndarray]], b: tuple[dict[str, int], list[np.ndarray]]
) -> bool:
    return a[0] == b[0] and all(
        np.array_equal(x, y, equal_nan=x.dtype.kind == "f") for x, y in zip(a[1], b[1], strict=True)
    )


def _fields(row: np.void) -> tuple[int, int, float, float, float, float]:
    return (
        int(row["ts_event"]),
        int(row["instrument"]),
        float(row["bid"]),
        float(row["ask"]),
        float(row["bid_size"]),
        float(row["ask_size"]),
    )
