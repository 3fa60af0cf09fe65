"""Amazon Reviews 2023 by category (`dataset=amazon2023 dataset.category=Books`): the McAuley Lab's release.

Files, in ``dataset.dir`` (default ``amazon-2023``), gzipped or not: ``<Category>.jsonl.gz`` (one review per line:
``user_id``, ``parent_asin``, ``rating`` 1..5, ``timestamp`` in milliseconds, and the review's text, which is not
read) and ``meta_<Category>.jsonl.gz`` (one item per line: ``parent_asin``, ``title``, ``categories``,
``description`` and ``features`` lists, ``store``, ``main_category``, ...). Items are ``parent_asin``s.

Both files are read as a stream of blocks by pyarrow's JSON reader, keeping only the fields above: the reviews'
text never enters memory, so a category of several GB needs memory for the kept columns only (user and item ids
dictionary-encoded per block). A line that is not JSON or lacks a field is named with its file and line (a second,
line-by-line pass finds it).

Then: a user's repeated ratings of one item keep the earliest; ``dataset.k_core=k`` keeps the users and items with
at least k ratings, dropping and recounting until every one left has k (0 or 1: keep all); rows keep file order.
Item text columns: ``title``, ``categories`` (``|``-joined, a list column), ``features`` and ``description`` (their
sentences joined by spaces, each cut at 2,000 characters, without a final full stop), ``store``, ``main_category``;
the default template ``"{title}. Categories: {categories}. Features: {features}. Description: {description}."``
drops the clauses an item leaves empty.

No checksum of these files is published, so they are not downloaded: the message of a missing file names its
address and where to save it.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from recsys_fewshot.config import Amazon2023ReaderConfig
from recsys_fewshot.data.download import offline
from recsys_fewshot.data.recdata import DataError, RecData
from recsys_fewshot.data.sources import Reader

log = logging.getLogger("recsys_fewshot.data")

# the 33 categories and "Unknown" of the release (its all_categories.txt)
CATEGORIES = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Baby_Products",
    "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
    "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Handmade_Products",
    "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen", "Industrial_and_Scientific",
    "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments", "Office_Products",
    "Patio_Lawn_and_Garden", "Pet_Supplies", "Software", "Sports_and_Outdoors", "Subscription_Boxes",
    "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games", "Unknown")
BASE_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw"
RATING_SCALE = (1.0, 5.0)
TEXT_CHARS = 2000  # features / description kept per item (more than an encoder's window)
BLOCK = 16 << 20  # bytes of JSON parsed at a time
REVIEWS = pa.schema([("user_id", pa.string()), ("parent_asin", pa.string()), ("rating", pa.float64()),
                     ("timestamp", pa.int64())])
META = pa.schema([("parent_asin", pa.string()), ("title", pa.string()), ("main_category", pa.string()),
                  ("store", pa.string()), ("categories", pa.list_(pa.string())),
                  ("description", pa.list_(pa.string())), ("features", pa.list_(pa.string()))])


def check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise DataError(f"dataset.category={category!r} is not a category of Amazon Reviews 2023; the categories: "
                        f"{', '.join(CATEGORIES)}")
    return category


def file_names(category: str) -> tuple[str, str]:
    return f"{category}.jsonl.gz", f"meta_{category}.jsonl.gz"


def urls(category: str) -> tuple[str, str]:
    reviews, meta = file_names(category)
    return f"{BASE_URL}/review_categories/{reviews}", f"{BASE_URL}/meta_categories/{meta}"


def find_files(folder: Path, category: str) -> tuple[Path, Path]:
    """The reviews and metadata files of `category` (``.jsonl.gz``, or ``.jsonl`` unpacked); DataError naming each
    missing one, its address and where to save it (the release publishes no checksums: nothing is downloaded)."""
    found, absent = [], []
    for name, url in zip(file_names(check_category(category)), urls(category)):
        path = next((p for p in (folder / name, folder / name.removesuffix(".gz")) if p.is_file()), None)
        found.append(path)
        if path is None:
            absent.append(f"  {url}: save as {folder / name}")
    if absent:
        why = " (downloads are off)" if offline() else ""
        raise DataError(f"Amazon Reviews 2023 ({category}): {len(absent)} file(s) missing under {folder}. They are not "
                        f"downloaded here{why}: the publisher gives no checksums to check them against. Fetch them "
                        "(gzipped, or unpacked as .jsonl):\n" + "\n".join(absent)
                        + "\nor set RECSYS_FEWSHOT_DATA / dataset.root / dataset.dir to a folder that holds them.")
    return found[0], found[1]


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def first_bad_line(path: Path, check: Callable[[dict], Optional[str]]) -> str:
    """The message naming the first line of `path` that is not a JSON object or that `check` refuses (the
    line-by-line pass that names what the block reader only reports as wrong)."""
    number = 0
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    return f"{path} line {number}: not JSON ({err.msg}, column {err.colno})"
                if not isinstance(record, dict):
                    return f"{path} line {number}: not a JSON object"
                problem = check(record)
                if problem:
                    return f"{path} line {number}: {problem}"
    except (OSError, EOFError, UnicodeDecodeError) as err:
        return f"{path}: cannot be read after line {number} ({err})"
    return f"{path}: cannot be read as JSON lines"


def _review_problem(record: dict) -> Optional[str]:
    for key in ("user_id", "parent_asin"):
        if not isinstance(record.get(key), str):
            return f"field {key!r} should be a string, got {record.get(key)!r}"
    rating = record.get("rating")
    number = isinstance(rating, (int, float)) and not isinstance(rating, bool)
    if not number or not RATING_SCALE[0] <= rating <= RATING_SCALE[1]:
        return f"field 'rating' should be a number from 1 to 5, got {rating!r}"
    if not isinstance(record.get("timestamp"), int) or isinstance(record.get("timestamp"), bool):
        return f"field 'timestamp' should be an integer (milliseconds), got {record.get('timestamp')!r}"
    return None


def _meta_problem(record: dict) -> Optional[str]:
    if not isinstance(record.get("parent_asin"), str):
        return f"field 'parent_asin' should be a string, got {record.get('parent_asin')!r}"
    for key, kind in (("title", str), ("main_category", str), ("store", str), ("categories", list),
                      ("description", list), ("features", list)):
        value = record.get(key)
        if value is not None and (not isinstance(value, kind) or
                                  (kind is list and not all(isinstance(v, str) for v in value))):
            return f"field {key!r} should be {'a list of strings' if kind is list else 'a string'}, got {value!r:.80}"
    return None


def stream(path: Path, schema: pa.Schema, check: Callable[[dict], Optional[str]]) -> Iterator[pa.RecordBatch]:
    """The file's records, block by block, only the fields of `schema`; a bad line is named (DataError)."""
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        reader = pj.open_json(pa.input_stream(str(path), compression="detect"),
                              read_options=pj.ReadOptions(block_size=BLOCK), parse_options=options)
        yield from reader
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise DataError(first_bad_line(path, check)) from err
    except (OSError, EOFError) as err:  # e.g. a truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot be read ({err})") from err


def read_reviews(path: Path) -> tuple[np.ndarray, list, np.ndarray, list, np.ndarray, np.ndarray]:
    """(user codes, user ids, item codes, item ids, ratings, timestamps) of every review, in file order."""
    users, items, ratings, times = [], [], [], []
    for batch in stream(path, REVIEWS, _review_problem):
        columns = dict(zip(batch.schema.names, batch.columns))
        if any(c.null_count for c in columns.values()):
            raise DataError(first_bad_line(path, _review_problem))
        rating = columns["rating"].to_numpy()
        if not ((rating >= RATING_SCALE[0]) & (rating <= RATING_SCALE[1])).all():
            raise DataError(first_bad_line(path, _review_problem))
        users.append(pc.dictionary_encode(columns["user_id"]))
        items.append(pc.dictionary_encode(columns["parent_asin"]))
        ratings.append(rating)
        times.append(columns["timestamp"].to_numpy())
    if not users:
        raise DataError(f"{path}: no reviews")
    out = []
    for chunks in (users, items):
        unified = pa.chunked_array(chunks).unify_dictionaries()  # one id table, the indices remapped onto it
        out.append(np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in unified.chunks]).astype(np.int64))
        out.append(unified.chunk(0).dictionary)
    return out[0], out[1], out[2], out[3], np.concatenate(ratings), np.concatenate(times).astype(np.int64)


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept so that every user and item left has at least `k` of them: rows of users or items with fewer
    are dropped and the counts taken again, until nothing changes (k <= 1: every row)."""
    keep = np.ones(len(users), bool)
    if k <= 1 or not len(users):
        return keep
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    while True:
        u_count = np.bincount(users[keep], minlength=n_users)
        i_count = np.bincount(items[keep], minlength=n_items)
        new = keep & (u_count[users] >= k) & (i_count[items] >= k)
        if new.sum() == keep.sum():
            return keep
        keep = new


def _joined(values, sep: str, limit: int = 0) -> str:
    if values is None:
        return ""
    text = sep.join(v.strip() for v in values if v and v.strip())
    return (text[:limit] if limit else text).rstrip(" .")  # the template adds the full stop


def read_meta(path: Path, wanted: pa.Array) -> pd.DataFrame:
    """The metadata rows of the items in `wanted` (first row per item), text columns ready for the template."""
    parts = [batch.filter(pc.is_in(batch.column("parent_asin"), value_set=wanted))
             for batch in stream(path, META, _meta_problem)]
    table = pa.Table.from_batches(parts, schema=META).to_pandas() if parts else pd.DataFrame(columns=META.names)
    table = table.drop_duplicates("parent_asin")
    return pd.DataFrame({
        "item_id": table["parent_asin"].astype(str),
        "title": table["title"].fillna("").astype(str).str.strip(),
        "categories": [_joined(v, "|") for v in table["categories"]],
        "features": [_joined(v, " ", TEXT_CHARS) for v in table["features"]],
        "description": [_joined(v, " ", TEXT_CHARS) for v in table["description"]],
        "store": table["store"].fillna("").astype(str).str.strip(),
        "main_category": table["main_category"].fillna("").astype(str).str.strip(),
    })


def read_amazon2023(folder: Path, category: str = "All_Beauty", k: int = 5) -> RecData:
    folder = Path(folder)
    reviews_path, meta_path = find_files(folder, category)
    users, user_ids, items, item_ids, ratings, times = read_reviews(reviews_path)
    n = len(users)
    # a user's repeated ratings of one item: the earliest kept (ties: the first in the file)
    order = np.lexsort((np.arange(n), times, items, users))
    pair = users[order] * (int(items.max()) + 1) + items[order]
    first = np.ones(n, bool)
    first[order[1:]] = pair[1:] != pair[:-1]
    if not first.all():
        log.info("%s: %d repeated (user, item) rating(s) dropped, the earliest kept", reviews_path, int((~first).sum()))
    keep = first.copy()
    keep[first] = k_core(users[first], items[first], k)
    log.info("%s: %d of %d ratings kept (%d-core)", reviews_path, int(keep.sum()), n, k)
    if not keep.any():
        raise DataError(f"{reviews_path}: no rating is left after dataset.k_core={k}; lower it (0 keeps all)")
    user_codes, user_rows = pd.factorize(users[keep])  # new indices in order of first appearance
    item_codes, item_rows = pd.factorize(items[keep])
    inter = pd.DataFrame({"user": user_codes.astype(np.int64), "item": item_codes.astype(np.int64),
                          "rating": ratings[keep].astype(np.float32), "timestamp": times[keep]})
    kept_items = item_ids.take(pa.array(item_rows))
    meta = read_meta(meta_path, kept_items).set_index("item_id")
    items_table = meta.reindex(kept_items.to_pylist()).fillna("").reset_index(names="item_id")
    items_table.insert(0, "item", np.arange(len(items_table), dtype=np.int64))
    users_table = pd.DataFrame({"user": np.arange(len(user_rows), dtype=np.int64),
                                "user_id": pd.Series(user_ids.take(pa.array(user_rows)).to_pylist(), dtype=str)})
    return RecData(f"amazon2023-{category}", inter, items_table.astype({"item_id": str}), users_table).validate()


class Amazon2023(Reader, Amazon2023ReaderConfig):
    """`dataset=amazon2023`: one category's reviews and metadata (never downloaded: no published checksums)."""

    def check(self, folder: Path) -> None:
        find_files(Path(folder), self.category)

    def read(self, folder: Path) -> RecData:
        return read_amazon2023(folder, self.category, self.k_core)

    def items_file(self) -> str:
        return file_names(self.category)[1]
