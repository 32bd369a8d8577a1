"""Fixtures shared by every test.

Random test data: take the ``rand_seed`` fixture (or ``rng``, a ``random.Random`` seeded
with it) instead of an unseeded generator, so a failure can be replayed. The seed is the
same for every test in a run: ``TRADINGD_TEST_SEED`` from the environment, else
``DEFAULT_SEED``. It is printed in the report header, recorded in each test's
``user_properties`` (it lands in ``--junitxml`` output), and shown in the report of a
failed test that used it. To replay a failure::

    TRADINGD_TEST_SEED=<seed from the report> scripts/test path/to/test_x.py -k name

When a test builds its own assertion message around random data, put the seed in it too
(``f"... (rand_seed={rand_seed})"``).

Helpers for polling (``eventually``, ``wait_until``) live in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Generator
from pathlib import Path

import pytest
import structlog

REPO_ROOT = Path(__file__).resolve().parent.parent

# The package is installed editable, and pytest's default import mode puts the repo root on
# sys.path because tests/ is a package; this keeps `import tests.helpers` working under
# `--import-mode=importlib` too.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SEED_ENV = "TRADINGD_TEST_SEED"
DEFAULT_SEED = 20261124


def _run_seed() -> int:
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw, 0)
    except ValueError:
        raise pytest.UsageError(f"{SEED_ENV} must be an integer, got {raw!r}") from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"rand_seed: {_run_seed()} (set {SEED_ENV} to change it)"


@pytest.fixture
def rand_seed(request: pytest.FixtureRequest) -> int:
    """The run's random seed (``TRADINGD_TEST_SEED``, else 20261124)."""
    seed = _run_seed()
    request.node.user_properties.append(("rand_seed", seed))
    return seed


@pytest.fixture
def rng(rand_seed: int) -> random.Random:
    """A ``random.Random`` seeded with ``rand_seed``."""
    return random.Random(rand_seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "rand_seed" in getattr(item, "fixturenames", ()):
        seed = _run_seed()
        replay = f"{SEED_ENV}={seed} scripts/test {item.nodeid}"
        report.sections.append(("rand_seed", f"rand_seed={seed}; replay with: {replay}"))
    return report


@pytest.fixture(autouse=True)
def _fresh_logging() -> Generator[None, None, None]:
    """Each test starts with structlog's defaults: a command run in-process (``main([...])``)
    configures logging for the whole process, with a level filter and cached loggers, and
    a later test that captures logs must not inherit that."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
