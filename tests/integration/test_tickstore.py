"""The tick store (adapters/tickstore.py): partitions by UTC day, time-ordered merged reads,
merging and duplicate refusal on write, manifests and their hashes, flat memory on a long
read of real quotes, Parquet export, and a backtest replayed from the store giving the same
result as from the bundled tick file."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from adapters.importers import ImportFile, ImportSpec, run_imports
from adapters.tickstore import SourceFile, TickStore
from engine.backtest import load_backtest, run_backtest
from engine.errors import DataError
from engine.replay import merge_quote_files
from engine.ticks import QUOTE_DTYPE, open_quotes
from tests.shared_data import shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000_000_000
T0 = 19_723 * DAY  # 2024-01-01 00:00 UTC
HOUR = 3_600_000_000_000


def quotes(ts: list[int], bid: float) -> np.ndarray:
    out = np.zeros(len(ts), dtype=QUOTE_DTYPE)
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["bid"] = bid + np.arange(len(ts)) * 0.01
    out["ask"] = out["bid"] + 0.01
    out["bid_size"] = out["ask_size"] = 100.0
    return out


@pytest.fixture
def store(tmp_path: Path) -> TickStore:
    return TickStore(tmp_path / "store")


def test_rows_are_split_by_utc_day_and_read_back_merged_in_time_order(store: TickStore) -> None:
    a = quotes([T0 + 23 * HOUR, T0 + DAY + HOUR, T0 + DAY + 2 * HOUR, T0 + 2 * DAY + HOUR], 10.0)
    b = quotes([T0 + 22 * HOUR, T0 + DAY + 2 * HOUR, T0 + 2 * DAY], 20.0)
    assert store.write("quotes", "AAA.SIM", a, dataset="d1") == 4
    store.write("quotes", "BBB.SIM", b, dataset="d1")
    files = sorted(p.name for p in (store.root / "d1/quotes/AAA.SIM").iterdir())
    assert files == ["2024-01-01.npy", "2024-01-02.npy", "2024-01-03.npy"]

    chunks = list(store.read("quotes", ["BBB.SIM", "AAA.SIM"], chunk_rows=2))
    rows = np.concatenate(chunks)
    assert rows["ts_event"].tolist() == sorted(np.concatenate([a, b])["ts_event"].tolist())
    # the instrument column is the position in the list asked for; at equal times (day 2,
    # 02:00) the list's order decides: BBB first
    assert rows["instrument"].tolist() == [0, 1, 1, 0, 1, 0, 1]
    assert rows["bid"].tolist() == [20.0, 10.0, 10.01, 20.01, 10.02, 20.02, 10.03]
    assert all(len(c) <= 2 * 2 for c in chunks)  # at most chunk_rows per instrument
    # a read never spans two days in one chunk
    assert all(len(set((c["ts_event"] // DAY).tolist())) == 1 for c in chunks)

    window = store.read_all("quotes", ["AAA.SIM", "BBB.SIM"], T0 + DAY, T0 + DAY + 2 * HOUR)
    assert window["ts_event"].tolist() == [T0 + DAY + HOUR]
    same = store.read_all("quotes", ["AAA.SIM", "BBB.SIM"])
    expected = np.concatenate(list(merge_quote_files([(a, 0), (b, 1)], chunk_rows=3)))
    assert np.array_equal(same, expected)


def test_a_later_write_merges_into_the_stored_days_in_time_order(store: TickStore) -> None:
    first = quotes([T0 + HOUR, T0 + 3 * HOUR], 10.0)
    second = quotes([T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + DAY], 30.0)
    store.write("quotes", "AAA.SIM", first)
    store.write("quotes", "AAA.SIM", second)
    rows = store.read_all("quotes", ["AAA.SIM"])
    assert rows["ts_event"].tolist() == [
        T0 + HOUR,
        T0 + 2 * HOUR,
        T0 + 3 * HOUR,
        T0 + 3 * HOUR,
        T0 + DAY,
    ]
    # at equal times the stored row comes first
    assert rows["bid"].tolist() == [10.0, 30.0, 10.01, 30.01, 30.02]


def test_an_import_is_never_silently_duplicated(store: TickStore, tmp_path: Path) -> None:
    rows = quotes([T0 + HOUR, T0 + 2 * HOUR], 10.0)
    store.write("quotes", "AAA.SIM", rows)
    with pytest.raises(DataError, match="already imported"):
        store.write("quotes", "AAA.SIM", rows)  # the same array: same content hash
    src = tmp_path / "src.csv"
    src.write_text("anything\n")
    source = SourceFile.of(src)
    with pytest.raises(DataError, match="already stored"):
        store.write("quotes", "AAA.SIM", rows[::-1], sources=[source])  # same rows, new source
    store.write("quotes", "AAA.SIM", quotes([T0 + 5 * HOUR], 11.0), sources=[source])
    with pytest.raises(DataError, match="already imported"):
        store.write("quotes", "AAA.SIM", quotes([T0 + 6 * HOUR], 12.0), sources=[source])
    with pytest.raises(DataError, match="already in dataset 'default'"):
        store.write("quotes", "AAA.SIM", quotes([T0 + 7 * HOUR], 12.0), dataset="other")
    assert len(store.read_all("quotes", ["AAA.SIM"])) == 3


def test_the_manifest_names_every_file_and_its_hash_changes_with_the_data(
    store: TickStore,
) -> None:
    rows = quotes([T0 + HOUR, T0 + DAY + HOUR], 10.0)
    store.write("quotes", "AAA.SIM", rows, dataset="d1", importer="test")
    m = store.manifest("d1")
    assert sorted(m.files) == ["quotes/AAA.SIM/2024-01-01.npy", "quotes/AAA.SIM/2024-01-02.npy"]
    entry = m.files["quotes/AAA.SIM/2024-01-02.npy"]
    assert (entry.rows, entry.first_ts, entry.last_ts) == (1, T0 + DAY + HOUR, T0 + DAY + HOUR)
    path = store.root / "d1/quotes/AAA.SIM/2024-01-02.npy"
    assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [(r.importer, r.rows_written) for r in m.imports] == [("test", 2)]
    before = m.content_sha256
    assert store.content_hashes("quotes", ["AAA.SIM"]) == {"d1": before}
    assert store.verify("d1") == []

    store.write("quotes", "AAA.SIM", quotes([T0 + 2 * HOUR], 11.0), dataset="d1")
    after = TickStore(store.root).manifest("d1").content_sha256
    assert after != before
    # an edited file is found out
    arr = np.load(path)
    arr["bid"][0] += 1.0
    np.save(path, arr)
    assert TickStore(store.root).verify("d1") == [
        "quotes/AAA.SIM/2024-01-02.npy: sha256 differs from the manifest"
    ]
    info = TickStore(store.root).info()
    assert [(i["kind"], i["instrument"], i["partitions"], i["rows"]) for i in info] == [
        ("quotes", "AAA.SIM", 2, 3)
    ]


def test_export_writes_parquet_with_instrument_ids(store: TickStore, tmp_path: Path) -> None:
    store.write("quotes", "AAA.SIM", quotes([T0 + HOUR, T0 + 3 * HOUR], 10.0))
    store.write("quotes", "BBB.SIM", quotes([T0 + 2 * HOUR], 20.0))
    out = tmp_path / "q.parquet"
    assert store.export("quotes", ["AAA.SIM", "BBB.SIM"], out) == 3
    table = pq.read_table(out)
    assert table["instrument"].to_pylist() == ["AAA.SIM", "BBB.SIM", "AAA.SIM"]
    assert table["bid"].to_pylist() == [10.0, 20.0, 10.01]
    assert table["ts_event"].to_pylist() == [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_reading_a_week_of_real_quotes_keeps_memory_flat(tmp_path: Path) -> None:
    data = shared_data_dir()
    store = TickStore(tmp_path / "store")
    spec = ImportSpec(format="lean-quotes", path="lean/Data/equity/usa/tick/*/*_quote.zip")
    run_imports(store, ImportFile(imports=[spec]), data)
    total = sum(i["rows"] for i in store.info())
    assert total > 800_000  # IBM 5 days and BAC 2 days: about 45 MB of quotes
    tracemalloc.start()
    try:
        seen = 0
        last = np.iinfo(np.int64).min
        for chunk in store.read("quotes", ["IBM.US", "BAC.US"], chunk_rows=16_384):
            seen += len(chunk)
            assert int(chunk["ts_event"][0]) >= last
            assert (np.diff(chunk["ts_event"]) >= 0).all()
            last = int(chunk["ts_event"][-1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == total
    # a few chunks of 2 x 16,384 rows (56 bytes each), whatever the length of the period
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.shared_data
def test_a_backtest_replayed_from_the_store_matches_the_one_from_the_tick_file(
    tmp_path: Path,
) -> None:
    data = shared_data_dir()
    store = TickStore(tmp_path / "store")
    spec = ImportSpec(format="binance-capture", path="hftbacktest/examples/spot")
    run_imports(store, ImportFile(imports=[spec]), data)
    stored = store.read_all("quotes", ["BTCUSDT.BINANCE"])
    # the bundled sample is the same capture's quotes, sorted stably by time
    sample = np.array(open_quotes(REPO_ROOT / "data/sample/binance-btcusdt/quotes.npy"))
    assert np.array_equal(stored, sample)

    def run(from_store: bool) -> str:
        system, config = load_backtest(REPO_ROOT / "config/backtest.toml")
        source = (
            store.read("quotes", ["BTCUSDT.BINANCE"], chunk_rows=config.replay.batch_size)
            if from_store
            else None
        )
        return asyncio.run(run_backtest(system, source)).events_sha256

    assert run(from_store=True) == run(from_store=False)
