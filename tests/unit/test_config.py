"""Configuration errors name the bad key: the full ``$.path`` and what was expected.

Each case changes one thing in a small, valid configuration (checked to parse and wire
cleanly first), so each error is caused by that change alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.clock import ReplayClock
from engine.config import SystemConfig, config_error, load_config, parse_config
from engine.errors import ConfigError, WiringError
from engine.wiring import System

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE = "conf/test.toml"

BASE = """\
mode = "backtest"

[account]
currency = "USD"
starting_balance = 10_000.0

[[instruments]]
id = "EURUSD.SIM"
asset_class = "fx"
quote_currency = "USD"
price_increment = 0.00001
size_increment = 1.0

[replay]
quotes = [{ path = "eurusd.npy", instrument = "EURUSD.SIM" }]

[actors.feed]
kind = "replay_feed"

[actors.ema]
kind = "ema_cross"
instrument = "EURUSD.SIM"
fast = 10
slow = 20
quantity = 1000.0

[actors.risk]
kind = "risk_gate"
limits = { max_order_quantity = 5000.0 }

[actors.events]
kind = "event_log"

[[edges]]
from = "feed.ticks"
to = "ema"

[[edges]]
from = "ema.orders"
to = "risk"

[[edges]]
from = "risk.events"
to = "events"
only = ["OrderDenied", "TradingStateChanged"]
"""


def variant(old: str, new: str) -> str:
    """BASE with ``old`` replaced by ``new`` (``old`` must be there exactly once)."""
    assert BASE.count(old) == 1, f"test setup: {old!r} is not in the base configuration once"
    return BASE.replace(old, new)


def parse_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file=FILE)
    return caught.value


def wiring_error(text: str) -> WiringError | ConfigError:
    config = parse_config(text, file=FILE)
    with pytest.raises(ConfigError) as caught:
        System(config, ReplayClock(), file=FILE)
    return caught.value


def assert_names(exc: ConfigError, path: str, *expected: str) -> None:
    text = str(exc)
    assert f"`{path}`" in text, f"{path} not named in: {text}"
    assert exc.path == path
    for part in expected:
        assert part in text, f"{part!r} not in: {text}"


def test_the_base_configuration_is_valid() -> None:
    config = parse_config(BASE, file=FILE)
    assert isinstance(config, SystemConfig)
    system = System(config, ReplayClock(), file=FILE)
    assert [a.name for a in system.start_order] == ["events", "risk", "ema", "feed"]
    assert config.account.starting_balance == 10_000.0


# --- decoding ----------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    exc = parse_error("risk_appetite = 11\n" + BASE)
    assert_names(exc, "$", "unknown field `risk_appetite`", FILE)


def test_unknown_key_in_account() -> None:
    exc = parse_error(
        variant("starting_balance = 10_000.0", "starting_balance = 1.0\nleverage = 3")
    )
    assert_names(exc, "$.account", "unknown field `leverage`", FILE)


def test_wrong_type_names_the_key_and_the_expected_type() -> None:
    exc = parse_error(variant("starting_balance = 10_000.0", 'starting_balance = "lots"'))
    assert_names(exc, "$.account.starting_balance", "Expected `float`, got `str`", FILE)


def test_missing_required_key() -> None:
    exc = parse_error(variant('[account]\ncurrency = "USD"\n', "[account]\n"))
    assert_names(exc, "$.account", "missing required field `currency`")


def test_negative_starting_balance() -> None:
    exc = parse_error(variant("starting_balance = 10_000.0", "starting_balance = -1.0"))
    assert_names(exc, "$.account", "starting_balance must not be negative")


def test_bad_instrument_field() -> None:
    exc = parse_error(variant("price_increment = 0.00001", "price_increment = -1"))
    assert_names(exc, "$.instruments[0]", "price_increment must be a positive number, got -1")


def test_unknown_mode() -> None:
    exc = parse_error(variant('mode = "backtest"', 'mode = "yolo"'))
    assert_names(exc, "$.mode", "Invalid enum value 'yolo'")


def test_replay_quotes_naming_an_unknown_instrument() -> None:
    exc = parse_error(variant('instrument = "EURUSD.SIM" }]', 'instrument = "GBPUSD.SIM" }]'))
    assert_names(exc, "$.replay.quotes[0].instrument", "unknown instrument 'GBPUSD.SIM'")


def test_instrument_defined_twice() -> None:
    second = BASE[BASE.index("[[instruments]]") : BASE.index("[replay]")]
    exc = parse_error(variant("[replay]", second + "[replay]"))
    assert_names(exc, "$.instruments[1]", "'EURUSD.SIM' is defined twice")


def test_bad_overflow_policy() -> None:
    exc = parse_error(variant('to = "ema"\n', 'to = "ema"\noverflow = "sometimes"\n'))
    assert_names(exc, "$.edges[0].overflow", "Invalid enum value 'sometimes'")


def test_actor_without_a_kind() -> None:
    exc = parse_error(variant('kind = "event_log"\n', "inbox = 16\n"))
    assert_names(exc, "$.actors.events", "needs a `kind`")


def test_not_toml() -> None:
    exc = parse_error("mode = backtest\n[[[")
    assert_names(exc, "$", "not valid TOML", "line 1", FILE)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert_names(caught.value, "$", "cannot read the configuration", str(missing))


def test_load_config_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE, encoding="utf-8")
    assert load_config(good).mode == "backtest"
    bad = tmp_path / "bad.toml"
    bad.write_text(variant("fast = 10", 'fast = "ten"'), encoding="utf-8")
    config = load_config(bad)  # actor sections are checked when wired
    with pytest.raises(ConfigError) as caught:
        System(config, ReplayClock(), file=str(bad))
    assert str(caught.value).startswith(f"{bad}: ")


# --- wiring ------------------------------------------------------------------------------


def test_unknown_actor_kind() -> None:
    exc = wiring_error(variant('kind = "event_log"', 'kind = "event_logger"'))
    assert isinstance(exc, WiringError)
    assert_names(exc, "$.actors.events.kind", "unknown actor kind 'event_logger'", "event_log")


def test_actor_kind_that_cannot_be_loaded() -> None:
    exc = wiring_error(variant('kind = "event_log"', 'kind = "no_such_module:Thing"'))
    assert_names(exc, "$.actors.events.kind", "cannot load actor kind 'no_such_module:Thing'")


def test_actor_kind_that_is_not_an_actor() -> None:
    exc = wiring_error(variant('kind = "event_log"', 'kind = "engine.clock:ReplayClock"'))
    assert_names(exc, "$.actors.events.kind", "is not an Actor")


def test_kind_specific_bad_field() -> None:
    exc = wiring_error(variant("fast = 10", 'fast = "ten"'))
    assert_names(exc, "$.actors.ema.fast", "Expected `int`, got `str`", FILE)


def test_kind_specific_unknown_field() -> None:
    exc = wiring_error(variant("fast = 10", "fast = 10\nfaster = 5"))
    assert_names(exc, "$.actors.ema", "unknown field `faster`")


def test_kind_specific_nested_unknown_field() -> None:
    exc = wiring_error(variant("max_order_quantity = 5000.0", "max_order_qty = 5000.0"))
    assert_names(exc, "$.actors.risk.limits", "unknown field `max_order_qty`")


def test_a_check_inside_a_nested_struct_names_the_whole_path() -> None:
    # msgspec adds where a nested Struct sits after the path its own check names
    exc = config_error(
        ValueError("var_limit must be positive - at `$.var_limit` - at `$.portfolio`"),
        prefix=".actors.risk.limits",
        file=FILE,
    )
    assert exc.path == "$.actors.risk.limits.portfolio.var_limit"
    assert str(exc) == (
        f"{FILE}: var_limit must be positive - at `$.actors.risk.limits.portfolio.var_limit`"
    )


def test_fast_not_below_slow_names_the_actor_section() -> None:
    exc = wiring_error(variant("fast = 10", "fast = 30"))
    assert_names(exc, "$.actors.ema", "need 0 < fast < slow, got fast=30 slow=20", FILE)


def test_common_actor_setting_checked_too() -> None:
    exc = wiring_error(variant('kind = "event_log"', 'kind = "event_log"\ninbox = 0'))
    assert_names(exc, "$.actors.events", "inbox must hold at least 1 message")


def test_unknown_edge_source_actor() -> None:
    exc = wiring_error(variant('from = "feed.ticks"', 'from = "nope.orders"'))
    assert isinstance(exc, WiringError)
    assert_names(exc, "$.edges[0].from", "no actor named 'nope'", FILE)


def test_edge_source_without_a_port() -> None:
    exc = wiring_error(variant('from = "feed.ticks"', 'from = "feed"'))
    assert_names(exc, "$.edges[0].from", "must be ACTOR.PORT", "'feed'")


def test_unknown_port_lists_the_actors_ports() -> None:
    exc = wiring_error(variant('from = "risk.events"', 'from = "risk.fills"'))
    assert_names(exc, "$.edges[2].from", "no output port 'fills'", "its ports: approved, events")


def test_unknown_edge_target() -> None:
    exc = wiring_error(variant('to = "risk"', 'to = "rsik"'))
    assert_names(exc, "$.edges[1].to", "no actor named 'rsik'")


def test_unknown_message_type_in_only() -> None:
    exc = wiring_error(variant('"TradingStateChanged"', '"TradingStateChange"'))
    assert_names(exc, "$.edges[2].only[1]", "no message type named 'TradingStateChange'")


def test_only_refuses_names_that_are_not_messages() -> None:
    exc = wiring_error(variant('"TradingStateChanged"', '"Side"'))
    assert_names(exc, "$.edges[2].only[1]", "no message type named 'Side'")


def test_every_wiring_error_is_a_config_error() -> None:
    assert issubclass(WiringError, ConfigError)


def test_unknown_actor_kind_names_the_file() -> None:
    exc = wiring_error(variant('kind = "event_log"', 'kind = "event_logger"'))
    assert str(exc).startswith(f"{FILE}: ")


# --- the command line --------------------------------------------------------------------


def test_cli_exits_78_and_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(variant("fast = 10", 'fast = "ten"'), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "backtest", "--config", str(bad)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert "configuration error" in proc.stderr
    assert "`$.actors.ema.fast`" in proc.stderr
    assert "Expected `int`, got `str`" in proc.stderr
    assert str(bad) in proc.stderr
    assert proc.stdout == ""


def test_a_strategy_on_an_unknown_instrument_fails_at_build_naming_the_key(tmp_path):
    from pathlib import Path  # noqa: PLC0415

    from engine.clock import ReplayClock  # noqa: PLC0415
    from engine.config import load_config  # noqa: PLC0415
    from engine.errors import ConfigError  # noqa: PLC0415
    from engine.wiring import System  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    text = (root / "config" / "reference.toml").read_text()
    text = text.replace('instrument = "EURUSD.SIM"\nfast', 'instrument = "GBPUSD.SIM"\nfast')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        System(config, ReplayClock(), file=str(path))
    message = str(info.value)
    assert "$.actors.ema.instrument" in message
    assert "unknown instrument 'GBPUSD.SIM'" in message
    assert "EURUSD.SIM" in message  # says which instruments there are
    assert str(path) in message
