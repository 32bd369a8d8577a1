"""The risk model (engine/var.py): EWMA covariance of sampled returns, parametric and
historical VaR, component VaR, correlation, deleveraging, staleness, and the correlation
regime-shift detector, on hand-made numbers, against a plain Python reference and numpy,
and on 23 years of real daily closes (shared/data, SOURCES.md section 1).

The historical VaR quantile is numpy's ``method="linear"`` (Hyndman and Fan type 7):
``x[floor(h)] + frac(h) * (x[floor(h) + 1] - x[floor(h)])`` with ``h = (m - 1) * (1 -
confidence)`` over the ``m`` P&L values sorted ascending."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from engine.var import (
    DAY_NS,
    CovarianceRiskModel,
    RegimeDetector,
    RiskModel,
    monitor_recompute,
    synthetic_model,
)
from tests.shared_data import shared_data_dir

Z99 = 2.3263478740408408  # the 0.99 quantile of the standard normal
NOON = DAY_NS // 2


def day(d: int) -> int:
    """Noon UTC of day ``d`` since the epoch, in ns."""
    return d * DAY_NS + NOON


# --- a plain Python reference ---------------------------------------------------------------


class ReferenceModel:
    """The sampling rule, the EWMA and the VaR of the module docstring, written with Python
    floats and lists, in the same order of operations as the kernels."""

    def __init__(
        self, n: int, decay: float = 0.94, confidence: float = 0.99, history: int = 250
    ) -> None:
        self.n = n
        self.decay = decay
        self.confidence = confidence
        self.history = history
        self.current = [math.nan] * n
        self.previous = [math.nan] * n
        self.sigma = [[0.0] * n for _ in range(n)]
        self.weight = 0.0
        self.rows: list[list[float]] = []
        self.open: int | None = None
        self.has_data = False
        self.last_update = 0

    def on_price(self, i: int, price: float, ts: int) -> None:
        b = ts // DAY_NS
        if self.open is None:
            self.open = b
        elif b > self.open:
            if self.has_data:
                self.close((self.open + 1) * DAY_NS)
            self.open = b
            self.has_data = False
        elif b < self.open:
            return
        self.current[i] = price
        self.has_data = True

    def close(self, end: int) -> None:
        row = [0.0] * self.n
        any_return = False
        for i in range(self.n):
            c = self.current[i]
            if not math.isnan(c):
                if not math.isnan(self.previous[i]):
                    row[i] = math.log(c / self.previous[i])
                    any_return = True
                self.previous[i] = c
                self.current[i] = math.nan
        if not any_return:
            return
        keep = 1.0 - self.decay
        for i in range(self.n):
            for j in range(self.n):
                self.sigma[i][j] = self.decay * self.sigma[i][j] + keep * (row[i] * row[j])
        self.weight = self.decay * self.weight + keep
        self.rows = [*self.rows, row][-self.history :]
        self.last_update = end

    def parametric_var(self, e: list[float]) -> float:
        quad = 0.0
        for i in range(self.n):
            acc = 0.0
            for j in range(self.n):
                acc += self.sigma[i][j] * e[j]
            quad += e[i] * acc
        if not quad > 0.0:
            return 0.0
        return Z99 * math.sqrt(quad / self.weight)

    def historical_var(self, e: list[float]) -> float:
        pnl = []
        for row in self.rows:
            acc = 0.0
            for i in range(self.n):
                acc += e[i] * math.expm1(row[i])
            pnl.append(acc)
        pnl.sort()
        m = len(pnl)
        h = (m - 1) * (1.0 - self.confidence)
        lo = math.floor(h)
        hi = min(lo + 1, m - 1)
        q = pnl[lo] + (h - lo) * (pnl[hi] - pnl[lo])
        return -q if q < 0.0 else 0.0


def random_prices(
    gen: np.random.Generator, n_instruments: int, days: int, ticks_per_day: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interleaved random-walk prices over ``days`` days, some of them empty (weekends), some
    instruments missing on some days, several prices per instrument on a day."""
    inst, price, ts = [], [], []
    level = gen.uniform(20.0, 200.0, n_instruments)
    for d in range(days):
        if d % 7 in (5, 6):  # a weekend: no data at all
            continue
        for k in range(ticks_per_day * n_instruments):
            i = int(gen.integers(0, n_instruments))
            if (d + i) % 11 == 0:  # this instrument does not trade today
                continue
            level[i] *= math.exp(gen.normal(0.0, 0.01))
            inst.append(i)
            price.append(round(float(level[i]), 2))
            ts.append(d * DAY_NS + 14 * 3_600_000_000_000 + k * 1_000_000_000)
    return (
        np.array(inst, dtype=np.uint32),
        np.array(price, dtype=np.float64),
        np.array(ts, dtype=np.int64),
    )


def fed_pair(
    gen: np.random.Generator, n: int = 4, days: int = 120
) -> tuple[CovarianceRiskModel, ReferenceModel]:
    inst, price, ts = random_prices(gen, n, days)
    model = CovarianceRiskModel(n, history=50)
    ref = ReferenceModel(n, history=50)
    model.on_prices(inst, price, ts)
    for i, p, t in zip(inst.tolist(), price.tolist(), ts.tolist(), strict=True):
        ref.on_price(i, p, t)
    return model, ref


# --- sampling and the EWMA --------------------------------------------------------------------


def test_the_ewma_of_two_assets_matches_the_hand_computed_recursion() -> None:
    m = CovarianceRiskModel(2, decay=0.9, min_observations=1)
    m.on_price(0, 100.0, day(0))
    m.on_price(1, 50.0, day(0))
    m.on_price(0, 101.0, day(0) + 1)  # the last price of the day is the sample
    # day 1: A 101 -> 110, B 50 -> 45
    m.on_price(0, 110.0, day(1))
    m.on_price(1, 45.0, day(1))
    assert m.observations == 0  # day 0 had no previous sample: no row; day 1 is open
    # days 2 and 3 (a weekend): no data, no row. day 4: A 110 -> 99, B 45 -> 46.8
    m.on_price(0, 99.0, day(4))
    assert m.observations == 1
    assert m.last_update_ns == 2 * DAY_NS  # the end of day 1
    m.on_price(1, 46.8, day(4))
    m.advance_to(5 * DAY_NS)
    assert m.observations == 2
    assert m.last_update_ns == 5 * DAY_NS

    a1, b1 = math.log(110 / 101), math.log(45 / 50)
    a2, b2 = math.log(99 / 110), math.log(46.8 / 45)
    # S = 0.9 * (0.1 * r1 r1') + 0.1 * r2 r2'
    s_aa = 0.9 * (0.1 * (a1 * a1)) + 0.1 * (a2 * a2)
    s_ab = 0.9 * (0.1 * (a1 * b1)) + 0.1 * (a2 * b2)
    s_bb = 0.9 * (0.1 * (b1 * b1)) + 0.1 * (b2 * b2)
    weight = 0.9 * 0.1 + 0.1  # 1 - 0.9**2
    assert m.weight == pytest.approx(0.19, rel=1e-15)
    expected = np.array([[s_aa, s_ab], [s_ab, s_bb]]) / weight
    np.testing.assert_allclose(m.covariance(), expected, rtol=1e-14)
    np.testing.assert_array_equal(m.returns(), [[a1, b1], [a2, b2]])
    # the figures themselves, so a wrong formula cannot agree with itself
    assert m.covariance()[0, 0] == pytest.approx(0.0092940, rel=1e-4)
    assert m.covariance()[0, 1] == pytest.approx(-0.0064350, rel=1e-4)
    assert m.covariance()[1, 1] == pytest.approx(0.0060679, rel=1e-4)
    c = m.correlation()
    assert c[0, 0] == c[1, 1] == 1.0
    assert c[0, 1] == c[1, 0] == pytest.approx(s_ab / math.sqrt(s_aa * s_bb), rel=1e-14)


def test_an_instrument_without_a_price_in_the_interval_has_a_zero_return_then_the_whole_move() -> (
    None
):
    m = CovarianceRiskModel(2)
    for d, (a, b) in enumerate([(100.0, 10.0), (101.0, None), (102.0, 12.0)]):
        m.on_price(0, a, day(d))
        if b is not None:
            m.on_price(1, b, day(d))
    m.advance_to(day(3))
    np.testing.assert_array_equal(
        m.returns(), [[math.log(101 / 100), 0.0], [math.log(102 / 101), math.log(12 / 10)]]
    )


def test_prices_for_an_interval_already_finished_are_counted_and_not_used() -> None:
    m = CovarianceRiskModel(1)
    m.on_price(0, 100.0, day(0))
    m.on_price(0, 110.0, day(1))
    m.on_price(0, 999.0, day(0))  # late
    m.advance_to(day(2))
    assert m.late_prices == 1
    np.testing.assert_array_equal(m.returns(), [[math.log(110 / 100)]])


def test_the_history_ring_keeps_the_last_rows_oldest_first() -> None:
    m = CovarianceRiskModel(1, history=3)
    prices = [100.0, 101.0, 99.0, 102.0, 103.0, 101.5]
    for d, p in enumerate(prices):
        m.on_price(0, p, day(d))
    m.advance_to(day(len(prices)))
    logs = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    assert m.observations == 5
    np.testing.assert_array_equal(m.returns()[:, 0], logs[-3:])


def test_batched_prices_give_the_same_model_as_one_at_a_time(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, price, ts = random_prices(gen, 5, 200)
    one = CovarianceRiskModel(5, history=40)
    for i, p, t in zip(inst.tolist(), price.tolist(), ts.tolist(), strict=True):
        one.on_price(i, p, t)
    cuts = np.sort(gen.choice(np.arange(1, len(price)), size=30, replace=False))
    batched = CovarianceRiskModel(5, history=40)
    for lo, hi in itertools.pairwise([0, *cuts.tolist(), len(price)]):
        batched.on_prices(inst[int(lo) : int(hi)], price[int(lo) : int(hi)], ts[int(lo) : int(hi)])
    whole = CovarianceRiskModel(5, history=40)
    whole.on_prices(inst, price, ts)
    assert one.observations > 100, f"rand_seed={rand_seed}"
    for other in (batched, whole):
        assert other.observations == one.observations
        assert other.last_update_ns == one.last_update_ns
        np.testing.assert_array_equal(other.covariance(), one.covariance())
        np.testing.assert_array_equal(other.returns(), one.returns())
        np.testing.assert_array_equal(other._current, one._current)
        np.testing.assert_array_equal(other._previous, one._previous)


def test_the_kernels_agree_bit_for_bit_with_plain_python(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    model, ref = fed_pair(gen)
    assert model.observations > 60
    np.testing.assert_array_equal(model._sigma, np.array(ref.sigma))
    assert model.weight == ref.weight
    np.testing.assert_array_equal(model.returns(), np.array(ref.rows))
    assert model.last_update_ns == ref.last_update
    for _ in range(20):
        e = gen.normal(0.0, 1e5, 4)
        assert model.parametric_var(e) == ref.parametric_var(e.tolist())
        assert model.historical_var(e) == ref.historical_var(e.tolist())


def test_a_split_fed_as_a_corporate_action_leaves_no_jump_in_the_returns() -> None:
    def run(with_action: bool, apply_after_close: bool) -> np.ndarray:
        m = CovarianceRiskModel(1)
        m.on_price(0, 100.0, day(0))
        m.on_price(0, 102.0, day(1))
        if apply_after_close:
            m.advance_to(day(2) - NOON)  # the day-1 sample is already taken
        if with_action:
            m.on_corporate_action(0, 0.25)  # 4:1, before the first price of the ex-date
        m.on_price(0, 26.01, day(2))  # 102 / 4 = 25.5 before, +2% on the day
        m.advance_to(day(3))
        return m.returns()[:, 0]

    for after_close in (False, True):
        r = run(True, after_close)
        assert r[0] == pytest.approx(math.log(1.02), rel=1e-12)
        assert r[1] == pytest.approx(math.log(1.02), rel=1e-12)
    assert run(False, False)[1] == pytest.approx(math.log(26.01 / 102))  # what it prevents


def test_a_corporate_action_before_any_price_changes_nothing() -> None:
    m = CovarianceRiskModel(2)
    m.on_corporate_action(1, 0.5)
    m.on_price(1, 10.0, day(0))
    m.on_price(1, 11.0, day(1))
    m.advance_to(day(2))
    np.testing.assert_array_equal(m.returns()[:, 1], [math.log(1.1)])


# --- staleness --------------------------------------------------------------------------------


def test_the_model_is_stale_until_min_observations_and_after_max_age() -> None:
    m = CovarianceRiskModel(1, min_observations=3, max_age_ns=3 * DAY_NS)
    assert isinstance(m, RiskModel)  # the protocol the pre-trade checks call
    m.on_price(0, 100.0, day(0))
    for d in range(1, 4):
        assert m.is_stale(day(d))
        m.on_price(0, 100.0 + d, day(d))
    assert m.observations == 2
    assert m.is_stale(day(4))  # two rows: not enough
    m.advance_to(4 * DAY_NS)
    assert m.observations == 3
    assert m.last_update_ns == 4 * DAY_NS
    assert not m.is_stale(4 * DAY_NS)
    assert not m.is_stale(7 * DAY_NS)  # exactly max_age old
    assert m.is_stale(7 * DAY_NS + 1)
    no_age = CovarianceRiskModel(1, min_observations=3)
    no_age.on_prices(
        np.zeros(4, dtype=np.int64),
        np.array([1.0, 2.0, 3.0, 4.0]),
        np.array([day(d) for d in range(4)]),
    )
    no_age.advance_to(day(4))
    assert not no_age.is_stale(10**18)


# --- value at risk ----------------------------------------------------------------------------


def test_parametric_var_is_the_closed_form(rand_seed: int) -> None:
    model, _ = fed_pair(np.random.default_rng(rand_seed))
    assert model.z == Z99
    e = np.array([250_000.0, -100_000.0, 50_000.0, 0.0])
    cov = model.covariance()
    expected = Z99 * math.sqrt(float(e @ cov @ e))
    assert model.parametric_var(e) == pytest.approx(expected, rel=1e-12)
    # one instrument alone: z * |e| * sigma
    single = np.array([0.0, 0.0, -80_000.0, 0.0])
    assert model.parametric_var(single) == pytest.approx(
        Z99 * 80_000.0 * math.sqrt(cov[2, 2]), rel=1e-12
    )
    assert model.parametric_var(2.5 * e) == pytest.approx(2.5 * model.parametric_var(e), rel=1e-12)
    assert model.parametric_var(np.zeros(4)) == 0.0


def test_historical_var_is_minus_numpys_linear_quantile_of_the_pnl(rand_seed: int) -> None:
    model, _ = fed_pair(np.random.default_rng(rand_seed))
    e = np.array([250_000.0, -100_000.0, 50_000.0, 10_000.0])
    pnl = np.expm1(model.returns()) @ e
    assert len(pnl) == 50
    q = float(np.quantile(pnl, 0.01, method="linear"))
    assert q < 0
    assert model.historical_var(e) == pytest.approx(-q, rel=1e-12)
    # the interpolation by hand: h = 49 * 0.01 = 0.49, between the worst and the next
    s = np.sort(pnl)
    assert model.historical_var(e) == pytest.approx(-(s[0] + 0.49 * (s[1] - s[0])), rel=1e-12)


def test_historical_var_interpolates_between_the_worst_days() -> None:
    m = CovarianceRiskModel(1, confidence=0.9, history=10)
    moves = [0.0, -0.05, 0.01, -0.10, 0.02, 0.03]  # simple returns on days 1..5
    p = 100.0
    m.on_price(0, p, day(0))
    for d, r in enumerate(moves[1:], start=1):
        p *= 1.0 + r
        m.on_price(0, p, day(d))
    m.advance_to(day(len(moves)))
    # P&L of 1,000,000: -100,000, -50,000, 10,000, 20,000, 30,000; h = 4 * 0.1 = 0.4
    expected = -(-100_000.0 + 0.4 * (-50_000.0 + 100_000.0))
    assert m.historical_var(np.array([1e6])) == pytest.approx(expected, rel=1e-9)
    # the short: -30,000, -20,000, -10,000, 50,000, 100,000
    assert m.historical_var(np.array([-1e6])) == pytest.approx(26_000.0, rel=1e-9)
    assert m.historical_var(np.array([0.0])) == 0.0
    # a book that gained every day has no loss to report: VaR 0, not negative
    up = CovarianceRiskModel(1, confidence=0.9)
    for d, p in enumerate([100.0, 101.0, 103.0, 104.0]):
        up.on_price(0, p, day(d))
    up.advance_to(day(4))
    assert up.historical_var(np.array([1e6])) == 0.0


def test_method_selects_parametric_historical_or_the_larger(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, price, ts = random_prices(gen, 3, 150)
    models = {
        method: CovarianceRiskModel(3, method=method, history=60)  # type: ignore[arg-type]
        for method in ("parametric", "historical", "max")
    }
    for m in models.values():
        m.on_prices(inst, price, ts)
    e = np.array([1e5, 2e5, -5e4])
    p = models["parametric"].var(e)
    h = models["historical"].var(e)
    assert p == models["max"].parametric_var(e)
    assert h == models["max"].historical_var(e)
    assert p != h
    assert models["max"].var(e) == max(p, h)
    assert models["max"].incremental_var(e, 2 * e) == (max(p, h), models["max"].var(2 * e))


def test_a_non_finite_exposure_fails_a_limit_instead_of_passing_it() -> None:
    model, _ = synthetic_model(3, 30)
    e = np.array([1e5, math.nan, 1e5])
    assert model.var(e) == math.inf
    with pytest.raises(ValueError, match="shape"):
        model.var(np.ones(4))


def test_the_deleverage_factor_brings_var_exactly_to_the_limit(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    inst, price, ts = random_prices(gen, 4, 150)
    e = np.array([3e5, -1e5, 2e5, 5e4])
    for method in ("parametric", "historical", "max"):
        m = CovarianceRiskModel(4, method=method, history=60)  # type: ignore[arg-type]
        m.on_prices(inst, price, ts)
        v = m.var(e)
        limit = 0.6 * v
        f = m.deleverage_factor(e, limit)
        assert 0.0 < f < 1.0
        assert m.var(f * e) == pytest.approx(limit, rel=1e-12), method
        assert m.deleverage_factor(e, 2 * v) == 1.0
        assert m.deleverage_factor(e, v) == 1.0
    with pytest.raises(ValueError, match="var_limit"):
        m.deleverage_factor(e, 0.0)


def test_component_var_adds_up_to_the_parametric_var(rand_seed: int) -> None:
    model, _ = synthetic_model(50, 100, seed=rand_seed)
    gen = np.random.default_rng(rand_seed)
    e = gen.normal(0.0, 1e5, 50)
    comp = model.component_var(e)
    assert comp.shape == (50,)
    assert float(comp.sum()) == pytest.approx(model.parametric_var(e), rel=1e-12)
    # half the minimum-variance hedge of instrument 0 with instrument 1 reduces risk at the
    # margin, so its component is negative (whatever the sign of the correlation)
    cov = model.covariance()
    hedged = np.zeros(50)
    hedged[0], hedged[1] = 1e6, -0.5 * cov[0, 1] / cov[1, 1] * 1e6
    comp = model.component_var(hedged)
    assert comp[1] < 0.0 < comp[0]
    assert float(comp.sum()) == pytest.approx(model.parametric_var(hedged), rel=1e-12)
    assert not model.component_var(np.zeros(50)).any()


def test_correlation_guards_instruments_without_variance(rand_seed: int) -> None:
    model, _ = fed_pair(np.random.default_rng(rand_seed))
    c = model.correlation()
    cov = model.covariance()
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(c, cov / np.outer(sd, sd), rtol=1e-12)
    np.testing.assert_array_equal(c, c.T)
    assert np.all(np.diag(c) == 1.0)
    flat = CovarianceRiskModel(3)
    for d in range(5):
        flat.on_price(0, 100.0 + d, day(d))
        flat.on_price(1, 50.0, day(d))  # never moves
        flat.on_price(2, 20.0 - d, day(d))
    flat.advance_to(day(5))
    c = flat.correlation()
    np.testing.assert_array_equal(np.diag(c), [1.0, 1.0, 1.0])
    assert c[0, 1] == c[1, 0] == c[1, 2] == 0.0
    assert c[0, 2] == pytest.approx(-1.0, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"decay": 1.0}, "decay"),
        ({"decay": 0.0}, "decay"),
        ({"confidence": 0.5}, "confidence"),
        ({"confidence": 1.0}, "confidence"),
        ({"method": "monte_carlo"}, "method"),
        ({"history": 0}, "history"),
        ({"min_observations": 0}, "min_observations"),
        ({"sample_interval_ns": 0}, "sample_interval_ns"),
        ({"max_age_ns": 0}, "max_age_ns"),
    ],
)
def test_arguments_are_checked_and_named(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        CovarianceRiskModel(2, **kwargs)  # type: ignore[arg-type]


def test_bad_prices_and_instruments_are_refused() -> None:
    m = CovarianceRiskModel(2)
    with pytest.raises(ValueError, match="n_instruments"):
        CovarianceRiskModel(0)
    with pytest.raises(ValueError, match="positive"):
        m.on_price(0, 0.0, day(0))
    with pytest.raises(ValueError, match="instrument"):
        m.on_price(2, 1.0, day(0))
    with pytest.raises(ValueError, match="positive"):
        m.on_prices(np.array([0, 1]), np.array([1.0, math.nan]), np.array([day(0), day(0)]))
    with pytest.raises(ValueError, match="price_ratio"):
        m.on_corporate_action(0, -1.0)


# --- regime shifts ----------------------------------------------------------------------------


def equicorrelation(n: int, rho: float) -> np.ndarray:
    c = np.full((n, n), rho)
    np.fill_diagonal(c, 1.0)
    return c


def test_the_detector_enters_above_the_threshold_and_leaves_only_below_the_exit() -> None:
    det = RegimeDetector(short_half_life=2, long_half_life=100, warmup=10)
    for _ in range(60):
        assert not det.update(equicorrelation(4, 0.3))
    assert det.value == pytest.approx(0.0, abs=1e-12)
    assert "no correlation regime shift" in det.reason
    steps = 0
    while not det.update(equicorrelation(4, 0.8)):
        steps += 1
        assert steps < 10
    assert det.value > 0.15
    assert det.short == pytest.approx(0.3 + 0.5 * (1 - 0.5 ** ((steps + 1) / 2)), abs=0.02)
    assert "correlation regime shift" in det.reason
    assert "of 4 instruments" in det.reason and f"{det.short:.2f}" in det.reason
    # back to a middle level: between the thresholds the shift holds
    while det.value > 0.10:
        det.update(equicorrelation(4, 0.3))
    assert det.shifted
    while det.value >= 0.05:
        det.update(equicorrelation(4, 0.3))
    assert not det.shifted


def test_the_detector_does_not_flag_before_warmup_nor_a_fall_in_correlation() -> None:
    det = RegimeDetector(warmup=30)
    for _ in range(29):
        det.update(equicorrelation(3, 0.9))
    assert "warming up (29 of 30" in det.reason
    for _ in range(100):
        det.update(equicorrelation(3, 0.9))
    for _ in range(30):
        assert not det.update(equicorrelation(3, 0.0))  # diversification improving
    assert det.value < -0.5
    frob = RegimeDetector(statistic="frobenius", warmup=30)
    for _ in range(130):
        frob.update(equicorrelation(3, 0.9))
    shifted = [frob.update(equicorrelation(3, 0.0)) for _ in range(30)]
    assert any(shifted)  # the distance sees any restructuring
    assert "differ by" in frob.reason


def test_the_detector_fed_the_model_counts_only_new_rows_and_instruments_held() -> None:
    model, e = synthetic_model(6, 40)
    det = RegimeDetector(warmup=0)
    det.update(model)
    det.update(model)
    assert det.observations == 1
    assert det.considered == 6
    held = e.copy()
    held[:3] = 0.0
    det2 = RegimeDetector(warmup=0)
    det2.update(model, held)
    assert det2.considered == 3
    c = model.correlation()
    expected = (c[3, 4] + c[3, 5] + c[4, 5]) / 3
    assert det2.value == 0.0
    assert det2.short == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"statistic": "eigen"}, "statistic"),
        ({"short_half_life": 0}, "short_half_life"),
        ({"short_half_life": 10, "long_half_life": 5}, "long_half_life"),
        ({"enter_threshold": 0}, "enter_threshold"),
        ({"enter_threshold": 0.1, "exit_threshold": 0.2}, "exit_threshold"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_detector_arguments_are_checked_and_named(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        RegimeDetector(**kwargs)  # type: ignore[arg-type]


def test_the_monitor_recomputation_reports_consistent_figures() -> None:
    model, e = synthetic_model(40, 60, seed=7)
    again, e2 = synthetic_model(40, 60, seed=7)
    np.testing.assert_array_equal(model.covariance(), again.covariance())
    np.testing.assert_array_equal(e, e2)
    figures = monitor_recompute(model, e, RegimeDetector(), var_limit=1e5)
    assert figures.var == max(figures.parametric_var, figures.historical_var) == model.var(e)
    assert float(figures.component_var.sum()) == pytest.approx(figures.parametric_var, rel=1e-12)
    assert figures.deleverage_factor == pytest.approx(1e5 / figures.var, rel=1e-15)
    np.testing.assert_array_equal(figures.correlation, model.correlation())
    assert not figures.regime_shifted


# --- real data: SPY, IWM, IBM, BAC, AAPL daily closes, 1998-2021 --------------------------------

TICKERS = ("spy", "iwm", "ibm", "bac", "aapl")


class RealRow(NamedTuple):
    session: dt.date  # the session whose close ended the return row
    var: float  # 99% 1-day parametric VaR of 1,000,000 held equally in the five
    shifted: bool
    statistic: float
    largest_move: float  # the row's largest log return in absolute value, with its sign
    mover: str


@pytest.fixture(scope="module")
def real_run() -> list[RealRow]:
    """A default model and detector fed the raw daily closes in time order, with the
    corporate actions of the factor files before each ex-date's first bar (splits and
    dividends), and what they show after each return row."""
    from adapters.lean import EQUITY_TIME_ZONE, read_daily_bars, read_factor_file  # noqa: PLC0415
    from engine.corporate_actions import (  # noqa: PLC0415
        FactorTable,
        day_number,
        from_day_number,
        session_days,
    )

    usa: Path = shared_data_dir() / "lean/Data/equity/usa"
    ts_l, inst_l, close_l, day_l = [], [], [], []
    actions: list[tuple[int, int, float]] = []  # (in force after this day, instrument, ratio)
    for i, ticker in enumerate(TICKERS):
        bars = read_daily_bars(usa / f"daily/{ticker}.zip", i)
        ts_l.append(bars["ts_event"])
        inst_l.append(np.full(len(bars), i))
        close_l.append(bars["close"])
        day_l.append(session_days(bars["ts_event"], EQUITY_TIME_ZONE))
        table = FactorTable.from_rows(read_factor_file(usa / f"factor_files/{ticker}.csv"))
        actions += [(day_number(a.last_day_before), i, a.price_ratio) for a in table.events()]
    ts, inst = np.concatenate(ts_l), np.concatenate(inst_l)
    close, days = np.concatenate(close_l), np.concatenate(day_l)
    order = np.lexsort((inst, ts))
    actions.sort()
    model = CovarianceRiskModel(len(TICKERS))
    detector = RegimeDetector()
    book = np.full(len(TICKERS), 1e6 / len(TICKERS))
    out: list[RealRow] = []
    a = 0
    seen = 0
    for k in order.tolist():
        while a < len(actions) and actions[a][0] < days[k]:  # before the ex-date's first bar
            model.on_corporate_action(actions[a][1], actions[a][2])
            a += 1
        model.on_price(int(inst[k]), float(close[k]), int(ts[k]))
        if model.observations != seen:
            seen = model.observations
            detector.update(model)
            row = model.returns()[-1]
            j = int(np.argmax(np.abs(row)))
            out.append(
                RealRow(
                    from_day_number(model.last_update_ns // DAY_NS - 1),
                    model.parametric_var(book),
                    detector.shifted,
                    detector.value,
                    float(row[j]),
                    TICKERS[j],
                )
            )
    assert a == len(actions)
    return out


def _between(run: list[RealRow], start: dt.date, end: dt.date) -> list[RealRow]:
    return [r for r in run if start <= r.session <= end]


@pytest.mark.shared_data
def test_real_closes_show_no_split_as_a_move(real_run: list[RealRow]) -> None:
    assert len(real_run) > 5_800
    by_size = sorted(real_run, key=lambda r: -abs(r.largest_move))
    # the largest move left is the real one, AAPL -51.6% on 2000-09-29 (SOURCES.md) ...
    worst = by_size[0]
    assert (worst.session, worst.mover) == (dt.date(2000, 9, 29), "aapl")
    assert worst.largest_move == pytest.approx(math.log(1 - 0.516), abs=0.002)
    # ... and no other day comes near a split: 2:1 is log(1/2) = -0.69, AAPL's 7:1 -1.95
    assert abs(by_size[1].largest_move) < 0.35


@pytest.mark.shared_data
def test_the_regime_detector_flags_2008_and_2020_and_not_2006_or_2017(
    real_run: list[RealRow],
) -> None:
    d = dt.date
    lehman = _between(real_run, d(2008, 9, 15), d(2008, 10, 31))
    covid = _between(real_run, d(2020, 2, 24), d(2020, 3, 31))
    calm_2006 = _between(real_run, d(2006, 1, 1), d(2006, 12, 31))
    calm_2017 = _between(real_run, d(2017, 1, 1), d(2017, 12, 31))
    assert len(lehman) > 30 and len(covid) > 20 and len(calm_2006) > 240 and len(calm_2017) > 240
    assert any(r.shifted for r in lehman)
    assert any(r.shifted for r in covid)
    assert not any(r.shifted for r in calm_2006)
    assert not any(r.shifted for r in calm_2017)
    first = {
        "2008": next(r.session for r in lehman if r.shifted),
        "2020": next(r.session for r in covid if r.shifted),
    }
    assert first == {"2008": d(2008, 9, 22), "2020": d(2020, 3, 4)}
    # the calm years stay well below the entry threshold, not just under it
    assert max(r.statistic for r in calm_2006 + calm_2017) < 0.12


@pytest.mark.shared_data
def test_var_of_an_equal_weight_book_more_than_doubles_in_october_2008(
    real_run: list[RealRow],
) -> None:
    level_2006 = float(
        np.mean([r.var for r in _between(real_run, dt.date(2006, 1, 1), dt.date(2006, 12, 31))])
    )
    oct_2008 = [r.var for r in _between(real_run, dt.date(2008, 10, 1), dt.date(2008, 10, 31))]
    assert 10_000 < level_2006 < 40_000  # 1% to 4% of the book
    assert max(oct_2008) > 2 * level_2006
    assert min(oct_2008) > 2 * level_2006  # the whole month, not one day
