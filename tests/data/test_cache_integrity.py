"""The processed-table cache checks its entries: edited, truncated or unreadable files are named in a warning,
the entry is rebuilt from the raw files by itself, and the temp folders of killed writers are swept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fakes import write_csv_dataset
from test_sources import assert_same

from recsys_fewshot import cachefiles
from recsys_fewshot.data import sources, store


def entry_of(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "recdata").iterdir() if not p.name.startswith(".")]
    return entry


def arrow_file(entry: Path, table: str) -> Path:
    (path,) = sorted((entry / "tables" / table).glob("*.arrow"))
    return path


def rewrite_stream(path: Path, change) -> None:
    """Rewrite an Arrow stream file with `change(table)` in place, keeping its size (an edit of values)."""
    before = path.stat().st_size
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    table = change(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    path.write_bytes(sink.getvalue().to_pybytes())
    assert path.stat().st_size == before


def flip_ratings(table: pa.Table) -> pa.Table:
    column = table.schema.get_field_index("rating")
    return table.set_column(column, "rating", pa.array(6.0 - table["rating"].to_numpy(), pa.float32()))


def shift_items(table: pa.Table) -> pa.Table:
    column = table.schema.get_field_index("item")
    items = table["item"].to_numpy()
    return table.set_column(column, "item", pa.array(np.roll(items, 1), pa.int64()))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def edit_meta(path: Path) -> None:
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "implicit": not meta["implicit"]}))


# (what is damaged, how) -> the file the warning names
DAMAGE = {
    "ratings edited in place": (lambda e: arrow_file(e, "interactions"), lambda p: rewrite_stream(p, flip_ratings)),
    "item indices edited in place": (lambda e: arrow_file(e, "interactions"), lambda p: rewrite_stream(p, shift_items)),
    "truncated table": (lambda e: arrow_file(e, "items"), truncate),
    "random bytes, same size": (lambda e: arrow_file(e, "users"), random_bytes),
    "meta.json edited": (lambda e: e / "meta.json", edit_meta),
    "a table file deleted": (lambda e: arrow_file(e, "interactions"), lambda p: p.unlink()),
    "digests.json deleted": (lambda e: e / store.DIGESTS, lambda p: p.unlink()),
    "state.json unreadable": (lambda e: e / "tables" / "items" / "state.json", lambda p: p.write_text("{")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_named_and_rebuilt(tmp_path, damage):
    folder, cache, reader = write_csv_dataset(tmp_path / "raw"), tmp_path / "cache", sources.Csv()
    clean = store.load_cached(reader, folder, cache)
    entry = entry_of(cache)
    locate, corrupt = DAMAGE[damage]
    path = locate(entry)
    corrupt(path)
    with pytest.warns(RuntimeWarning, match=f"{entry}.*{path.name}.* rebuilt from {folder}"):
        rebuilt = store.load_cached(reader, folder, cache)
    assert_same(clean, rebuilt)
    assert_same(sources.read_csv_dir(folder), rebuilt)
    assert entry_of(cache) == entry and not [p for p in (cache / "recdata").iterdir() if p.name.startswith(".")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt whole: read without a warning
        assert_same(clean, store.load_cached(reader, folder, cache))


def test_every_file_of_an_entry_has_a_digest(tmp_path):
    folder, cache = write_csv_dataset(tmp_path / "raw"), tmp_path / "cache"
    store.load_cached(sources.Csv(), folder, cache)
    entry = entry_of(cache)
    listed = json.loads((entry / store.DIGESTS).read_text())["files"]
    on_disk = {p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()} - {store.DIGESTS}
    assert set(listed) == on_disk and any(name.endswith(".arrow") for name in listed)
    for name, record in listed.items():
        assert record["digest"] == cachefiles.digest_file(entry / name)
        assert record["size"] == (entry / name).stat().st_size


def test_temp_folders_of_killed_writers_are_swept(tmp_path):
    folder, cache = write_csv_dataset(tmp_path / "raw"), tmp_path / "cache"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that has exited (and been reaped): no process has it now
    root = cache / "recdata"
    host = cachefiles.writer_tag().split("h")[-1]  # "<host hash>-"
    killed = root / f".csv-abc-w{dead.pid}h{host}x1"
    live = root / f".csv-abc{cachefiles.writer_tag()}x2"
    other_host = root / f".csv-abc-w{dead.pid}h00000000-x3"
    for partial in (killed, live, other_host):
        partial.mkdir(parents=True)
    store.load_cached(sources.Csv(), folder, cache)
    assert not killed.exists() and live.exists() and other_host.exists()  # a young one elsewhere: maybe live
    os.utime(other_host, (0, 0))
    os.utime(live, (0, 0))
    store.load_cached(sources.Csv(), write_csv_dataset(tmp_path / "raw2", n_users=20, n_items=15), cache)
    assert not other_host.exists() and not live.exists()  # older than an hour: swept whoever wrote it
