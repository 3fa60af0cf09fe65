"""Book-Crossing (dataset=bookcrossing) on files written as the BX-CSV-Dump is: ';' between quoted fields, \\"
inside them, &amp; entities, Windows-1252 and UTF-8 bytes, NULL ages, CRLF; the known defect of BX-Books.csv;
bad lines named; the offline message; the download's layout; TALLRec's Book recipe rebuilt; one CLI run."""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raw_formats import bx_field, bx_line, planted_bookcrossing, write_bookcrossing, write_bx_file
from recsys_fewshot.data.bookcrossing import FILES, BookCrossing, read_bookcrossing
from recsys_fewshot.data.recdata import DataError

REPO = Path(__file__).resolve().parents[2]
BOOKS = [("0195153448", 'Classical "Mythology"', "Mark P. O. Morford", "2002", "Oxford University Press"),
         ("0002005018", "Clara Callan & Friends", "Richard Bruce Wright", "2001", "HarperFlamingo Canada"),
         ("0060973129", "Decision in Normandy", "Carlo D'Este", "0", "HarperPerennial"),
         ("0374157065", "Flu", "Gina Kolata", "1999", "Farrar Straus Giroux")]
RATINGS = [("276725", "0195153448", 0), ("276726", "0002005018", 5), ("276727", "0060973129", 9),
           ("276725", "0002005018", 10), ("276726", "9999999999", 7), ("276727", "0374157065", 0)]
USERS = [("276725", "tyler, texas, usa", None), ("276726", "seattle, washington, usa", "23")]


@pytest.fixture()
def bx(tmp_path) -> Path:
    folder = write_bookcrossing(tmp_path / "bookcrossing", RATINGS, BOOKS, USERS)
    books = folder / "BX-Books.csv"
    raw = books.read_bytes()
    # a Windows-1252 author (0xE4: a-umlaut), a UTF-8 publisher, a Windows-1252 apostrophe (0x92)
    raw = raw.replace(b"Gina Kolata", b"Gina K\xe4lata").replace(b"HarperPerennial", "Perennial Édition".encode())
    books.write_bytes(raw.replace(b"Carlo D'Este", b"Carlo D\x92Este"))
    return folder


def test_fields_decoded_known_answers(bx):
    data = read_bookcrossing(bx, ratings="all")
    items = data.items.set_index("item_id")
    assert items.loc["0195153448", "title"] == 'Classical "Mythology"'  # \" unescaped
    assert items.loc["0002005018", "title"] == "Clara Callan & Friends"  # &amp; unescaped
    assert items.loc["0374157065", "author"] == "Gina Kälata"  # a Windows-1252 / Latin-1 byte
    assert items.loc["0060973129", "publisher"] == "Perennial Édition"  # a UTF-8 field
    assert items.loc["0060973129", "author"] == "Carlo D\u2019Este"  # 0x92 in Windows-1252
    assert items.loc["0060973129", "year"] == ""  # the release's 0 for an unknown year
    users = data.users.set_index("user_id")
    assert users.loc["276725", "age"] == "" and users.loc["276726", "age"] == "23"
    assert users.loc["276727", "location"] == ""  # rated, absent from BX-Users.csv
    # all: the 0s kept with rating 0; the rating of an ISBN absent from BX-Books.csv dropped
    raw = list(zip(data.user_raw_ids()[data.interactions["user"]], data.item_raw_ids()[data.interactions["item"]],
                   data.interactions["rating"]))
    assert raw == [(u, i, float(r)) for u, i, r in RATINGS if i != "9999999999"]
    explicit = read_bookcrossing(bx)
    assert explicit.interactions["rating"].tolist() == [5.0, 9.0, 10.0]
    assert set(explicit.item_raw_ids()) == {"0002005018", "0060973129"}  # books that keep a rating
    kept = read_bookcrossing(bx, unknown_books="keep")
    assert kept.items.set_index("item_id").loc["9999999999", "title"] == ""


def test_known_defect_repaired_and_other_bad_book_rows_skipped_with_their_line(tmp_path, caplog):
    defect = b";".join([bx_field("0789466953"), b'"DK Readers: Creating the X-Men (Level 4)\\";James Buckley\\""',
                        bx_field("2000"), bx_field("DK Publishing Inc"), bx_field("a"), bx_field("b"), bx_field("c")])
    short = bx_line(["0000000001", "Only a title"])
    folder = write_bookcrossing(tmp_path / "bx", [("1", "0789466953", 8), ("1", "0000000001", 8)], BOOKS[:1],
                                [("1", "x", None)], extra_book_lines=[defect, short])
    with caplog.at_level(logging.INFO, logger="recsys_fewshot.data"):
        data = read_bookcrossing(folder, unknown_books="keep")
    item = data.items.set_index("item_id").loc["0789466953"]
    assert (item["title"], item["author"], item["year"]) == ("DK Readers: Creating the X-Men (Level 4)",
                                                            "James Buckley", "2000")
    assert f"{folder / 'BX-Books.csv'}: 1 row(s) without the 8 ';'-separated fields skipped (lines 4)" in caplog.text
    assert data.items.set_index("item_id").loc["0000000001", "title"] == ""


@pytest.mark.parametrize("line,message", [
    (b'"1";"0195153448"', r"BX-Book-Ratings.csv line 3: expected 3 ';'-separated fields, got 2"),
    (b'"1";"0195153448";"11"', r"BX-Book-Ratings.csv: column 'Book-Rating' line 3: expected a whole number .*'11'"),
    (b'"1";"0195153448";"x"', r"BX-Book-Ratings.csv: column 'Book-Rating' line 3: .*'x'"),
])
def test_bad_rating_lines_named(tmp_path, line, message):
    folder = write_bookcrossing(tmp_path / "bx", [("1", "0195153448", 5)], BOOKS[:1], [("1", "x", None)])
    path = folder / "BX-Book-Ratings.csv"
    path.write_bytes(path.read_bytes() + line + b"\r\n")
    with pytest.raises(DataError, match=message):
        read_bookcrossing(folder)


def test_a_file_that_is_not_the_release_is_named(tmp_path):
    folder = write_bookcrossing(tmp_path / "bx", [("1", "0195153448", 5)], BOOKS[:1], [("1", "x", None)])
    write_bx_file(folder / "BX-Users.csv", '"User";"Location"', [b'"1";"x"'])
    with pytest.raises(DataError, match=r"BX-Users.csv line 1: expected the header User-ID;Location;Age"):
        read_bookcrossing(folder)


def test_offline_message_names_the_zip_its_files_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        BookCrossing().check(tmp_path / "bookcrossing")
    text = str(err.value)
    assert "http://www2.informatik.uni-freiburg.de/~cziegler/BX/BX-CSV-Dump.zip" in text
    assert str(tmp_path / "bookcrossing") in text
    assert all(name in text for name in ("BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"))


def test_the_download_unpacks_the_release_layout(tmp_path, monkeypatch):
    """The declared layout (the three files at the zip's top level) against a zip built that way, served over
    HTTP on localhost (the real address cannot be reached from the tests)."""
    import functools
    import http.server
    import threading
    import zipfile

    from recsys_fewshot.data.download import RemoteFile, fetch

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RECSYS_FEWSHOT_OFFLINE", raising=False)
    source = write_bookcrossing(tmp_path / "src", RATINGS, BOOKS, USERS)
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "BX-CSV-Dump.zip", "w") as archive:
        for name in ("BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"):
            archive.write(source / name, name)
    payload = (www / "BX-CSV-Dump.zip").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        real = FILES[0]
        local = RemoteFile(f"http://127.0.0.1:{server.server_address[1]}/BX-CSV-Dump.zip",
                           "md5:" + hashlib.md5(payload).hexdigest(), provides=real.provides, archive=real.archive,
                           strip=real.strip)
        target = fetch("Book-Crossing", "bookcrossing", [local], tmp_path / "root")
    finally:
        server.shutdown()
        server.server_close()
    assert read_bookcrossing(target, ratings="all").interactions.equals(
        read_bookcrossing(source, ratings="all").interactions)


# ---------------------------------------------------------------- TALLRec's Book recipe
def tallrec_book_oracle(ratings: list[tuple[str, str, int]], books: set[str]) -> dict:
    """TALLRec's preprocess_book.py, step by step: the ratings inner-merged with the books (pandas before 2.2
    grouped the merge's rows by ISBN, in order of the ISBN's first row), each user's list in that order, users
    with more than 3 ratings, random.seed(42) then random.shuffle of the list, the last item the target, the first
    10 of the others the history, liked = rating > 5. {user: (target, label, [(isbn, liked)])}."""
    merged = [r for r in ratings if r[1] in books]
    first: dict[str, int] = {}
    for k, (_, isbn, _) in enumerate(merged):
        first.setdefault(isbn, k)
    lists: dict[str, list] = {}
    for k, (user, isbn, rating) in sorted(enumerate(merged), key=lambda kr: (first[kr[1][1]], kr[0])):
        lists.setdefault(user, []).append((isbn, rating))
    out = {}
    for user, items in lists.items():
        if len(items) <= 3:
            continue
        random.seed(42)
        random.shuffle(items)
        out[user] = (items[-1][0], int(items[-1][1] > 5), [(i, int(r > 5)) for i, r in items[:-1][:10]])
    return out


def test_tallrec_book_recipe_rebuilt(tmp_path):
    from hydra.utils import instantiate

    from inprocess import compose
    from recsys_fewshot import build

    rng = np.random.default_rng(3)
    isbns = [f"{k:09d}X" for k in range(30)]
    books = [(i, f"Book {k}", f"Author {k % 5}", "2000", "P") for k, i in enumerate(isbns[:28])]  # 2 unknown
    ratings, seen = [], set()
    for _ in range(400):  # 40 users, 1 to 16 ratings each, interleaved in the file
        user, isbn = f"u{rng.integers(40)}", isbns[int(rng.integers(30))]
        if (user, isbn) not in seen:
            seen.add((user, isbn))
            ratings.append((user, isbn, int(rng.choice([0, 0, 3, 5, 6, 8, 10]))))
    write_bookcrossing(tmp_path / "bookcrossing", ratings, books, [(f"u{k}", "x", None) for k in range(40)])
    cfg = compose("protocol=tallrec_book_rebuilt", "split.n_shots=0", f"dataset.root={tmp_path}",
                  f"cache_dir={tmp_path / 'cache'}")
    data = build.load_data(cfg)
    split = instantiate(cfg.split)(data)
    rebuilt = {}
    for frame in (split.train[~split.train["augmented"]], split.valid, split.test):
        for row in frame.itertuples():
            user = str(data.user_raw_ids()[row.user])
            assert user not in rebuilt  # one sample per user
            rebuilt[user] = (str(data.item_raw_ids()[row.item]), int(row.label),
                             [(str(data.item_raw_ids()[i]), int(v)) for i, v in row.history])
    expected = tallrec_book_oracle(ratings, {b[0] for b in books})
    assert len(expected) > 20 and any(len(h) == 10 for _, _, h in expected.values())
    assert rebuilt == expected
    assert split.sizes()["valid"] == round(len(expected) * 0.9) - round(len(expected) * 0.8)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r'[\\"]', "", html.unescape(text))).strip().lower()


@pytest.mark.realdata
def test_real_rebuild_matches_tallrec_released_valid_file():
    """Each sample of TALLRec's released Book valid.json found among the samples rebuilt from the BX-CSV-Dump
    (TALLRec's user cut is unseeded, so every rebuilt sample is a candidate), by the text of its target and of
    its liked and disliked history items."""
    from recsys_fewshot.data.ctr_samples import build_samples
    from recsys_fewshot.data.tallrec import read_tallrec_json

    root = Path(os.environ.get("RECSYS_FEWSHOT_DATA", "/nonexistent"))
    needed = (root / "bookcrossing" / "BX-Book-Ratings.csv", root / "tallrec-book" / "valid.json")
    if not all(p.is_file() for p in needed):
        pytest.skip("needs bookcrossing/ (BX-CSV-Dump) and tallrec-book/valid.json under RECSYS_FEWSHOT_DATA")
    data = read_bookcrossing(root / "bookcrossing", ratings="all")
    samples = build_samples(data.interactions, 10, 6.0, order="shuffle_by_item", targets="last", min_history=3,
                            history_from="first")
    text = [_norm(f"{t} written by {a}") for t, a in zip(data.items["title"], data.items["author"])]
    rebuilt = {(text[row.item], tuple(sorted((text[i], int(v >= 6)) for i, v in row.history)))
               for row in samples.itertuples()}
    released = read_tallrec_json(root / "tallrec-book", "valid.json")
    names = [_norm(t) for t in released.items["text"]]
    keys = [(names[row.item], tuple(sorted((names[i], int(v)) for i, v in row.history)))
            for row in released.interactions.itertuples()]
    matched = sum(k in rebuilt for k in keys)
    print(json.dumps({"released": len(keys), "matched": matched}))
    assert matched >= 0.9 * len(keys)


@pytest.mark.slow
def test_cli_trains_on_bookcrossing(tmp_path):
    planted_bookcrossing(tmp_path / "data" / "bookcrossing")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "RECSYS_FEWSHOT_OFFLINE": "1"}
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", "dataset=bookcrossing",
                           f"dataset.root={tmp_path / 'data'}", "encoder=none", "trainer.max_epochs=1", "logger=none",
                           "trainer.progress=false", f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    n_explicit = sum(1 for line in (tmp_path / "data" / "bookcrossing" / "BX-Book-Ratings.csv").read_text(
        encoding="latin-1").splitlines()[1:] if not line.endswith('"0"'))
    assert metrics["task"] == "rating" and metrics["dataset"] == "bookcrossing"
    assert sum(metrics["split"][p] for p in ("train", "valid", "test")) == n_explicit
    assert np.isfinite(metrics["test"]["rmse"])
