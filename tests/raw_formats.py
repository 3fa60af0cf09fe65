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


# ---------------------------------------------------------------- MIND (Microsoft News)
def mind_news_line(news_id: str, category: str, subcategory: str, title: str, abstract: str) -> str:
    """A news.tsv line: 8 tab-separated fields, the entity lists as the release writes them (JSON)."""
    entities = ('[{"Label": "Example", "Type": "P", "WikidataId": "Q1", "Confidence": 1.0, '
                '"OccurrenceOffsets": [0], "SurfaceForms": ["Example"]}]')
    url = f"https://assets.msn.com/labs/mind/{news_id[1:]}.html"
    return "\t".join([news_id, category, subcategory, title, abstract, url, entities, "[]"])


def mind_behavior_line(impression_id: int, user_id: str, time: str, history: Sequence[str],
                       shown: Sequence[tuple[str, int]]) -> str:
    """A behaviors.tsv line: impression id, user, time (11/15/2019 8:55:22 AM), history, N1-1 N2-0 ..."""
    return "\t".join([str(impression_id), user_id, time, " ".join(history),
                      " ".join(f"{n}-{label}" for n, label in shown)])


def write_mind_part(folder: Path, news: Sequence[str], behaviors: Sequence[str]) -> Path:
    """news.tsv and behaviors.tsv of one log (UTF-8, LF line endings, no header)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_bytes(("\n".join(news) + "\n").encode("utf-8"))
    (folder / "behaviors.tsv").write_bytes(("\n".join(behaviors) + "\n").encode("utf-8"))
    return folder


def planted_mind(folder: Path, n_users: int = 30, n_news: int = 40, n_impressions: int = 120, seed: int = 0) -> Path:
    """The train and dev logs of MIND-small: each user likes two of the planted genres (a word of every title, and the
    category); clicks follow the likes; every impression shows 5 news."""
    from fakes import FILLER, GENRES

    rng = np.random.default_rng(seed)
    genre = rng.integers(len(GENRES), size=n_news)
    ids = [f"N{10000 + k}" for k in range(n_news)]
    news = [mind_news_line(ids[k], GENRES[genre[k]].lower(), "news" + GENRES[genre[k]].lower(),
                           f"{FILLER[k % len(FILLER)]} {GENRES[genre[k]]} Story",
                           "A planted abstract." if k % 3 else "")
            for k in range(n_news)]
    likes = [set(rng.choice(len(GENRES), 2, replace=False).tolist()) for _ in range(n_users)]
    for part, day, offset in (("train", 11, 0), ("dev", 15, n_impressions)):
        lines = []
        for k in range(n_impressions):
            u = int(rng.integers(n_users))
            liked = [ids[j] for j in range(n_news) if genre[j] in likes[u]]
            history = [liked[(u + j) % len(liked)] for j in range(3)] if liked else []
            shown = rng.choice(n_news, 5, replace=False)
            clicks = [(ids[j], int(genre[j] in likes[u] and rng.random() < 0.8)) for j in shown]
            hour = 1 + k % 12
            lines.append(mind_behavior_line(offset + k + 1, f"U{100 + u}", f"11/{day}/2019 {hour}:05:{k % 60:02d} "
                                            f"{'AM' if k % 2 else 'PM'}", history, clicks))
        # each log's news.tsv holds the news its behaviors show (both: all of them here)
        write_mind_part(folder / part, news, lines)
    return folder
