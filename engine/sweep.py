"""Parameter sweeps and walk-forward analysis: the pure part.

A sweep file names a base backtest configuration and the parameters to vary, by dotted
key into that configuration::

    base = "backtest.toml"          # relative to the sweep file
    mode = "grid"                   # or "random", with samples and seed
    objective = "final_equity"      # a numeric field of the backtest result, or a metric
                                    # of its metrics table ("sharpe", "metrics.max_drawdown")
    direction = "max"               # or "min" (max_drawdown, commissions, ...)

    [parameters]
    actors.ema.fast = [50, 100, 200]                       # a list of values
    actors.ema.slow = { min = 500, max = 1500, step = 500 }  # a range

    [walk_forward]                  # optional: rolling train and test windows
    train = "2m"
    test = "1m"
    step = "1m"                     # default: test

This module expands the parameters into points (a grid, or a seeded random draw), does
the window arithmetic of a walk-forward run, turns a :class:`BacktestResult` into a flat
row, and ranks rows. It runs nothing: ``adapters/sweep_runner.py`` does, serially, on a
process pool or on a Dask cluster, and the ranking makes the result the same either way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math
import random
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from engine.backtest import BacktestResult
from engine.config import convert_section
from engine.errors import ConfigError

__all__ = [
    "RESULT_FIELDS_EXCLUDED",
    "Parameter",
    "Point",
    "PointOutcome",
    "Stitched",
    "SweepFile",
    "SweepSpec",
    "WalkForward",
    "WalkForwardFile",
    "Window",
    "format_duration",
    "grid_points",
    "iso_utc",
    "load_sweep",
    "objective_value",
    "parse_duration",
    "parse_source",
    "parse_sweep",
    "points",
    "random_points",
    "rank",
    "result_row",
    "stitch",
    "walk_forward_windows",
]

Scalar = bool | int | float | str

# --- durations ------------------------------------------------------------------------------

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)", re.IGNORECASE)


def parse_duration(text: str) -> int:
    """A duration such as ``"90s"``, ``"2m"``, ``"1.5h"``, ``"20d"`` in nanoseconds.

    Units: ns, us, ms, s, m or min (minutes), h, d (24 hours), w. There are no months or
    years: they have no fixed length; use days (``"30d"``, ``"365d"``).
    """
    m = _DURATION.fullmatch(text.strip())
    unit = m.group("unit").lower() if m else ""
    if m is None or unit not in _UNITS_NS:
        raise ValueError(
            f"not a duration: {text!r} (a number and a unit: ns, us, ms, s, m, h, d, w;"
            ' for example "2m" or "20d")'
        )
    ns = round(float(m.group("n")) * _UNITS_NS[unit])
    if ns <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return ns


def format_duration(ns: int) -> str:
    """``ns`` in the largest unit that divides it (``120_000_000_000`` -> ``"2m"``)."""
    for unit in ("w", "d", "h", "m", "s", "ms", "us"):
        size = _UNITS_NS[unit]
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso_utc(ns: int) -> str:
    """Nanoseconds since the epoch as ISO-8601 UTC, to the second when exact."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


# --- the sweep file -------------------------------------------------------------------------


class _File(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class WalkForwardFile(_File, frozen=True, kw_only=True, forbid_unknown_fields=True):
    train: str
    test: str
    step: str | None = None
    anchored: bool = False


class SweepFile(_File, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The sweep file as written; :func:`parse_sweep` checks it into a :class:`SweepSpec`."""

    base: str
    mode: Literal["grid", "random"] = "grid"
    objective: str = "final_equity"
    direction: Literal["max", "min"] = "max"
    source: str | None = None
    samples: int | None = None
    seed: int | None = None
    parameters: dict[str, Any]
    walk_forward: WalkForwardFile | None = None


class Parameter(msgspec.Struct, frozen=True, kw_only=True):
    """One dotted key and the values it takes: a list of ``values``, or a range from
    ``low`` to ``high`` inclusive (``step`` apart; without a step, any value in a random
    search; ``log`` draws uniformly in the logarithm)."""

    key: str
    values: tuple[Any, ...] = ()
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def integer(self) -> bool:
        return all(isinstance(x, int) for x in (self.low, self.high, self.step) if x is not None)

    def _count(self) -> int | None:
        """How many values a range with a step (or of integers) holds; None if continuous."""
        assert self.low is not None and self.high is not None
        step = self.step if self.step is not None else (1 if self.integer else None)
        if step is None or self.log:
            return None
        return math.floor((self.high - self.low) / step + 1e-9) + 1

    def _at(self, k: int) -> int | float:
        assert self.low is not None
        step = self.step if self.step is not None else 1
        if self.integer:
            return int(self.low) + int(step) * k
        return round(self.low + step * k, 12)

    def grid_values(self) -> tuple[Any, ...]:
        """Every value, in order: the list, or the range walked in steps."""
        if not self.is_range:
            return self.values
        count = self._count()
        if count is None:
            raise ValueError(
                f"parameter {self.key!r}: a grid needs a `step` for a range of floats"
                " (or a list of values)"
            )
        return tuple(self._at(k) for k in range(count))

    def size(self) -> int | None:
        """How many distinct values; None for a continuous range."""
        return len(self.values) if not self.is_range else self._count()

    def draw(self, rng: random.Random) -> Any:
        if not self.is_range:
            return self.values[rng.randrange(len(self.values))]
        assert self.low is not None and self.high is not None
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return min(max(round(x), int(self.low)), int(self.high)) if self.integer else x
        count = self._count()
        if count is not None:
            return self._at(rng.randrange(count))
        return rng.uniform(self.low, self.high)


_RANGE_KEYS = frozenset({"min", "max", "step", "log"})


def _is_range(node: Mapping[str, Any]) -> bool:
    return (
        "min" in node
        and "max" in node
        and set(node) <= _RANGE_KEYS
        and all(
            isinstance(node[k], int | float) and not isinstance(node[k], bool)
            for k in ("min", "max")
        )
    )


def _parameter(key: str, node: Any) -> Parameter:
    where = f"$.parameters.{key}"
    if isinstance(node, list):
        if not node:
            raise ConfigError(f"parameter {key!r} has no values", path=where)
        return Parameter(key=key, values=tuple(node))
    low, high, step, log = node["min"], node["max"], node.get("step"), node.get("log", False)
    if high < low:
        raise ConfigError(f"parameter {key!r}: max {high} is below min {low}", path=where)
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int | float) or step <= 0
    ):
        raise ConfigError(f"parameter {key!r}: step must be a positive number", path=where)
    if not isinstance(log, bool):
        raise ConfigError(f"parameter {key!r}: log must be true or false", path=where)
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"parameter {key!r}: a log range needs min > 0 and no step", path=where)
    return Parameter(key=key, low=low, high=high, step=step, log=log)


def _flatten(node: Mapping[str, Any], prefix: str = "") -> Iterable[Parameter]:
    """``{"actors": {"ema": {"fast": [..]}}}`` (TOML dotted keys) into ``actors.ema.fast``."""
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, list) or (isinstance(value, dict) and _is_range(value)):
            yield _parameter(key, value)
        elif isinstance(value, dict):
            yield from _flatten(value, key + ".")
        else:
            raise ConfigError(
                f"parameter {key!r} needs a list of values or a range"
                f" {{ min = .., max = .., step = .. }}, got {value!r}",
                path=f"$.parameters.{key}",
            )


class WalkForward(msgspec.Struct, frozen=True, kw_only=True):
    """Window lengths in nanoseconds. ``anchored``: every train window starts at the start
    of the data (an expanding window) instead of rolling forward by ``step``."""

    train_ns: int
    test_ns: int
    step_ns: int
    anchored: bool = False


class SweepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A checked sweep: ``base`` is an absolute path; ``parameters`` in file order."""

    file: str | None
    base: str
    mode: Literal["grid", "random"]
    objective: str
    direction: Literal["max", "min"]
    source: str | None
    samples: int | None
    seed: int | None
    parameters: tuple[Parameter, ...]
    walk_forward: WalkForward | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.parameters)


def parse_source(text: str) -> tuple[str, int, int]:
    """``"reference:N"`` or ``"reference:N:SEED"`` -> ``("reference", N, SEED)``."""
    parts = text.split(":")
    try:
        if parts[0] != "reference" or len(parts) not in (2, 3):
            raise ValueError
        n = int(parts[1].replace("_", ""))
        seed = int(parts[2]) if len(parts) == 3 else 42
        if n < 1:
            raise ValueError
    except ValueError:
        raise ValueError(
            f'unknown source {text!r}: expected "reference:N" or "reference:N:SEED"'
            " (the reference workload), or leave it out to replay the base's tick files"
        ) from None
    return parts[0], n, seed


def parse_sweep(text: str, *, file: str | None = None, base_dir: Path | None = None) -> SweepSpec:
    """Check a sweep file's text. Errors name the key (``$.parameters.actors.ema.fast``)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    doc = convert_section(raw, SweepFile, file=file)
    try:
        return _check(doc, file=file, base_dir=base_dir or Path.cwd())
    except ConfigError as exc:
        if exc.file is None and file is not None:
            raise ConfigError(str(exc), path=exc.path, file=file) from None
        raise


def _check(doc: SweepFile, *, file: str | None, base_dir: Path) -> SweepSpec:
    params = tuple(_flatten(doc.parameters))
    if not params:
        raise ConfigError("no parameters to vary", path="$.parameters")
    if doc.mode == "random":
        if doc.samples is None or doc.samples < 1:
            raise ConfigError("random search needs samples = N (1 or more)", path="$.samples")
        if doc.seed is None:
            raise ConfigError(
                "random search needs a seed, so that it can be repeated", path="$.seed"
            )
    else:
        if doc.samples is not None:
            raise ConfigError('samples is for mode = "random"', path="$.samples")
        for p in params:
            try:
                p.grid_values()
            except ValueError as exc:
                raise ConfigError(str(exc), path=f"$.parameters.{p.key}") from None
    objective = doc.objective.strip()
    if not objective:
        raise ConfigError("objective names a field of the backtest result", path="$.objective")
    if objective in RESULT_FIELDS_EXCLUDED:
        raise ConfigError(
            f"objective {objective!r} is not reproducible or not a number", path="$.objective"
        )
    if doc.source is not None:
        try:
            parse_source(doc.source)
        except ValueError as exc:
            raise ConfigError(str(exc), path="$.source") from None
    walk: WalkForward | None = None
    if doc.walk_forward is not None:
        wf = doc.walk_forward
        durations: dict[str, int] = {}
        for name in ("train", "test", "step"):
            value = getattr(wf, name)
            if value is None:
                continue
            try:
                durations[name] = parse_duration(value)
            except ValueError as exc:
                raise ConfigError(str(exc), path=f"$.walk_forward.{name}") from None
        walk = WalkForward(
            train_ns=durations["train"],
            test_ns=durations["test"],
            step_ns=durations.get("step", durations["test"]),
            anchored=wf.anchored,
        )
    base = Path(doc.base)
    return SweepSpec(
        file=file,
        base=str(base if base.is_absolute() else (base_dir / base).resolve()),
        mode=doc.mode,
        objective=objective,
        direction=doc.direction,
        source=doc.source,
        samples=doc.samples,
        seed=doc.seed,
        parameters=params,
        walk_forward=walk,
    )


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; ``base`` is taken relative to the file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the sweep file: {exc.strerror}", file=str(p)) from None
    return parse_sweep(text, file=str(p), base_dir=p.resolve().parent)


# --- points ---------------------------------------------------------------------------------


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """One set of parameter values (dotted key -> value); ``index`` is its place in the
    grid or the order it was drawn in."""

    index: int
    params: dict[str, Any]


def grid_points(parameters: Sequence[Parameter]) -> list[Point]:
    """Every combination, the last parameter varying fastest."""
    keys = [p.key for p in parameters]
    combos = itertools.product(*(p.grid_values() for p in parameters))
    return [Point(index=i, params=dict(zip(keys, c, strict=True))) for i, c in enumerate(combos)]


def random_points(parameters: Sequence[Parameter], samples: int, seed: int) -> list[Point]:
    """``samples`` distinct points drawn with ``random.Random(seed)``: the same seed gives
    the same points on any machine. When the space holds no more than ``samples`` points,
    it is the whole grid."""
    sizes = [p.size() for p in parameters]
    if all(s is not None for s in sizes) and math.prod(s or 0 for s in sizes) <= samples:
        return grid_points(parameters)
    rng = random.Random(seed)
    keys = [p.key for p in parameters]
    seen: set[tuple[Any, ...]] = set()
    out: list[Point] = []
    for _ in range(samples * 100):
        values = tuple(p.draw(rng) for p in parameters)
        ident = _params_key(values)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(Point(index=len(out), params=dict(zip(keys, values, strict=True))))
        if len(out) == samples:
            break
    return out


def points(spec: SweepSpec) -> list[Point]:
    """The points a sweep runs."""
    if spec.mode == "random":
        assert spec.samples is not None and spec.seed is not None
        return random_points(spec.parameters, spec.samples, spec.seed)
    return grid_points(spec.parameters)


# --- results and ranking --------------------------------------------------------------------

RESULT_FIELDS_EXCLUDED = frozenset(
    {"wall_time_s", "ticks_per_s", "per_tick", "actors", "positions", "validation", "alerts"}
)
"""Fields of a backtest result left out of a sweep row: real-time measurements (they differ
from run to run) and the nested ones. ``alerts`` becomes a count."""


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, int | float | str | bool)


def result_row(result: BacktestResult) -> dict[str, Any]:
    """The scalar, reproducible fields of a backtest result, in field order, with
    ``alerts`` counted and the scalars of its ``metrics`` table as ``metrics.NAME`` (None
    where a statistic is undefined). Curves, trades and nested tables are left out."""
    row: dict[str, Any] = {}
    for name in result.__struct_fields__:
        value = getattr(result, name)
        if name == "alerts":
            row["alerts"] = len(value)
        elif name == "metrics" and isinstance(value, dict):
            row.update({f"metrics.{k}": v for k, v in value.items() if _scalar(v)})
        elif name not in RESULT_FIELDS_EXCLUDED and value is not None and _scalar(value):
            row[name] = value
    return row


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def objective_value(row: Mapping[str, Any], objective: str) -> float:
    """The objective from a result row: a field (``final_equity``), or an entry of its
    metrics (``sharpe`` or ``metrics.sharpe``; the prefix picks the metric when both have
    the name). A statistic the run left undefined (None) is NaN: it ranks after every
    scored point. Raises ConfigError when the result has no such number at all."""
    for key in (objective, f"metrics.{objective}"):
        if key in row and (row[key] is None or _number(row[key])):
            return math.nan if row[key] is None else float(row[key])
    numeric = [k for k, v in row.items() if _number(v)]
    raise ConfigError(
        f"objective {objective!r} is not a numeric field of the backtest result"
        f" (numeric fields: {', '.join(numeric)})",
        path="$.objective",
    )


class PointOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one backtest of a sweep gave: its result row, or why it failed."""

    index: int
    params: dict[str, Any]
    objective: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    """``CONFIG``, ``WIRING``, ``DATA``... (see engine/errors.py), or ``EXCEPTION``."""

    @property
    def ok(self) -> bool:
        return self.error is None


def _value_key(v: Any) -> tuple[int, Any]:
    """A total order over parameter values of any type (numbers by value)."""
    if isinstance(v, bool):
        return (0, int(v))
    if isinstance(v, int | float):
        return (1, (1, 0.0) if math.isnan(v) else (0, v))
    if isinstance(v, str):
        return (2, v)
    return (3, msgspec.json.encode(v, order="sorted").decode())


def _params_key(values: Iterable[Any]) -> tuple[tuple[int, Any], ...]:
    return tuple(_value_key(v) for v in values)


def rank(
    outcomes: Iterable[PointOutcome], direction: Literal["max", "min"] = "max"
) -> list[PointOutcome]:
    """Best first: by objective (``direction``), then by parameter values, then by index.
    Points without a usable objective (NaN, missing) follow; failed points come last.
    The order depends only on the outcomes, never on the order they arrived in."""

    def key(o: PointOutcome) -> tuple[Any, ...]:
        usable = o.ok and o.objective is not None and not math.isnan(o.objective)
        score = 0.0
        if usable:
            assert o.objective is not None
            score = -o.objective if direction == "max" else o.objective
        group = 0 if usable else (1 if o.ok else 2)
        return (group, score, _params_key(o.params.values()), o.index)

    return sorted(outcomes, key=key)


# --- walk-forward ---------------------------------------------------------------------------


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One walk-forward step: train on ``[train_start, train_end)``, then test on
    ``[test_start, test_end)``, which follows it. Nanoseconds since the epoch, UTC."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def walk_forward_windows(
    first_ns: int,
    last_ns: int,
    train_ns: int,
    test_ns: int,
    step_ns: int | None = None,
    *,
    anchored: bool = False,
) -> list[Window]:
    """The windows over data from ``first_ns`` to ``last_ns`` (the last tick, inclusive).

    Window ``k`` trains on ``[first + k*step, first + k*step + train)`` (from ``first``
    when ``anchored``, so the train window grows) and tests on the ``test`` that follows.
    Only whole test windows are made: the data after the last one is not scored.
    """
    step = test_ns if step_ns is None else step_ns
    if min(train_ns, test_ns, step) <= 0:
        raise ValueError("train, test and step must be positive")
    end = last_ns + 1
    windows: list[Window] = []
    k = 0
    while True:
        offset = k * step
        train_end = first_ns + offset + train_ns
        test_end = train_end + test_ns
        if test_end > end:
            break
        windows.append(
            Window(
                index=k,
                train_start=first_ns if anchored else first_ns + offset,
                train_end=train_end,
                test_start=train_end,
                test_end=test_end,
            )
        )
        k += 1
    return windows


class Stitched(msgspec.Struct, frozen=True, kw_only=True):
    """The out-of-sample result: the test windows one after another. Each test window is
    a backtest that starts flat with the starting balance and cold (indicators warm up
    inside the window, as they would after a restart), so P&L adds up across them;
    ``final_equity`` is the starting balance plus that sum. ``events_sha256`` hashes the
    windows' hashes in order, so two walk-forward runs compare in one line."""

    windows: int
    windows_scored: int
    starting_balance: float
    pnl: float
    final_equity: float
    return_pct: float
    commissions: float
    orders: int
    fills: int
    mean_test_score: float | None
    events_sha256: str


def stitch(tests: Sequence[PointOutcome | None], starting_balance: float) -> Stitched:
    """Add up the test windows (in window order); a window with no test counts nothing."""
    scored = [t for t in tests if t is not None and t.ok and t.result is not None]
    pnl = 0.0
    commissions = 0.0
    orders = fills = 0
    scores: list[float] = []
    digest = hashlib.sha256()
    for t in scored:
        assert t.result is not None
        pnl += float(t.result["final_equity"]) - float(t.result["starting_balance"])
        commissions += float(t.result.get("commissions", 0.0))
        orders += int(t.result.get("orders", 0))
        fills += int(t.result.get("fills", 0))
        digest.update(str(t.result.get("events_sha256", "")).encode())
        if t.objective is not None and not math.isnan(t.objective):
            scores.append(t.objective)
    return Stitched(
        windows=len(tests),
        windows_scored=len(scored),
        starting_balance=starting_balance,
        pnl=pnl,
        final_equity=starting_balance + pnl,
        return_pct=100.0 * pnl / starting_balance if starting_balance else 0.0,
        commissions=commissions,
        orders=orders,
        fills=fills,
        mean_test_score=sum(scores) / len(scores) if scores else None,
        events_sha256=digest.hexdigest(),
    )
