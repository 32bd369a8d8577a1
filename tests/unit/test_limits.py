"""The limit hierarchy (engine/limits.py) and the pre-trade checks (engine/pretrade.py), through
the risk gate's core (:class:`engine.risk.PreTradeRisk`).

Every check approves and denies with a reason a person can read; the gate fails closed on
what it cannot see; an order that adds no risk passes a limit the book is already over; and,
for any sequence of orders and price moves, no order the gate approves takes any limit at any
level past its maximum.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clock import ReplayClock
from engine.config import parse_config
from engine.errors import ConfigError
from engine.instruments import Instrument, InstrumentTable
from engine.limits import (
    Book,
    BookCache,
    CorrelationLimits,
    InstrumentMaster,
    LimitsConfig,
    LiquidityLimits,
    MonitorSettings,
    PortfolioLimits,
    RateLimits,
    SecurityLimits,
    load_limits,
    parse_limits,
    utilisation,
)
from engine.messages import OrderFilled, OrderRequest, OrderType, Side, TradingState
from engine.pretrade import FixedCovarianceModel, OrderImpact, bench_pre_trade, check_exposure
from engine.risk import PreTradeRisk
from engine.wiring import System

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000_000_000
NAV = 1_000_000.0


def _inst(ident: str, asset_class: str, region: str | None, **kw: object) -> Instrument:
    return Instrument(
        id=ident,
        asset_class=asset_class,
        quote_currency="USD",
        price_increment=0.01,
        region=region,
        **kw,  # type: ignore[arg-type]
    )


# index: what it is
INSTRUMENTS = InstrumentTable(
    [
        _inst("AAA.US", "equity", "US", sector="technology", adv=100_000.0, broker="IB"),  # 0
        _inst("BBB.US", "equity", "US", sector="financials", adv=100_000.0, broker="IB"),  # 1
        _inst("CCC.EU", "equity", "EU", sector="technology", adv=100_000.0, broker="GS"),  # 2
        _inst("BND.EU", "fixed_income", "EU", adv=50_000.0, broker="GS"),  # 3
        _inst("GC.CMX", "commodity", "US", multiplier=100.0, adv=20_000.0, broker="IB"),  # 4
        _inst("NOADV.US", "equity", "US", sector="technology", broker="IB"),  # 5
        _inst("NOREG.XX", "equity", None, sector="technology", adv=1e5, broker="IB"),  # 6
        _inst("LAT.BR", "equity", "LATAM", sector="energy", adv=1e5, broker="IB"),  # 7
    ]
)
PRICES = [100.0, 50.0, 20.0, 100.0, 20.0, 10.0, 10.0, 10.0]

_ids = itertools.count(1)


def gate(
    limits: LimitsConfig,
    *,
    model: FixedCovarianceModel | None = None,
    cash: float | None = NAV,
    quotes: bool = True,
) -> PreTradeRisk:
    risk = PreTradeRisk(INSTRUMENTS, limits, "USD", starting_cash=cash, risk_model=model)
    if quotes:
        for i, p in enumerate(PRICES):
            risk.on_quote(i, p, p)  # bid = ask: the mark is the price, and so is the touch
    return risk


def order(
    side: Side,
    quantity: float,
    instrument: str = "AAA.US",
    *,
    kind: OrderType = OrderType.MARKET,
    limit: float | None = None,
    stop: float | None = None,
    strategy: str = "s1",
) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"o-{next(_ids)}",
        strategy_id=strategy,
        instrument_id=instrument,
        side=side,
        quantity=quantity,
        order_type=kind,
        limit_price=limit,
        stop_price=stop,
        ts_event=T0,
        ts_init=T0,
    )


def buy(qty: float, instrument: str = "AAA.US", **kw: object) -> OrderRequest:
    return order(Side.BUY, qty, instrument, **kw)  # type: ignore[arg-type]


def sell(qty: float, instrument: str = "AAA.US", **kw: object) -> OrderRequest:
    return order(Side.SELL, qty, instrument, **kw)  # type: ignore[arg-type]


def filled(risk: PreTradeRisk, o: OrderRequest, price: float | None = None) -> None:
    """``o`` approved and filled at ``price`` (default: the mark)."""
    assert risk.check(o) is None, risk.check(o)
    i = INSTRUMENTS.index(o.instrument_id)
    px = float(risk.mark[i]) if price is None else price
    risk.on_fill(
        OrderFilled(
            client_order_id=o.client_order_id,
            venue_order_id="V",
            trade_id="T",
            strategy_id=o.strategy_id,
            instrument_id=o.instrument_id,
            side=o.side,
            last_qty=o.quantity,
            last_px=px,
            leaves_qty=0.0,
            commission=0.0,
            commission_currency="USD",
            liquidity="TAKER",
            ts_event=T0,
            ts_init=T0,
        )
    )


def denial(risk: PreTradeRisk, o: OrderRequest, now_ns: int | None = None) -> tuple[str, str]:
    d = risk.decide(o, now_ns)
    assert not d.approved, f"approved: {o}"
    assert o.client_order_id not in risk.working
    return d.rule, d.reason


# --- the configuration -----------------------------------------------------------------------


def test_the_example_limits_file_loads_with_the_issue_numbers() -> None:
    limits = load_limits(REPO / "config" / "limits.toml")
    assert limits.region == {"US": 0.40, "EU": 0.30, "APAC": 0.25, "LATAM": 0.05}
    assert limits.asset_class == {"equity": 0.5, "fixed_income": 0.3, "commodity": 0.15, "fx": 0.05}
    assert limits.sector["technology"] == 0.20 and limits.sector["financials"] == 0.15
    assert limits.security.max_position_fraction == 0.05
    assert limits.liquidity is not None and limits.liquidity.max_order_adv_fraction == 0.10
    assert limits.correlation == CorrelationLimits(threshold=0.7, max_cluster_fraction=0.25)
    assert limits.monitor.interval_s == 1.0 and limits.monitor.drawdown_halt == 0.05


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("[portfolio]\nvar_limit = -0.01\n", "$.portfolio.var_limit", "var_limit must be positive"),
        ("[portfolio]\nvar_limt = 0.01\n", "$.portfolio", "unknown field `var_limt`"),
        ("[region]\nUS = 0.0\n", "$.region.US", "a region limit must be a positive fraction"),
        ("[sector]\ntechnology = 'a lot'\n", "$.sector.technology", "Expected `float`"),
        (
            "[correlation]\nthreshold = 1.5\nmax_cluster_fraction = 0.2\n",
            "$.correlation.threshold",
            "threshold must be a fraction",
        ),
        ("[correlation]\nthreshold = 0.5\n", "$.correlation", "missing required field"),
        ("[rates]\nmax_orders = 0\n", "$.rates.max_orders", "max_orders must be at least 1"),
        ("[short_locates]\n'AAA.US' = -5\n", "$.short_locates.AAA.US", "a short locate"),
        (
            "[monitor]\ndrawdown_halt = 0.2\ndrawdown_flatten = 0.1\n",
            "$.monitor.drawdown_flatten",
            "must not be below drawdown_halt",
        ),
        ("price_collar = 0\n", "$.price_collar", "price_collar must be positive"),
    ],
)
def test_a_bad_limit_names_the_file_and_the_key(text: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_limits(text, file="conf/limits.toml")
    message = str(caught.value)
    assert caught.value.path == path, message
    assert message.startswith("conf/limits.toml: ") and words in message
    assert message.endswith(f" - at `{path}`")


def test_load_limits_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the limits"):
        load_limits(tmp_path / "nope.toml")


def test_tightened_scales_every_fraction_and_nothing_else() -> None:
    limits = load_limits(REPO / "config" / "limits.toml")
    t = limits.tightened(0.8)
    assert t.region["US"] == pytest.approx(0.32) and t.sector["technology"] == pytest.approx(0.16)
    assert t.asset_class["fx"] == pytest.approx(0.04) and t.counterparty["IB"] == pytest.approx(
        0.48
    )
    assert t.portfolio.var_limit == pytest.approx(0.016)
    assert t.portfolio.max_gross_leverage == pytest.approx(0.8)
    assert t.portfolio.max_net_leverage == pytest.approx(0.64)
    assert t.security.max_position_fraction == pytest.approx(0.04)
    assert t.correlation is not None and t.correlation.max_cluster_fraction == pytest.approx(0.2)
    assert t.liquidity is not None and t.liquidity.max_order_adv_fraction == pytest.approx(0.08)
    # counts, sizes, days and model settings stay
    assert t.max_order_notional == limits.max_order_notional
    assert t.security.max_adv_days == limits.security.max_adv_days
    assert t.portfolio.max_days_to_unwind == limits.portfolio.max_days_to_unwind
    assert t.portfolio.unwind_participation == limits.portfolio.unwind_participation
    assert t.correlation.threshold == 0.7 and t.rates == limits.rates
    assert limits.region["US"] == 0.40  # the original is unchanged
    with pytest.raises(ValueError, match="at most 1"):
        limits.tightened(1.25)


SYSTEM = """\
mode = "backtest"

[account]
currency = "USD"
starting_balance = 1_000_000.0

[[instruments]]
id = "AAA.US"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01
region = "US"

[actors.risk]
kind = "risk_gate"
{risk}
"""


def _system(tmp_path: Path, risk: str) -> System:
    file = tmp_path / "run.toml"
    config = parse_config(SYSTEM.format(risk=risk), file=str(file))
    return System(config, ReplayClock(), file=str(file), base_dir=tmp_path)


def test_the_risk_gate_reads_a_limits_file_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "limits.toml").write_text("max_order_quantity = 7.0\n[region]\nUS = 0.4\n")
    system = _system(tmp_path, 'limits_file = "limits.toml"')
    gate = system.actors["risk"]
    gate.on_start()
    assert gate.risk.limits.max_order_quantity == 7.0  # type: ignore[attr-defined]
    assert gate.risk.limits.region == {"US": 0.4}  # type: ignore[attr-defined]


def test_inline_limits_keep_working(tmp_path: Path) -> None:
    system = _system(tmp_path, "limits = { max_order_notional = 5.0, max_order_quantity = 2.0 }")
    gate = system.actors["risk"]
    gate.on_start()
    assert gate.risk.limits == LimitsConfig(max_order_notional=5.0, max_order_quantity=2.0)  # type: ignore[attr-defined]


def test_a_bad_inline_limit_names_its_path_in_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _system(tmp_path, "limits = { portfolio = { var_limit = -0.01 } }")
    assert caught.value.path == "$.actors.risk.limits.portfolio.var_limit"
    assert "var_limit must be positive" in str(caught.value)


def test_the_risk_gate_refuses_limits_both_inline_and_in_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _system(tmp_path, 'limits = { max_order_quantity = 2.0 }\nlimits_file = "limits.toml"')
    assert caught.value.path == "$.actors.risk.limits_file"
    assert "not both" in str(caught.value)


def test_a_missing_limits_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _system(tmp_path, 'limits_file = "nope.toml"')
    assert caught.value.path == "$.actors.risk.limits_file"
    assert "no limits file" in str(caught.value) and "nope.toml" in str(caught.value)


def test_a_bad_key_in_the_limits_file_names_that_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "limits.toml").write_text("[security]\nmax_position_fraction = -1\n")
    with pytest.raises(ConfigError) as caught:
        _system(tmp_path, 'limits_file = "limits.toml"')
    assert caught.value.file == str(tmp_path / "limits.toml")
    assert caught.value.path == "$.security.max_position_fraction"


# --- 1. exposure -----------------------------------------------------------------------------


def test_single_security_fraction_of_nav() -> None:
    risk = gate(LimitsConfig(security=SecurityLimits(max_position_fraction=0.05)))
    assert risk.check(buy(500)) is None  # 50,000 = 5.0% of NAV
    assert risk.check(buy(1)) == (
        "AAA.US would be 5.01% of NAV (limit 5.00%): 50,100.00 USD of 1,000,000.00 USD"
    )


def test_working_orders_count_on_each_side_so_both_sides_cannot_hide_each_other() -> None:
    risk = gate(LimitsConfig(security=SecurityLimits(max_position_fraction=0.05)))
    assert risk.check(buy(400)) is None  # working: long side 400
    assert risk.check(sell(500)) is None  # short side -500: 5.0%
    # a buy does not net against the working sell: the long side would be 600
    rule, reason = denial(risk, buy(200))
    assert rule == "security.max_position_fraction" and "6.00% of NAV" in reason
    rule, reason = denial(risk, sell(1))
    assert "5.01% of NAV" in reason


def test_region_asset_class_and_sector_are_gross_fractions_of_nav() -> None:
    limits = LimitsConfig(
        region={"US": 0.30, "EU": 0.30, "LATAM": 0.05},
        asset_class={"equity": 0.50, "fixed_income": 0.30, "commodity": 0.01},
        sector={"technology": 0.20, "financials": 0.50, "energy": 0.05},
    )
    risk = gate(limits)
    filled(risk, buy(1_000))  # AAA: US, equity, technology 10%
    filled(risk, sell(2_000, "BBB.US"))  # short 10% US, equity; gross counts it
    rule, reason = denial(risk, buy(1_001, "AAA.US"))  # US would be 30.01%
    assert rule == "region"
    assert reason == (
        "region US would be 30.01% of NAV gross (limit 30.00%); the order adds 100,100.00 USD"
        " in AAA.US"
    )
    filled(risk, buy(5_000, "CCC.EU"))  # EU 10%, technology 20%
    rule, reason = denial(risk, buy(1, "CCC.EU"))
    assert rule == "sector" and reason.startswith("sector technology would be 20.00% of NAV")
    filled(risk, buy(2_000, "BND.EU"))  # EU 30%
    rule, reason = denial(risk, buy(10, "BND.EU"))
    assert rule == "region" and "region EU would be 30.10%" in reason
    rule, reason = denial(risk, buy(6, "GC.CMX"))  # 6 x 20 x 100 = 12,000: 1.2% > 1%
    assert rule == "asset_class" and "asset class commodity would be 1.20%" in reason


def test_gross_and_net_leverage() -> None:
    limits = LimitsConfig(portfolio=PortfolioLimits(max_gross_leverage=0.5, max_net_leverage=0.2))
    risk = gate(limits)
    filled(risk, buy(2_000))  # +20% net and gross
    rule, reason = denial(risk, buy(1))
    assert rule == "portfolio.max_net_leverage"
    assert reason == "net leverage would be 0.200x NAV (limit 0.2x), up from 0.200x"
    filled(risk, sell(4_000, "BBB.US"))  # a hedge: net 0, gross 40%
    filled(risk, buy(1_000, "CCC.EU"))  # gross 42%
    rule, reason = denial(risk, buy(5_000, "CCC.EU"))
    assert rule == "portfolio.max_gross_leverage"
    assert reason.startswith("gross leverage would be 0.520x NAV (limit 0.5x)")


def test_position_in_days_of_average_daily_volume() -> None:
    risk = gate(LimitsConfig(security=SecurityLimits(max_adv_days=0.5)))
    assert risk.check(buy(50_000)) is None
    rule, reason = denial(risk, buy(1))
    assert rule == "security.max_adv_days"
    assert (
        reason
        == "AAA.US would be 50001 units, 0.50 days of its average daily volume (limit 0.5 days)"
    )


def test_orders_that_add_no_risk_pass_a_limit_the_book_is_already_over() -> None:
    limits = LimitsConfig(
        security=SecurityLimits(max_position_fraction=0.10),
        region={"US": 0.2, "EU": 0.2},
        portfolio=PortfolioLimits(max_gross_leverage=0.3, max_net_leverage=0.3),
    )
    risk = gate(limits)
    filled(risk, buy(1_000))  # 10%
    filled(risk, buy(2_000, "BBB.US"))  # US 20%
    risk.on_quote(0, 300.0, 300.0)  # AAA triples: 30% of a NAV of 1.2m = 25%, US 33%
    assert risk.nav == pytest.approx(1_200_000.0)
    assert denial(risk, buy(1))[0] == "security.max_position_fraction"
    assert denial(risk, buy(1, "BBB.US"))[0] == "region"
    assert risk.check(sell(100)) is None  # reduces: passes although every limit is breached
    assert risk.check(sell(100, "BBB.US")) is None
    # with the sells working, a buy would still add to the long side: denied
    assert denial(risk, buy(50))[0] == "security.max_position_fraction"


# --- fail closed -----------------------------------------------------------------------------


def test_unknown_nav_denies_every_limit_measured_against_it() -> None:
    risk = gate(LimitsConfig(region={"US": 1.0}), cash=None)
    assert denial(risk, buy(1)) == (
        "nav",
        "the account cannot be seen: NAV is unknown; the exposure limits cannot be checked",
    )
    risk.on_account(-5.0)
    rule, reason = denial(risk, buy(1))
    assert rule == "nav" and "NAV is -5.00 USD, not a positive amount" in reason
    risk.on_account(NAV)
    assert risk.check(buy(1)) is None


def test_no_nav_is_needed_when_no_limit_uses_it() -> None:
    risk = gate(LimitsConfig(max_order_notional=1e6), cash=None)
    assert risk.check(buy(1)) is None


def test_a_held_position_without_a_mark_means_the_book_cannot_be_valued() -> None:
    risk = gate(LimitsConfig(portfolio=PortfolioLimits(max_gross_leverage=1.0)))
    filled(risk, buy(10, "CCC.EU"))
    risk.on_quote(2, math.nan, math.nan)  # its quotes stop
    rule, reason = denial(risk, buy(1))
    # NAV itself cannot be known without that mark, even from the broker's figure
    assert rule == "nav" and "NAV is unknown" in reason
    assert not risk.on_account(NAV)  # the broker's figure cannot be lined up with the marks
    assert denial(risk, buy(1))[0] == "nav"
    risk.on_quote(2, 20.0, 20.0)
    assert risk.nav == NAV
    filled(risk, sell(10, "CCC.EU"))
    # held through a working order only: NAV is known, the exposure is not
    assert risk.check(buy(10, "CCC.EU", kind=OrderType.LIMIT, limit=20.0)) is None
    risk.on_quote(2, math.nan, math.nan)
    rule, reason = denial(risk, buy(1))
    assert (rule, reason) == (
        "market_price",
        "no mark price for CCC.EU, which is held; the leverage limits cannot be checked without "
        "one",
    )


def test_an_order_without_a_mark_for_its_own_instrument_is_denied() -> None:
    risk = gate(LimitsConfig(security=SecurityLimits(max_position_fraction=0.5)))
    risk.on_quote(3, math.nan, math.nan)
    rule, reason = denial(risk, buy(1, "BND.EU", kind=OrderType.LIMIT, limit=100.0))
    assert rule == "market_price"
    assert reason == "no mark price for BND.EU; the exposure limits cannot be checked without one"


def test_master_data_a_limit_needs_must_be_there() -> None:
    risk = gate(
        LimitsConfig(region={"US": 1.0, "EU": 1.0}, security=SecurityLimits(max_adv_days=1.0))
    )
    assert denial(risk, buy(1, "NOADV.US")) == (
        "instrument_master",
        "NOADV.US has no average daily volume (adv) in the instrument master; the "
        "security.max_adv_days limit cannot be checked without it",
    )
    risk = gate(LimitsConfig(region={"US": 1.0, "EU": 1.0}))
    assert denial(risk, buy(1, "NOREG.XX")) == (
        "instrument_master",
        "NOREG.XX has no region in the instrument master, and the region limits need one",
    )
    assert denial(risk, buy(1, "LAT.BR")) == (
        "region",
        "region 'LATAM' of LAT.BR has no limit in [region]; every region traded needs one",
    )
    # the sector table applies to equities only: a bond needs no sector
    risk = gate(LimitsConfig(sector={"technology": 1.0}))
    assert risk.check(buy(1, "BND.EU")) is None
    assert denial(risk, buy(1, "BBB.US"))[0] == "sector"


# --- 2. VaR ----------------------------------------------------------------------------------


def _model(stale: bool = False) -> FixedCovarianceModel:
    """2% daily vol each; AAA and CCC correlate 0.9, AAA and BBB -0.8, the rest 0."""
    n = len(INSTRUMENTS)
    corr = np.eye(n)
    corr[0, 2] = corr[2, 0] = 0.9
    corr[0, 1] = corr[1, 0] = -0.8
    vol = np.full(n, 0.02)
    return FixedCovarianceModel(
        corr * np.outer(vol, vol), z=2.0, as_of_ns=None if stale else T0, max_age_ns=10**12
    )


def test_var_limit() -> None:
    model = _model()
    risk = gate(LimitsConfig(portfolio=PortfolioLimits(var_limit=0.004)), model=model)
    # 100,000 of AAA: VaR = 2 * 0.02 * 100,000 = 4,000 = 0.4% of NAV
    filled(risk, buy(1_000))
    rule, reason = denial(risk, buy(1))
    assert rule == "portfolio.var_limit"
    assert reason == (
        "1-day VaR would be 4,004.00 USD, 0.40% of NAV (limit 0.40%), up from 4,000.00 USD"
    )
    # CCC correlates 0.9 with AAA: it adds VaR
    assert denial(risk, buy(100, "CCC.EU"))[0] == "portfolio.var_limit"
    # BBB correlates -0.8: buying it hedges, so VaR goes down and it passes
    assert risk.check(buy(200, "BBB.US")) is None


def test_an_order_that_lowers_var_passes_even_over_the_limit() -> None:
    model = _model()
    risk = gate(LimitsConfig(portfolio=PortfolioLimits(var_limit=0.01)), model=model)
    filled(risk, buy(2_000))
    risk.set_limits(LimitsConfig(portfolio=PortfolioLimits(var_limit=0.001)))  # now far over
    assert risk.check(sell(500)) is None
    assert denial(risk, buy(1))[0] == "portfolio.var_limit"


def test_var_and_correlation_limits_need_a_current_risk_model() -> None:
    for limits in (
        LimitsConfig(portfolio=PortfolioLimits(var_limit=0.01)),
        LimitsConfig(correlation=CorrelationLimits(threshold=0.5, max_cluster_fraction=1.0)),
    ):
        what = "the VaR limit" if limits.correlation is None else "the correlation limit"
        assert denial(gate(limits), buy(1)) == (
            "risk_model",
            f"no risk model; {what} cannot be checked without one",
        )
        assert denial(gate(limits, model=_model(stale=True)), buy(1)) == (
            "risk_model",
            f"the risk model is stale; {what} cannot be checked",
        )
    old = _model()
    risk = gate(LimitsConfig(portfolio=PortfolioLimits(var_limit=0.01)), model=old)
    assert risk.check(buy(1)) is None
    assert denial(risk, buy(1), now_ns=T0 + 10**12 + 1)[0] == "risk_model"  # aged out


class _BrokenModel(FixedCovarianceModel):
    def var(self, exposure: np.ndarray) -> float:
        raise FloatingPointError("singular covariance")


def test_a_failing_risk_model_denies_and_does_not_stop_the_gate() -> None:
    broken = _BrokenModel(np.eye(len(INSTRUMENTS)) * 1e-4, as_of_ns=T0)
    risk = gate(LimitsConfig(portfolio=PortfolioLimits(var_limit=0.01)), model=broken)
    assert denial(risk, buy(1)) == (
        "risk_model",
        "the risk model failed (FloatingPointError('singular covariance')); the VaR limit "
        "cannot be checked",
    )
    assert not risk.master.cache.exposure.any()  # the exposure lent to the model is put back


# --- 3. correlation --------------------------------------------------------------------------


def test_a_cluster_of_correlated_instruments_is_limited() -> None:
    limits = LimitsConfig(correlation=CorrelationLimits(threshold=0.7, max_cluster_fraction=0.25))
    risk = gate(limits, model=_model())
    filled(risk, buy(1_500))  # AAA 15%
    # CCC correlates 0.9 with AAA: long CCC adds to the same bet
    rule, reason = denial(risk, buy(5_001, "CCC.EU"))
    assert rule == "correlation.max_cluster_fraction"
    assert reason == (
        "CCC.EU and the 1 instruments correlated with it beyond 0.7 would be 25.00% of NAV "
        "exposed in one direction (limit 25.00%), up from 15.00%; the order is for 5001 CCC.EU"
    )
    assert risk.check(buy(5_000, "CCC.EU")) is None  # 25% exactly
    # BBB correlates -0.8 with AAA: short BBB is the same bet as long AAA
    assert denial(risk, sell(1, "BBB.US"))[0] == "correlation.max_cluster_fraction"
    # long BBB is the other direction: it does not add to the cluster
    assert risk.check(buy(1_000, "BBB.US")) is None
    # GC is in no cluster
    assert risk.check(buy(100, "GC.CMX")) is None


def test_reducing_a_cluster_that_is_over_passes() -> None:
    limits = LimitsConfig(correlation=CorrelationLimits(threshold=0.7, max_cluster_fraction=0.5))
    risk = gate(limits, model=_model())
    filled(risk, buy(2_000))
    filled(risk, buy(10_000, "CCC.EU"))  # cluster 40%
    risk.set_limits(limits.tightened(0.5))  # 25%: over
    assert denial(risk, buy(1))[0] == "correlation.max_cluster_fraction"
    assert risk.check(sell(100, "CCC.EU")) is None


# --- 4. liquidity ----------------------------------------------------------------------------


def test_order_share_of_daily_volume_and_days_to_unwind() -> None:
    limits = LimitsConfig(
        liquidity=LiquidityLimits(),  # 10% of ADV by default
        portfolio=PortfolioLimits(max_days_to_unwind=2.0, unwind_participation=0.1),
    )
    risk = gate(limits)
    assert denial(risk, buy(10_001)) == (
        "liquidity.max_order_adv_fraction",
        "the order for 10001 AAA.US is 10.00% of its average daily volume 100000 (limit 10.00%)",
    )
    for _ in range(2):
        filled(risk, buy(10_000))  # 20,000 units: 2 days at 10,000 a day
    assert denial(risk, buy(1)) == (
        "portfolio.max_days_to_unwind",
        "AAA.US would take 2.00 days to unwind at 10.00% of its daily volume (limit 2 days)",
    )
    assert risk.check(sell(10_000)) is None  # unwinding always passes
    assert denial(risk, buy(1, "NOADV.US"))[0] == "instrument_master"


# --- 5. counterparty -------------------------------------------------------------------------


def test_gross_exposure_per_broker() -> None:
    risk = gate(LimitsConfig(counterparty={"IB": 0.3, "GS": 0.1}))
    filled(risk, buy(2_000))  # IB 20%
    filled(risk, sell(50, "GC.CMX"))  # 50 x 20 x 100 = 10%: IB 30% gross
    assert denial(risk, buy(10, "BBB.US")) == (
        "counterparty",
        "exposure with broker IB would be 30.05% of NAV gross (limit 30.00%); the order adds "
        "500.00 USD in BBB.US",
    )
    assert risk.check(buy(5_000, "CCC.EU")) is None  # GS 10%
    assert denial(risk, buy(1, "BND.EU"))[0] == "counterparty"
    assert risk.check(buy(10, "GC.CMX")) is None  # reduces the short: less with IB


# --- 6. order sanity -------------------------------------------------------------------------


def test_price_collar_against_the_quote() -> None:
    risk = gate(LimitsConfig(price_collar=0.05))
    risk.on_quote(0, 99.0, 101.0)
    assert risk.check(buy(1, kind=OrderType.LIMIT, limit=106.05)) is None  # 5% above the ask
    assert denial(risk, buy(1, kind=OrderType.LIMIT, limit=106.10)) == (
        "price_collar",
        "limit 106.1 is 5.05% above the ask 101 (collar 5.00%): a fat finger?",
    )
    assert risk.check(sell(1, kind=OrderType.LIMIT, limit=94.05)) is None
    _rule, reason = denial(risk, sell(1, kind=OrderType.LIMIT, limit=90.0))
    assert reason == "limit 90 is 9.09% below the bid 99 (collar 5.00%): a fat finger?"
    # a stop-limit works from its stop: its limit is measured from there
    assert risk.check(buy(1, kind=OrderType.STOP_LIMIT, stop=120.0, limit=125.0)) is None
    assert denial(risk, buy(1, kind=OrderType.STOP_LIMIT, stop=120.0, limit=127.0))[0] == (
        "price_collar"
    )
    risk.on_quote(0, math.nan, math.nan)
    assert denial(risk, buy(1, kind=OrderType.LIMIT, limit=100.0)) == (
        "price_collar",
        "no quote for AAA.US (the ask); the price collar needs one",
    )


def test_order_rates_in_a_sliding_window_count_only_approvals() -> None:
    limits = LimitsConfig(
        max_order_quantity=10.0,
        rates=RateLimits(window_s=1.0, max_orders=3, max_orders_per_strategy=2),
    )
    risk = gate(limits)
    second = 1_000_000_000
    assert risk.check(buy(1, strategy="a"), T0) is None
    assert risk.check(buy(11, strategy="a"), T0) is not None  # denied: does not count
    assert risk.check(buy(1, strategy="a"), T0 + 1) is None
    assert denial(risk, buy(1, strategy="a"), T0 + 2) == (
        "rates.max_orders_per_strategy",
        "strategy a already has 2 orders approved in the last 1 s (limit 2)",
    )
    assert risk.check(buy(1, strategy="b"), T0 + 3) is None
    assert denial(risk, buy(1, strategy="c"), T0 + 4) == (
        "rates.max_orders",
        "3 orders already approved in the last 1 s (limit 3)",
    )
    # the window slides: a second after the first approval, one slot is free again
    assert denial(risk, buy(1, strategy="c"), T0 + second - 1)[0] == "rates.max_orders"
    assert risk.check(buy(1, strategy="c"), T0 + second) is None


def test_restricted_instruments_take_no_orders_at_all() -> None:
    risk = gate(LimitsConfig(restricted=["BBB.US"]))
    filled(risk, buy(10, "AAA.US"))
    assert denial(risk, sell(10, "BBB.US")) == (
        "restricted",
        "BBB.US is on the restricted list; no orders in it",
    )


def test_short_sales_of_equities_need_a_locate() -> None:
    risk = gate(LimitsConfig(short_locates={"AAA.US": 300.0}))
    filled(risk, buy(100))
    assert risk.check(sell(100)) is None  # to flat: no short
    assert risk.check(sell(300)) is None  # working sells count: short side -300, located
    assert denial(risk, sell(1)) == (
        "short_locates",
        "this sale would leave AAA.US short 301 (with the sells working); the locate covers "
        "300 (Reg SHO)",
    )
    assert denial(risk, sell(1, "BBB.US")) == (
        "short_locates",
        "no locate for BBB.US: this sale would leave a short of 1 (with the sells working), "
        "and a short sale needs a locate (Reg SHO)",
    )
    assert risk.check(sell(1, "GC.CMX")) is None  # a future: no locate needed
    assert gate(LimitsConfig()).check(sell(1, "BBB.US")) is None  # no table: no rule


def test_halted_comes_first_and_reducing_keeps_its_meaning() -> None:
    risk = gate(LimitsConfig(region={"US": 0.01}))
    filled(risk, buy(100))
    risk.set_state(TradingState.HALTED, "operator")
    assert denial(risk, sell(1))[0] == "trading_state"
    risk.set_state(TradingState.REDUCING, "drawdown")
    assert risk.check(sell(50)) is None
    assert denial(risk, sell(60))[1] == (
        "trading is REDUCING (drawdown): only orders that shrink a position pass; this one "
        "takes AAA.US from 50 to -10"
    )


# --- run-time changes ------------------------------------------------------------------------


def test_set_limits_checks_then_swaps() -> None:
    risk = gate(LimitsConfig(security=SecurityLimits(max_position_fraction=0.10)))
    filled(risk, buy(800))
    tighter = LimitsConfig(security=SecurityLimits(max_position_fraction=0.05))
    assert risk.set_limits(tighter).security.max_position_fraction == 0.10
    assert denial(risk, buy(1))[0] == "security.max_position_fraction"
    assert risk.check(sell(100)) is None
    bad = msgspec.structs.replace(tighter, security=SecurityLimits())
    msgspec.structs.force_setattr(bad.security, "max_position_fraction", -1.0)  # unchecked
    with pytest.raises(ValueError, match=r"max_position_fraction must be positive"):
        risk.set_limits(bad)
    with pytest.raises(TypeError, match="expected LimitsConfig"):
        risk.set_limits({"max_order_quantity": 5})  # type: ignore[arg-type]
    assert risk.limits.security.max_position_fraction == 0.05


# --- NAV -------------------------------------------------------------------------------------


def test_nav_is_cash_plus_positions_at_their_marks() -> None:
    risk = gate(LimitsConfig())
    filled(risk, buy(100), price=101.0)  # pays 10,100 for what is marked at 10,000
    assert risk.nav == pytest.approx(NAV - 100.0)
    risk.on_quote(0, 110.0, 110.0)
    assert risk.nav == pytest.approx(NAV + 900.0)
    filled(risk, sell(10, "GC.CMX"), price=20.0)  # short 10 x 20 x 100
    risk.on_quote(4, 20.5, 20.5)
    assert risk.nav == pytest.approx(NAV + 900.0 - 10 * 0.5 * 100)
    risk.on_corporate_action(0, 0.5, 1.0)  # 2:1 split, a dividend of 1 per old share
    assert risk.position[0] == 200.0 and risk.mark[0] == 55.0
    assert risk.nav == pytest.approx(NAV + 900.0 - 500.0 + 100.0)
    risk.on_account(2_000_000.0)
    assert risk.nav == pytest.approx(2_000_000.0)


# --- utilisation -----------------------------------------------------------------------------


def test_utilisation_reports_every_limit_at_every_level() -> None:
    limits = LimitsConfig(
        portfolio=PortfolioLimits(
            var_limit=0.01, max_gross_leverage=1.0, max_net_leverage=0.5, max_days_to_unwind=10.0
        ),
        region={"US": 0.4, "EU": 0.3},
        asset_class={"equity": 0.5},
        sector={"technology": 0.2},
        security=SecurityLimits(max_position_fraction=0.05, max_adv_days=1.0),
        correlation=CorrelationLimits(threshold=0.7, max_cluster_fraction=0.25),
        counterparty={"IB": 0.6, "GS": 0.6},
    )
    model = _model()
    risk = gate(limits, model=model)
    filled(risk, buy(500))  # AAA 50,000
    filled(risk, sell(1_000, "CCC.EU"))  # CCC -20,000
    risk.book.nav = risk.nav
    rows = {(u.level, u.key, u.rule): u for u in utilisation(risk.book, limits, risk.master, model)}
    assert rows["portfolio", "gross_leverage", "portfolio.max_gross_leverage"].used == 0.07
    net = rows["portfolio", "net_leverage", "portfolio.max_net_leverage"]
    assert net.used == pytest.approx(0.03) and net.fraction == pytest.approx(0.06)
    e = np.zeros(len(INSTRUMENTS))
    e[0], e[2] = 50_000.0, -20_000.0
    assert rows["portfolio", "var", "portfolio.var_limit"].used == pytest.approx(model.var(e) / NAV)
    days = rows["portfolio", "days_to_unwind", "portfolio.max_days_to_unwind"]
    assert days.used == pytest.approx(1_000 / (0.1 * 100_000))  # CCC is the slowest
    assert rows["region", "US", "region"].used == pytest.approx(0.05)
    assert rows["region", "EU", "region"].used == pytest.approx(0.02)
    assert rows["asset_class", "equity", "asset_class"].used == pytest.approx(0.07)
    assert rows["sector", "technology", "sector"].fraction == pytest.approx(0.35)
    assert rows["counterparty", "IB", "counterparty"].used == pytest.approx(0.05)
    assert rows["security", "AAA.US", "security.max_position_fraction"].fraction == pytest.approx(
        1.0
    )
    assert rows["security", "CCC.EU", "security.max_adv_days"].used == pytest.approx(0.01)
    # AAA and CCC correlate 0.9; long AAA and short CCC point in opposite directions
    cluster = rows["correlation", "AAA.US", "correlation.max_cluster_fraction"]
    assert cluster.used == pytest.approx(0.05)
    assert ("security", "BBB.US", "security.max_position_fraction") not in rows  # not held
    # a monitor or dashboard sends them on as they are
    sent = msgspec.json.decode(msgspec.json.encode(rows["region", "US", "region"]))
    assert sent == {"level": "region", "key": "US", "rule": "region", "used": pytest.approx(0.05),
                    "limit": 0.4, "fraction": pytest.approx(0.125)}  # fmt: skip


# --- the property ----------------------------------------------------------------------------

PROPERTY_INSTRUMENTS = InstrumentTable(
    [
        _inst(f"P{i}.X", klass, region, sector=sector, adv=adv, broker=broker, multiplier=mult)
        for i, (klass, region, sector, broker, adv, mult) in enumerate(
            [
                # average daily volumes of a third to a half of NAV: liquidity limits bind
                ("equity", "US", "technology", "IB", 4_000.0, 1.0),
                ("equity", "US", "technology", "IB", 6_000.0, 1.0),
                ("equity", "US", "financials", "GS", 10_000.0, 1.0),
                ("equity", "EU", "technology", "GS", 3_000.0, 1.0),
                ("equity", "EU", "healthcare", "IB", 8_000.0, 1.0),
                ("equity", "APAC", "financials", "MS", 15_000.0, 1.0),
                ("fixed_income", "US", None, "GS", 3_000.0, 1.0),
                ("fixed_income", "EU", None, "MS", 4_000.0, 1.0),
                ("commodity", "US", None, "IB", 300.0, 10.0),
                ("commodity", "APAC", None, "MS", 200.0, 10.0),
                ("fx", "EU", None, "IB", 400_000.0, 1.0),
                ("fx", "APAC", None, "GS", 500_000.0, 1.0),
            ]
        )
    ]
)
P_PRICES = [100.0, 80.0, 40.0, 120.0, 60.0, 30.0, 100.0, 95.0, 200.0, 150.0, 1.1, 0.9]


def _property_model() -> FixedCovarianceModel:
    n = len(P_PRICES)
    rng = np.random.default_rng(7)
    loadings = rng.normal(0.0, 1.0, (n, 3))
    loadings[:6, 0] += 2.0  # equities move together
    loadings[0:2, 1] += 2.5  # P0 and P1 very much so
    loadings[8, 2], loadings[9, 2] = 3.0, -3.0  # two commodities in opposition
    cov = loadings @ loadings.T + np.diag(rng.uniform(0.2, 1.0, n))
    vol = rng.uniform(0.005, 0.03, n)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    return FixedCovarianceModel(corr * np.outer(vol, vol), as_of_ns=0)


PROPERTY_MODEL = _property_model()
PROPERTY_LIMITS = LimitsConfig(
    portfolio=PortfolioLimits(
        var_limit=0.012,
        max_gross_leverage=1.2,
        max_net_leverage=0.6,
        max_days_to_unwind=4.0,
        unwind_participation=0.25,
    ),
    region={"US": 0.5, "EU": 0.4, "APAC": 0.3},
    asset_class={"equity": 0.6, "fixed_income": 0.4, "commodity": 0.25, "fx": 0.3},
    sector={"technology": 0.3, "financials": 0.25, "healthcare": 0.2},
    security=SecurityLimits(max_position_fraction=0.15, max_adv_days=2.0),
    correlation=CorrelationLimits(threshold=0.6, max_cluster_fraction=0.25),
    liquidity=LiquidityLimits(max_order_adv_fraction=0.25),
    counterparty={"IB": 0.6, "GS": 0.5, "MS": 0.4},
)


@dataclass(frozen=True)
class Place:
    instrument: int
    buy: bool
    fraction: float  # of NAV
    kind: OrderType
    fill_now: bool


@dataclass(frozen=True)
class Move:
    instrument: int
    factor: float


@dataclass(frozen=True)
class Done:
    fill: bool  # the oldest working order fills (at the mark) or is cancelled


@st.composite
def steps(draw: st.DrawFn) -> list[Place | Move | Done]:
    """A sequence of orders, price moves and ends of working orders. Each sequence trades a
    few instruments (so orders meet in the same names and groups), leans to buying, to
    selling or to neither (so it reaches limits), and has its own order size: small steps
    cross a limit by a little, large ones by a lot."""
    universe = draw(
        st.lists(st.integers(0, len(P_PRICES) - 1), min_size=2, max_size=6, unique=True)
    )
    instrument = st.sampled_from(universe)
    buys = st.sampled_from(draw(st.sampled_from([[True], [False], [True, False]])))
    largest = draw(st.sampled_from([0.02, 0.08, 0.3]))  # the largest order, of NAV
    place = st.builds(
        Place,
        instrument,
        buys,
        st.integers(1, 100).map(lambda n: largest * n / 100),
        st.sampled_from([OrderType.MARKET, OrderType.LIMIT]),
        st.sampled_from([True, True, False]),  # filled at once, or left working
    )
    move = st.builds(Move, instrument, st.integers(70, 140).map(lambda n: n / 100))
    done = st.builds(Done, st.booleans())
    return draw(st.lists(st.one_of(place, place, place, move, done), min_size=10, max_size=60))


def _measure(risk: PreTradeRisk, limits: LimitsConfig) -> dict[tuple[str, str, str], float]:
    risk.book.nav = risk.nav
    return {
        (u.level, u.key, u.rule): u.fraction
        for u in utilisation(risk.book, limits, risk.master, PROPERTY_MODEL)
    }


def _fill_at_mark(risk: PreTradeRisk, o: OrderRequest, qty: float) -> None:
    i = risk.instruments.index(o.instrument_id)
    risk.on_fill(
        OrderFilled(
            client_order_id=o.client_order_id, venue_order_id="V", trade_id="T",
            strategy_id=o.strategy_id, instrument_id=o.instrument_id, side=o.side,
            last_qty=qty, last_px=float(risk.mark[i]), leaves_qty=0.0, commission=0.0,
            commission_currency="USD", liquidity="TAKER", ts_event=T0, ts_init=T0,
        )
    )  # fmt: skip


def _check_cache(risk: PreTradeRisk) -> None:
    """The sums kept between checks equal the same sums made from scratch."""
    cache = risk.master.cache
    cache.refresh(risk.book)
    fresh = BookCache(risk.master)
    fresh.refresh(risk.book)
    np.testing.assert_allclose(cache.sums, fresh.sums, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(cache.exposure, fresh.exposure, rtol=1e-9, atol=1e-6)


def run_orders(
    sequence: list[Place | Move | Done], limits: LimitsConfig, gate_limits: LimitsConfig
) -> list[tuple[str, float, float]]:
    """Play ``sequence`` against a gate with ``gate_limits``, approved orders filling at the
    mark (or left working); return every limit of ``limits`` that an approved order took
    from within its maximum to beyond it: (limit, fraction before, after)."""
    risk = PreTradeRisk(
        PROPERTY_INSTRUMENTS, gate_limits, "USD", starting_cash=NAV, risk_model=PROPERTY_MODEL
    )
    for i, p in enumerate(P_PRICES):
        risk.on_quote(i, p * 0.999, p * 1.001)
    working: list[OrderRequest] = []
    broken = []
    for t, step in enumerate(sequence):
        match step:
            case Move(instrument=i, factor=f):
                mid = float(risk.mark[i]) * f
                risk.on_quote(i, mid * 0.999, mid * 1.001)
            case Done(fill=fill):
                if working:
                    o = working.pop(0)
                    if fill:
                        _fill_at_mark(risk, o, o.quantity)
                    else:
                        risk.on_order_done(o.client_order_id)
            case Place(instrument=i, buy=is_buy, fraction=frac, kind=kind, fill_now=now):
                mark = float(risk.mark[i]) * risk.master.multiplier[i]
                qty = max(1.0, round(frac * NAV / mark))
                limit = None
                if kind is OrderType.LIMIT:
                    limit = round(float(risk.mark[i]) * (1.01 if is_buy else 0.99), 2)
                o = OrderRequest(
                    client_order_id=f"p-{t}", strategy_id="prop",
                    instrument_id=risk.master.ids[i], side=Side.BUY if is_buy else Side.SELL,
                    quantity=qty, order_type=kind, limit_price=limit, ts_event=t, ts_init=t,
                )  # fmt: skip
                before = _measure(risk, limits)
                if not risk.decide(o, t).approved:
                    continue
                if now:
                    _fill_at_mark(risk, o, qty)
                else:
                    working.append(o)
                after = _measure(risk, limits)
                for key, frac_after in after.items():
                    frac_before = before.get(key, 0.0)
                    if frac_before <= 1.0 and not frac_after <= 1.0 + 1e-9:
                        broken.append((":".join(key), frac_before, frac_after))
        _check_cache(risk)
    return broken


# One limit can hide another (a tight cluster limit stops what a sector limit would), so the
# property is checked with the whole hierarchy and with each part of it alone.
PROPERTY_LIMIT_SETS = {
    "all": PROPERTY_LIMITS,
    "var": LimitsConfig(portfolio=PortfolioLimits(var_limit=0.006)),
    "leverage": LimitsConfig(
        portfolio=PortfolioLimits(max_gross_leverage=0.6, max_net_leverage=0.3)
    ),
    "liquidity": LimitsConfig(
        portfolio=PortfolioLimits(max_days_to_unwind=2.0, unwind_participation=0.5),
        liquidity=LiquidityLimits(max_order_adv_fraction=0.5),
    ),
    "groups": LimitsConfig(
        region={"US": 0.3, "EU": 0.25, "APAC": 0.2},
        asset_class={"equity": 0.35, "fixed_income": 0.2, "commodity": 0.15, "fx": 0.2},
        sector={"technology": 0.2, "financials": 0.15, "healthcare": 0.1},
        counterparty={"IB": 0.3, "GS": 0.25, "MS": 0.2},
    ),
    "security": LimitsConfig(security=SecurityLimits(max_position_fraction=0.1, max_adv_days=0.25)),
    "correlation": LimitsConfig(
        correlation=CorrelationLimits(threshold=0.6, max_cluster_fraction=0.25)
    ),
}


@pytest.mark.parametrize("name", list(PROPERTY_LIMIT_SETS))
def test_no_approved_order_takes_any_limit_beyond_its_maximum(name: str) -> None:
    limits = PROPERTY_LIMIT_SETS[name]

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(steps())
    def prove(sequence: list[Place | Move | Done]) -> None:
        assert run_orders(sequence, limits, limits) == []

    prove()


def test_the_property_harness_catches_a_gate_that_approves_everything() -> None:
    # the same harness with a gate that checks nothing finds breaches: the property can fail
    sequence: list[Place | Move | Done] = [
        Place(0, True, 0.2, OrderType.MARKET, True),  # 20% of NAV in one name: over 15%
        Place(8, False, 0.3, OrderType.LIMIT, False),
    ]
    broken = run_orders(sequence, PROPERTY_LIMITS, LimitsConfig())
    assert {b[0] for b in broken} >= {
        "security:P0.X:security.max_position_fraction",
        "asset_class:commodity:asset_class",
    }
    assert run_orders(sequence, PROPERTY_LIMITS, PROPERTY_LIMITS) == []


def test_the_property_sees_approvals_and_denials() -> None:
    # the limits are tight enough for the random orders to meet them
    risk = PreTradeRisk(
        PROPERTY_INSTRUMENTS, PROPERTY_LIMITS, "USD", starting_cash=NAV, risk_model=PROPERTY_MODEL
    )
    for i, p in enumerate(P_PRICES):
        risk.on_quote(i, p, p)
    rules = set()
    rng = np.random.default_rng(11)
    for t in range(400):
        i = int(rng.integers(0, len(P_PRICES)))
        qty = max(
            1.0, round(rng.uniform(0.001, 0.3) * NAV / (P_PRICES[i] * risk.master.multiplier[i]))
        )
        o = OrderRequest(
            client_order_id=f"q-{t}", strategy_id="q", instrument_id=risk.master.ids[i],
            side=Side.BUY if rng.random() < 0.5 else Side.SELL, quantity=qty,
            ts_event=t, ts_init=t,
        )  # fmt: skip
        d = risk.decide(o, t)
        if d.approved:
            _fill_at_mark(risk, o, qty)
        else:
            rules.add(d.rule)
    assert {
        "security.max_position_fraction",
        "liquidity.max_order_adv_fraction",
        "portfolio.var_limit",
    } <= rules, rules


# --- the pure functions ----------------------------------------------------------------------


def test_a_check_is_a_function_of_its_inputs() -> None:
    master = InstrumentMaster(INSTRUMENTS)
    book = Book(len(INSTRUMENTS), currency="USD", nav=NAV)
    for i, p in enumerate(PRICES):
        book.set_quote(i, p, p)
    limits = LimitsConfig(region={"US": 0.1, "EU": 0.1})
    o = buy(1_001)
    first = check_exposure(OrderImpact(o, book, master), limits)
    assert not first.approved and first.rule == "region"
    book.position[0] = -500.0  # the same order now reduces a short
    assert check_exposure(OrderImpact(o, book, master), limits).approved
    book.position[0] = 0.0
    assert check_exposure(OrderImpact(o, book, master), limits) == first


def test_the_benchmark_runs() -> None:
    figures = bench_pre_trade(n_positions=60, n_orders=300)
    assert figures["n_orders"] == 300
    assert 0.1 < figures["approved_fraction"] < 1.0
    assert 0 < figures["p50_us"] <= figures["p99_us"]


def test_monitor_settings_defaults() -> None:
    m = MonitorSettings()
    assert (m.interval_s, m.warn_utilisation, m.tighten_margin) == (1.0, 0.8, 0.2)
    assert m.drawdown_halt is None and m.drawdown_flatten is None
