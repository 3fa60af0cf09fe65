"""MovieLens 1M (``dataset=ml1m``): ``ratings.dat``, ``movies.dat`` and ``users.dat`` of the GroupLens release.

Every line holds ``::``-separated fields (ISO-8859-1: movie titles such as "Misérables, Les"):

* ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (whole stars 1..5, seconds since the epoch);
* ``movies.dat``: ``MovieID::Title::Genres`` (title with its year in parentheses, genres ``|``-joined);
* ``users.dat``: ``UserID::Gender::Age::Occupation::Zip-code`` (age and occupation are codes, see README).

The tables come out as ML-100K's (`sources.read_ml100k`): items ``title``/``year``/``genres``, users
``age``/``gender``/``occupation``/``zip`` (the occupation code read as its name). The release has no folds.
Missing files are downloaded (checksum-checked) when ``dataset.dir`` is the default ``ml-1m``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recsys_fewshot.config import MovieLens1MReaderConfig
from recsys_fewshot.data.checks import check_ratings
from recsys_fewshot.data.download import RemoteFile, fetch
from recsys_fewshot.data.recdata import DataError, RecData
from recsys_fewshot.data.sources import ML100K_SCALE, Download, Reader, _int_ids, _lookup, _require, split_title

# sha256 and size (5,917,549 bytes) from tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt
# (commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c); GroupLens's own ml-1m.zip.md5 reads
# c4d9eecfca2ab87c1945afe126590906 (as PaddlePaddle's movielens downloader pins it).
ML1M_FILES = (RemoteFile("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                         "sha256:a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                         provides=("ratings.dat", "movies.dat", "users.dat"), archive=True, strip="ml-1m"),)
ML1M_ENCODING = "latin-1"
# users.dat's occupation codes, as the release's README lists them (0 is "other" or not specified)
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")


def read_dat_numbers(path: Path, names: Sequence[str]) -> np.ndarray:
    """A ``::``-separated file of whole numbers (``ratings.dat``) as an int64 array [lines, len(names)].

    Hand-written rather than ``pd.read_csv(sep="::")``: a separator of two characters sends pandas to its
    Python engine (seconds per million lines). One regular expression checks the whole file, then the C
    parser reads it with the separators turned into tabs; only when the check fails are the lines walked, to
    name the first bad one."""
    raw = _require(path).read_bytes()
    line = rb"[0-9]+" + rb"::[0-9]+" * (len(names) - 1)
    if re.fullmatch(rb"(?:%s\r?\n)*(?:%s\r?)?\s*" % (line, line), raw) is None:
        pattern = re.compile(line)
        for number, text in enumerate(raw.split(b"\n"), 1):
            if not pattern.fullmatch(text.rstrip(b"\r")):
                shown = text.rstrip(b"\r").decode(ML1M_ENCODING)[:80]
                raise DataError(f"{path} line {number}: expected {len(names)} whole numbers separated by '::' "
                                f"({'::'.join(names)}), got {shown!r}")
    if not raw.strip():
        raise DataError(f"{path} is empty")
    table = pd.read_csv(io.BytesIO(raw.replace(b"::", b"\t")), sep="\t", header=None, dtype=np.int64)
    return table.to_numpy()


def read_dat_lines(path: Path, names: Sequence[str]) -> list[list[str]]:
    """A small ``::``-separated text file (``movies.dat``, ``users.dat``): its lines' fields, each line
    holding exactly ``len(names)`` fields (a title may hold a single ``:``, as in "Star Wars: Episode IV")."""
    rows = []
    for number, line in enumerate(_require(path).read_text(encoding=ML1M_ENCODING).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != len(names):
            raise DataError(f"{path} line {number}: expected {len(names)} '::'-separated fields "
                            f"({'::'.join(names)}), got {len(fields)}")
        rows.append(fields)
    if not rows:
        raise DataError(f"{path} is empty")
    return rows


def _codes(values: list[str], path: Path, column: str) -> np.ndarray:
    """Whole numbers of a small file's column; DataError naming the line of the first that is not one."""
    for line, text in enumerate(values, 1):
        if not text.strip().isdigit():
            raise DataError(f"{path}: column {column!r} line {line}: expected a whole number, got {text!r}")
    return np.asarray([int(v) for v in values], dtype=np.int64)


def read_ml1m(folder: Path) -> RecData:
    """MovieLens 1M: ratings, the movies (title, year, genres) and the users (age, gender, occupation, zip)."""
    folder = Path(folder)
    ratings = read_dat_numbers(folder / "ratings.dat", ("UserID", "MovieID", "Rating", "Timestamp"))
    check_ratings(ratings[:, 2].astype(np.float64), folder / "ratings.dat", "Rating", 1, ML100K_SCALE,
                  " of MovieLens (whole stars)")

    movie_path = folder / "movies.dat"
    movies = read_dat_lines(movie_path, ("MovieID", "Title", "Genres"))
    titles, years = zip(*(split_title(m[1]) for m in movies))
    items = pd.DataFrame({
        "item": np.arange(len(movies), dtype=np.int64),
        "item_id": pd.Series([m[0].strip() for m in movies], dtype=str),
        "title": pd.Series(titles, dtype=str),
        "year": pd.Series(years, dtype=str),
        "genres": pd.Series([m[2].strip() for m in movies], dtype=str),
    })

    user_path = folder / "users.dat"
    people = read_dat_lines(user_path, ("UserID", "Gender", "Age", "Occupation", "Zip-code"))
    occupation = _codes([p[3] for p in people], user_path, "Occupation")
    if (occupation >= len(ML1M_OCCUPATIONS)).any():
        i = int(np.flatnonzero(occupation >= len(ML1M_OCCUPATIONS))[0])
        raise DataError(f"{user_path}: column 'Occupation' line {i + 1}: code {occupation[i]} is not one of the "
                        f"release's 0..{len(ML1M_OCCUPATIONS) - 1}")
    users = pd.DataFrame({
        "user": np.arange(len(people), dtype=np.int64),
        "user_id": pd.Series([p[0].strip() for p in people], dtype=str),
        "age": _codes([p[2] for p in people], user_path, "Age"),  # the age group's lower bound (1: under 18)
        "gender": pd.Series([p[1].strip() for p in people], dtype=str),
        "occupation": pd.Series([ML1M_OCCUPATIONS[c] for c in occupation], dtype=str),
        "zip": pd.Series([p[4].strip() for p in people], dtype=str),
    })

    user_index = _int_ids(users["user_id"], user_path, "UserID")
    item_index = _int_ids(items["item_id"], movie_path, "MovieID")
    interactions = pd.DataFrame({
        "user": _lookup(user_index, pd.Series(ratings[:, 0]), folder / "ratings.dat", "UserID", "users.dat"),
        "item": _lookup(item_index, pd.Series(ratings[:, 1]), folder / "ratings.dat", "MovieID", "movies.dat"),
        "rating": ratings[:, 2].astype(np.float32),
        "timestamp": ratings[:, 3],
    })
    return RecData("ml-1m", interactions, items, users).validate()


def ensure_ml1m(root: Path) -> Path:
    return fetch("MovieLens 1M", "ml-1m", ML1M_FILES, root)


class MovieLens1M(Reader, MovieLens1MReaderConfig):
    download = Download("ml-1m", ensure_ml1m)

    def read(self, folder: Path) -> RecData:
        return read_ml1m(folder)

    def items_file(self) -> str:
        return "movies.dat"
