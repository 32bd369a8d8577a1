"""``tradingd data``: import market data into the tick store, list it, validate it, export it.

    tradingd data import IMPORT.toml --store DIR     the [[import]] entries of a file
    tradingd data import --shared-data [DIR] --store DIR     everything in shared/data
    tradingd data import --format lean-quotes --path 'tick/ibm/*_quote.zip' --store DIR
    tradingd data info --store DIR [--verify]         datasets, kinds, instruments, rows, hashes
    tradingd data validate IMPORT.toml | --shared-data [DIR] | --format F --path P
                                                      the validation report of source files
    tradingd data validate --store DIR                the reports recorded at import, and a
                                                      fresh check of what is stored
    tradingd data export --store DIR --kind quotes --instrument IBM.US --out ibm.parquet
    tradingd data remove DATASET --store DIR
    tradingd data formats [--shared-config]

``--store`` defaults to ``$TRADINGD_STORE``; ``--shared-data`` to ``$TRADINGD_SHARED_DATA``
or the ``shared/data`` folder beside the repository. Every command takes ``--json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from adapters.importers import (
    FORMATS,
    SHARED_DATA_IMPORTS,
    ImportFile,
    ImportResult,
    ImportSpec,
    load_import_file,
    run_imports,
    shared_data_imports,
)
from adapters.importers.checks import check_bars, check_quotes, check_trades, fmt_ts
from adapters.importers.spec import ValidationPolicy
from adapters.tickstore import TickStore
from engine.errors import ConfigError, DataError

__all__ = ["register"]

STORE_ENV = "TRADINGD_STORE"
SHARED_DATA_ENV = "TRADINGD_SHARED_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_shared_data() -> Path:
    configured = os.environ.get(SHARED_DATA_ENV)
    return Path(configured) if configured else _REPO_ROOT.parent / "shared" / "data"


def _store(args: argparse.Namespace, *, create: bool) -> TickStore:
    path = args.store or os.environ.get(STORE_ENV)
    if not path:
        raise ConfigError(f"no tick store: give --store DIR or set ${STORE_ENV}", path="--store")
    return TickStore(path, create=create)


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _import_file(args: argparse.Namespace) -> tuple[ImportFile, Path]:
    """The import file the arguments describe, and the folder its paths start from."""
    given = [bool(args.file), args.shared_data is not None, bool(args.format)]
    if sum(given) != 1:
        raise ConfigError(
            "give exactly one of: an import file, --shared-data [DIR], or --format and --path",
            path="arguments",
        )
    if args.file:
        path = Path(args.file)
        return load_import_file(path), path.parent
    if args.shared_data is not None:
        root = Path(args.shared_data) if args.shared_data else _default_shared_data()
        if not root.is_dir():
            raise DataError(f"{root}: no such folder (the shared data)")
        return shared_data_imports(root), Path.cwd()
    if not args.path:
        raise ConfigError("--format needs --path", path="--path")
    try:
        spec = ImportSpec(
            format=args.format,
            path=args.path,
            instrument=args.instrument,
            dataset=args.dataset,
            kind=args.kind,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), path="arguments") from None
    return ImportFile(imports=[spec]), Path.cwd()


def _counts_text(counts: dict[str, int]) -> str:
    ok = counts.get("ok", 0)
    rest = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k != "ok")
    return f"ok {ok:,}" + (f"; {rest}" if rest else "")


def _print_results(results: list[ImportResult], *, dry_run: bool, examples: int) -> None:
    total_in = sum(r.rows_in for r in results)
    total_s = sum(r.seconds for r in results)
    for r in results:
        verb = "checked" if dry_run else f"-> {r.rows_written:,} stored"
        print(
            f"[{r.index}] {r.format:<20} {r.dataset:<20} {r.files:>3} files  "
            f"{r.rows_in:>9,} rows {verb}  {r.seconds:6.2f} s  {r.rows_per_s:>11,.0f} rows/s"
        )
        print(f"      {_counts_text(r.counts())}")
        shown = 0
        for unit in r.units:
            for line in unit.rejected_examples:
                if shown >= examples:
                    break
                print(f"      rejected {line}")
                shown += 1
        hidden = sum(sum(v for k, v in u.counts.items() if k not in _KEPT) for u in r.units)
        if hidden > shown and examples:
            print(f"      ... {hidden - shown:,} more rejected rows (see the counts)")
    speed = total_in / max(total_s, 1e-9)
    print(f"total {total_in:,} rows in {total_s:.2f} s ({speed:,.0f} rows/s)")


_KEPT = {
    "ok",
    "locked_allowed",
    "crossed_allowed",
    "repeat",
    "duplicate_quote",
    "suspicious",
    "stale",
}


def _cmd_import(args: argparse.Namespace) -> int:
    config, base = _import_file(args)
    store = None if args.dry_run else _store(args, create=True)
    results = run_imports(store, config, base, dry_run=args.dry_run)
    if args.json:
        _print_json({"imports": [r.to_builtins() for r in results]})
    else:
        _print_results(results, dry_run=args.dry_run, examples=args.examples)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    store = _store(args, create=False)
    rows = store.info()
    datasets = {}
    for name in store.datasets():
        manifest = store.manifest(name)
        entry: dict[str, Any] = {
            "content_sha256": manifest.content_sha256,
            "files": len(manifest.files),
            "imports": len(manifest.imports),
            "references": store.references(name),
            "notes": manifest.notes,
        }
        if args.verify:
            entry["problems"] = store.verify(name)
        datasets[name] = entry
    if args.json:
        _print_json({"datasets": datasets, "series": rows})
        return 0
    for name, entry in datasets.items():
        print(f"{name}  content sha256 {entry['content_sha256']}")
        print(f"  {entry['files']} files, {entry['imports']} imports", end="")
        refs = entry["references"]
        print(f", {len(refs)} reference objects" if refs else "")
        for note in entry["notes"]:
            print(f"  note: {note}")
        if args.verify:
            problems = entry["problems"]
            print("  verify: " + ("every file matches the manifest" if not problems else ""))
            for p in problems:
                print(f"    {p}")
        for r in rows:
            if r["dataset"] != name:
                continue
            first, last = fmt_ts(r["first_ts"]), fmt_ts(r["last_ts"])
            print(
                f"  {r['kind']:<12} {r['instrument']:<16} {r['partitions']:>4} "
                f"{r['partition']}s {r['first_partition']}..{r['last_partition']}  "
                f"{r['rows']:>9,} rows  {r['bytes_per_row']:5.1f} B/row  {first} .. {last}"
            )
    if args.verify and any(e["problems"] for e in datasets.values()):
        return 65
    return 0


def _validate_store(args: argparse.Namespace) -> int:
    """The import-time reports of the manifests, and a fresh check of the stored rows."""
    store = _store(args, create=False)
    policy = ValidationPolicy()
    report: list[dict[str, Any]] = []
    for name in store.datasets():
        manifest = store.manifest(name)
        recorded: dict[tuple[str, str], dict[str, int]] = {}
        examples: dict[tuple[str, str], list[str]] = {}
        for rec in manifest.imports:
            if rec.kind == "reference":
                continue
            key = (rec.kind, rec.instrument)
            acc = recorded.setdefault(key, {})
            for k, v in rec.validation.items():
                acc[k] = acc.get(k, 0) + v
            examples.setdefault(key, []).extend(rec.rejected_examples)
        for kind, inst in sorted(recorded):
            rows = store.read_all(kind, [inst])
            if kind == "quotes":
                fresh = check_quotes(rows, policy, inst)
            elif kind == "trades":
                fresh = check_trades(rows, policy, inst)
            else:
                daily = bool(len(rows)) and bool(np.all(rows["interval_ns"] >= 86_400 * 10**9))
                fresh = check_bars(rows, policy, inst, daily=daily)
            report.append(
                {
                    "dataset": name,
                    "kind": kind,
                    "instrument": inst,
                    "at_import": dict(sorted(recorded[(kind, inst)].items())),
                    "rejected_at_import": examples[(kind, inst)],
                    "stored_now": dict(sorted(fresh.counts.items())),
                }
            )
    if args.json:
        _print_json({"store": report})
        return 0
    for r in report:
        print(f"{r['dataset']} {r['kind']} {r['instrument']}")
        print(f"  at import:  {_counts_text(r['at_import'])}")
        for line in r["rejected_at_import"][: args.examples]:
            print(f"    rejected {line}")
        print(f"  stored now: {_counts_text(r['stored_now'])}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    if not (args.file or args.shared_data is not None or args.format):
        return _validate_store(args)
    config, base = _import_file(args)
    results = run_imports(None, config, base, dry_run=True)
    if args.json:
        _print_json({"imports": [r.to_builtins() for r in results]})
    else:
        _print_results(results, dry_run=True, examples=args.examples)
    return 0


def _time_arg(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not an ISO date or time: {text!r}", path="--start/--end") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000) * 1_000


def _cmd_export(args: argparse.Namespace) -> int:
    store = _store(args, create=False)
    n = store.export(
        args.kind, args.instrument, args.out, _time_arg(args.start), _time_arg(args.end)
    )
    if args.json:
        _print_json({"rows": n, "out": args.out})
    else:
        print(f"{n:,} rows of {args.kind} written to {args.out}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    store = _store(args, create=False)
    store.remove(args.dataset)
    print(f"removed dataset {args.dataset}")
    return 0


def _cmd_formats(args: argparse.Namespace) -> int:
    if args.shared_config:
        sys.stdout.write(SHARED_DATA_IMPORTS)
        return 0
    if args.json:
        _print_json(FORMATS)
        return 0
    for name, what in FORMATS.items():
        print(f"{name:<20} {what}")
    return 0


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="an import file (TOML, [[import]] entries)")
    p.add_argument(
        "--shared-data",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="everything in shared/data (default: $TRADINGD_SHARED_DATA or ../shared/data)",
    )
    p.add_argument("--format", choices=sorted(FORMATS), help="one source: its format")
    p.add_argument("--path", help="one source: a file, folder or glob")
    p.add_argument("--instrument", help="one source: the instrument id (SYMBOL.VENUE)")
    p.add_argument("--dataset", help="one source: the dataset to write into")
    p.add_argument("--kind", help="one source (csv, parquet): quotes, trades or bars.<label>")
    p.add_argument(
        "--examples", type=int, default=20, help="rejected rows to list per entry (default 20)"
    )


def register(sub: Any) -> None:
    """Add the ``data`` command to the ``tradingd`` sub-command parsers."""
    data = sub.add_parser("data", help="import, list, validate and export stored market data")
    cmds = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help=f"the tick store folder (default: ${STORE_ENV})")
        p.add_argument("--json", action="store_true", help="print JSON")

    imp = cmds.add_parser("import", help="import market data files into the store")
    _source_args(imp)
    common(imp)
    imp.add_argument("--dry-run", action="store_true", help="read and validate, write nothing")
    imp.set_defaults(func=_cmd_import)

    info = cmds.add_parser("info", help="what the store holds")
    common(info)
    info.add_argument("--verify", action="store_true", help="re-hash every file")
    info.set_defaults(func=_cmd_info)

    val = cmds.add_parser("validate", help="the validation report of source files, or of the store")
    _source_args(val)
    common(val)
    val.set_defaults(func=_cmd_validate)

    exp = cmds.add_parser("export", help="write stored data to a Parquet file")
    common(exp)
    exp.add_argument("--kind", required=True, help="quotes, trades or bars.<label>")
    exp.add_argument("--instrument", required=True, nargs="+", help="instrument ids")
    exp.add_argument("--out", required=True, help="the Parquet file to write")
    exp.add_argument("--start", help="first time (ISO 8601; UTC if no offset)")
    exp.add_argument("--end", help="end time, excluded")
    exp.set_defaults(func=_cmd_export)

    rem = cmds.add_parser("remove", help="delete a dataset from the store")
    rem.add_argument("dataset")
    rem.add_argument("--store", help=f"the tick store folder (default: ${STORE_ENV})")
    rem.set_defaults(func=_cmd_remove)

    fmts = cmds.add_parser("formats", help="the import formats")
    fmts.add_argument("--json", action="store_true")
    fmts.add_argument(
        "--shared-config", action="store_true", help="print the import file for shared/data"
    )
    fmts.set_defaults(func=_cmd_formats)
