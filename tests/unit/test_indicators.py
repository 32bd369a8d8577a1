"""The EMA cross signal (:class:`engine.indicators.EmaCross`): the Python ``update`` used one tick
at a time and the numba ``run`` used on batches must agree bit for bit, however the ticks are
cut into batches and whatever other instruments are interleaved."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.indicators import EmaCross

INCREMENT = 0.01


def random_walk(
    gen: np.random.Generator, n: int, n_instruments: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(instrument, bid, ask)``: integer-tick random walks, one per instrument, interleaved."""
    inst = gen.integers(0, n_instruments, size=n).astype(np.uint32)
    bid_ticks = np.empty(n, dtype=np.int64)
    for i in range(n_instruments):
        rows = np.flatnonzero(inst == i)
        bid_ticks[rows] = 10_000 * (i + 1) + np.cumsum(gen.integers(-1, 2, size=len(rows)))
    ask_ticks = bid_ticks + gen.integers(1, 4, size=n)
    return inst, bid_ticks * INCREMENT, ask_ticks * INCREMENT


def mid2(bid: float, ask: float) -> float:
    """What the strategy feeds ``update``: bid + ask in whole increments."""
    return float(round(bid / INCREMENT) + round(ask / INCREMENT))


def one_at_a_time(
    signal: EmaCross, inst: np.ndarray, bid: np.ndarray, ask: np.ndarray, instrument: int
) -> list[tuple[int, int]]:
    """``(row, sign)`` of every cross, feeding the instrument's rows through ``update``."""
    crosses = []
    for t in np.flatnonzero(inst == instrument).tolist():
        cross = signal.update(mid2(float(bid[t]), float(ask[t])))
        if cross:
            crosses.append((t, cross))
    return crosses


def batched(
    signal: EmaCross,
    inst: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    instrument: int,
    cuts: list[int],
) -> list[tuple[int, int]]:
    """The same through ``run``, one batch per ``cuts`` segment, as the strategy actor does."""
    crosses = []
    bounds = [0, *cuts, len(bid)]
    for a, b in itertools.pairwise(bounds):
        start = 0
        while True:
            k = signal.run(inst[a:b], bid[a:b], ask[a:b], instrument, INCREMENT, start)
            if k >= b - a:
                break
            crosses.append((a + k, signal.sign))
            start = k + 1
    return crosses


def test_run_matches_update_on_one_instrument(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, bid, ask = random_walk(gen, 50_000)
    ref = EmaCross(10, 20, 20)
    fast = EmaCross(10, 20, 20)
    expected = one_at_a_time(ref, inst, bid, ask, 0)
    got = batched(fast, inst, bid, ask, 0, [])
    context = f"rand_seed={rand_seed}"
    assert len(expected) > 100, context  # a random walk crosses often
    assert got == expected, context
    assert fast.state.tobytes() == ref.state.tobytes(), context
    assert fast.count == 50_000
    assert fast.crosses == len(expected), context
    # crosses alternate in direction
    signs = [s for _, s in expected]
    assert all(a == -b for a, b in itertools.pairwise(signs)), context


def test_run_matches_update_across_random_batch_splits(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    n = 30_000
    inst, bid, ask = random_walk(gen, n)
    ref = EmaCross(5, 13, 7)
    expected = one_at_a_time(ref, inst, bid, ask, 0)
    for _ in range(5):
        cuts = sorted(gen.choice(np.arange(1, n), size=int(gen.integers(1, 200)), replace=False))
        fast = EmaCross(5, 13, 7)
        got = batched(fast, inst, bid, ask, 0, [int(c) for c in cuts])
        context = f"rand_seed={rand_seed} cuts={cuts[:10]}..."
        assert got == expected, context
        assert fast.state.tobytes() == ref.state.tobytes(), context


def test_run_matches_update_with_instruments_interleaved(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    n = 40_000
    inst, bid, ask = random_walk(gen, n, n_instruments=3)
    cuts = sorted(int(c) for c in gen.choice(np.arange(1, n), size=50, replace=False))
    for instrument in range(3):
        ref = EmaCross(10, 20, 20)
        fast = EmaCross(10, 20, 20)
        expected = one_at_a_time(ref, inst, bid, ask, instrument)
        got = batched(fast, inst, bid, ask, instrument, cuts)
        context = f"rand_seed={rand_seed} instrument={instrument}"
        assert expected, context
        assert all(inst[t] == instrument for t, _ in got), context
        assert got == expected, context
        assert fast.state.tobytes() == ref.state.tobytes(), context
        assert fast.count == int(np.count_nonzero(inst == instrument)), context


def test_commit_false_looks_ahead_without_changing_state(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, bid, ask = random_walk(gen, 5_000)
    signal = EmaCross(10, 20, 20)
    signal.run(inst[:1_000], bid[:1_000], ask[:1_000], 0, INCREMENT)  # some history
    before = signal.state.copy()
    peek = signal.run(inst, bid, ask, 0, INCREMENT, 1_000, commit=False)
    assert signal.state.tobytes() == before.tobytes()
    assert signal.run(inst, bid, ask, 0, INCREMENT, 1_000) == peek  # the real run agrees
    assert peek < len(bid), f"rand_seed={rand_seed}"  # it did find a cross to look ahead to
    assert signal.state.tobytes() != before.tobytes()


def test_first_tick_seeds_both_averages_and_sign_starts_at_zero() -> None:
    signal = EmaCross(10, 20, 0)
    assert signal.update(200.0) == 0
    assert (signal.fast, signal.slow, signal.sign, signal.count) == (200.0, 200.0, 0, 1)
    # the first change of sign from 0 is not a cross
    assert signal.update(210.0) == 0
    assert signal.sign == 1
    assert signal.fast == 200.0 + (2 / 11) * 10.0
    assert signal.slow == 200.0 + (2 / 21) * 10.0


@pytest.mark.parametrize(("warmup", "expected"), [(2, -1), (3, 0)])
def test_warmup_counts_the_current_tick(warmup: int, expected: int) -> None:
    # mid2 100, 110, 90: the sign goes 0, +1, -1 -- a cross at the third tick
    signal = EmaCross(10, 20, warmup)
    assert [signal.update(m) for m in (100.0, 110.0, 90.0)] == [0, 0, expected]
    assert signal.sign == -1


def test_warmup_only_hides_crosses_it_does_not_change_the_averages(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, bid, ask = random_walk(gen, 10_000)
    eager = EmaCross(10, 20, 0)
    all_crosses = batched(eager, inst, bid, ask, 0, [])
    warm = EmaCross(10, 20, 500)
    late = batched(warm, inst, bid, ask, 0, [])
    # count > warmup: the 501st tick (row 500) is the first that may cross
    assert late == [(t, s) for t, s in all_crosses if t >= 500], f"rand_seed={rand_seed}"
    assert late and len(late) < len(all_crosses), f"rand_seed={rand_seed}"
    assert (warm.fast, warm.slow, warm.sign, warm.count) == (
        eager.fast,
        eager.slow,
        eager.sign,
        eager.count,
    )
    assert (warm.crosses, eager.crosses) == (len(late), len(all_crosses))


def test_running_through_crosses_counts_them_and_ends_in_the_same_state(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, bid, ask = random_walk(gen, 20_000, n_instruments=2)
    stepped = EmaCross(10, 20, 20)
    crosses = batched(stepped, inst, bid, ask, 1, [])
    through = EmaCross(10, 20, 20)
    assert through.run(inst, bid, ask, 1, INCREMENT, stop_at_cross=False) == len(bid)
    assert through.crosses == len(crosses) > 0, f"rand_seed={rand_seed}"
    assert through.state.tobytes() == stepped.state.tobytes(), f"rand_seed={rand_seed}"


def test_ticks_of_other_instruments_are_skipped() -> None:
    inst = np.array([1, 1, 1], dtype=np.uint32)
    bid = np.array([1.0, 2.0, 3.0])
    ask = bid + 0.01
    signal = EmaCross(10, 20, 0)
    assert signal.run(inst, bid, ask, 0, INCREMENT) == 3
    assert signal.count == 0


@pytest.mark.parametrize(("fast", "slow"), [(20, 10), (10, 10), (0, 5)])
def test_periods_must_be_ordered(fast: int, slow: int) -> None:
    with pytest.raises(ValueError, match="need 0 < fast < slow"):
        EmaCross(fast, slow, 0)
