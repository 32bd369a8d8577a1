"""The ``tradingd`` command's entry point.

``tradingd ctl ...`` is what a person types at 3 a.m., often in a loop: it loads only the
control client (about a tenth of a second), not the backtest, data and report machinery
the other commands need (numba, numpy, pyarrow). Everything else goes to
:func:`adapters.cli.main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from adapters import ctl  # noqa: PLC0415 - the point: nothing else is loaded

        parser = argparse.ArgumentParser(prog="tradingd")
        ctl.register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
        parsed = parser.parse_args(args)
        code: int = parsed.func(parsed)
        return code
    from adapters.cli import main as full  # noqa: PLC0415 - see the module docstring

    return full(args)


if __name__ == "__main__":
    sys.exit(main())
