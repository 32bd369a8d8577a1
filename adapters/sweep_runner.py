"""Running a sweep's backtests: in this process, on a local process pool, or on a Dask
distributed cluster.

Each point is a full backtest in a worker: the base configuration is loaded with the
point's parameters as overrides, wired into a system and replayed. A point that fails (an
invalid combination such as ``fast >= slow``, or a crash) comes back as an error and the
others still run. Outcomes are ranked by :func:`engine.sweep.rank`, which looks only at
the outcomes, so the table is the same whichever executor ran it, in whatever order.

A Dask worker must be able to import tradingd and to read the files the sweep names
(the base configuration and its tick files, at the same paths): run the workers on a
shared file system, or sweep over ``source = "reference:N"``, which needs no files.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import msgspec

from adapters.reference_workload import (
    REFERENCE_START_NS,
    REFERENCE_STEP_NS,
    reference_quotes,
)
from adapters.store_replay import replay_source
from engine.backtest import load_backtest, open_quote_files, run_backtest
from engine.config import load_config
from engine.errors import ConfigError, TradingdError
from engine.logs import configure_logging
from engine.sweep import (
    PointOutcome,
    Stitched,
    SweepSpec,
    Window,
    objective_value,
    parse_source,
    points,
    rank,
    result_row,
    stitch,
    walk_forward_windows,
)
from engine.ticks import QuoteArray

__all__ = [
    "DaskRunner",
    "PointRunner",
    "PointTask",
    "ProcessPoolRunner",
    "Progress",
    "SerialRunner",
    "SweepReport",
    "WalkForwardReport",
    "WindowReport",
    "data_span",
    "open_runner",
    "run_point",
    "run_sweep",
    "run_walk_forward",
]

Progress = Callable[[int, int], None]
"""Called with (points done, points in all) as points finish."""


class PointTask(msgspec.Struct, frozen=True, kw_only=True):
    """One backtest to run: the base configuration (an absolute path), the overrides
    (the point's parameters, and the replay window of a walk-forward step), the source
    (None: the configuration's tick files; ``reference:N``: the reference workload)."""

    index: int
    config: str
    params: dict[str, Any]
    overrides: dict[str, Any]
    objective: str
    source: str | None = None
    log_level: str | None = None


_configured_level: str | None = None


def _source(spec: str | None, chunk_rows: int) -> Iterator[QuoteArray] | None:
    if spec is None:
        return None
    _, n, seed = parse_source(spec)
    return reference_quotes(n, seed=seed, chunk_rows=chunk_rows)


def _message(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ConfigError) and exc.file and text.startswith(f"{exc.file}: "):
        text = text[len(exc.file) + 2 :]  # the base configuration; the same for every point
    return text if isinstance(exc, TradingdError) else f"{type(exc).__name__}: {text}"


def run_point(task: PointTask) -> PointOutcome:
    """Run one point's backtest (in whichever process this is called). Never raises for
    a failure of the point itself: the outcome carries the error instead."""
    global _configured_level  # noqa: PLW0603 - logging is configured once per process
    if task.log_level is not None and task.log_level != _configured_level:
        configure_logging(task.log_level, "json")
        _configured_level = task.log_level
    try:
        system, config = load_backtest(task.config, overrides=task.overrides)
        chunks = _source(task.source, config.replay.batch_size)
        source = chunks if chunks is not None else replay_source(system)
        result = asyncio.run(run_backtest(system, source))
        row = result_row(result)
        return PointOutcome(
            index=task.index,
            params=task.params,
            objective=objective_value(row, task.objective),
            result=row,
        )
    except Exception as exc:  # a failed point is reported, not fatal to the sweep
        code = exc.code if isinstance(exc, TradingdError) else "EXCEPTION"
        return PointOutcome(
            index=task.index, params=task.params, error=_message(exc), error_code=code
        )


# --- executors ------------------------------------------------------------------------------


class PointRunner(Protocol):
    """Runs tasks and returns their outcomes in task order."""

    @property
    def description(self) -> str: ...

    @property
    def workers(self) -> int: ...

    def map(
        self, tasks: Sequence[PointTask], progress: Progress | None = None
    ) -> list[PointOutcome]: ...

    def close(self) -> None: ...


def _lost(task: PointTask, exc: BaseException) -> PointOutcome:
    return PointOutcome(
        index=task.index,
        params=task.params,
        error=f"the worker running it failed: {type(exc).__name__}: {exc}",
        error_code="WORKER",
    )


class SerialRunner:
    """Every point in this process, one after another (``--workers 1``)."""

    description = "serial"
    workers = 1

    def map(
        self, tasks: Sequence[PointTask], progress: Progress | None = None
    ) -> list[PointOutcome]:
        out = []
        for i, task in enumerate(tasks):
            out.append(run_point(task))
            if progress is not None:
                progress(i + 1, len(tasks))
        return out

    def close(self) -> None:
        pass


def _pool_context() -> multiprocessing.context.BaseContext:
    # forkserver: workers start from a clean, single-threaded process (fork after threads,
    # numba or an event loop is unsafe), and faster than spawn
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # the server imports the engine once; each worker forked from it starts warm
    context.set_forkserver_preload([__name__])
    return context


class ProcessPoolRunner:
    """A local pool of ``workers`` processes (default: one per CPU)."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers or os.cpu_count() or 1
        self._pool = cf.ProcessPoolExecutor(max_workers=self._workers, mp_context=_pool_context())

    @property
    def description(self) -> str:
        return f"a process pool of {self._workers} workers"

    @property
    def workers(self) -> int:
        return self._workers

    def map(
        self, tasks: Sequence[PointTask], progress: Progress | None = None
    ) -> list[PointOutcome]:
        futures = {self._pool.submit(run_point, task): i for i, task in enumerate(tasks)}
        out: list[PointOutcome | None] = [None] * len(tasks)
        for done, future in enumerate(cf.as_completed(futures), 1):
            i = futures[future]
            try:
                out[i] = future.result()
            except Exception as exc:  # the process died (BrokenProcessPool) or did not pickle
                out[i] = _lost(tasks[i], exc)
            if progress is not None:
                progress(done, len(tasks))
        return [o for o in out if o is not None]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner:
    """A Dask distributed cluster, given its scheduler's address (``tcp://HOST:PORT``)."""

    def __init__(self, address: str, *, timeout_s: float = 10.0) -> None:
        try:
            from distributed import Client  # noqa: PLC0415 - an optional dependency
        except ImportError:
            raise ConfigError(
                "--scheduler needs Dask: pip install 'tradingd[sweep]'", path="--scheduler"
            ) from None
        self.address = address
        try:
            self._client = Client(address, timeout=f"{timeout_s}s")  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {address}: {exc}", path="--scheduler"
            ) from None
        try:
            # a scheduler without workers would take the tasks and never run them
            self._client.wait_for_workers(1, timeout=timeout_s)
        except TimeoutError:
            self._client.close()  # type: ignore[no-untyped-call]
            raise ConfigError(
                f"the Dask scheduler at {address} has no workers", path="--scheduler"
            ) from None

    @property
    def description(self) -> str:
        return f"the Dask cluster at {self.address} ({self.workers} workers)"

    @property
    def workers(self) -> int:
        info: dict[str, Any] = self._client.scheduler_info()
        return sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())

    def map(
        self, tasks: Sequence[PointTask], progress: Progress | None = None
    ) -> list[PointOutcome]:
        from distributed import as_completed  # noqa: PLC0415

        if not tasks:
            return []
        # pure=False: every call runs, even for a point identical to one already computed
        futures = self._client.map(run_point, list(tasks), pure=False)
        where = {f.key: i for i, f in enumerate(futures)}
        out: list[PointOutcome | None] = [None] * len(tasks)
        finished = as_completed(futures)  # type: ignore[no-untyped-call]
        for done, future in enumerate(finished, 1):
            i = where[future.key]
            try:
                out[i] = future.result()
            except Exception as exc:  # a worker died under the task (KilledWorker)
                out[i] = _lost(tasks[i], exc)
            if progress is not None:
                progress(done, len(tasks))
        return [o for o in out if o is not None]

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


@contextmanager
def open_runner(
    *, scheduler: str | None = None, workers: int | None = None
) -> Iterator[PointRunner]:
    """The executor the command line asks for: Dask with a scheduler address, else a
    process pool of ``workers`` (default: one per CPU), else serial for one worker."""
    runner: PointRunner
    if scheduler:
        runner = DaskRunner(scheduler)
    elif workers == 1:
        runner = SerialRunner()
    else:
        runner = ProcessPoolRunner(workers)
    try:
        yield runner
    finally:
        runner.close()


# --- a sweep --------------------------------------------------------------------------------


class SweepReport(msgspec.Struct, kw_only=True):
    """A finished sweep: ``outcomes`` best first. ``wall_time_s`` is real time."""

    spec: SweepSpec
    executor: str
    workers: int
    wall_time_s: float
    outcomes: list[PointOutcome]

    @property
    def failed(self) -> int:
        return sum(not o.ok for o in self.outcomes)


def _task(
    spec: SweepSpec,
    index: int,
    params: dict[str, Any],
    log_level: str | None,
    window: tuple[int, int] | None = None,
) -> PointTask:
    overrides = dict(params)
    if window is not None:
        overrides["replay.start"], overrides["replay.end"] = window
    return PointTask(
        index=index,
        config=spec.base,
        params=params,
        overrides=overrides,
        objective=spec.objective,
        source=spec.source,
        log_level=log_level,
    )


def run_sweep(
    spec: SweepSpec,
    runner: PointRunner,
    *,
    log_level: str | None = None,
    progress: Progress | None = None,
) -> SweepReport:
    """Every point of the sweep, ranked best first."""
    started = time.perf_counter()
    tasks = [_task(spec, p.index, p.params, log_level) for p in points(spec)]
    outcomes = runner.map(tasks, progress)
    return SweepReport(
        spec=spec,
        executor=runner.description,
        workers=runner.workers,
        wall_time_s=time.perf_counter() - started,
        outcomes=rank(outcomes, spec.direction),
    )


# --- walk-forward ---------------------------------------------------------------------------


def data_span(spec: SweepSpec) -> tuple[int, int]:
    """The first and last tick time (ns) the sweep's data covers, within the base
    configuration's ``replay.start`` / ``end``. For data that is not in tick files (the
    first and last tick cannot be read cheaply), both bounds must be set in the base."""
    config = load_config(spec.base)
    start, end = config.replay.start_ns, config.replay.end_ns
    if spec.source is None and not config.replay.quotes and start is not None and end is not None:
        return start, end - 1
    if spec.source is not None:
        _, n, _ = parse_source(spec.source)
        first, last = REFERENCE_START_NS, REFERENCE_START_NS + (n - 1) * REFERENCE_STEP_NS
    else:
        firsts: list[int] = []
        lasts: list[int] = []
        for arr in open_quote_files(config, Path(spec.base).parent, spec.base):
            ts = arr["ts_event"]
            if len(ts):
                firsts.append(int(ts[0]))
                lasts.append(int(ts[-1]))
        if not firsts:
            raise ConfigError(
                "walk-forward needs the span of the data: the base configuration names no"
                " tick files; set replay.start and replay.end",
                path="$.replay",
                file=spec.base,
            )
        first, last = min(firsts), max(lasts)
    if start is not None:
        first = max(first, start)
    if end is not None:
        last = min(last, end - 1)
    return first, last


class WindowReport(msgspec.Struct, kw_only=True):
    """One walk-forward step: the train ranking, the point chosen on it (the best), and
    that point's backtest on the test window. ``error`` when no point could be chosen."""

    window: Window
    train: list[PointOutcome]
    chosen: PointOutcome | None
    test: PointOutcome | None
    error: str | None = None


class WalkForwardReport(msgspec.Struct, kw_only=True):
    spec: SweepSpec
    executor: str
    workers: int
    wall_time_s: float
    first_ns: int
    last_ns: int
    windows: list[WindowReport]
    stitched: Stitched


def run_walk_forward(
    spec: SweepSpec,
    runner: PointRunner,
    *,
    log_level: str | None = None,
    progress: Progress | None = None,
) -> WalkForwardReport:
    """Choose the parameters on each train window, score them on the test window after.

    Every train backtest of every window runs in one batch, then every test backtest:
    two rounds of parallel work, whatever the number of windows.
    """
    wf = spec.walk_forward
    if wf is None:
        raise ConfigError("the sweep has no [walk_forward] section", path="$.walk_forward")
    started = time.perf_counter()
    first, last = data_span(spec)
    windows = walk_forward_windows(
        first, last, wf.train_ns, wf.test_ns, wf.step_ns, anchored=wf.anchored
    )
    if not windows:
        raise ConfigError(
            f"the data spans {(last - first) / 1e9:,.0f} s, too short for one train window"
            f" and one test window ({(wf.train_ns + wf.test_ns) / 1e9:,.0f} s)",
            path="$.walk_forward",
            file=spec.file,
        )
    candidates = points(spec)
    train_tasks = [
        _task(spec, p.index, p.params, log_level, (w.train_start, w.train_end))
        for w in windows
        for p in candidates
    ]
    test_count = len(windows)
    total = len(train_tasks) + test_count

    def train_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    def test_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(len(train_tasks) + done, total)

    train = runner.map(train_tasks, train_progress)
    per_window = len(candidates)
    rankings = [
        rank(train[k * per_window : (k + 1) * per_window], spec.direction)
        for k in range(len(windows))
    ]
    chosen: list[PointOutcome | None] = []
    for ranking in rankings:
        best = ranking[0] if ranking else None
        usable = best is not None and best.ok and best.objective is not None
        chosen.append(best if usable else None)
    test_tasks = [
        _task(spec, c.index, c.params, log_level, (w.test_start, w.test_end))
        for w, c in zip(windows, chosen, strict=True)
        if c is not None
    ]
    tested = iter(runner.map(test_tasks, test_progress))
    reports: list[WindowReport] = []
    for w, ranking, c in zip(windows, rankings, chosen, strict=True):
        test = next(tested) if c is not None else None
        error = None
        if c is None:
            first_error = next((o.error for o in ranking if o.error), None)
            error = f"no point could be chosen on the train window ({first_error or 'no score'})"
        elif test is not None and test.error:
            error = f"the test backtest failed: {test.error}"
        reports.append(WindowReport(window=w, train=ranking, chosen=c, test=test, error=error))
    balance = load_config(spec.base).account.starting_balance
    return WalkForwardReport(
        spec=spec,
        executor=runner.description,
        workers=runner.workers,
        wall_time_s=time.perf_counter() - started,
        first_ns=first,
        last_ns=last,
        windows=reports,
        stitched=stitch([r.test for r in reports], balance),
    )
