"""What a backtest shows a person: a self-contained HTML report, the metric rows of the
terminal summary, and a progress bar while a long replay runs.

The report is one HTML file that needs nothing else: no network, no scripts to fetch, no
build step. Charts are inline SVG drawn here from the run's figures (no xmlns or other
URL is written, so the file holds no ``http`` reference at all). It shows the equity and
drawdown over time, monthly returns as a heat map, gross exposure by asset class, the
cost breakdown, the metrics, attribution, the first trades and the run's identity
(configuration, events digest, data files with their sizes and SHA-256). The figures
behind it are also embedded as JSON (``<script type="application/json"
id="tradingd-data">``), so a program can read the report back.

Charts of long runs are thinned for drawing: past ``MAX_CHART_POINTS`` samples the
equity line keeps, for each of ``CHART_BUCKETS`` slices of time, the first, lowest,
highest and last sample, so every peak and trough stays visible. Each path says how many
points it has and how many samples it stands for (``data-points``, ``data-samples``).
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
import numpy as np
import orjson

from adapters.tickstore import TickStore
from engine.backtest import BacktestResult
from engine.performance import TradeLog
from engine.portfolio import SAMPLE_FILL
from engine.wiring import System

__all__ = [
    "DataFile",
    "ProgressBar",
    "RunIdentity",
    "metric_rows",
    "progress_for",
    "render_report",
    "run_identity",
    "total_ticks",
    "write_report",
]

MAX_CHART_POINTS = 5_000
CHART_BUCKETS = 1_200
MAX_TRADES = 200
"""Trades listed in the report (the first ones, in order of exit)."""
HASH_LIMIT_BYTES = 4 << 30
"""Data files larger than this are listed without a SHA-256 (hashing would take minutes)."""

_NS = 1_000_000_000


# --- the run's identity --------------------------------------------------------------------


class DataFile(msgspec.Struct, kw_only=True):
    """A tick file the run read: the path as configured, its instrument, rows and bytes,
    and the SHA-256 of its content (None when too large to hash quickly)."""

    path: str
    instrument: str
    rows: int
    bytes: int
    sha256: str | None


class StoredData(msgspec.Struct, kw_only=True):
    """A dataset of the tick store a run read, by the content hash of its manifest."""

    dataset: str
    kind: str
    content_sha256: str


class RunIdentity(msgspec.Struct, kw_only=True):
    """What names a run exactly: the configuration (as given, and the SHA-256 of its text)
    and the data: tick files, or the tick store's datasets by content hash. With
    ``events_sha256`` from the result, two reports with the same identity describe the
    same run."""

    config_file: str
    config_sha256: str | None
    data_files: list[DataFile]
    tradingd_version: str
    datasets: list[StoredData] = []


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_identity(system: System, config_file: str | Path) -> RunIdentity:
    """The identity of a run of ``system``, loaded from ``config_file``."""
    cfg = Path(config_file)
    files: list[DataFile] = []
    replay = system.config.replay
    for qf in [*replay.quotes, *replay.trades]:
        p = system.resolve_path(qf.path)
        try:
            size = p.stat().st_size
            rows = len(np.load(p, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError):
            files.append(
                DataFile(path=qf.path, instrument=qf.instrument, rows=0, bytes=0, sha256=None)
            )
            continue
        digest = _sha256(p) if size <= HASH_LIMIT_BYTES else None
        files.append(
            DataFile(path=qf.path, instrument=qf.instrument, rows=rows, bytes=size, sha256=digest)
        )
    try:
        version = importlib.metadata.version("tradingd")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return RunIdentity(
        config_file=str(config_file),
        config_sha256=_sha256(cfg) if cfg.is_file() else None,
        data_files=files,
        tradingd_version=version,
        datasets=_stored_data(system),
    )


def _stored_data(system: System) -> list[StoredData]:
    replay = system.config.replay
    if replay.store is None:
        return []
    store = TickStore(system.resolve_path(replay.store), create=False)
    ids = [inst.id for inst in system.instruments]
    out: list[StoredData] = []
    for kind in replay.kinds:
        have = set(store.instruments(kind))
        chosen = [i for i in ids if i in have]
        for dataset, digest in store.content_hashes(kind, chosen).items():
            out.append(StoredData(dataset=dataset, kind=kind, content_sha256=digest))
    return out


# --- formatting ----------------------------------------------------------------------------

_DASH = "\u2013"  # an en dash: no figure


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _pct(x: Any, digits: int = 2) -> str:
    return f"{100.0 * x:,.{digits}f}%" if _is_num(x) else _DASH


def _num(x: Any, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if _is_num(x) else _DASH


def _price(x: Any) -> str:
    """A price with the digits it has (8 significant): 61,837.637 or 1.10013."""
    return format(x, ",.8g") if _is_num(x) else _DASH


def _money(x: Any, currency: str) -> str:
    return f"{x:,.2f} {currency}" if _is_num(x) else _DASH


def _duration(seconds: Any) -> str:
    if not _is_num(seconds):
        return _DASH
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    if s < 2 * 86_400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:,.1f} days"


def _utc(ts: int | None, unit: Literal["m", "s", "ms"] = "s") -> str:
    if ts is None:
        return _DASH
    return str(np.datetime_as_string(np.datetime64(int(ts), "ns"), unit=unit)).replace("T", " ")


def _when(iso: Any) -> str:
    return str(iso).replace("T", " ").removesuffix("Z") if iso else _DASH


# --- terminal ------------------------------------------------------------------------------


def metric_rows(r: BacktestResult) -> list[tuple[str, str]]:
    """Rows for the terminal summary: the key metrics, as a person reads them."""
    m = r.metrics
    if not m:
        return []
    c = r.currency
    basis = (
        f"{m['returns']:,} {m['periodicity']} returns"
        + (f" of {_duration(m['interval_s'])}" if m["periodicity"] == "intraday" else "")
        + f", {m['periods_per_year']:,.0f} a year"
    )
    recovered = m.get("max_drawdown_recovery")
    dd_text = f"{_pct(m['max_drawdown'])} over {_duration(m['max_drawdown_duration_s'])}"
    if m.get("max_drawdown_peak"):
        dd_text += ", recovered" if recovered else ", not recovered"
    trips = f"{m['round_trips']:,} closed"
    if m["open_trips"]:
        trips += f", {m['open_trips']:,} open"
    trips += f"; hit rate {_pct(m['hit_rate'], 1)}, profit factor {_num(m['profit_factor'])}"
    costs = ", ".join(f"{k} {_num(v)}" for k, v in m["costs"].items())
    return [
        ("total return", _pct(m["total_return"])),
        (
            "annual return",
            f"{_pct(m['annual_return'])} (CAGR over {_duration(m['duration_s'])} of data)",
        ),
        ("volatility", f"{_pct(m['annual_volatility'])} a year"),
        ("Sharpe", _num(m["sharpe"])),
        ("Sortino", _num(m["sortino"])),
        ("Calmar", _num(m["calmar"])),
        ("drawdown (sampled)", dd_text),
        ("metrics from", basis),
        ("round trips", trips),
        ("average win / loss", f"{_money(m['average_win'], c)} / {_money(m['average_loss'], c)}"),
        (
            "time in market",
            f"{_pct(m['time_in_market'], 1)} (average gross exposure "
            f"{_money(m['average_gross_exposure'], c)})",
        ),
        (
            "turnover",
            f"{_num(m['turnover'])} x equity ({_money(m['traded_notional'], c)} traded)",
        ),
        ("costs", f"{costs} {c} (total {_num(m['costs_total'])})"),
    ]


class ProgressBar:
    """A one-line progress bar on a terminal, redrawn at most ``hz`` times a second.

    Fed by the replay scheduler's ``on_progress(ticks_released)``. ``total`` ticks (None if
    unknown) gives the percentage and the time left. Draw only when the stream is a
    terminal: :meth:`for_stream` returns None otherwise.
    """

    def __init__(
        self,
        stream: IO[str],
        total: int | None,
        *,
        width: int = 30,
        hz: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total if total else None
        self.width = width
        self.interval = 1.0 / hz
        self.clock = clock
        self._first: tuple[float, int] | None = None  # (time, ticks) of the first report
        self._last = -math.inf
        self.drawn = 0

    @classmethod
    def for_stream(cls, stream: IO[str], total: int | None) -> ProgressBar | None:
        isatty = getattr(stream, "isatty", None)
        return cls(stream, total) if isatty is not None and isatty() else None

    def __call__(self, ticks: int) -> None:
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        if self._first is None:  # the rate counts from here: start-up is not replay
            self._first = (now, ticks)
        t0, n0 = self._first
        rate = (ticks - n0) / (now - t0) if now > t0 else 0.0
        speed = f"  {rate:,.0f} ticks/s" if rate > 0 else ""
        if self.total:
            frac = min(1.0, ticks / self.total)
            filled = round(frac * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            if rate > 0:
                speed += f"  {max(0.0, (self.total - ticks) / rate):,.0f} s left"
            text = f"\r{100 * frac:5.1f}% [{bar}] {ticks:,} / {self.total:,} ticks{speed}"
        else:
            text = f"\r{ticks:,} ticks{speed}"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self.drawn += 1

    def close(self) -> None:
        """Clear the line (the summary follows)."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# --- charts ----------------------------------------------------------------------------------

_TIME_STEPS_S = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86_400, 2 * 86_400, 7 * 86_400, 14 * 86_400, 30 * 86_400, 91 * 86_400, 182 * 86_400,
    365 * 86_400, 730 * 86_400, 1826 * 86_400,
]  # fmt: skip


def _nice_step(span: float, count: int = 5) -> float:
    if not span > 0:
        return 1.0
    raw = span / count
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag:
            return m * mag
    return 10.0 * mag


def _y_ticks(lo: float, hi: float) -> list[float]:
    step = _nice_step(hi - lo)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _time_ticks(t0: int, t1: int) -> tuple[list[int], bool]:
    """Tick times (ns) for a time axis, and whether labels are dates (else times of day)."""
    span_s = max((t1 - t0) / _NS, 1e-9)
    step_s = next((s for s in _TIME_STEPS_S if span_s / s <= 7), _TIME_STEPS_S[-1])
    step = step_s * _NS
    first = -(-t0 // step) * step
    ticks = list(range(first, t1 + 1, step))
    return ticks, step_s >= 86_400


def _fmt_axis(v: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{v:,.{min(digits, 6)}f}"


class _Plot:
    """A plot area: data ranges mapped onto a pixel box, and the SVG drawn so far."""

    def __init__(
        self,
        width: int,
        height: int,
        t0: int,
        t1: int,
        y0: float,
        y1: float,
        *,
        left: int = 84,
        right: int = 16,
        top: int = 12,
        bottom: int = 26,
    ) -> None:
        self.width, self.height = width, height
        self.left, self.top = left, top
        self.w, self.h = width - left - right, height - top - bottom
        self.t0, self.t1 = t0, t1 if t1 > t0 else t0 + 1
        if not y1 > y0:
            pad = abs(y0) * 0.01 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        self.y0, self.y1 = y0, y1
        self.parts: list[str] = []

    def xs(self, t: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.left + (t - self.t0) / (self.t1 - self.t0) * self.w
        return out

    def ys(self, v: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.top + (1.0 - (v - self.y0) / (self.y1 - self.y0)) * self.h
        return out

    def axes(self, y_label: Callable[[float, float], str], *, time_labels: bool = True) -> None:
        p = self.parts
        ticks = _y_ticks(self.y0, self.y1)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for v in ticks:
            y = float(self.ys(np.array([v]))[0])
            p.append(
                f'<line class="grid" x1="{self.left}" x2="{self.left + self.w}" '
                f'y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="ylab" x="{self.left - 6}" y="{y + 4:.1f}">{y_label(v, step)}</text>'
            )
        if not time_labels:
            return
        times, dates = _time_ticks(self.t0, self.t1)
        previous_day = ""
        for t in times:
            x = float(self.xs(np.array([t], dtype=np.float64))[0])
            stamp = _utc(t, "m")
            day, clock = stamp.split(" ")
            label = day if dates else (f"{day} {clock}" if day != previous_day else clock)
            previous_day = day
            p.append(
                f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{self.top}" '
                f'y2="{self.top + self.h}"/>'
                f'<text class="xlab" x="{x:.1f}" y="{self.top + self.h + 16}">{label}</text>'
            )

    def svg(self, name: str, title: str, extra: str = "") -> str:
        return (
            f'<svg class="chart" id="{name}" viewBox="0 0 {self.width} {self.height}" '
            f'width="{self.width}" height="{self.height}" role="img" '
            f'data-left="{self.left}" data-top="{self.top}" data-width="{self.w}" '
            f'data-height="{self.h}" data-t0="{self.t0}" data-t1="{self.t1}" '
            f'data-y0="{self.y0!r}" data-y1="{self.y1!r}"{extra}>'
            f"<title>{html.escape(title)}</title>"
            f'<rect class="frame" x="{self.left}" y="{self.top}" width="{self.w}" '
            f'height="{self.h}"/>' + "".join(self.parts) + "</svg>"
        )


def _thin(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indexes of the samples to draw: all of them up to ``MAX_CHART_POINTS``, else per
    slice of time the first, lowest, highest and last, in time order."""
    n = len(t)
    if n <= MAX_CHART_POINTS:
        return np.arange(n)
    span = max(int(t[-1] - t[0]), 1)
    bucket = ((t - t[0]) * (CHART_BUCKETS - 1) // span).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], n]
    keep: list[int] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        seg = v[a:b]
        keep.extend((a, a + int(np.argmin(seg)), a + int(np.argmax(seg)), b - 1))
    return np.unique(np.array(keep, dtype=np.int64))


def _path(xs: np.ndarray, ys: np.ndarray) -> str:
    pts = [f"{x:.1f},{y:.1f}" for x, y in zip(xs.tolist(), ys.tolist(), strict=True)]
    return "M" + "L".join(pts)


def _equity_charts(r: BacktestResult) -> str:
    curve = r.equity_curve
    if curve is None or len(curve) == 0:
        return "<p>No equity samples.</p>"
    t = curve.ts
    eq = curve.equity
    dd = -100.0 * curve.drawdown
    keep = _thin(t, eq)
    t0, t1 = int(t[0]), int(t[-1])
    lo, hi = float(eq.min()), float(eq.max())
    pad = (hi - lo) * 0.05
    top = _Plot(960, 300, t0, t1, lo - pad, hi + pad)
    top.axes(_fmt_axis)
    base = float(top.ys(np.array([float(eq[0])]))[0])
    top.parts.append(
        f'<line class="start" x1="{top.left}" x2="{top.left + top.w}" '
        f'y1="{base:.1f}" y2="{base:.1f}"/>'
    )
    top.parts.append(
        f'<path class="series equity" d="{_path(top.xs(t[keep]), top.ys(eq[keep]))}" '
        f'data-points="{len(keep)}" data-samples="{len(t)}" '
        f'data-first="{float(eq[0])!r}" data-last="{float(eq[-1])!r}" '
        f'data-min="{lo!r}" data-max="{hi!r}"/>'
    )
    fills = keep[curve.kind[keep] == SAMPLE_FILL]
    if len(fills) <= 400:  # mark fills while they stay readable
        top.parts.extend(
            f'<circle class="fill-mark" cx="{x:.1f}" cy="{y:.1f}" r="1.6"/>'
            for x, y in zip(top.xs(t[fills]).tolist(), top.ys(eq[fills]).tolist(), strict=True)
        )
    dd_lo = float(dd.min())
    bottom = _Plot(960, 150, t0, t1, min(dd_lo * 1.1, -0.01), 0.0)
    bottom.axes(lambda v, step: _fmt_axis(v, step) + "%")
    keep_dd = _thin(t, dd)
    xs, ys = bottom.xs(t[keep_dd]), bottom.ys(dd[keep_dd])
    zero = bottom.top
    area = f"M{xs[0]:.1f},{zero:.1f}L" + _path(xs, ys)[1:] + f"L{xs[-1]:.1f},{zero:.1f}Z"
    bottom.parts.append(
        f'<path class="series drawdown" d="{area}" data-points="{len(keep_dd)}" '
        f'data-samples="{len(t)}" data-min="{dd_lo!r}"/>'
    )
    return top.svg("equity-chart", f"Equity ({r.currency}) over data time (UTC)") + bottom.svg(
        "drawdown-chart", "Drawdown from the running peak (%)"
    )


_CLASS_COLOURS = ["#3b6ea8", "#d08c2c", "#4f9a62", "#b24a4a", "#7a5aa6", "#4a9aa8", "#8a8a3a"]


def _exposure_chart(r: BacktestResult) -> str:
    curve = r.equity_curve
    if curve is None or len(curve) == 0:
        return ""
    t = curve.ts
    classes = curve.asset_classes
    stack = curve.gross_exposure_by_asset_class.T
    n = len(t)
    idx = np.arange(n)
    if n > MAX_CHART_POINTS:
        idx = np.unique(np.r_[np.arange(0, n, -(-n // MAX_CHART_POINTS)), n - 1])
    # a step chart: an exposure holds from one sample to the next
    tt = np.repeat(t[idx], 2)[1:]
    cum = np.cumsum(stack[:, idx], axis=0)
    hi = float(cum[-1].max()) if len(cum) else 0.0
    plot = _Plot(960, 220, int(t[0]), int(t[-1]), 0.0, hi * 1.05 if hi > 0 else 1.0)
    plot.axes(_fmt_axis)
    lower = np.zeros(len(idx))
    legend = []
    for k, c in enumerate(classes):
        upper = cum[k]
        up = np.repeat(upper, 2)[:-1]
        lo = np.repeat(lower, 2)[:-1]
        xs = plot.xs(tt.astype(np.float64))
        d = _path(xs, plot.ys(up)) + "L" + _path(xs[::-1], plot.ys(lo[::-1]))[1:] + "Z"
        colour = _CLASS_COLOURS[k % len(_CLASS_COLOURS)]
        plot.parts.append(
            f'<path class="series exposure" data-asset-class="{html.escape(c)}" '
            f'data-points="{len(idx)}" data-samples="{n}" d="{d}" fill="{colour}">'
            f"<title>{html.escape(c)}</title></path>"
        )
        legend.append(
            f'<span class="key"><span class="swatch" style="background:{colour}"></span>'
            f"{html.escape(c)}</span>"
        )
        lower = upper
    return (
        plot.svg("exposure-chart", f"Gross exposure by asset class ({r.currency})")
        + f'<div class="legend">{"".join(legend)}</div>'
    )


def _cost_chart(costs: dict[str, float], currency: str) -> str:
    if not costs:
        return ""
    width, row, left = 960, 26, 120
    height = row * len(costs) + 30
    biggest = max((abs(v) for v in costs.values()), default=0.0) or 1.0
    lo = min(0.0, *costs.values())
    span = max(costs.values()) - lo if max(costs.values()) > lo else biggest
    scale = (width - left - 180) / span
    zero = left + (0.0 - lo) * scale
    parts = [
        f'<svg class="chart" id="cost-chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img"><title>Costs by kind ({currency})</title>'
    ]
    for k, (kind, v) in enumerate(costs.items()):
        y = 10 + k * row
        x = zero if v >= 0 else zero + v * scale
        parts.append(
            f'<text class="blab" x="{left - 8}" y="{y + 15}">{html.escape(kind)}</text>'
            f'<rect class="bar" data-kind="{html.escape(kind)}" data-value="{v!r}" '
            f'x="{x:.1f}" y="{y}" width="{max(abs(v) * scale, 0.5):.1f}" height="{row - 8}">'
            f"<title>{html.escape(kind)}: {_money(v, currency)}</title></rect>"
            f'<text class="bval" x="{max(zero, x + abs(v) * scale) + 6:.1f}" y="{y + 15}">'
            f"{_money(v, currency)}</text>"
        )
    parts.append(
        f'<line class="zero" x1="{zero:.1f}" x2="{zero:.1f}" y1="4" y2="{height - 16}"/></svg>'
    )
    return "".join(parts)


def _heat_colour(v: float, scale: float) -> str:
    """Green for gains, red for losses, stronger with size (``scale``: the largest |v|)."""
    a = min(1.0, abs(v) / scale) if scale > 0 else 0.0
    base = (46, 139, 87) if v >= 0 else (192, 57, 43)
    mix = [round(255 + (c - 255) * (0.15 + 0.85 * a)) for c in base]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def _monthly_table(monthly: dict[str, float]) -> str:
    if not monthly:
        return "<p>No monthly figures.</p>"
    years: dict[str, dict[int, float]] = {}
    for key, v in monthly.items():
        y, mth = key.split("-")
        years.setdefault(y, {})[int(mth)] = v
    scale = max(abs(v) for v in monthly.values())
    names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    head = "".join(f"<th>{n}</th>" for n in names)
    rows = []
    for y, months in sorted(years.items()):
        cells = []
        for k in range(1, 13):
            if k in months:
                v = months[k]
                ink = "#fff" if scale > 0 and abs(v) / scale > 0.6 else "#1d2430"
                cells.append(
                    f'<td class="cell" data-month="{y}-{k:02d}" data-value="{v!r}" '
                    f'style="background:{_heat_colour(v, scale)};color:{ink}">{_pct(v)}</td>'
                )
            else:
                cells.append('<td class="cell empty"></td>')
        year_total = float(np.prod([1.0 + v for v in months.values()]) - 1.0)
        rows.append(
            f"<tr><th>{y}</th>{''.join(cells)}"
            f'<td class="year" data-value="{year_total!r}">{_pct(year_total)}</td></tr>'
        )
    return (
        f'<table class="heatmap" id="monthly-returns"><thead><tr><th></th>{head}'
        f"<th>Year</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --- tables --------------------------------------------------------------------------------


def _table(
    rows: Sequence[Sequence[str]],
    head: Sequence[str] | None = None,
    *,
    cls: str = "",
    ident: str = "",
) -> str:
    id_attr = f' id="{ident}"' if ident else ""
    cls_attr = f' class="{cls}"' if cls else ""
    out = [f"<table{id_attr}{cls_attr}>"]
    if head:
        out.append(
            "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>"
        )
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _metric_table(r: BacktestResult) -> str:
    m, c = r.metrics, r.currency

    def row(label: str, key: str, text: str) -> list[str]:
        value = m.get(key)
        raw = html.escape(orjson.dumps(value).decode(), quote=True)
        return [
            html.escape(label),
            f'<span class="metric" data-key="{key}" data-value="{raw}">{text}</span>',
        ]

    basis = (
        f"{m['returns']:,} {m['periodicity']} returns"
        + (f" of {_duration(m['interval_s'])}" if m["periodicity"] == "intraday" else "")
        + f"; {m['periods_per_year']:,.0f} periods a year"
    )
    if m["max_drawdown_recovery"]:
        recovery = _when(m["max_drawdown_recovery"])
    else:
        recovery = "not recovered" if m["max_drawdown_peak"] else _DASH
    groups: list[tuple[str, list[list[str]]]] = [
        (
            "Returns",
            [
                row("Total return", "total_return", _pct(m["total_return"])),
                row("Annual return (CAGR)", "annual_return", _pct(m["annual_return"])),
                row("Annual volatility", "annual_volatility", _pct(m["annual_volatility"])),
                row("Sharpe ratio", "sharpe", _num(m["sharpe"])),
                row("Sortino ratio", "sortino", _num(m["sortino"])),
                row("Calmar ratio", "calmar", _num(m["calmar"])),
                ["Computed on", html.escape(basis)],
            ],
        ),
        (
            "Drawdown",
            [
                row("Max drawdown (sampled)", "max_drawdown", _pct(m["max_drawdown"])),
                [
                    "Max drawdown (every tick)",
                    f"{_money(r.max_drawdown, c)} ({r.max_drawdown_pct:.2f}%)",
                ],
                row("Peak", "max_drawdown_peak", _when(m["max_drawdown_peak"])),
                row("Trough", "max_drawdown_trough", _when(m["max_drawdown_trough"])),
                row("Recovery", "max_drawdown_recovery", recovery),
                row("Duration", "max_drawdown_duration_s", _duration(m["max_drawdown_duration_s"])),
                row(
                    "Longest under water", "longest_drawdown_s", _duration(m["longest_drawdown_s"])
                ),
            ],
        ),
        (
            "Trades",
            [
                row("Round trips (closed)", "round_trips", f"{m['round_trips']:,}"),
                row("Open at the end", "open_trips", f"{m['open_trips']:,}"),
                row("Hit rate", "hit_rate", _pct(m["hit_rate"], 1)),
                row("Profit factor", "profit_factor", _num(m["profit_factor"])),
                row("Average win", "average_win", _money(m["average_win"], c)),
                row("Average loss", "average_loss", _money(m["average_loss"], c)),
                row("Traded notional", "traded_notional", _money(m["traded_notional"], c)),
                row("Turnover (x average equity)", "turnover", _num(m["turnover"])),
                row("Turnover a year", "turnover_annual", _num(m["turnover_annual"], 1)),
            ],
        ),
        (
            "Exposure",
            [
                row("Time in market", "time_in_market", _pct(m["time_in_market"], 1)),
                row(
                    "Average gross exposure",
                    "average_gross_exposure",
                    _money(m["average_gross_exposure"], c),
                ),
                row(
                    "Average net exposure",
                    "average_net_exposure",
                    _money(m["average_net_exposure"], c),
                ),
                row(
                    "Average leverage (gross / equity)",
                    "average_leverage",
                    _num(m["average_leverage"], 3),
                ),
            ],
        ),
    ]
    out = []
    for title, rows in groups:
        out.append(f'<div class="group"><h3>{title}</h3>{_table(rows, cls="metrics")}</div>')
    return f'<div class="groups" id="metrics">{"".join(out)}</div>'


def _attribution_tables(r: BacktestResult) -> str:
    att: dict[str, dict[str, dict[str, float]]] = r.metrics.get("attribution", {})
    titles = {
        "strategy": "By strategy",
        "instrument": "By instrument",
        "asset_class": "By asset class",
        "region": "By region",
    }
    out = []
    for key, title in titles.items():
        if key not in att:
            continue
        rows = [
            [
                html.escape(name),
                _num(b["pnl"]),
                _num(b["commission"]),
                f'<span data-net="{b["net_pnl"]!r}">{_num(b["net_pnl"])}</span>',
                _num(b["traded_notional"]),
                f"{int(b['fills']):,}",
            ]
            for name, b in att[key].items()
        ]
        out.append(
            f'<div class="group"><h3>{title}</h3>'
            + _table(
                rows,
                ["", "P&L", "commission", "net P&L", "traded", "fills"],
                cls="num",
                ident=f"attribution-{key.replace('_', '-')}",
            )
            + "</div>"
        )
    return f'<div class="groups">{"".join(out)}</div>'


def _trade_table(log: TradeLog | None, limit: int) -> str:
    trades = log.rows(limit) if log is not None else []
    total = len(log) if log is not None else 0
    rows = []
    for k, t in enumerate(trades, start=1):
        rows.append(
            [
                f"{k}",
                html.escape(t.instrument_id),
                html.escape(t.strategy_id),
                t.side,
                _utc(t.entry_ts, "ms"),
                _price(t.entry_price),
                f"{t.quantity:g}",
                _utc(t.exit_ts, "ms") if t.exit_ts is not None else "open",
                _price(t.exit_price),
                _num(t.pnl),
                _num(t.commission),
                _num(t.net_pnl),
            ]
        )
    head = ["#", "instrument", "strategy", "side", "entry (UTC)", "entry price", "quantity",
            "exit (UTC)", "exit price", "P&L", "commission", "net P&L"]  # fmt: skip
    note = (
        f"<p>The first {len(trades):,} of {total:,} round trips, in order of exit (open ones last)."
        "</p>"
    )
    return (
        note
        + '<div class="scroll">'
        + _table(rows, head, cls="num trades", ident="trades")
        + "</div>"
    )


def _identity_table(r: BacktestResult, ident: RunIdentity) -> str:
    rows = [
        ["configuration", f"<code>{html.escape(ident.config_file)}</code>"],
        ["configuration SHA-256", f"<code>{ident.config_sha256 or _DASH}</code>"],
        ["events SHA-256", f'<code id="events-sha256">{html.escape(r.events_sha256)}</code>'],
        ["data period (UTC)", f"{_when(r.metrics.get('start'))} to {_when(r.metrics.get('end'))}"],
        ["ticks", f"{r.ticks:,} ({r.ticks_rejected:,} rejected)"],
        ["delivery", "one tick at a time" if r.per_tick else f"batched ({r.batches:,} batches)"],
        ["orders / fills", f"{r.orders:,} / {r.fills:,}"],
        ["wall time", f"{r.wall_time_s:.3f} s ({r.ticks_per_s:,.0f} ticks/s)"],
        ["tradingd", html.escape(ident.tradingd_version)],
    ]
    files = [
        [
            f"<code>{html.escape(f.path)}</code>",
            html.escape(f.instrument),
            f"{f.rows:,}",
            f"{f.bytes:,}",
            f"<code>{f.sha256 or 'not hashed'}</code>",
        ]
        for f in ident.data_files
    ]
    stored = [
        [html.escape(d.dataset), html.escape(d.kind), f"<code>{d.content_sha256}</code>"]
        for d in ident.datasets
    ]
    if stored:
        return (
            _table(rows, cls="identity", ident="identity")
            + "<h3>Data (tick store)</h3>"
            + _table(stored, ["dataset", "kind", "content SHA-256"], ident="datasets")
        )
    return (
        _table(rows, cls="identity", ident="identity")
        + "<h3>Data files</h3>"
        + _table(
            files,
            ["path (as configured)", "instrument", "rows", "bytes", "SHA-256"],
            ident="data-files",
        )
    )


# --- the page ------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;
margin:0;background:#f4f6f9}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5dbe3;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 6px;color:#445}
.sub{color:#5a6475;margin:0 0 16px}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.kpi{background:#fff;border:1px solid #d5dbe3;border-radius:6px;padding:8px 12px;min-width:130px}
.kpi b{display:block;font-size:18px}.kpi span{color:#5a6475;font-size:12px}
.pos{color:#1e7a46}.neg{color:#b03a2e}
svg.chart{display:block;background:#fff;border:1px solid #d5dbe3;border-radius:6px;margin:8px 0;
max-width:100%;height:auto}
.frame{fill:none;stroke:#c9d0da}.grid{stroke:#e6eaf0;stroke-width:1}
.ylab{font-size:11px;fill:#5a6475;text-anchor:end}.xlab{font-size:11px;fill:#5a6475;
text-anchor:middle}
.equity{fill:none;stroke:#2b5d9c;stroke-width:1.4}.start{stroke:#9aa5b5;stroke-dasharray:4 3}
.drawdown{fill:#d9817766;stroke:#b03a2e;stroke-width:1}.fill-mark{fill:#d08c2c}
.exposure{stroke:none;opacity:.85}.bar{fill:#6b8fbf}.zero{stroke:#445}
.blab{font-size:12px;text-anchor:end;fill:#333}.bval{font-size:12px;fill:#333}
.legend{font-size:12px;color:#445}.key{margin-right:14px}.swatch{display:inline-block;width:10px;
height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;background:#fff;margin:4px 0}
td,th{border:1px solid #e1e6ed;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}
table.num td{text-align:right}table.num td:first-child,table.num td:nth-child(2),
table.trades td:nth-child(3),table.trades td:nth-child(4){text-align:left}
table.metrics td:last-child{text-align:right}
.groups{display:flex;flex-wrap:wrap;gap:16px}.group{min-width:300px}
.heatmap td.cell{text-align:right;min-width:56px}.heatmap td.empty{background:#fafbfc}
.heatmap td.year{font-weight:600;text-align:right}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.note{color:#5a6475;font-size:12px}
.scroll{overflow-x:auto}table.trades{font-size:12px}table.trades td{white-space:nowrap}
"""


def _kpi(label: str, text: str, sign: float | None = None) -> str:
    cls = "" if sign is None or sign == 0 else (' class="pos"' if sign > 0 else ' class="neg"')
    return f'<div class="kpi"><b{cls}>{text}</b><span>{html.escape(label)}</span></div>'


def _embedded_data(r: BacktestResult, ident: RunIdentity) -> str:
    columns = msgspec.structs.replace(r, equity_curve=None, daily_equity=None, trades=None)
    summary = msgspec.to_builtins(columns)
    for bulky in ("equity_curve", "daily_equity", "trades", "actors"):
        summary.pop(bulky, None)
    data = {"result": summary, "identity": msgspec.to_builtins(ident)}
    text = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    # inside <script> only "</" could end the element early
    return text.replace("</", "<\\/")


def render_report(r: BacktestResult, ident: RunIdentity, *, max_trades: int = MAX_TRADES) -> str:
    """The HTML report of a backtest, as one self-contained page."""
    m, c = r.metrics, r.currency
    config_name = Path(ident.config_file).name
    if not m:
        body = "<p>This run has no portfolio history, so there is nothing to chart.</p>"
    else:
        kpis = "".join(
            [
                _kpi("total return", _pct(m["total_return"]), m["total_return"]),
                _kpi("final equity", _money(r.final_equity, c)),
                _kpi("Sharpe", _num(m["sharpe"])),
                _kpi("max drawdown (sampled)", _pct(m["max_drawdown"])),
                _kpi("round trips", f"{m['round_trips']:,}"),
                _kpi("hit rate", _pct(m["hit_rate"], 1)),
                _kpi("costs", _money(m["costs_total"], c)),
            ]
        )
        exposure_rows = [
            [html.escape(k), _money(v, c)] for k, v in m["exposure_by_asset_class"].items()
        ]
        cost_rows = [[html.escape(k), _money(v, c)] for k, v in m["costs"].items()]
        cost_rows.append(["<b>total</b>", f"<b>{_money(m['costs_total'], c)}</b>"])
        body = f"""
<div class="kpis">{kpis}</div>
<h2>Equity and drawdown</h2>
<p class="note">Equity sampled every {_duration(m["sample_interval_s"])} of data time and
after each of {m["fill_samples"]:,} fills ({m["samples"]:,} samples; dots are fills).
Drawdown is the fall from the running peak of these samples.</p>
{_equity_charts(r)}
<h2>Metrics</h2>
{_metric_table(r)}
<p class="note">Return statistics use simple returns with no risk-free rate, sample
standard deviation (ddof 1), and CAGR for the annual return; an intraday series is
annualised by data time (a trading day of 24 hours), a daily one by trading days.</p>
<h2>Monthly returns</h2>
{_monthly_table(m["monthly_returns"])}
<h2>Exposure by asset class</h2>
{_exposure_chart(r)}
{_table(exposure_rows, ["asset class", "average gross exposure"], ident="exposure-table")}
<h2>Costs</h2>
<p class="note">Commission is charged to the account; the other kinds are measured
against the mid and are already in the fill prices.</p>
{_cost_chart(m["costs"], c)}
{_table(cost_rows, ["kind", c], cls="num", ident="cost-table")}
<h2>Attribution of P&amp;L</h2>
{_attribution_tables(r)}
<h2>Trades</h2>
{_trade_table(r.trades, max_trades)}
"""
    period = f"{_when(m.get('start'))} to {_when(m.get('end'))} UTC" if m else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tradingd backtest: {html.escape(config_name)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>Backtest report: {html.escape(config_name)}</h1>
<p class="sub">{period} &middot; {r.ticks:,} ticks &middot; money in {html.escape(c)}</p>
{body}
<h2>Run identity</h2>
{_identity_table(r, ident)}
<script type="application/json" id="tradingd-data">{_embedded_data(r, ident)}</script>
</main>
</body>
</html>
"""


def write_report(
    path: str | Path, result: BacktestResult, system: System, config_file: str | Path
) -> Path:
    """Write the HTML report of ``result`` (a run of ``system``) to ``path``."""
    out = Path(path)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(result, run_identity(system, config_file))
    out.write_text(text, encoding="utf-8")
    return out


def total_ticks(system: System) -> int | None:
    """Ticks the configured tick files hold within the replay's time span, if it has one
    (for a progress bar); None if unknown."""
    replay = system.config.replay
    start = getattr(replay, "start_ns", None)
    end = getattr(replay, "end_ns", None)
    total = 0
    for qf in [*replay.quotes, *replay.trades]:
        try:
            ts = np.load(system.resolve_path(qf.path), mmap_mode="r", allow_pickle=False)[
                "ts_event"
            ]
        except (OSError, ValueError):
            return None
        lo = 0 if start is None else int(np.searchsorted(ts, start, side="left"))
        hi = len(ts) if end is None else int(np.searchsorted(ts, end, side="left"))
        total += max(0, hi - lo)
    return total or None


def progress_for(system: System, stream: IO[str] | None = None) -> ProgressBar | None:
    """A progress bar on ``stream`` (stderr) if it is a terminal, else None."""
    return ProgressBar.for_stream(stream or sys.stderr, total_ticks(system))
