"""Running a backtest: the wired system on a replay clock, driven by the scheduler.

The same actors that trade live run here; only the clock (virtual), the feed (stored
ticks) and the venue (simulated) differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from engine.actor import Actor
from engine.clock import ReplayClock, stopwatch_ns
from engine.config import SystemConfig, load_config
from engine.dispatch import InlineDispatcher
from engine.errors import ConfigError, CriticalActorFailed, WiringError
from engine.performance import DailyEquity, EquityCurve, Performance, TradeLog, analyse
from engine.replay import ChunkedSource, MergedSource, ReplayScheduler, merge_tick_arrays
from engine.supervisor import Supervisor
from engine.ticks import QUOTE_DTYPE, TRADE_DTYPE, QuoteArray, open_quotes, open_trades
from engine.validation import FLAGS
from engine.wiring import System

__all__ = [
    "BacktestResult",
    "file_source",
    "load_backtest",
    "open_quote_files",
    "run_backtest",
]


class BacktestResult(msgspec.Struct, kw_only=True):
    """What a backtest did. Money is in ``currency``; ``wall_time_s`` is real time."""

    ticks: int
    ticks_rejected: int
    batches: int
    orders: int
    denied: int
    rejected: int
    fills: int
    """Executions, partial ones included."""
    orders_filled: int
    """Orders filled in full."""
    expired: int
    cancelled: int
    orders_open: int
    """Orders still working at the venue when the data ran out."""
    currency: str
    starting_balance: float
    final_balance: float
    final_equity: float
    realized_pnl: float
    unrealized_pnl: float
    commissions: float
    max_drawdown: float
    max_drawdown_pct: float
    positions: dict[str, float]
    events_sha256: str
    wall_time_s: float
    ticks_per_s: float
    per_tick: bool
    validation: dict[str, int]
    """The validator's counts: ``accepted``, the rejections by reason, and flags on accepted
    ticks (``stale``, see ``engine.validation.FLAGS``), which are not rejections."""
    alerts: list[str]
    actors: list[dict[str, Any]]
    metrics: dict[str, Any] = {}
    """Performance statistics (engine/performance.py: returns, risk, trades, exposure,
    costs by kind, attribution); plain JSON values, None where undefined."""
    equity_curve: EquityCurve | None = None
    """The account sampled over data time (on the portfolio's grid and at every fill).
    The curve, daily equity and trades are numpy columns: ``to_builtins()`` on each gives
    plain JSON values (``msgspec.to_builtins`` of the result needs them set to None)."""
    daily_equity: DailyEquity | None = None
    trades: TradeLog | None = None
    """Round trips, closed ones in order of exit, then open ones."""


def load_backtest(
    config_path: str | Path,
    *,
    per_tick: bool | None = None,
    batch_size: int | None = None,
    executor: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[System, SystemConfig]:
    """The system a backtest configuration describes, ``overrides`` (dotted keys such as
    ``"actors.ema.fast"``) applied first, as a parameter sweep does."""
    path = Path(config_path)
    config = load_config(path, overrides=overrides)
    if config.mode != "backtest":
        raise ConfigError(
            f'mode is {config.mode!r}; a backtest needs mode = "backtest"',
            path="$.mode",
            file=str(path),
        )
    replay = config.replay
    if per_tick is not None or batch_size is not None or executor is not None:
        replay = msgspec.structs.replace(
            replay,
            per_tick=replay.per_tick if per_tick is None else per_tick,
            batch_size=replay.batch_size if batch_size is None else batch_size,
            executor=replay.executor if executor is None else executor,
        )
        config = msgspec.structs.replace(config, replay=replay)
    # the feed's delivery follows the replay setting
    actors = dict(config.actors)
    for name, section in actors.items():
        if section.get("kind") == "replay_feed":
            actors[name] = {**section, "per_tick": replay.per_tick}
    config = msgspec.structs.replace(config, actors=actors)
    system = System(config, ReplayClock(), file=str(path), base_dir=path.parent)
    return system, config


def open_quote_files(
    config: SystemConfig, base_dir: Path, file: str | None = None, *, key: str = "quotes"
) -> list[np.ndarray]:
    """Memory-map the configured tick files (``replay.quotes``, or ``replay.trades`` with
    ``key="trades"``), in order; a relative path is relative to ``base_dir`` (the
    configuration's folder). An unreadable file fails naming its key."""
    opener = open_trades if key == "trades" else open_quotes
    out: list[np.ndarray] = []
    for i, qf in enumerate(getattr(config.replay, key)):
        path = Path(qf.path) if Path(qf.path).is_absolute() else base_dir / qf.path
        try:
            out.append(opener(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot open tick file {path}: {exc}",
                path=f"$.replay.{key}[{i}].path",
                file=file,
            ) from None
    return out


def file_source(system: System, chunk_rows: int) -> ChunkedSource | MergedSource:
    """The configured tick files merged in time order: quotes, and prints if any (at equal
    times a quote goes before a print). With ``replay.start`` / ``end`` only the rows in
    that span are read from each (memory-mapped, time-ordered) file."""
    start, end = system.config.replay.start_ns, system.config.replay.end_ns
    sources: list[ChunkedSource] = []
    for key, dtype in (("quotes", QUOTE_DTYPE), ("trades", TRADE_DTYPE)):
        specs = getattr(system.config.replay, key)
        if not specs:
            continue
        inputs: list[tuple[np.ndarray, int]] = []
        files = open_quote_files(system.config, system.base_dir, system.file, key=key)
        for qf, rows in zip(specs, files, strict=True):
            if start is not None or end is not None:
                ts = rows["ts_event"]
                lo = 0 if start is None else int(np.searchsorted(ts, start, side="left"))
                hi = len(rows) if end is None else int(np.searchsorted(ts, end, side="left"))
                rows = rows[lo : max(lo, hi)]  # noqa: PLW2901 - the same file, narrowed
            inputs.append((rows, system.instruments.index(qf.instrument)))
        sources.append(ChunkedSource(merge_tick_arrays(inputs, chunk_rows, dtype), dtype))
    if not sources:
        return ChunkedSource(iter(()))
    return sources[0] if len(sources) == 1 else MergedSource(sources)


def _within(
    chunks: Iterator[QuoteArray], start: int | None, end: int | None
) -> Iterator[QuoteArray]:
    """Only the ticks with ``start <= ts_event < end``. Stops reading at the first chunk
    that lies wholly at or after ``end``, so a long source is not read to its end."""
    for chunk in chunks:
        ts = chunk["ts_event"]
        if len(ts) == 0:
            continue
        if end is not None and int(ts.min()) >= end:
            return
        keep = np.ones(len(ts), dtype=np.bool_)
        if start is not None:
            keep &= ts >= start
        if end is not None:
            keep &= ts < end
        if keep.all():
            yield chunk
        elif keep.any():
            yield chunk[keep]


async def run_backtest(
    system: System,
    source: Iterator[QuoteArray] | ChunkedSource | MergedSource | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Run the system over ``source`` (default: the configured tick files) to the end:
    quote arrays in time order, or a source of several kinds (``ChunkedSource``,
    ``MergedSource``, already bounded to the replay's span). ``on_progress(ticks_released)``
    is called now and then (see ``ReplayScheduler``)."""
    clock = system.clock
    if not isinstance(clock, ReplayClock):
        raise WiringError("a backtest needs a replay clock")
    replay = system.config.replay
    feeds = system.of_kind("replay_feed")
    if len(feeds) != 1:
        raise WiringError(
            f"a backtest needs exactly one replay_feed actor, found {len(feeds)}", path="$.actors"
        )
    feed = feeds[0]
    stream: ChunkedSource | MergedSource
    if source is None:
        stream = file_source(system, max(replay.batch_size, 4_096))
    elif isinstance(source, ChunkedSource | MergedSource):
        stream = source
    else:
        chunks = source
        if replay.start is not None or replay.end is not None:
            chunks = _within(chunks, replay.start_ns, replay.end_ns)
        stream = ChunkedSource(chunks)
    preview = None
    for actor in system.downstream(feed.name):
        if hasattr(actor, "preview"):
            preview = actor.preview
    scanners = [a for a in system.actors.values() if a.scans_batches]
    ids = tuple(inst.id for inst in system.instruments)
    scheduler = ReplayScheduler(
        clock=clock,
        quiescence=system.quiescence,
        source=stream,
        feed=feed,
        instrument_ids=ids,
        preview=preview,
        scanners=scanners,
        batch_size=replay.batch_size,
        per_tick=replay.per_tick,
        on_progress=on_progress,
    )
    supervisor = Supervisor(
        system.start_order,
        clock,
        system.quiescence,
        trading_state_owner=system.trading_state_owner(),
        alert_sinks=system.alert_sinks(),
    )
    scheduler.start_clock()
    if replay.executor == "inline":
        dispatcher = InlineDispatcher(supervisor)
        scheduler.dispatcher = dispatcher
        dispatcher.start()
        started = stopwatch_ns()  # the replay proper: actors started, kernels loaded
        await scheduler.run()
        dispatcher.stop([feed], clock)
        await dispatcher.join_tasks()
    else:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(supervisor.run(), name="supervisor")
                await supervisor.started()
                started = stopwatch_ns()
                await scheduler.run()
                await supervisor.stop(sources=[feed], drain_timeout_s=system.config.drain_timeout_s)
        except BaseExceptionGroup as group_exc:
            critical = group_exc.subgroup(CriticalActorFailed)
            if critical is not None:
                raise critical.exceptions[0] from None
            raise
    wall = (stopwatch_ns() - started) / 1e9
    return _result(system, scheduler, supervisor, wall)


def _working_orders(exchange: Actor[Any]) -> int:
    venue = getattr(exchange, "venue", None)
    return len(venue.working) if venue is not None else 0


def _performance(system: System, portfolio_actor: Actor[Any] | None) -> Performance | None:
    history = getattr(portfolio_actor, "history", None)
    if portfolio_actor is None or history is None or not history.started:
        return None
    history.finish(system.clock.now())  # done already if the portfolio stopped in order
    days = getattr(portfolio_actor.config, "trading_days_per_year", 252.0)
    return analyse(history, trading_days_per_year=days)


def _result(
    system: System, scheduler: ReplayScheduler, supervisor: Supervisor, wall: float
) -> BacktestResult:
    account = system.config.account
    portfolio_actor = system.first_of_kind("portfolio")
    log_actor = system.first_of_kind("event_log")
    validator = system.first_of_kind("validator")
    pf = getattr(portfolio_actor, "portfolio", None)
    digest = getattr(log_actor, "digest", None)
    counts: dict[str, int] = digest.counts if digest is not None else {}
    validation: dict[str, int] = validator.counts() if validator is not None else {}  # type: ignore[attr-defined]
    ticks = scheduler.ticks_released
    performance = _performance(system, portfolio_actor)
    return BacktestResult(
        ticks=ticks,
        ticks_rejected=sum(v for k, v in validation.items() if k != "accepted" and k not in FLAGS),
        batches=scheduler.batches_released,
        orders=counts.get("orders", 0),
        denied=counts.get("denied", 0),
        rejected=counts.get("rejected", 0),
        fills=counts.get("fills", 0),
        orders_filled=counts.get("filled", 0),
        expired=counts.get("expired", 0),
        cancelled=counts.get("cancelled", 0),
        orders_open=sum(_working_orders(a) for a in system.of_kind("sim_exchange")),
        currency=account.currency,
        starting_balance=account.starting_balance,
        final_balance=pf.balance if pf is not None else account.starting_balance,
        final_equity=pf.equity if pf is not None else account.starting_balance,
        realized_pnl=pf.realized_pnl if pf is not None else 0.0,
        unrealized_pnl=pf.unrealized_pnl if pf is not None else 0.0,
        commissions=pf.commissions if pf is not None else 0.0,
        max_drawdown=pf.max_drawdown if pf is not None else 0.0,
        max_drawdown_pct=100.0 * pf.max_drawdown_fraction if pf is not None else 0.0,
        positions={p.instrument_id: p.quantity for p in pf.positions()} if pf is not None else {},
        events_sha256=digest.hexdigest() if digest is not None else "",
        wall_time_s=wall,
        ticks_per_s=ticks / wall if wall > 0 else float(np.inf),
        per_tick=scheduler.per_tick,
        validation=validation,
        alerts=[f"{a.level.name} {a.rule}: {a.message}" for a in supervisor.alerts],
        actors=system.snapshot(),
        metrics=performance.metrics if performance is not None else {},
        equity_curve=performance.curve if performance is not None else None,
        daily_equity=performance.daily if performance is not None else None,
        trades=performance.trades if performance is not None else None,
    )
