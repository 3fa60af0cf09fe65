"""Readers: one per raw format, each returning a validated `RecData` (raw ids kept as strings).

A reader is a class named by `dataset.reader._target_` (`conf/dataset/<name>.yaml`), its options the node's
other keys; it declares what the build path needs to know (`Reader`: cached or not, how to fetch missing files).

* `MovieLens100K` (``dataset=ml100k``): the MovieLens 100K release (``u.data``, ``u.item``, ``u.genre``,
  ``u.user`` and the ``u1``..``u5``/``ua``/``ub`` base/test pairs as folds); downloaded if missing.
* `Csv` (``dataset=csv``): the plain CSV format of DESIGN.md (``interactions.csv`` or ``train/valid/test.csv``,
  optional ``items.csv`` / ``users.csv``; CTR rows may carry ``label`` and ``history``).
* `AmazonUniSRec` (``dataset=amazon_unisrec``): RecBole/UniSRec atomic files (``{name}.text``,
  ``.item2index``, ``.user2index``, ``.train/.valid/.test.inter``), rebuilt into full chronological sequences.
* `data.tallrec.TallrecJson` (``dataset=tallrec_json``): TALLRec's prompt files.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pandas as pd

from recsys_fewshot.config import AmazonUniSRecReaderConfig, CsvReaderConfig, MovieLens100KReaderConfig
from recsys_fewshot.data.recdata import ABSENT, TEST, TRAIN, VALID, DataError, RecData, remap_ids
from recsys_fewshot.data.download import offline
from recsys_fewshot.data.checks import (FLOAT32_MAX, check_ratings, parse_numbers, rating_scale,
                                        refuse_respelled_ids)

READER_VERSION = "3"  # bump when a reader's output or what it accepts changes (it keys the processed-table cache)
# 3: ratings checked (finite float32, the declared scale), ids respelled across files refused

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_MD5 = "6e47046882bad158b0efbb84cd5cb987"  # of u.data, from the release's provenance notes
ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
ML100K_SCALE = (1.0, 5.0)  # MovieLens ratings are whole stars 1..5
UNISREC_MAX_HISTORY = 50  # UniSRec truncates every history list to its last 50 items
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?P<tail>(?:\s*\([^()]*\))*)\s*$")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    return path


# ---------------------------------------------------------------- MovieLens 100K
def split_title(raw: str) -> tuple[str, str]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", "1995")``; a title without a year keeps ``""``."""
    match = _TITLE_YEAR.match(raw.strip())
    if match is None:
        return raw.strip(), ""
    return match["title"] + match["tail"], match["year"]


def _read_pipe_lines(path: Path, n_fields: int, encoding: str = "latin-1") -> list[list[str]]:
    rows = []
    for number, line in enumerate(_require(path).read_text(encoding=encoding).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != n_fields:
            raise DataError(f"{path} line {number}: expected {n_fields} '|'-separated fields, got {len(fields)}")
        rows.append(fields)
    return rows


def _read_ml_ratings(path: Path) -> pd.DataFrame:
    """A u.data-style file (user, item, rating, timestamp; tab-separated; integer ids)."""
    names = ["user_id", "item_id", "rating", "timestamp"]
    dtypes = {"user_id": np.int64, "item_id": np.int64, "rating": np.float64, "timestamp": np.int64}
    _require(path)
    try:
        table = pd.read_csv(path, sep="\t", header=None, names=names, dtype=dtypes)
        if table["rating"].notna().all():
            return table
    except (ValueError, TypeError, pd.errors.ParserError):
        pass
    # slow path: find the first bad line for the error message
    try:
        raw = pd.read_csv(path, sep="\t", header=None, names=names, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a tab-separated user/item/rating/timestamp file ({err})") from err
    for col in names:
        raw[col] = parse_numbers(raw[col].fillna(""), path, col, 1, integer=col != "rating")
    return raw.astype(dtypes)


def _int_ids(ids: pd.Series, path: Path, column: str) -> pd.Index:
    """MovieLens ids are integers: an index of them (unique) for lookups."""
    index = pd.Index(parse_numbers(ids, path, column, 1, integer=True).astype(np.int64))
    if index.has_duplicates:
        raise DataError(f"{path}: column {column!r} repeats the id {index[index.duplicated()][0]}")
    return index


def read_ml100k(folder: Path) -> RecData:
    """MovieLens 100K: ratings, item/user tables, and every base/test pair present as a fold."""
    folder = Path(folder)
    ratings = _read_ml_ratings(folder / "u.data")
    check_ratings(ratings["rating"].to_numpy(), folder / "u.data", "rating", 1, ML100K_SCALE,
                  " of MovieLens (whole stars)")

    genre_rows = _read_pipe_lines(folder / "u.genre", 2)
    flags = parse_numbers(pd.Series([r[1] for r in genre_rows]), folder / "u.genre", "index", 1, integer=True)
    genre_names = [genre_rows[i][0] for i in np.argsort(flags, kind="stable")]
    item_rows = _read_pipe_lines(folder / "u.item", 5 + len(genre_names))
    titles, years, genres = [], [], []
    for fields in item_rows:
        title, year = split_title(fields[1])
        if not year and re.search(r"\d{4}$", fields[2]):
            year = fields[2][-4:]
        titles.append(title)
        years.append(year)
        genres.append("|".join(g for g, flag in zip(genre_names, fields[5:]) if flag.strip() == "1"))
    items = pd.DataFrame({
        "item": np.arange(len(item_rows), dtype=np.int64),
        "item_id": pd.Series([r[0].strip() for r in item_rows], dtype=str),
        "title": pd.Series(titles, dtype=str),
        "year": pd.Series(years, dtype=str),
        "genres": pd.Series(genres, dtype=str),
        "release_date": pd.Series([r[2] for r in item_rows], dtype=str),
    })

    user_rows = _read_pipe_lines(folder / "u.user", 5)
    users = pd.DataFrame({
        "user": np.arange(len(user_rows), dtype=np.int64),
        "user_id": pd.Series([r[0].strip() for r in user_rows], dtype=str),
        "age": parse_numbers(pd.Series([r[1] for r in user_rows]), folder / "u.user", "age", 1, integer=True),
        "gender": pd.Series([r[2] for r in user_rows], dtype=str),
        "occupation": pd.Series([r[3] for r in user_rows], dtype=str),
        "zip": pd.Series([r[4] for r in user_rows], dtype=str),
    }).astype({"age": np.int64})

    user_index = _int_ids(users["user_id"], folder / "u.user", "user_id")
    item_index = _int_ids(items["item_id"], folder / "u.item", "item_id")
    interactions = pd.DataFrame({
        "user": _lookup(user_index, ratings["user_id"], folder / "u.data", "user_id", "u.user"),
        "item": _lookup(item_index, ratings["item_id"], folder / "u.data", "item_id", "u.item"),
        "rating": ratings["rating"].to_numpy(np.float32),
        "timestamp": ratings["timestamp"].to_numpy(np.int64),
    })
    folds = _ml100k_folds(folder, interactions, user_index, item_index)
    return RecData("ml-100k", interactions, items, users, folds).validate()


def _lookup(index: pd.Index, ids: pd.Series, path: Path, column: str, table: str) -> np.ndarray:
    codes = index.get_indexer(ids)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        value = ids.iloc[i]
        value = value.item() if hasattr(value, "item") else value  # 9999, not np.int64(9999)
        raise DataError(f"{path} line {i + 1}: {column} {value!r} is not in {table}")
    return codes.astype(np.int64)


def _ml100k_folds(folder: Path, interactions: pd.DataFrame, user_index: pd.Index,
                  item_index: pd.Index) -> dict[str, np.ndarray]:
    """Match each existing ``uN.base``/``uN.test`` pair to u.data rows by (user, item)."""
    n_items = len(item_index)
    keys = pd.Index(interactions["user"].to_numpy() * n_items + interactions["item"].to_numpy())
    if keys.has_duplicates:
        raise DataError(f"{folder / 'u.data'}: a (user, item) pair occurs twice, so folds cannot be matched")
    folds = {}
    for name in ML100K_FOLDS:
        base, test = folder / f"{name}.base", folder / f"{name}.test"
        if not (base.is_file() and test.is_file()):
            continue
        codes = np.full(len(interactions), ABSENT, dtype=np.int8)
        for path, code in ((base, TRAIN), (test, TEST)):
            part = _read_ml_ratings(path)
            users = user_index.get_indexer(part["user_id"])
            items = item_index.get_indexer(part["item_id"])
            rows = np.where((users >= 0) & (items >= 0), keys.get_indexer(users * n_items + items), -1)
            if (rows < 0).any():
                i = int(np.flatnonzero(rows < 0)[0])
                raise DataError(f"{path} line {i + 1}: pair (user {part['user_id'].iloc[i]}, item "
                                f"{part['item_id'].iloc[i]}) is not in {folder / 'u.data'}")
            taken = (codes[rows] != ABSENT) | pd.Series(rows).duplicated().to_numpy()
            if taken.any():
                i = int(np.flatnonzero(taken)[0])
                raise DataError(f"{path} line {i + 1}: (user, item) pair already listed in fold {name!r}")
            codes[rows] = code
        folds[name] = codes
    return folds


def download(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (the one network access of this module; tests replace it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        return response.read()


def ensure_ml100k(root: Path) -> Path:
    """``root/"ml-100k"``, downloading and checking the official zip first if it is not there."""
    root = Path(root)
    target = root / "ml-100k"
    if (target / "u.data").is_file():
        return target
    try:
        if offline():
            raise OSError("offline mode (HF_HUB_OFFLINE or RECSYS_FEWSHOT_OFFLINE is set)")
        _install_ml100k(download(ML100K_URL), root, target)
    except (OSError, ValueError, zipfile.BadZipFile, http.client.HTTPException) as err:
        if (target / "u.data").is_file():  # another process installed it meanwhile
            return target
        raise DataError(
            f"MovieLens 100K was expected in {target} (no u.data there) and the download from "
            f"{ML100K_URL} failed: {err}. To install it by hand, unzip ml-100k.zip into {root}, "
            f"or set RECSYS_FEWSHOT_DATA / dataset.root to a folder that holds ml-100k/."
        ) from err
    return target


def _install_ml100k(payload: bytes, root: Path, target: Path) -> None:
    """Extract the zip beside ``target``, check u.data's md5, then rename into place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".ml-100k-download-"))
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            for member in archive.namelist():
                resolved = (tmp / member).resolve()
                if not resolved.is_relative_to(tmp.resolve()):
                    raise ValueError(f"unsafe path {member!r} in the zip")
            archive.extractall(tmp)
        found = sorted(tmp.rglob("u.data"))
        if not found:
            raise ValueError("the zip holds no u.data")
        digest = hashlib.md5(found[0].read_bytes()).hexdigest()  # noqa: S324 (checksum, not security)
        if digest != ML100K_MD5:
            raise ValueError(f"checksum mismatch for u.data: md5 {digest}, expected {ML100K_MD5}")
        found[0].parent.chmod(0o755)  # mkdtemp makes folders private
        os.rename(found[0].parent, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- plain CSV folder
_CSV_OPTIONAL = ("rating", "timestamp", "label", "history")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as CSV with a header line ({err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _id_table(path: Path, key: str, reserved: str) -> pd.DataFrame | None:
    """items.csv / users.csv: the id column plus text/attribute columns (kept as strings)."""
    if not path.is_file():
        return None
    table = _read_csv(path)
    if key not in table.columns:
        raise DataError(f"{path}: missing column {key!r} (has: {', '.join(table.columns)})")
    if reserved in table.columns:
        raise DataError(f"{path}: column {reserved!r} is reserved for the index; rename it")
    table[key] = table[key].str.strip()
    dup = table[key].duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"{path}: column {key!r} line {i + 2}: id {table[key].iloc[i]!r} repeats")
    return table


def _attach(known: pd.Index, table: pd.DataFrame | None, key: str, index_col: str) -> pd.DataFrame:
    """One row per known id, in index order; ids absent from ``table`` get empty strings."""
    out = pd.DataFrame({index_col: np.arange(len(known), dtype=np.int64), key: pd.Series(known, dtype=str)})
    if table is not None:
        extra = table.set_index(key).reindex(known).fillna("").reset_index(drop=True)
        out = pd.concat([out, extra], axis=1)
    return out


def _parse_history(values: pd.Series, path: Path) -> tuple[list[list[str]], list[list[float]]]:
    """``item_id:rating`` tokens of each row (ratings finite in float32); DataError at the first bad token."""
    ids, ratings = [], []
    for i, text in enumerate(values):
        row_ids, row_ratings = [], []
        for token in text.split():
            item_id, sep, rating = token.rpartition(":")
            try:
                value = float(rating)
            except ValueError:
                value = float("nan")
            if not sep or not item_id or not np.isfinite(value) or abs(value) > FLOAT32_MAX:
                raise DataError(f"{path}: column 'history' line {i + 2}: malformed token {token!r} "
                                "(expected item_id:rating, the rating a finite float32)")
            row_ids.append(item_id)
            row_ratings.append(value)
        ids.append(row_ids)
        ratings.append(row_ratings)
    return ids, ratings


def _refuse_repeated_pairs(interactions: pd.DataFrame, parts: list[tuple[Path, int | None]],
                           frames: list[pd.DataFrame]) -> None:
    """Explicit ratings: one row per (user, item) pair across all parts, else DataError at the first repeat.

    Two ratings of one pair are ambiguous, and a pair in two parts (train.csv and test.csv) leaks the
    test rating into training. Implicit rows (no ``rating``: repeat consumption) and CTR samples (a
    ``history`` column: one pair recurs across samples) may repeat and are not checked here.
    """
    from recsys_fewshot.data.protocols import pair_groups

    groups = pair_groups(interactions)
    repeat = pd.Series(groups).duplicated().to_numpy()
    if not repeat.any():
        return
    row = int(np.flatnonzero(repeat)[0])
    first = int(np.flatnonzero(groups == groups[row])[0])
    ends = np.cumsum([len(f) for f in frames])

    def place(r: int) -> tuple[Path, int, pd.DataFrame]:
        k = int(np.searchsorted(ends, r, side="right"))
        return parts[k][0], r - (int(ends[k - 1]) if k else 0) + 2, frames[k]  # line 1 is the header

    path, line, frame = place(row)
    first_path, first_line, _ = place(first)
    where = f"line {first_line}" if first_path == path else f"{first_path} line {first_line}"
    raise DataError(f"{path} line {line}: (user_id {frame['user_id'].iloc[line - 2]!r}, item_id "
                    f"{frame['item_id'].iloc[line - 2]!r}) pair already listed at {where}; explicit ratings "
                    "allow one row per (user, item) pair across all parts (a repeat is an ambiguous rating, "
                    "or leaks between train/valid/test). Remove the repeat, or drop the 'rating' column if "
                    "the data is implicit (repeat consumption)")


def csv_parts(folder: Path) -> None:
    """Refuses a CSV data folder that cannot hold the data (before its files are hashed for the cache)."""
    if not folder.exists():
        raise DataError(f"CSV data folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"CSV data folder {folder} is a file, not a folder (dataset.dir names the folder that "
                        f"holds interactions.csv or train.csv + test.csv)")
    if not ((folder / "train.csv").is_file() and (folder / "test.csv").is_file()) \
            and not (folder / "interactions.csv").is_file():
        raise DataError(f"{folder}: holds neither interactions.csv nor train.csv + test.csv")


def read_csv_dir(folder: Path, scale: tuple[float, float] | None = None) -> RecData:
    """The plain CSV format: ``interactions.csv`` (no fold) or ``train/[valid/]test.csv`` (fold ``given``).

    Ratings must be finite in float32 and, with a `scale` (``dataset.reader.rating_scale``), lie in it. An id
    written two ways (``1`` in items.csv, ``1.0`` in train.csv) is refused naming both files."""
    folder = Path(folder)
    csv_parts(folder)
    if (folder / "train.csv").is_file() and (folder / "test.csv").is_file():
        parts = [(folder / f"{p}.csv", code) for p, code in (("train", TRAIN), ("valid", VALID), ("test", TEST))
                 if (folder / f"{p}.csv").is_file()]
    else:
        parts = [(folder / "interactions.csv", None)]

    frames = []
    for path, _ in parts:
        frame = _read_csv(path)
        for col in ("user_id", "item_id"):
            if col not in frame.columns:
                raise DataError(f"{path}: missing column {col!r} (has: {', '.join(frame.columns)})")
            frame[col] = frame[col].str.strip()
            empty = (frame[col] == "").to_numpy()
            if empty.any():
                raise DataError(f"{path} line {int(np.flatnonzero(empty)[0]) + 2}: column {col!r} is empty")
        frames.append(frame)
    present = [c for c in _CSV_OPTIONAL if c in frames[0].columns]
    for (path, _), frame in zip(parts[1:], frames[1:]):
        for col in _CSV_OPTIONAL:
            if (col in frame.columns) != (col in present):
                raise DataError(f"{path}: column {col!r} is {'missing' if col in present else 'extra'} "
                                f"compared with {parts[0][0].name}")

    items_table = _id_table(folder / "items.csv", "item_id", "item")
    users_table = _id_table(folder / "users.csv", "user_id", "user")
    _refuse_respelled_csv_ids(parts, frames, items_table, users_table, folder)
    item_known = None if items_table is None else pd.Index(items_table["item_id"], dtype=object)
    user_known = None if users_table is None else pd.Index(users_table["user_id"], dtype=object)

    columns: dict[str, list] = {c: [] for c in ("user", "item", "rating", "timestamp", "label")}
    history_ids, history_ratings = [], []
    for (path, _), frame in zip(parts, frames):
        users, user_known = remap_ids(frame["user_id"], user_known)
        items, item_known = remap_ids(frame["item_id"], item_known)
        columns["user"].append(users)
        columns["item"].append(items)
        if "rating" in present:
            ratings = parse_numbers(frame["rating"], path, "rating", 2)
            check_ratings(ratings, path, "rating", 2, scale, " (dataset.reader.rating_scale)")
        columns["rating"].append(ratings if "rating" in present else np.full(len(frame), np.nan))
        ts = (parse_numbers(frame["timestamp"], path, "timestamp", 2, integer=True, allow_empty=True)
              if "timestamp" in present else np.full(len(frame), np.nan))
        columns["timestamp"].append(np.where(np.isfinite(ts), ts, -1))
        if "label" in present:
            label = parse_numbers(frame["label"], path, "label", 2)
            bad = (label != 0) & (label != 1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{path}: column 'label' line {i + 2}: expected 0 or 1, got {frame['label'].iloc[i]!r}")
            columns["label"].append(label)
        if "history" in present:
            ids, ratings = _parse_history(frame["history"], path)
            history_ids.extend(ids)
            history_ratings.extend(ratings)

    interactions = pd.DataFrame({
        "user": np.concatenate(columns["user"]).astype(np.int64),
        "item": np.concatenate(columns["item"]).astype(np.int64),
        "rating": np.concatenate(columns["rating"]).astype(np.float32),
        "timestamp": np.concatenate(columns["timestamp"]).astype(np.int64),
    })
    if "rating" in present and "history" not in present:
        _refuse_repeated_pairs(interactions, parts, frames)
    if "label" in present:
        interactions["label"] = np.concatenate(columns["label"]).astype(np.int8)
    if "history" in present:
        flat, item_known = remap_ids(pd.Series([i for row in history_ids for i in row], dtype=object), item_known)
        bounds = np.cumsum([0] + [len(row) for row in history_ids])
        interactions["history"] = pd.Series(
            [list(zip(flat[a:b].tolist(), r)) for a, b, r in zip(bounds[:-1], bounds[1:], history_ratings)],
            dtype=object)
    folds = {}
    if parts[0][1] is not None:
        folds["given"] = np.concatenate([np.full(len(f), code, dtype=np.int8) for (_, code), f in zip(parts, frames)])
    return RecData(
        folder.name, interactions,
        _attach(item_known, items_table, "item_id", "item"),
        _attach(user_known, users_table, "user_id", "user"),
        folds, implicit="rating" not in present,
    ).validate()


def _refuse_respelled_csv_ids(parts: list[tuple[Path, int | None]], frames: list[pd.DataFrame],
                              items_table: pd.DataFrame | None, users_table: pd.DataFrame | None,
                              folder: Path) -> None:
    """`refuse_respelled_ids` over every file of a CSV folder: item ids (items.csv, the parts, their
    histories) and user ids (users.csv, the parts)."""
    items: list[tuple[Path, pd.Series, np.ndarray]] = []
    users: list[tuple[Path, pd.Series, np.ndarray]] = []
    for table, key, out, name in ((items_table, "item_id", items, "items.csv"),
                                  (users_table, "user_id", users, "users.csv")):
        if table is not None:
            out.append((folder / name, table[key], np.arange(len(table)) + 2))
    for (path, _), frame in zip(parts, frames):
        lines = np.arange(len(frame)) + 2
        items.append((path, frame["item_id"], lines))
        users.append((path, frame["user_id"], lines))
        if "history" in frame.columns:
            tokens = frame["history"].str.split()
            flat = pd.Series([t.rpartition(":")[0] for row in tokens for t in row], dtype=object)
            items.append((path, flat, np.repeat(lines, tokens.str.len().to_numpy())))
    refuse_respelled_ids("item_id", items)
    refuse_respelled_ids("user_id", users)


# ---------------------------------------------------------------- Amazon (UniSRec atomic files)
def _read_id_map(path: Path) -> pd.Index:
    """``{name}.item2index`` / ``.user2index``: raw id, tab, index (no header) -> raw ids in index order."""
    table = pd.read_csv(_require(path), sep="\t", header=None, names=["raw", "index"], dtype=str,
                        keep_default_na=False, quoting=3)
    index = parse_numbers(table["index"], path, "index", 1, integer=True).astype(np.int64)
    if not np.array_equal(np.sort(index), np.arange(len(index))):
        raise DataError(f"{path}: the indices are not 0..{len(index) - 1}, each once")
    raw = np.empty(len(index), dtype=object)
    raw[index] = table["raw"].str.strip().to_numpy()
    return pd.Index(raw, dtype=object)


def _read_inter(path: Path, n_users: int, n_items: int) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    table = pd.read_csv(_require(path), sep="\t", dtype=str, keep_default_na=False, quoting=3)
    expected = ["user_id:token", "item_id_list:token_seq", "item_id:token"]
    if list(table.columns) != expected:
        raise DataError(f"{path}: header should be {' / '.join(expected)}, got {' / '.join(table.columns)}")
    users = parse_numbers(table["user_id:token"], path, "user_id:token", 2, integer=True).astype(np.int64)
    targets = parse_numbers(table["item_id:token"], path, "item_id:token", 2, integer=True).astype(np.int64)
    histories = []
    for line, text in enumerate(table["item_id_list:token_seq"], 2):
        tokens = text.split()
        if not all(t.isdigit() and int(t) < n_items for t in tokens):
            raise DataError(f"{path}: column 'item_id_list:token_seq' line {line}: expected item indices "
                            f"0..{n_items - 1} separated by spaces, got {text[:80]!r}")
        histories.append([int(t) for t in tokens])
    for name, values, bound in (("user_id:token", users, n_users), ("item_id:token", targets, n_items)):
        bad = (values < 0) | (values >= bound)
        if bad.any():
            raise DataError(f"{path}: column {name!r} line {int(np.flatnonzero(bad)[0]) + 2}: "
                            f"index out of range 0..{bound - 1}")
    return users, histories, targets


def read_amazon_unisrec(folder: Path, name: str = "Scientific") -> RecData:
    """UniSRec atomic files -> one row per (user, position) of each full chronological sequence."""
    folder = Path(folder)
    item_ids = _read_id_map(folder / f"{name}.item2index")
    user_ids = _read_id_map(folder / f"{name}.user2index")
    text_path = _require(folder / f"{name}.text")
    texts = pd.read_csv(text_path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    if list(texts.columns) != ["item_id:token", "text:token_seq"]:
        raise DataError(f"{text_path}: header should be item_id:token / text:token_seq")
    refuse_respelled_ids("item id", [(folder / f"{name}.item2index", pd.Series(item_ids, dtype=object),
                                      np.arange(len(item_ids)) + 1),
                                     (text_path, texts["item_id:token"].str.strip(), np.arange(len(texts)) + 2)])
    text_of = dict(zip(texts["item_id:token"].str.strip(), texts["text:token_seq"].str.strip()))

    # rows[user] = [(history length, order key, history, target, fold code)]
    rows: list[list[tuple]] = [[] for _ in range(len(user_ids))]
    for part, code in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        path = folder / f"{name}.{part}.inter"
        users, histories, targets = _read_inter(path, len(user_ids), len(item_ids))
        for line, (u, hist, target) in enumerate(zip(users, histories, targets)):
            # train rows are listed newest first; ties in (truncated) length keep that reversed order
            rows[u].append((code, len(hist), -line, hist, int(target), path))
    user_col, item_col, pos_col, fold_col = [], [], [], []
    for u, user_rows in enumerate(rows):
        if not user_rows:
            continue
        user_rows.sort(key=lambda r: (r[0], r[1], r[2]))
        sequence = list(user_rows[0][3]) + [r[4] for r in user_rows]
        codes = [TRAIN] * len(user_rows[0][3]) + [r[0] for r in user_rows]
        start = len(user_rows[0][3])
        for k, (_, _, _, hist, _, path) in enumerate(user_rows):
            p = start + k
            if hist != sequence[max(0, p - len(hist)):p] or len(hist) != min(p, UNISREC_MAX_HISTORY):
                raise DataError(f"{path}: the history of user {user_ids[u]!r} does not continue the sequence "
                                "rebuilt from the other rows")
        user_col.append(np.full(len(sequence), u, dtype=np.int64))
        item_col.append(np.asarray(sequence, dtype=np.int64))
        pos_col.append(np.arange(len(sequence), dtype=np.int64))
        fold_col.append(np.asarray(codes, dtype=np.int8))
    interactions = pd.DataFrame({
        "user": np.concatenate(user_col),
        "item": np.concatenate(item_col),
        "rating": np.full(sum(map(len, item_col)), np.nan, dtype=np.float32),
        "timestamp": np.concatenate(pos_col),
    })
    items = pd.DataFrame({
        "item": np.arange(len(item_ids), dtype=np.int64),
        "item_id": pd.Series(item_ids, dtype=str),
        "text": pd.Series([text_of.get(i, "") for i in item_ids], dtype=str),
    })
    users = pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int64), "user_id": pd.Series(user_ids, dtype=str)})
    return RecData(name, interactions, items, users, {"given": np.concatenate(fold_col)}, implicit=True).validate()


# ---------------------------------------------------------------- the readers `dataset.reader._target_` names
@dataclass(frozen=True)
class Download:
    """How a reader installs its files when they are missing: into `folder` under the data root."""

    folder: str  # the folder it installs, under the data root (only that dataset.dir is fetched)
    install: Callable[[Path], Path]  # data root -> the installed folder (raises DataError saying what to do)


class Reader:
    """What every reader declares and does; each concrete class adds its schema's fields (its options)."""

    cached: ClassVar[bool] = True  # its tables are memoised in the processed-table cache (data/store.py)
    download: ClassVar[Optional[Download]] = None  # how missing files are fetched; None: they are not

    def read(self, folder: Path) -> RecData:
        raise NotImplementedError

    def check(self, folder: Path) -> None:
        """Refuses a folder that cannot hold this reader's files, before anything reads or hashes it."""

    def items_file(self) -> str:
        """The file the items' text columns come from (named when items lack text), "" when not one file."""
        return ""

    def options(self) -> dict[str, Any]:
        """The reader's options (its fields but `_target_`), as they key the processed-table cache."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_target_"}

    @classmethod
    def identity(cls) -> str:
        """The reader class's import path (it keys the processed-table cache, with `options`)."""
        return f"{cls.__module__}.{cls.__qualname__}"


class MovieLens100K(Reader, MovieLens100KReaderConfig):
    download = Download("ml-100k", lambda root: ensure_ml100k(root))

    def read(self, folder: Path) -> RecData:
        return read_ml100k(folder)

    def items_file(self) -> str:
        return "u.item"


class Csv(Reader, CsvReaderConfig):
    def check(self, folder: Path) -> None:
        csv_parts(Path(folder))

    def read(self, folder: Path) -> RecData:
        return read_csv_dir(folder, rating_scale(self.rating_scale, "dataset.reader.rating_scale"))

    def items_file(self) -> str:
        return "items.csv"


class AmazonUniSRec(Reader, AmazonUniSRecReaderConfig):
    def read(self, folder: Path) -> RecData:
        return read_amazon_unisrec(folder, self.name)

    def items_file(self) -> str:
        return f"{self.name}.text"
