"""Processed `RecData` tables cached as Hugging Face ``datasets`` (Arrow files, memory-mapped on load).

A cache entry lives in ``<cache_dir>/recdata/<kind>-<key>/`` with ``tables/`` (a DatasetDict of
interactions, items, users; folds are int8 columns ``fold:<name>`` of interactions, a CTR history
is two list columns) and ``meta.json``. The key covers the reader version, the kind, the options
and every input file's name, size and mtime, so editing any raw file gives a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from recsys_fewshot.data import sources
from recsys_fewshot.data.recdata import DataError, RecData

CACHE_FORMAT = "1"  # bump when the on-disk layout below changes
_FOLD = "fold:"
_HIST_ITEM, _HIST_RATING = "history:item", "history:rating"


def cache_key(kind: str, folder: Path, options: dict[str, Any], skip: Path | None = None) -> str:
    """Hash of reader version, kind, options and each input file's (relative name, size, mtime_ns)."""
    folder = Path(folder)
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        stat = path.stat()
        files.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"reader": sources.READER_VERSION, "format": CACHE_FORMAT, "kind": kind,
                       "options": options, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_cached(kind: str, folder: Path, cache_dir: Path | None, **options: Any) -> RecData:
    """`sources.load_source`, memoised on disk under ``cache_dir`` (None: no caching)."""
    folder = Path(folder)
    if cache_dir is None or not folder.is_dir() or kind in sources.UNCACHED_KINDS:
        return sources.load_source(kind, folder, **options)
    root = Path(cache_dir) / "recdata"
    target = root / f"{kind}-{cache_key(kind, folder, options, skip=Path(cache_dir).resolve())}"
    if target.is_dir():
        return _load(target)
    data = sources.load_source(kind, folder, **options)
    _save(data, target)
    return data


@contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """Import ``datasets`` (lazily: it is slow to import) with its progress bars off for the block."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _save(data: RecData, target: Path) -> None:
    """Write into a temp folder beside ``target`` and rename it into place (another writer's copy wins)."""
    import pyarrow as pa

    inter = data.interactions.copy()
    for name, codes in data.folds.items():
        inter[_FOLD + name] = np.asarray(codes, dtype=np.int8)
    history = inter.pop("history") if "history" in inter.columns else None
    table = pa.Table.from_pandas(inter, preserve_index=False)
    if history is not None:
        table = table.append_column(_HIST_ITEM, pa.array([[int(i) for i, _ in h] for h in history],
                                                         type=pa.list_(pa.int64())))
        table = table.append_column(_HIST_RATING, pa.array([[float(r) for _, r in h] for h in history],
                                                           type=pa.list_(pa.float64())))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        with _quiet_datasets() as datasets:
            tables = datasets.DatasetDict({
                "interactions": datasets.Dataset(datasets.table.InMemoryTable(table)),
                "items": datasets.Dataset.from_pandas(data.items, preserve_index=False),
                "users": datasets.Dataset.from_pandas(data.users, preserve_index=False),
            })
            tables.save_to_disk(str(tmp / "tables"))
        meta = {"name": data.name, "implicit": data.implicit, "folds": list(data.folds)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache must stay readable
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(target: Path) -> RecData:
    try:
        meta = json.loads((target / "meta.json").read_text())
        tables = {name: _read_saved_table(target / "tables" / name) for name in ("interactions", "items", "users")}
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cached tables in {target} are unreadable ({err}); delete that folder to rebuild") from err
    inter = tables["interactions"].to_pandas()
    folds = {name: inter.pop(_FOLD + name).to_numpy(np.int8) for name in meta["folds"]}
    if _HIST_ITEM in inter.columns:
        items, ratings = inter.pop(_HIST_ITEM), inter.pop(_HIST_RATING)
        inter["history"] = pd.Series([list(zip(np.asarray(i).tolist(), np.asarray(r).tolist()))
                                      for i, r in zip(items, ratings)], dtype=object, index=inter.index)
    return RecData(meta["name"], inter, tables["items"].to_pandas(), tables["users"].to_pandas(), folds,
                   implicit=meta["implicit"]).validate()


def _read_saved_table(folder: Path) -> Any:
    """One table written by ``Dataset.save_to_disk``, read with pyarrow alone (importing ``datasets`` costs
    about a second of every run's start-up): its Arrow stream files, in the order state.json lists them."""
    import pyarrow as pa

    files = json.loads((folder / "state.json").read_text())["_data_files"]
    parts = []
    for entry in files:
        parts.append(pa.ipc.open_stream(pa.memory_map(str(folder / entry["filename"]))).read_all())
    return pa.concat_tables(parts) if len(parts) != 1 else parts[0]
