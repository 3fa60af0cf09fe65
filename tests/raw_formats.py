"""Writers of tiny data sets in the exact formats their publishers release (byte for byte where it matters:
separators, quoting, escapes, encodings, line endings, compression)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fakes import planted_catalogue

# ---------------------------------------------------------------- Book-Crossing (BX-CSV-Dump)
BX_BOOKS_HEADER = ('"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";'
                   '"Image-URL-M";"Image-URL-L"')


def bx_field(text: str, encoding: str = "cp1252") -> bytes:
    """One quoted BX field: inner quotes written \\", & as &amp; (titles), bytes in `encoding`."""
    return b'"' + text.replace('"', '\\"').encode(encoding) + b'"'


def bx_line(fields: Sequence[Optional[str] | bytes]) -> bytes:
    """A BX record: ';'-separated, None written NULL (unquoted), bytes taken as already encoded."""
    out = []
    for f in fields:
        out.append(b"NULL" if f is None else f if isinstance(f, bytes) else bx_field(f))
    return b";".join(out)


def write_bx_file(path: Path, header: str, records: Sequence[bytes]) -> Path:
    """Windows line endings, as the release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\r\n".join([header.encode("ascii"), *records]) + b"\r\n")
    return path


def write_bookcrossing(folder: Path, ratings: Sequence[tuple[str, str, int]],
                       books: Sequence[tuple[str, str, str, str, str]],
                       users: Sequence[tuple[str, str, Optional[str]]], extra_book_lines: Sequence[bytes] = ()) -> Path:
    """BX-Book-Ratings.csv (user, ISBN, rating), BX-Books.csv (ISBN, title, author, year, publisher + three
    image URLs; '&' in text written '&amp;'), BX-Users.csv (user, location, age or None -> NULL)."""
    write_bx_file(folder / "BX-Book-Ratings.csv", '"User-ID";"ISBN";"Book-Rating"',
                  [bx_line([u, i, str(r)]) for u, i, r in ratings])
    url = "http://images.amazon.com/images/P/{}.01.{}.jpg"
    records = [bx_line([isbn, title.replace("&", "&amp;"), author.replace("&", "&amp;"), year, publisher,
                        url.format(isbn, "THUMBZZZ"), url.format(isbn, "MZZZZZZZ"), url.format(isbn, "LZZZZZZZ")])
               for isbn, title, author, year, publisher in books]
    write_bx_file(folder / "BX-Books.csv", BX_BOOKS_HEADER, [*records, *extra_book_lines])
    write_bx_file(folder / "BX-Users.csv", '"User-ID";"Location";"Age"', [bx_line(list(u)) for u in users])
    return folder


def planted_bookcrossing(folder: Path, n_users: int = 40, n_items: int = 30, n_per_user: int = 12,
                         seed: int = 0) -> Path:
    """The planted catalogue of fakes.py as Book-Crossing files: grades 1..5 doubled (2..10), one rating in
    six an implicit 0, ISBN-like ids, some authors with a latin-1 letter."""
    ratings, items, users = planted_catalogue(n_users, n_items, n_per_user, seed)
    rng = np.random.default_rng(seed)
    isbn = {int(i): f"{100000000 + int(i) * 7919:09d}X" for i in items["item_id"]}
    rows = [(str(int(r.user_id) + 1000), isbn[int(r.item_id)], 0 if rng.random() < 1 / 6 else int(r.rating) * 2)
            for r in ratings.itertuples()]
    books = [(isbn[int(r.item_id)], r.title, f"Author Ä{int(r.item_id) % 7}", str(int(r.year)), "Planted Press")
             for r in items.itertuples()]
    people = [(str(int(r.user_id) + 1000), f"city{int(r.user_id)}, state, usa", None if r.age % 3 == 0 else str(r.age))
              for r in users.itertuples()]
    return write_bookcrossing(folder, rows, books, people)


# ---------------------------------------------------------------- Amazon Reviews 2023 (McAuley Lab)
def amazon_review(user_id: str, parent_asin: str, rating: float, timestamp: int, text: str = "Works well.") -> dict:
    """A review line with every field of the release (the reader keeps four)."""
    return {"rating": float(rating), "title": "Five stars", "text": text, "images": [],
            "asin": parent_asin[:-1] + "Z", "parent_asin": parent_asin, "user_id": user_id,
            "timestamp": int(timestamp), "helpful_vote": 0, "verified_purchase": True}


def amazon_meta(parent_asin: str, title: str, categories: Sequence[str] = (), features: Sequence[str] = (),
                description: Sequence[str] = (), store: Optional[str] = "Planted Store") -> dict:
    """An item line with every field of the release's metadata."""
    return {"main_category": "All Beauty", "title": title, "average_rating": 4.1, "rating_number": 12,
            "features": list(features), "description": list(description), "price": None,
            "images": [{"thumb": "https://m.media-amazon.com/images/I/x.jpg", "variant": "MAIN"}], "videos": [],
            "store": store, "categories": list(categories), "details": {"Brand": "Planted", "Item Weight": "1 ounce"},
            "parent_asin": parent_asin, "bought_together": None}


def write_jsonl_gz(path: Path, records: Sequence[dict], lines: Sequence[str] = ()) -> Path:
    """One JSON object per line (plus raw `lines`), gzipped; UTF-8."""
    import gzip
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        for line in lines:
            handle.write(line + "\n")
    return path


def planted_amazon2023(folder: Path, category: str = "All_Beauty", n_users: int = 40, n_items: int = 30,
                       n_per_user: int = 12, seed: int = 0) -> Path:
    """The planted catalogue as <category>.jsonl.gz and meta_<category>.jsonl.gz (ids shaped like the release's:
    28-character user ids, 10-character ASINs; millisecond timestamps)."""
    ratings, items, _ = planted_catalogue(n_users, n_items, n_per_user, seed)
    asin = {int(i): f"B0{int(i):08d}" for i in items["item_id"]}
    reviews = [amazon_review(f"AG{int(r.user_id):026d}", asin[int(r.item_id)], int(r.rating), int(r.timestamp) * 1000)
               for r in ratings.itertuples()]
    meta = [amazon_meta(asin[int(r.item_id)], r.title, ["Beauty", r.genres.split("|")[0]],
                        [f"Made in {int(r.year)}."], ["A planted item."]) for r in items.itertuples()]
    write_jsonl_gz(folder / f"{category}.jsonl.gz", reviews)
    write_jsonl_gz(folder / f"meta_{category}.jsonl.gz", meta)
    return folder
