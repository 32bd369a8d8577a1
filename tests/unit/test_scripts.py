"""The developer scripts in scripts/ behave as documented.

They run with ``TRADINGD_SKIP_SETUP=1`` so that the suite never creates or reinstalls the
virtualenv, and ``TRADINGD_BIN`` pointing at the directory of the interpreter running the
suite (where pip put ``tradingd``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent


def _run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TRADINGD_SKIP_SETUP="1", TRADINGD_BIN=str(BIN_DIR))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_scripts_test_fails_when_no_tests_ran(tmp_path: Path) -> None:
    # Run from elsewhere: the script must find the repo root by itself.
    proc = _run_script(
        "test",
        "-p",
        "no:cacheprovider",
        "-k",
        "this_matches_no_test_at_all",
        "tests/unit/test_scripts.py",
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"scripts/test passed although nothing ran:\n{output}"
    assert proc.returncode != 5, "pytest's exit status 5 should have been turned into 1"
    assert "no tests ran" in output, output


@pytest.mark.parametrize(("body", "status"), [("pass", 0), ("assert 1 == 2", 1)])
def test_scripts_test_passes_pytest_status_through(tmp_path: Path, body: str, status: int) -> None:
    test_file = tmp_path / "test_tiny.py"
    test_file.write_text(f"def test_tiny():\n    {body}\n", encoding="utf-8")
    proc = _run_script(
        "test", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test_file), cwd=tmp_path
    )
    assert proc.returncode == status, proc.stdout + proc.stderr


def test_scripts_run_help_prints_tradingd_usage(tmp_path: Path) -> None:
    if not (REPO_ROOT / "adapters" / "cli.py").is_file():
        pytest.skip("adapters/cli.py (the tradingd command line) does not exist yet")
    if not (BIN_DIR / "tradingd").is_file():
        pytest.skip(
            f"no tradingd console script next to {sys.executable}: "
            "run the suite with scripts/test (or pip install -e '.[dev]')"
        )
    proc = _run_script("run", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage:" in proc.stdout.lower(), proc.stdout
    assert "tradingd" in proc.stdout, proc.stdout
