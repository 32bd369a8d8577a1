"""The reference workload's market data: a seeded random walk in EUR/USD.

``rng = numpy.random.default_rng(seed)``; ``steps = rng.integers(-1, 2, size=n)``;
``bid_i = 110_000 + cumsum(steps)``, ``ask_i = bid_i + 2`` in units of 0.00001; bid and
ask sizes 1,000,000; timestamps from 2024-01-01T00:00:00Z, 100 ms apart. Ticks are built
chunk by chunk so that memory stays flat however long the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from engine.ticks import QUOTE_DTYPE, QuoteArray

__all__ = ["REFERENCE_START_NS", "reference_prices", "reference_quotes"]

REFERENCE_START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
REFERENCE_STEP_NS = 100_000_000  # 100 ms


def reference_prices(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``(bid_i, ask_i)``: the integer prices in units of 0.00001."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(-1, 2, size=n)
    bid_i = 110_000 + np.cumsum(steps)
    return bid_i, bid_i + 2


def reference_quotes(n: int, seed: int = 42, chunk_rows: int = 65_536) -> Iterator[QuoteArray]:
    """The workload's quote ticks in chunks of ``chunk_rows`` (instrument 0).

    The steps are drawn chunk by chunk from one generator, which gives the same numbers
    as drawing all ``n`` at once (a test checks it), so memory stays flat.
    """
    rng = np.random.default_rng(seed)
    last = 110_000
    for start in range(0, n, chunk_rows):
        rows = min(chunk_rows, n - start)
        b = last + np.cumsum(rng.integers(-1, 2, size=rows))
        last = int(b[-1])
        out = np.empty(rows, dtype=QUOTE_DTYPE)
        ts = REFERENCE_START_NS + REFERENCE_STEP_NS * np.arange(start, start + rows, dtype=np.int64)
        out["ts_event"] = ts
        out["ts_init"] = ts
        out["instrument"] = 0
        out["flags"] = 0
        out["bid"] = b / 1e5
        out["ask"] = (b + 2) / 1e5
        out["bid_size"] = 1_000_000.0
        out["ask_size"] = 1_000_000.0
        yield out
