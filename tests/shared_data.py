"""Where the real market data of ``shared/data`` is, for tests that read it.

The data sits beside the repository (``<repo>/../shared/data``), or wherever the environment
variable ``TRADINGD_SHARED_DATA`` points. Its contents are described in its ``SOURCES.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["SHARED_DATA_ENV", "shared_data_dir"]

SHARED_DATA_ENV = "TRADINGD_SHARED_DATA"


def shared_data_dir() -> Path:
    """The shared data directory, or skip the calling test with the reason it is missing."""
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        path = Path(configured).resolve()
        origin = f"${SHARED_DATA_ENV}"
    else:
        path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
        origin = "the repository's ../shared/data"
    if not (path / "SOURCES.md").is_file():
        pytest.skip(
            f"../shared/data not found: {origin} resolves to {path}, which has no SOURCES.md"
        )
    return path
