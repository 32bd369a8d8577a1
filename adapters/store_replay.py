"""What a backtest replays from the tick store (``replay.store``): every kind the
configuration names (``replay.kinds``) for the run's instruments that have it, bounded by
``replay.start`` / ``replay.end``, and, with ``replay.corporate_actions``, the splits and
dividends of the factor tables the imports stored.

A corporate action is in force from the start of its ex-date (00:00 in the exchange's time
zone, before any of the day's data): the day after the last session of the old factors.
Its dividend is paid per share held the evening before, from the vendor's reference close.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from adapters.importers import corporate_actions
from adapters.tickstore import TickStore, dtype_of
from engine.config import ReplayConfig
from engine.errors import ConfigError
from engine.replay import ChunkedSource, MergedSource
from engine.ticks import ACTION_DTYPE
from engine.wiring import System

__all__ = ["EX_DATE_TIME_ZONE", "action_rows", "replay_source"]

EX_DATE_TIME_ZONE = ZoneInfo("America/New_York")
"""Where the factor files' dates are (Lean's US equities): an ex-date starts at its 00:00."""


def replay_source(system: System) -> ChunkedSource | MergedSource | None:
    """The streams a backtest replays from the tick store, merged in time order; None when
    the run replays tick files instead. The ``instrument`` column is the run's index."""
    replay = system.config.replay
    if replay.store is None:
        return None
    root = system.resolve_path(replay.store)
    if not (root / "tickstore.json").is_file():
        raise ConfigError(f"no tick store at {root}", path="$.replay.store", file=system.file)
    store = TickStore(root, create=False)
    ids = [inst.id for inst in system.instruments]
    chunk_rows = max(replay.batch_size, 4_096)
    streams: list[ChunkedSource] = []
    if replay.corporate_actions:
        actions = action_rows(store, ids, replay)
        streams.append(ChunkedSource(iter([actions]) if len(actions) else iter(()), ACTION_DTYPE))
    covered: set[str] = set()
    # at equal times: corporate actions, then quotes, then prints, then bars
    priority = {"quotes": 0, "trades": 1}
    for k, kind in sorted(enumerate(replay.kinds), key=lambda kk: priority.get(kk[1], 2)):
        have = set(store.instruments(kind))
        chosen = [i for i in ids if i in have]
        if not chosen:
            raise ConfigError(
                f"the tick store at {root} has no {kind} of {', '.join(ids)}",
                path=f"$.replay.kinds[{k}]",
                file=system.file,
            )
        covered.update(chosen)
        chunks = store.read(kind, chosen, replay.start_ns, replay.end_ns, chunk_rows=chunk_rows)
        mapping = np.array([ids.index(i) for i in chosen], dtype=np.uint32)
        streams.append(ChunkedSource(_renumbered(chunks, mapping), dtype_of(kind)))
    missing = [i for i in ids if i not in covered]
    if missing:
        raise ConfigError(
            f"the tick store at {root} has no {' or '.join(replay.kinds)} of " + ", ".join(missing),
            path="$.replay.store",
            file=system.file,
        )
    return streams[0] if len(streams) == 1 else MergedSource(streams)


def _renumbered(
    chunks: Iterator[npt.NDArray[np.void]], mapping: npt.NDArray[np.uint32]
) -> Iterator[npt.NDArray[np.void]]:
    """Chunks read for a subset of the run's instruments, with the run's indices."""
    identity = np.array_equal(mapping, np.arange(len(mapping), dtype=np.uint32))
    for chunk in chunks:
        if not identity:
            chunk["instrument"] = mapping[chunk["instrument"]]
        yield chunk


def _whole_split(ratio: float) -> float:
    """A split ratio as the vendor meant it: the factor files' quotients are rounded
    (0.00892857 / 0.0178571 is 0.50000028 for a 2-for-1), so a ratio within 1e-4 of a
    simple fraction (``n`` new shares for ``m`` old, ``m`` and ``n`` up to 1000) is taken
    as that fraction."""
    if ratio == 1.0:
        return ratio
    shares = Fraction(1.0 / ratio).limit_denominator(1000)
    if abs(float(shares) * ratio - 1.0) < 1e-4:
        return shares.denominator / shares.numerator
    return ratio


def action_rows(store: TickStore, instruments: list[str], replay: ReplayConfig) -> np.ndarray:
    """The splits and dividends of ``instruments`` with an ex-date in the replay's span,
    in time order (``ACTION_DTYPE``); the ``instrument`` column indexes ``instruments``."""
    rows: list[tuple[int, int, int, float, float, float]] = []
    start, end = replay.start_ns, replay.end_ns
    for index, instrument in enumerate(instruments):
        table, _ = corporate_actions(store, instrument)
        for event in table.events():
            ex_date = event.last_day_before + dt.timedelta(days=1)
            midnight = dt.datetime.combine(ex_date, dt.time(0, 0), tzinfo=EX_DATE_TIME_ZONE)
            ts = int(midnight.timestamp()) * 1_000_000_000
            if (start is not None and ts < start) or (end is not None and ts >= end):
                continue
            split = _whole_split(event.split_ratio)
            rows.append((ts, ts, index, split, event.dividend_ratio, event.dividend))
    out = np.array(sorted(rows, key=lambda r: (r[0], r[2])), dtype=ACTION_DTYPE)
    return out
