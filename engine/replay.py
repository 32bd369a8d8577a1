"""The replay scheduler: virtual time that moves only when the system is quiet.

Each step waits until every inbox is empty and every actor idle, then releases either
the timers due next or the next run of ticks (those before the next timer), whichever
comes first. Ticks travel in batches; to keep results identical to one-at-a-time
delivery, a batch is cut just after the first tick at which any actor would act:

1. the validator's ``preview`` says which ticks of the window will reach consumers;
2. every actor that ``scans_batches`` reports the first of those ticks it would act on;
3. the batch released ends at the earliest such tick, so everyone acts on the batch's
   last tick, exactly as they would have one tick at a time; the rest of the window
   follows once the consequences of that action have flowed through the system.

Virtual time is set to the last tick of the released batch. Ticks before a timer's time
are released before it; a timer fires before ticks at its own time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from engine.actor import Actor
from engine.clock import ReplayClock
from engine.dispatch import InlineDispatcher
from engine.mailbox import Quiescence
from engine.messages import BarBatch, CorporateActionEvent, Message, QuoteBatch, TradeBatch
from engine.ticks import ACTION_DTYPE, BAR_DTYPE, QUOTE_DTYPE, TRADE_DTYPE, QuoteArray

__all__ = [
    "ChunkedQuoteSource",
    "ChunkedSource",
    "MergedSource",
    "ReplayScheduler",
    "merge_quote_files",
    "merge_tick_arrays",
]

Preview = Callable[[np.ndarray], tuple[np.ndarray, int]]
"""Which rows of a window (quotes, trades or bars) would pass validation, and how many
would not."""

_BATCH_TYPES: dict[np.dtype[Any], type[QuoteBatch] | type[TradeBatch] | type[BarBatch]] = {
    QUOTE_DTYPE: QuoteBatch,
    TRADE_DTYPE: TradeBatch,
    BAR_DTYPE: BarBatch,
}


def corporate_action_events(
    rows: np.ndarray, instrument_ids: tuple[str, ...]
) -> list[CorporateActionEvent]:
    """The messages of ``ACTION_DTYPE`` rows."""
    return [
        CorporateActionEvent(
            instrument_id=instrument_ids[inst],
            split_ratio=split,
            dividend_ratio=div_ratio,
            dividend=dividend,
            ts_event=ts_event,
            ts_init=ts_init,
        )
        for ts_event, ts_init, inst, split, div_ratio, dividend in rows.tolist()
    ]


class ChunkedSource:
    """Rows of one dtype (quotes, trades, bars or corporate actions) in time order, read
    chunk by chunk so memory stays flat."""

    def __init__(self, chunks: Iterator[np.ndarray], dtype: np.dtype[Any] = QUOTE_DTYPE) -> None:
        self._chunks = chunks
        self.dtype = dtype
        self._chunk: np.ndarray = np.empty(0, dtype=dtype)
        self._pos = 0
        self._exhausted = False
        self.released = 0

    def _fill(self) -> None:
        while self._pos >= len(self._chunk) and not self._exhausted:
            nxt = next(self._chunks, None)
            if nxt is None:
                self._exhausted = True
                self._chunk = np.empty(0, dtype=self.dtype)
            else:
                if nxt.dtype != self.dtype:
                    raise TypeError(f"a {self.dtype} source gave dtype {nxt.dtype}")
                self._chunk = nxt
            self._pos = 0

    @property
    def exhausted(self) -> bool:
        self._fill()
        return self._exhausted and self._pos >= len(self._chunk)

    def head_ts(self) -> int | None:
        """``ts_event`` of the next row, None when there is none."""
        self._fill()
        if self._pos >= len(self._chunk):
            return None
        return int(self._chunk["ts_event"][self._pos])

    def window(self, max_n: int, before: int | None) -> np.ndarray:
        """Up to ``max_n`` of the next rows, all with ``ts_event < before``."""
        self._fill()
        chunk = self._chunk
        end = min(len(chunk), self._pos + max_n)
        view = chunk[self._pos : end]
        if before is not None and len(view) and view["ts_event"][-1] >= before:
            view = view[: int(np.searchsorted(view["ts_event"], before, side="left"))]
        return view

    def advance(self, n: int) -> None:
        self._pos += n
        self.released += n


ChunkedQuoteSource = ChunkedSource


class MergedSource:
    """Several :class:`ChunkedSource` streams (say corporate actions, quotes, trades, bars)
    released as one time-ordered sequence of single-dtype windows.

    A window comes from the stream whose next row is earliest and ends before the next
    row of any other stream, so every row keeps its place in time. Rows at the same
    ``ts_event`` go in the order the streams are given: corporate actions before the
    market data of their day, quotes before the trades stamped with them.
    """

    def __init__(self, sources: Sequence[ChunkedSource]) -> None:
        if not sources:
            raise ValueError("a merged source needs at least one stream")
        self.sources = list(sources)
        self._current = self.sources[0]

    @property
    def released(self) -> int:
        return sum(s.released for s in self.sources)

    @property
    def exhausted(self) -> bool:
        return all(s.exhausted for s in self.sources)

    def window(self, max_n: int, before: int | None) -> np.ndarray:
        heads = [s.head_ts() for s in self.sources]
        best = -1
        for k, ts in enumerate(heads):
            if ts is not None and (best < 0 or ts < heads[best]):  # type: ignore[operator]
                best = k
        if best < 0:
            return self.sources[0].window(max_n, before)
        limit = before
        for k, ts in enumerate(heads):
            if k == best or ts is None:
                continue
            # an earlier stream goes first at equal times, a later one after
            bound = ts if k < best else ts + 1
            if limit is None or bound < limit:
                limit = bound
        self._current = self.sources[best]
        return self._current.window(max_n, limit)

    def advance(self, n: int) -> None:
        """Release the first ``n`` rows of the last window."""
        self._current.advance(n)


def merge_quote_files(
    inputs: Sequence[tuple[QuoteArray, int]], chunk_rows: int = 16_384
) -> Iterator[QuoteArray]:
    """Merge per-instrument quote arrays (each in time order) into time-ordered chunks.

    Each input is ``(array, instrument_index)``; the ``instrument`` column of the output
    is set to that index. Ties in time keep input order, then row order.
    """
    return merge_tick_arrays(inputs, chunk_rows, QUOTE_DTYPE)


def merge_tick_arrays(
    inputs: Sequence[tuple[np.ndarray, int]], chunk_rows: int, dtype: np.dtype[Any]
) -> Iterator[np.ndarray]:
    """:func:`merge_quote_files` for arrays of any tick or bar dtype with ``ts_event`` and
    ``instrument`` columns (quotes, trades, bars); every input must have ``dtype``."""
    for arr, _ in inputs:
        if arr.dtype != dtype:
            raise TypeError(f"cannot merge dtype {arr.dtype} into {dtype}")
    positions = [0] * len(inputs)
    while True:
        live = [i for i, (arr, _) in enumerate(inputs) if positions[i] < len(arr)]
        if not live:
            return
        if len(live) == 1:
            i = live[0]
            arr, inst = inputs[i]
            out = np.array(arr[positions[i] : positions[i] + chunk_rows], dtype=dtype)
            out["instrument"] = inst
            positions[i] += len(out)
            yield out
            continue
        heads = []
        for i in live:
            arr, _ = inputs[i]
            heads.append((i, arr[positions[i] : positions[i] + chunk_rows]))
        horizon = min(int(h["ts_event"][-1]) for _, h in heads)
        parts = []
        for i, head in heads:
            take = int(np.searchsorted(head["ts_event"], horizon, side="right"))
            part = np.array(head[:take], dtype=dtype)
            part["instrument"] = inputs[i][1]
            positions[i] += take
            parts.append(part)
        merged = np.concatenate(parts)
        yield merged[np.argsort(merged["ts_event"], kind="stable")]


class ReplayScheduler:
    """Drives a replay: releases ticks and timers into the system whenever it is quiet.

    ``on_progress(ticks_released)``, if given, is called after the first batch and then
    whenever another ``progress_every`` ticks have been released (a progress bar's hook;
    it must not act on the system, and the scheduler itself never looks at real time).
    """

    def __init__(
        self,
        *,
        clock: ReplayClock,
        quiescence: Quiescence,
        source: ChunkedSource | MergedSource,
        feed: Actor[Any],
        instrument_ids: tuple[str, ...],
        preview: Preview | None = None,
        scanners: Sequence[Actor[Any]] = (),
        batch_size: int = 16_384,
        per_tick: bool = False,
        dispatcher: InlineDispatcher | None = None,
        on_progress: Callable[[int], None] | None = None,
        progress_every: int = 16_384,
    ) -> None:
        self.clock = clock
        self.quiescence = quiescence
        self.source = source
        self.feed = feed
        self.instrument_ids = instrument_ids
        self.preview = preview
        self.scanners = list(scanners)
        self.batch_size = 1 if per_tick else batch_size
        self.per_tick = per_tick
        self.dispatcher = dispatcher
        self.ticks_released = 0  # quotes, prints and bars
        self.actions_released = 0  # corporate actions
        self.batches_released = 0
        self.timers_fired = 0
        self.on_progress = on_progress
        self.progress_every = max(1, progress_every)

    def _cut(self, window: QuoteArray) -> int:
        """How many ticks of ``window`` to release now (see the module docstring).

        Looks ahead over a growing prefix (``LOOKAHEAD`` ticks, then four times more each
        round), so that finding a cut costs about as much as the ticks it releases.
        """
        scanners = [s for s in self.scanners if s.may_act_on_market_data]
        if not scanners:
            return len(window)
        n = len(window)
        m = min(n, self.LOOKAHEAD)
        while True:
            k = self._first_action(window[:m], scanners)
            if k is not None:
                return k + 1
            if m >= n:
                return n
            m = min(n, m * 4)

    LOOKAHEAD = 64

    def _first_action(self, window: QuoteArray, scanners: Sequence[Actor[Any]]) -> int | None:
        """Index in ``window`` of the first tick any scanner acts on, or None."""
        if self.preview is not None:
            mask, rejected = self.preview(window)
            if not rejected:
                clean, index = window, None
            else:
                index = np.flatnonzero(mask)
                clean = window[index]
        else:
            clean, index = window, None
        if len(clean) == 0:
            return None
        ids = self.instrument_ids
        k = len(clean)
        for scanner in scanners:
            k = min(k, scanner.scan_batch(clean[:k] if k < len(clean) else clean, ids))
            if k == 0:
                break
        if k >= len(clean):
            return None
        return int(index[k]) if index is not None else k

    def start_clock(self) -> None:
        """Set virtual time to the first tick's, before the actors start, so that timers
        they set at start are anchored in the data's time, not at the epoch."""
        first = self.source.window(1, None)
        if len(first):
            self.clock.set_time(int(first["ts_event"][0]))

    async def run(self) -> None:
        """Replay until the ticks run out; timers due before the last tick fire in order."""
        clock = self.clock
        quiescence = self.quiescence
        source = self.source
        feed = self.feed
        publish = getattr(feed, "publish", None)
        ids = self.instrument_ids
        on_progress = self.on_progress
        progress_at = 1 if on_progress is not None else 2**63 - 1
        dispatcher = self.dispatcher
        quote_dtype = QUOTE_DTYPE
        while True:
            if dispatcher is not None:
                dispatcher.run_until_quiet()
            else:
                await quiescence.wait()
            next_timer = clock.next_timer_ts()
            window = source.window(self.batch_size, next_timer)
            if len(window) == 0:
                if source.exhausted:
                    return
                self.timers_fired += clock.fire_next()
                continue
            dtype = window.dtype
            is_action = dtype is not quote_dtype and dtype == ACTION_DTYPE
            if is_action:
                # corporate actions: one message each, all of the window at once
                n = len(window)
                batch = window
            else:
                n = 1 if self.per_tick else self._cut(window)
                batch = window[:n]
            source.advance(n)
            ts = int(batch["ts_event"][n - 1])
            clock.set_time(ts)
            if is_action:
                self.actions_released += n
            else:
                self.ticks_released += n
                self.batches_released += 1
            if self.ticks_released >= progress_at and on_progress is not None:
                progress_at = self.ticks_released + self.progress_every
                on_progress(self.ticks_released)
            msgs: list[Message]
            if dtype is quote_dtype:
                msgs = [QuoteBatch(data=batch, instrument_ids=ids, ts_event=ts, ts_init=ts)]
            elif is_action:
                msgs = list(corporate_action_events(batch, ids))
            else:
                batch_type = _BATCH_TYPES[dtype]
                msgs = [batch_type(data=batch, instrument_ids=ids, ts_event=ts, ts_init=ts)]
            for msg in msgs:
                if publish is None:
                    feed.inbox.put_nowait(msg)
                    continue
                publish(msg)
                if feed._staged:
                    if dispatcher is not None:
                        dispatcher.send_held(feed)
                    else:
                        await feed._flush()
