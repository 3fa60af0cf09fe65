"""MovieLens 25M (``dataset=ml25m``) and the other CSV releases of GroupLens (ML-20M, ML-32M: the same files).

* ``ratings.csv``: ``userId,movieId,rating,timestamp`` (half stars 0.5..5, seconds since the epoch), sorted by
  user; 25,000,095 lines in ML-25M. Read with pyarrow's multi-threaded CSV parser into 64-bit columns, which
  are then turned into the interactions table without a second copy of the strings.
* ``movies.csv``: ``movieId,title,genres``, UTF-8, a title holding a comma quoted (``"American President, The
  (1995)"``); ``(no genres listed)`` reads as no genre.
* ``tags.csv`` (optional): ``userId,movieId,tag,timestamp``; each movie's `top_tags` most applied tags
  (lower-cased) become its ``tags`` column, ``|``-joined, for item text or the KG.

Users have no attributes in these releases: the users table holds their ids, in ascending order.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_fewshot.config import MovieLens25MReaderConfig
from recsys_fewshot.data.checks import check_ratings, parse_numbers
from recsys_fewshot.data.download import RemoteFile, fetch
from recsys_fewshot.data.recdata import DataError, RecData
from recsys_fewshot.data.sources import Download, Reader, _int_ids, _require, split_title

log = logging.getLogger("recsys_fewshot.data")

# sha256 and size (261,978,986 bytes) from tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt
# (commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c); ISG-Siegen/OmniRec pins the same digest
# (src/omnirec/data_loaders/movielens_large.py); GroupLens's own ml-25m.zip.md5: 6b51fb2759a8657d3bfcbfc42b592ada.
ML25M_FILES = (RemoteFile("https://files.grouplens.org/datasets/movielens/ml-25m.zip",
                          "sha256:8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
                          provides=("ratings.csv", "movies.csv", "tags.csv"), archive=True, strip="ml-25m"),)
ML25M_SCALE = (0.5, 5.0)  # half stars
RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
NO_GENRES = "(no genres listed)"
_CHUNK = 1_000_000  # lines per chunk when the ratings are walked to find a bad line


def _header(path: Path, expected: tuple[str, ...]) -> None:
    with open(_require(path), "rb") as handle:
        first = handle.readline().decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if first.split(",") != list(expected):
        raise DataError(f"{path} line 1: the header should read {','.join(expected)}, got {first[:120]!r}")


def _first_bad_rating_line(path: Path) -> None:
    """Walk the ratings in chunks of strings and raise DataError at the first line that is not four numbers."""
    line = 2
    try:
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=_CHUNK)
        for chunk in chunks:
            for column in RATING_COLUMNS:
                parse_numbers(chunk[column], path, column, line, integer=column != "rating")
            line += len(chunk)
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if found is None:
            raise DataError(f"{path}: not a userId,movieId,rating,timestamp file ({str(err).strip()})") from err
        raise DataError(f"{path} line {found[2]}: expected {found[1]} comma-separated fields "
                        f"({','.join(RATING_COLUMNS)}), got {found[3]}") from err


def read_ratings_csv(path: Path) -> dict[str, np.ndarray]:
    """``ratings.csv`` as int64 userId/movieId/timestamp and float64 rating arrays (DataError at a bad line)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    _header(path, RATING_COLUMNS)
    types = {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 24),
                               convert_options=pacsv.ConvertOptions(column_types=types))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        _first_bad_rating_line(path)
        raise DataError(f"{path}: not a userId,movieId,rating,timestamp file ({err})") from err
    if any(table.column(c).null_count for c in RATING_COLUMNS):  # an empty field reads as null
        _first_bad_rating_line(path)
        raise DataError(f"{path}: a field is empty")
    return {c: table.column(c).to_numpy() for c in RATING_COLUMNS}


def read_movies_csv(path: Path) -> pd.DataFrame:
    _header(path, ("movieId", "title", "genres"))
    try:
        movies = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a movieId,title,genres CSV file in UTF-8 ({err})") from err
    titles, years = zip(*(split_title(t) for t in movies["title"])) if len(movies) else ((), ())
    genres = movies["genres"].str.strip()
    return pd.DataFrame({
        "item": np.arange(len(movies), dtype=np.int64),
        "item_id": movies["movieId"].str.strip().astype(str),
        "title": pd.Series(titles, dtype=str),
        "year": pd.Series(years, dtype=str),
        "genres": genres.where(genres != NO_GENRES, "").astype(str),
    })


def item_codes(lookup: np.ndarray, ids: np.ndarray, path: Path, column: str, table: str, first_line: int) -> np.ndarray:
    """Raw movie ids -> item indices through a dense table (`lookup[id]`, -1 where absent): one pass over
    millions of rows, no hashing. DataError at the first id that is not in `table`."""
    inside = (ids >= 0) & (ids < len(lookup))
    codes = np.where(inside, lookup[np.where(inside, ids, 0)], -1)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        raise DataError(f"{path} line {first_line + i}: {column} {int(ids[i])} is not in {table}")
    return codes


def user_codes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each row's user, the users' raw ids ascending); the release's sort by user makes it one pass."""
    if len(ids) and (np.diff(ids) >= 0).all():
        starts = np.r_[True, ids[1:] != ids[:-1]]
        return np.cumsum(starts) - 1, ids[starts]
    raw, codes = np.unique(ids, return_inverse=True)
    return codes.astype(np.int64), raw


def top_tags(path: Path, lookup: np.ndarray, n_items: int, top: int) -> list[str]:
    """Each item's `top` most applied tags of ``tags.csv`` (lower-cased, ties in order of first use),
    ``|``-joined; "" for an item without tags."""
    _header(path, ("userId", "movieId", "tag", "timestamp"))
    try:
        tags = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["movieId", "tag"], encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not a userId,movieId,tag,timestamp CSV file in UTF-8 ({err})") from err
    movies = parse_numbers(tags["movieId"], path, "movieId", 2, integer=True).astype(np.int64)
    items = item_codes(lookup, movies, path, "movieId", "movies.csv", 2)
    text = tags["tag"].str.strip().str.lower().str.replace("|", "/", regex=False)  # "|" separates the list
    counts = (pd.DataFrame({"item": items, "tag": text})[text.ne("").to_numpy()]
              .groupby(["item", "tag"], sort=False).size().reset_index(name="n"))
    counts = counts.sort_values(["item", "n"], ascending=[True, False], kind="stable").groupby("item").head(top)
    joined = counts.groupby("item", sort=False)["tag"].agg("|".join)
    out = [""] * n_items
    for item, value in joined.items():
        out[int(item)] = value
    return out


def read_ml25m(folder: Path, top: int = 10) -> RecData:
    """A MovieLens CSV release: ratings, movies (title, year, genres, tags) and its users' ids."""
    folder = Path(folder)
    ratings_path, movies_path = folder / "ratings.csv", folder / "movies.csv"
    items = read_movies_csv(movies_path)
    movie_ids = _int_ids(items["item_id"], movies_path, "movieId").to_numpy()
    if len(movie_ids) and movie_ids.min() < 0:
        raise DataError(f"{movies_path}: column 'movieId': negative id {int(movie_ids.min())}")
    lookup = np.full(int(movie_ids.max()) + 1 if len(movie_ids) else 0, -1, dtype=np.int64)
    lookup[movie_ids] = np.arange(len(movie_ids))
    tags_path = folder / "tags.csv"
    items["tags"] = pd.Series(top_tags(tags_path, lookup, len(items), top) if top > 0 and tags_path.is_file()
                              else [""] * len(items), dtype=str)

    columns = read_ratings_csv(ratings_path)
    rating = columns.pop("rating")
    check_ratings(rating, ratings_path, "rating", 2, ML25M_SCALE, " of MovieLens (half stars)")
    off_grid = rating * 2 != np.round(rating * 2)
    if off_grid.any():
        i = int(np.flatnonzero(off_grid)[0])
        raise DataError(f"{ratings_path}: column 'rating' line {i + 2}: {rating[i]:g} is not a half star")
    users, user_ids = user_codes(columns.pop("userId"))
    interactions = pd.DataFrame({
        "user": users,
        "item": item_codes(lookup, columns.pop("movieId"), ratings_path, "movieId", "movies.csv", 2),
        "rating": rating.astype(np.float32),
        "timestamp": np.array(columns.pop("timestamp"), dtype=np.int64),  # a writable copy of Arrow's buffer
    }, copy=False)
    del rating
    user_table = pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int64),
                               "user_id": pd.Series(user_ids.astype(str), dtype=str)})
    log.info("%s: %d ratings, %d users, %d movies", folder, len(interactions), len(user_table), len(items))
    return RecData(folder.name, interactions, items, user_table).validate()


def ensure_ml25m(root: Path) -> Path:
    return fetch("MovieLens 25M", "ml-25m", ML25M_FILES, root)


class MovieLens25M(Reader, MovieLens25MReaderConfig):
    download = Download("ml-25m", ensure_ml25m)

    def read(self, folder: Path) -> RecData:
        return read_ml25m(folder, self.top_tags)

    def items_file(self) -> str:
        return "movies.csv"
