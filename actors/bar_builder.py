"""The bar builder: bars from prints, live and in a replay, for strategies that trade bars.

It takes the validator's prints (:class:`~engine.messages.TradeBatch` or
:class:`~engine.messages.TradeTick`) of the chosen instruments (all if none are named) and
sends completed bars on its ``bars`` port: one :class:`~engine.messages.BarBatch` per set of
bars completed at one time when it is fed batches, one :class:`~engine.messages.Bar` per
bar when it is fed one print at a time (the shape the strategy would get from a live feed).
The bars are :class:`engine.bars.BarAggregator`'s: time bars ``[start, start + interval)``
aligned on ``origin_s``, or volume bars of exactly ``volume`` units.

**Time bars close on the clock.** A bar is complete when its interval is over, whether or
not a later print comes. The builder keeps a clock timer at the close of the earliest open
bar. Live, the bar goes out as the interval ends; in a replay the timer fires at exactly that
data time, before the prints stamped at it. When the timer fires, every bar that closes at
or before the clock's time is sent: ``ts_event`` is the bar's close, ``ts_init`` the clock's
time (equal in a replay; a little later live).

Time bars are sent only from that timer, never while a print is handled. Yet the timer can
only be set once the print that opens the bar has been seen, and a replayed batch released
in one go could run past the close before it is. So the builder takes part in the replay's
look-ahead for time bars too: :meth:`BarBuilder.scan_batch` names the *last print before*
the first one stamped at or past the close of a bar that would be open then. The batch ends
there, the builder sets its timer, and the scheduler fires it before releasing the next
print. A batched replay thus gives the same bars at the same times as one print at a time.
If a print stamped at or after a close comes before the clock reaches it (live, an exchange
clock ahead of ours), the bar it completes waits for the timer.

**Volume bars close on a print**, the one that fills them. For them the builder is a
look-ahead scanner: :meth:`BarBuilder.scan_batch` gives the first print of a window at which
a bar would complete, so a replayed batch ends there, and the bars go out with that print:
``ts_event`` is the print's time, ``ts_init`` the clock's. A block print may complete several.

**Late prints.** The aggregator takes prints in time order. A print stamped before the
latest print taken, or before a bar boundary the clock has passed (its bar was sent), is
dropped and counted (``late_prints``): a bar that was sent does not change. A replay never
has any. Live, prints of several instruments arriving out of time order lose the late ones.

**Restart and stop.** The open bars survive a restart of the actor (they are the market's
prints, which will not come again); ``on_start`` sets the close timer again, and a bar whose
close passed meanwhile is sent at once. On stop, at the end of a replay included, bars still
open are not sent: a partly built bar is not a bar. A replay therefore ends with the bars
that closed up to its last print.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from engine.actor import Actor, ActorConfig
from engine.bars import BarAggregator
from engine.clock import NANOS_PER_SECOND
from engine.messages import Bar, BarBatch, TimerFired, TradeBatch, TradeTick
from engine.ticks import BAR_DTYPE, TRADE_DTYPE, BarArray, TradeArray

__all__ = ["BarBuilder", "BarBuilderConfig"]

_CLOSE_TIMER = "bar_close"


class BarBuilderConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Give exactly one of ``interval_s`` (time bars, in seconds: 60 for minute bars) and
    ``volume`` (volume bars, in units of the instrument: BTC, shares, contracts).
    ``origin_s`` aligns time bars: they start at ``origin_s + k * interval_s`` seconds since
    the Unix epoch (0: whole UTC minutes and hours). ``instruments``: whose prints make
    bars; empty for every instrument."""

    interval_s: float | None = None
    volume: float | None = None
    origin_s: float = 0.0
    instruments: list[str] = []

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.interval_s is None) == (self.volume is None):
            raise ValueError("give exactly one of interval_s (time bars) and volume")
        if self.interval_s is not None and not (
            math.isfinite(self.interval_s) and round(self.interval_s * NANOS_PER_SECOND) >= 1
        ):
            raise ValueError(
                f"interval_s must be a positive number of seconds, got {self.interval_s!r}"
                " - at `$.interval_s`"
            )
        if self.volume is not None and not (math.isfinite(self.volume) and self.volume > 0):
            raise ValueError(
                f"volume must be a positive number, got {self.volume!r} - at `$.volume`"
            )
        if not math.isfinite(self.origin_s):
            raise ValueError(
                f"origin_s must be a number of seconds, got {self.origin_s!r} - at `$.origin_s`"
            )
        if len(set(self.instruments)) != len(self.instruments):
            raise ValueError("instruments must not repeat an instrument - at `$.instruments`")


class BarBuilder(Actor[BarBuilderConfig]):
    """Builds time or volume bars from prints; see the module docstring."""

    Config = BarBuilderConfig
    outputs: ClassVar[tuple[str, ...]] = ("bars",)
    market_data_ports: ClassVar[frozenset[str]] = frozenset({"bars"})

    def check_config(self) -> None:
        for i, inst_id in enumerate(self.config.instruments):
            if inst_id not in self.ctx.instruments:
                known = ", ".join(inst.id for inst in self.ctx.instruments)
                raise ValueError(
                    f"unknown instrument {inst_id!r} (instruments: {known})"
                    f" - at `$.instruments[{i}]`"
                )

    def on_start(self) -> None:
        cfg = self.config
        self.instrument_ids = tuple(inst.id for inst in self.ctx.instruments)
        chosen = cfg.instruments or list(self.instrument_ids)
        self._index = {inst_id: self.instrument_ids.index(inst_id) for inst_id in chosen}
        # per batch ``instrument_ids``: this run's index of each column value, -1 if not
        # chosen (None when the batch's numbering is this run's and every one is chosen)
        self._columns: dict[tuple[str, ...], np.ndarray | None] = {}
        self._armed_at: int | None = None  # timers do not survive a restart
        if getattr(self, "aggregator", None) is None:
            # Kept across restarts: the prints in the open bars will not come again.
            self.aggregator = BarAggregator(
                interval_ns=(
                    None if cfg.interval_s is None else round(cfg.interval_s * NANOS_PER_SECOND)
                ),
                volume=cfg.volume,
                origin_ns=round(cfg.origin_s * NANOS_PER_SECOND),
            )
            self.pending: BarArray = np.zeros(0, dtype=BAR_DTYPE)
            """Time bars completed by a print before the clock reached their close."""
            self.per_tick = False
            """Whether the last prints came one at a time (bars then go out as ``Bar``)."""
            self.late_prints = 0
            self.bars_sent = 0
        self._arm()

    def on_stop(self) -> None:
        left = self.open_bars()
        if left:
            self.log.info("bar builder stops with bars open, not sent", open_bars=left)

    # --- what a monitor or a test may read -------------------------------------------------

    @property
    def time_bars(self) -> bool:
        return self.config.interval_s is not None

    def open_bars(self) -> int:
        """How many bars are being built (not yet complete)."""
        return self.aggregator.open_bars()

    # --- messages --------------------------------------------------------------------------

    def on_message(self, msg: Any) -> None:
        match msg:
            case TradeBatch(data=data, instrument_ids=ids):
                self.per_tick = False
                self._on_prints(self._chosen(data, ids)[0])
            case TradeTick(instrument_id=inst_id):
                self.per_tick = True
                index = self._index.get(inst_id)
                if index is not None:
                    row = np.zeros(1, dtype=TRADE_DTYPE)
                    row[0] = (msg.ts_event, msg.ts_init, index, msg.aggressor, msg.price, msg.size)
                    self._on_prints(self._in_time(row)[0])
            case TimerFired(name=name) if name == _CLOSE_TIMER:
                self._armed_at = None
                self._release(self.clock.now())
            case _:
                pass  # quotes, bars, corporate actions: nothing to build from

    def _on_prints(self, prints: TradeArray) -> None:
        if len(prints) == 0:
            return
        completed = self.aggregator.update(prints)
        if self.time_bars:
            # only the clock sends time bars (see the module docstring)
            if len(completed):
                self.pending = np.concatenate([self.pending, completed])
            self._arm()
        elif len(completed):
            self._send(completed)

    def _release(self, now: int) -> None:
        """Send every time bar that closes at or before ``now``; set the next timer."""
        bars = self.aggregator.close_until(now)
        if len(self.pending):
            bars = np.concatenate([self.pending, bars])
            due = bars["ts_event"] <= now
            self.pending = bars[~due]
            bars = bars[due]
            bars = bars[np.lexsort((bars["instrument"], bars["ts_event"]))]
        if len(bars):
            self._send(bars)
        self._arm()

    def _arm(self) -> None:
        """Keep the close timer at the earliest close of a bar not yet sent."""
        if not self.time_bars:
            return
        due = self.aggregator.next_close_ns()
        if len(self.pending):
            first = int(self.pending["ts_event"].min())
            due = first if due is None else min(due, first)
        if due == self._armed_at:
            return
        if due is None:
            self.cancel_timer(_CLOSE_TIMER)
        else:
            self.timer_at(due, _CLOSE_TIMER)
        self._armed_at = due

    def _send(self, bars: BarArray) -> None:
        """Send completed bars (ordered by close, then instrument), stamped now."""
        now = self.clock.now()
        bars["ts_init"] = now
        self.bars_sent += len(bars)
        ids = self.instrument_ids
        if self.per_tick:
            for ts_event, _ts_init, inst, interval, o, h, lo, c, v in bars.tolist():
                self.emit(
                    "bars",
                    Bar(
                        instrument_id=ids[inst],
                        interval_ns=interval,
                        open=o,
                        high=h,
                        low=lo,
                        close=c,
                        volume=v,
                        ts_event=ts_event,
                        ts_init=now,
                    ),
                )
            return
        ts = bars["ts_event"]
        starts = np.flatnonzero(np.diff(ts)) + 1
        for part in np.split(bars, starts) if len(starts) else (bars,):
            self.emit(
                "bars",
                BarBatch(
                    data=part, instrument_ids=ids, ts_event=int(part["ts_event"][0]), ts_init=now
                ),
            )

    # --- look-ahead ------------------------------------------------------------------------

    @property
    def may_act_on_market_data(self) -> bool:
        return self.wired("bars")

    def scan_batch(self, batch: np.ndarray, instrument_ids: tuple[str, ...]) -> int:
        """Where a replayed batch of prints must end (``len(batch)``: anywhere), changing
        nothing. Volume bars: the first row at which a bar would complete. Time bars: the
        row before the first one stamped at or past the close of a bar open then (the close
        timer is set on that row and must fire before the next)."""
        n = len(batch)
        if batch.dtype != TRADE_DTYPE or not self.wired("bars"):
            return n
        prints, rows = self._chosen(batch, instrument_ids, count=False)
        k = self.aggregator.first_completion(prints)
        if k >= len(prints):
            return n
        if self.time_bars:
            # 0 only if the timer of an earlier bar is not set, which the replay rules out
            k = max(k - 1, 0)
        return int(rows[k]) if rows is not None else k

    # --- prints to aggregate -----------------------------------------------------------------

    def _chosen(
        self, data: TradeArray, ids: tuple[str, ...], *, count: bool = True
    ) -> tuple[TradeArray, np.ndarray | None]:
        """The prints of chosen instruments, ``instrument`` put in this run's numbering, that
        are in time order; and their rows in ``data`` (None: all of them, as they were).
        ``count=False`` leaves the count of late prints alone (the look-ahead)."""
        if ids not in self._columns:
            index = np.array([self._index.get(inst_id, -1) for inst_id in ids], dtype=np.int64)
            same = len(ids) == len(self.instrument_ids) and bool(
                np.array_equal(index, np.arange(len(ids)))
            )
            self._columns[ids] = None if same else index
        columns = self._columns[ids]
        if columns is None or len(data) == 0:
            return self._in_time(data, count=count)
        keep = np.flatnonzero(columns[data["instrument"]] >= 0)
        chosen = data[keep]
        chosen["instrument"] = columns[chosen["instrument"]]
        prints, rows = self._in_time(chosen, count=count)
        return prints, keep if rows is None else keep[rows]

    def _in_time(
        self, prints: TradeArray, *, count: bool = True
    ) -> tuple[TradeArray, np.ndarray | None]:
        """``prints`` without the late ones (see the module docstring), and the rows kept
        (None: all)."""
        ts = prints["ts_event"]
        if len(ts) == 0:
            return prints, None
        latest = self.aggregator.latest_ns
        if int(ts[0]) >= latest and (len(ts) == 1 or bool(np.all(ts[1:] >= ts[:-1]))):
            return prints, None
        rows = np.flatnonzero(ts >= np.maximum(np.maximum.accumulate(ts), latest))
        if count:
            self.late_prints += len(ts) - len(rows)
        return prints[rows], rows
