"""Processed `RecData` tables cached as Hugging Face ``datasets`` (Arrow files, memory-mapped on load).

A cache entry lives in ``<cache_dir>/recdata/<reader>-<key>/`` with ``tables/`` (a DatasetDict of
interactions, items, users; folds are int8 columns ``fold:<name>`` of interactions, a CTR history
is two list columns), ``meta.json`` and ``digests.json`` (every other file's size and content digest,
`cachefiles.digest_file`). The entry is written into a temp folder and renamed into place whole; each read
checks the digests first, and an entry that fails (edited, truncated, unreadable) is named in a warning,
removed and rebuilt from the raw files. The key covers the reader version, the reader (its class and
options: `sources.Reader`), the folder's path and every input file's name, size, mtime, ctime and inode, so
editing any raw file gives a new entry. A reader that declares `cached = False` is read every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from recsys_fewshot import cachefiles
from recsys_fewshot.data import sources
from recsys_fewshot.data.recdata import RecData

log = logging.getLogger(__name__)
CACHE_FORMAT = "3"  # bump when the on-disk layout below or what keys an entry changes (2: the reader's class;
# 3: digests.json)
DIGESTS = "digests.json"
_FOLD = "fold:"
_HIST_ITEM, _HIST_RATING = "history:item", "history:rating"


CACHE_SUBFOLDERS = ("recdata", "embeddings")  # what the caches write under cache_dir


def cache_key(reader: sources.Reader, folder: Path, skip: Path | None = None) -> str:
    """Hash of reader version, the reader's class and options, the folder's resolved path and each input
    file's (relative name, size, mtime_ns, ctime_ns, inode): an edit that keeps size and mtime (``touch -r``, a
    pinned archive date) still changes the ctime, and two copies of a folder never share an entry. `skip` (a
    cache_dir): its cache subfolders are not inputs, should the data folder hold them."""
    folder = Path(folder)
    skipped = [Path(skip).resolve() / name for name in CACHE_SUBFOLDERS] if skip is not None else []
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        real = path.resolve()
        if any(real.is_relative_to(s) for s in skipped):
            continue
        stat = path.stat()
        files.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
                      stat.st_ino])
    blob = json.dumps({"reader": sources.READER_VERSION, "format": CACHE_FORMAT, "class": reader.identity(),
                       "folder": str(folder.resolve()), "options": reader.options(), "files": files},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_cached(reader: sources.Reader, folder: Path, cache_dir: Path | None) -> RecData:
    """`reader.read(folder)`, memoised on disk under ``cache_dir`` (None, or a reader that is not `cached`:
    read every time)."""
    folder = Path(folder)
    reader.check(folder)  # e.g. dataset.dir=/usr: refused before its whole tree is hashed for the cache key
    if cache_dir is None or not folder.is_dir() or not reader.cached:
        return reader.read(folder)
    root = Path(cache_dir) / "recdata"
    prefix = type(reader).__name__.lower()
    target = root / f"{prefix}-{cache_key(reader, folder, skip=Path(cache_dir).resolve())}"
    if target.is_dir():
        try:
            return _load(target)
        except CorruptEntry as err:
            warnings.warn(f"the processed-table cache entry {target} is damaged: {err}; it is removed and "
                          f"rebuilt from {folder}", RuntimeWarning, stacklevel=2)
            _discard(target)
    data = reader.read(folder)
    cachefiles.sweep(root.glob(f".{prefix}-*"))  # temp folders of writers killed before their rename
    try:
        _save(data, target)
    except OSError as err:  # a read-only or full cache: the tables are read, only not memoised
        log.warning("could not cache the processed tables of %s in %s (%s); going on without", folder, root, err)
    return data


class CorruptEntry(Exception):
    """A cache entry whose files do not match their digests, or cannot be read; the message names the file."""


def _discard(target: Path) -> None:
    """Remove a damaged entry: renamed aside first (one atomic step, so that no other run reads it half
    removed), then deleted; a concurrent run that already did either is fine."""
    aside = target.parent / f".{target.name}{cachefiles.writer_tag()}damaged"
    try:
        os.rename(target, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _write_digests(entry: Path) -> None:
    """``digests.json``: the size and content digest of every file of the entry (but itself)."""
    files = {path.relative_to(entry).as_posix(): {"size": path.stat().st_size,
                                                  "digest": cachefiles.digest_file(path)}
             for path in sorted(entry.rglob("*")) if path.is_file()}
    (entry / DIGESTS).write_text(json.dumps({"files": files}, indent=1))


def verify(entry: Path) -> None:
    """Raise `CorruptEntry` naming the first file of `entry` that is missing, of another size, or whose
    bytes do not match the digest recorded when it was written."""
    try:
        listed = json.loads((entry / DIGESTS).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptEntry(f"{entry / DIGESTS} is missing or unreadable ({err})") from err
    for name, record in listed.items():
        path = entry / name
        try:
            size = path.stat().st_size
            if size != record["size"]:
                raise CorruptEntry(f"{path} holds {size} bytes, {record['size']} were written (truncated "
                                   "or edited)")
            if not cachefiles.matches(record["digest"], lambda algorithm: cachefiles.digest_file(path, algorithm)):
                raise CorruptEntry(f"{path} does not match the digest written with it (edited in place)")
        except (OSError, KeyError, TypeError) as err:
            raise CorruptEntry(f"{path} is unreadable ({err})") from err


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
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{cachefiles.writer_tag()}"))
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
        _write_digests(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache must stay readable
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(target: Path) -> RecData:
    """The entry's tables, once `verify` passed; `CorruptEntry` when it does not or they cannot be read."""
    verify(target)
    try:
        meta = json.loads((target / "meta.json").read_text())
        tables = {name: _read_saved_table(target / "tables" / name) for name in ("interactions", "items", "users")}
        inter = tables["interactions"].to_pandas()
        folds = {name: inter.pop(_FOLD + name).to_numpy(np.int8) for name in meta["folds"]}
        if _HIST_ITEM in inter.columns:
            items, ratings = inter.pop(_HIST_ITEM), inter.pop(_HIST_RATING)
            inter["history"] = pd.Series([list(zip(np.asarray(i).tolist(), np.asarray(r).tolist()))
                                          for i, r in zip(items, ratings)], dtype=object, index=inter.index)
        return RecData(meta["name"], inter, tables["items"].to_pandas(), tables["users"].to_pandas(), folds,
                       implicit=meta["implicit"]).validate()
    except (OSError, ValueError, KeyError, TypeError) as err:  # DataError too: tables that break the invariants
        raise CorruptEntry(f"its tables are unreadable ({type(err).__name__}: {err})") from err


def _read_saved_table(folder: Path) -> Any:
    """One table written by ``Dataset.save_to_disk``, read with pyarrow alone (importing ``datasets`` costs
    about a second of every run's start-up): its Arrow stream files, in the order state.json lists them."""
    import pyarrow as pa

    files = json.loads((folder / "state.json").read_text())["_data_files"]
    parts = []
    for entry in files:
        parts.append(pa.ipc.open_stream(pa.memory_map(str(folder / entry["filename"]))).read_all())
    return pa.concat_tables(parts) if len(parts) != 1 else parts[0]
