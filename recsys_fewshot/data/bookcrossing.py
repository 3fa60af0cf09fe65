"""Book-Crossing (`dataset=bookcrossing`): Ziegler et al.'s BX-CSV-Dump (``BX-Book-Ratings.csv``,
``BX-Books.csv``, ``BX-Users.csv``), read as it is published.

The format: ``;``-separated, every field in double quotes except ``NULL`` (a user's unknown age), a quote inside a
field written ``\\"``, text in Windows-1252 mostly, some fields in UTF-8, HTML entities in titles (``&amp;``),
Windows line endings. How each is read:

* fields are split by Python's csv module (``;``, ``"``, escape ``\\``), so titles with ``;`` or ``\\"`` survive;
* each non-ASCII field is decoded as UTF-8 when its bytes are valid UTF-8, else as Windows-1252, else as
  Latin-1 (which never fails); HTML entities are unescaped (``&amp;`` -> ``&``);
* the known defect of ``BX-Books.csv``: a few rows hold the author inside the title (``Title\\";Author``, one
  field short); they are repaired by cutting the title at ``";``. Any other row of ``BX-Books.csv`` with the
  wrong number of fields is skipped, counted and logged with its line (a book's text is not worth stopping for);
  a malformed row of the ratings or users file is an error naming the file and line.

Ratings: 1..10 are explicit grades; 0 records that the user interacted with the book without grading it.
``dataset.reader.ratings=explicit`` (default) keeps the 1..10 only (the rating task); ``all`` keeps the 0s
too, as interactions with rating 0 (for ranking, or CTR where 0 counts as not liked, as TALLRec's recipe does);
never train a rating model on them. A rating of a book absent from ``BX-Books.csv`` (no title) is dropped
(``dataset.reader.unknown_books=drop``, as TALLRec's and ReLLa's recipes do) or kept without text (``keep``).
The catalogue holds the books that keep a rating, in order of first appearance in the ratings file.
"""

from __future__ import annotations

import csv
import html
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_fewshot.config import BookCrossingReaderConfig
from recsys_fewshot.data.download import RemoteFile, fetch, missing
from recsys_fewshot.data.recdata import DataError, RecData, remap_ids
from recsys_fewshot.data.sources import Download, Reader

log = logging.getLogger("recsys_fewshot.data")

TITLE = "Book-Crossing"
FOLDER = "bookcrossing"
RATINGS, BOOKS, USERS = "BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"
# md5 of the release's zip (26,085,508 bytes), from the DVC record data/BX-CSV-Dump.zip.dvc of the
# PIReTship/bookdata-tools repository (Boise State's book data integration), which downloads this URL
FILES = (RemoteFile("http://www2.informatik.uni-freiburg.de/~cziegler/BX/BX-CSV-Dump.zip",
                    "md5:37d647ee9e18ba134ea6d78ee4fe5292", provides=(RATINGS, BOOKS, USERS), archive=True),)
HEADERS = {RATINGS: ["User-ID", "ISBN", "Book-Rating"],
           BOOKS: ["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher", "Image-URL-S",
                   "Image-URL-M", "Image-URL-L"],
           USERS: ["User-ID", "Location", "Age"]}
RATING_SCALE = (0.0, 10.0)
RATING_MODES = ("explicit", "all")
UNKNOWN_BOOKS = ("drop", "keep")


def decode(field: str) -> str:
    """A field read as Latin-1 (byte for byte) decoded as what it was written in, HTML entities unescaped."""
    if not field.isascii():
        raw = field.encode("latin-1")
        for encoding in ("utf-8", "cp1252"):
            try:
                field = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return html.unescape(field) if "&" in field else field


def read_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """The records of one BX file after its header (fields as read, not decoded) and each one's line number.

    The header must be the release's; a file that is missing or not the release's is named."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    # Latin-1 maps every byte to one character, so nothing fails here and `decode` gets the bytes back
    text = path.read_bytes().decode("latin-1")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"', escapechar="\\",
                        doublequote=False, strict=False)
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise DataError(f"{path} line 1: {err}") from err
    if header != HEADERS[path.name]:
        raise DataError(f"{path} line 1: expected the header {';'.join(HEADERS[path.name])}, got "
                        f"{';'.join(header or [])[:200]!r}")
    rows, lines = [], []
    start = reader.line_num + 1
    try:
        for row in reader:
            if row:
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path} line {start}: {err}") from err
    return rows, lines


def _strict(path: Path, rows: list[list[str]], lines: list[int]) -> None:
    n = len(HEADERS[path.name])
    for row, line in zip(rows, lines):
        if len(row) != n:
            raise DataError(f"{path} line {line}: expected {n} ';'-separated fields, got {len(row)}")


def read_books(path: Path) -> pd.DataFrame:
    """BX-Books.csv -> item_id, title, author, year, publisher (decoded), the known defect repaired."""
    rows, lines = read_rows(path)
    kept, skipped, repaired = [], [], 0
    for row, line in zip(rows, lines):
        if len(row) == 7 and '";' in row[1]:  # "Title\";Author": the author runs inside the title field
            title, _, author = row[1].partition('";')
            row = [row[0], title, author.rstrip('"'), *row[2:]]
            repaired += 1
        if len(row) != 8:
            skipped.append(line)
            continue
        kept.append(row[:5])
    if repaired:
        log.info("%s: %d row(s) with the author inside the title field repaired", path, repaired)
    if skipped:
        log.warning("%s: %d row(s) without the 8 ';'-separated fields skipped (lines %s%s)", path, len(skipped),
                    ", ".join(map(str, skipped[:5])), ", ..." if len(skipped) > 5 else "")
    frame = pd.DataFrame(kept, columns=["item_id", "title", "author", "year", "publisher"], dtype=object)
    for col in frame.columns:
        frame[col] = frame[col].map(decode).str.strip()
    frame.loc[frame["year"] == "0", "year"] = ""  # the release writes 0 for an unknown year
    first = ~frame["item_id"].duplicated()
    if not first.all():
        log.warning("%s: %d repeated ISBN row(s) ignored (the first one kept)", path, int((~first).sum()))
    return frame[first.to_numpy()].reset_index(drop=True)


def read_bookcrossing(folder: Path, ratings: str = "explicit", unknown_books: str = "drop") -> RecData:
    """The three files -> one row per kept rating, in file order (timestamps unknown: -1)."""
    if ratings not in RATING_MODES:
        raise DataError(f"dataset.reader.ratings={ratings!r}: expected one of {', '.join(RATING_MODES)}")
    if unknown_books not in UNKNOWN_BOOKS:
        raise DataError(f"dataset.reader.unknown_books={unknown_books!r}: expected one of "
                        f"{', '.join(UNKNOWN_BOOKS)}")
    folder = Path(folder)
    path = folder / RATINGS
    rows, lines = read_rows(path)
    _strict(path, rows, lines)
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"], dtype=object)
    for col in ("user_id", "item_id"):
        frame[col] = frame[col].map(decode).str.strip()
    line_of = np.asarray(lines, np.int64)  # a record's own line (a quoted field may span lines)
    values = pd.to_numeric(frame["rating"].str.strip(), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < RATING_SCALE[0]) | (values > RATING_SCALE[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column 'Book-Rating' line {line_of[i]}: expected a whole number from 0 (not "
                        f"graded) to 10, got {frame['rating'].iloc[i]!r}")
    frame["rating"] = values.astype(np.float32)
    keep = frame["rating"].to_numpy() > 0 if ratings == "explicit" else np.ones(len(frame), bool)
    books = read_books(folder / BOOKS)
    known = frame["item_id"].isin(books["item_id"]).to_numpy()
    if unknown_books == "drop" and not known.all():
        log.info("%s: %d rating(s) of books absent from %s dropped", path, int((keep & ~known).sum()), BOOKS)
        keep &= known
    frame, line_of = frame[keep].reset_index(drop=True), line_of[keep]
    repeat = frame.duplicated(["user_id", "item_id"]).to_numpy()
    if repeat.any():
        log.warning("%s: %d repeated (User-ID, ISBN) rating(s) dropped, the first kept (line %d repeats one)",
                    path, int(repeat.sum()), int(line_of[repeat][0]))
        frame = frame[~repeat].reset_index(drop=True)

    users_rows, users_lines = read_rows(folder / USERS)
    _strict(folder / USERS, users_rows, users_lines)
    people = pd.DataFrame(users_rows, columns=["user_id", "location", "age"], dtype=object)
    for col in people.columns:
        people[col] = people[col].map(decode).str.strip()
    people.loc[people["age"] == "NULL", "age"] = ""
    people = people.drop_duplicates("user_id")

    user_codes, user_index = remap_ids(frame["user_id"])
    item_codes, item_index = remap_ids(frame["item_id"])
    interactions = pd.DataFrame({"user": user_codes, "item": item_codes,
                                 "rating": frame["rating"].to_numpy(np.float32),
                                 "timestamp": np.full(len(frame), -1, np.int64)})
    items = books.set_index("item_id").reindex(item_index).fillna("").reset_index(names="item_id")
    items.insert(0, "item", np.arange(len(items), dtype=np.int64))
    users = people.set_index("user_id").reindex(user_index).fillna("").reset_index(names="user_id")
    users.insert(0, "user", np.arange(len(users), dtype=np.int64))
    return RecData("bookcrossing", interactions, items.astype({"item_id": str}), users.astype({"user_id": str}),
                   implicit=False).validate()


class BookCrossing(Reader, BookCrossingReaderConfig):
    """`dataset=bookcrossing`; the zip is downloaded (md5-checked) into the data root when the files are missing."""

    download = Download(FOLDER, lambda root: fetch(TITLE, FOLDER, FILES, root))

    def check(self, folder: Path) -> None:
        folder = Path(folder)
        if missing(FILES, folder):  # fetched (or the offline message naming each file) before anything is read
            fetch(TITLE, folder.name, FILES, folder.parent)

    def read(self, folder: Path) -> RecData:
        return read_bookcrossing(folder, self.ratings, self.unknown_books)

    def items_file(self) -> str:
        return BOOKS
