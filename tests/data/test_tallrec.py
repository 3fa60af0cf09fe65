"""TALLRec's protocol (samples from ratings, the N-shot draw, valid modes, augmentation), its JSON prompt
files, and the sample-as-user view; real-data checks of the published sizes and label rates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakes import planted_ctr_samples, write_ctr_csv, write_ml100k, write_tallrec_json
from recsys_fewshot.data.recdata import TEST, TRAIN, DataError, RecData
from recsys_fewshot.data.sources import read_csv_dir, read_ml100k
from recsys_fewshot.data.tallrec import (as_sample_users, augment_samples, build_samples, parse_item, parse_prompt,
                                         read_tallrec_json, split_items, tallrec)


def _ratings(rows: list[tuple[int, int, float, int]], n_users: int, n_items: int) -> RecData:
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64})
    items = pd.DataFrame({"item": np.arange(n_items), "item_id": [f"i{k}" for k in range(n_items)]})
    users = pd.DataFrame({"user": np.arange(n_users), "user_id": [f"u{k}" for k in range(n_users)]})
    return RecData("hand", inter, items, users).validate()


def test_build_samples_follows_tallrec_order_and_stable_ties():
    # user 1 appears first in the file; its two ratings at t=5 keep file order (item 3 before item 4)
    data = _ratings([(1, 0, 5, 9), (0, 5, 4, 1), (1, 3, 2, 5), (1, 4, 4, 5), (0, 6, 1, 2), (1, 1, 3, 1),
                     (0, 7, 5, 3), (1, 2, 4, 7)], n_users=2, n_items=8)
    samples = build_samples(data.interactions, history_len=2, positive_threshold=4.0)
    # user 1 by time: 1(t1) 3(t5) 4(t5) 2(t7) 0(t9) -> targets 4, 2, 0; then user 0: 5 6 7 -> target 7
    assert samples["user"].tolist() == [1, 1, 1, 0]
    assert samples["item"].tolist() == [4, 2, 0, 7]
    assert samples["label"].tolist() == [1, 1, 1, 1]
    assert samples["history"].tolist() == [[(1, 3.0), (3, 2.0)], [(3, 2.0), (4, 4.0)], [(4, 4.0), (2, 4.0)],
                                           [(5, 4.0), (6, 1.0)]]
    assert build_samples(data.interactions, 2, last=2)["item"].tolist() == [0, 7]


@pytest.fixture(scope="module")
def fake_ml(tmp_path_factory) -> RecData:
    folder = write_ml100k(tmp_path_factory.mktemp("ml") / "ml-100k", n_users=40, n_items=30, n_per_user=20, seed=2)
    return read_ml100k(folder)


def test_tallrec_sizes_order_and_nested_shots(fake_ml):
    split = tallrec(fake_ml, n_shots=8, seed=1, n_samples=200, history_len=5)
    everything = build_samples(fake_ml.interactions, 5, last=200)
    assert split.sizes() == {"train": 8, "valid": 20, "test": 20}
    # valid and test are the 161st-180th and 181st-200th of the last 200 samples, in order
    for part, lo in ((split.valid, 160), (split.test, 180)):
        assert part["item"].tolist() == everything["item"].iloc[lo: lo + 20].tolist()
        assert part["user"].tolist() == everything["user"].iloc[lo: lo + 20].tolist()
    assert split.test["history"].iloc[0] == [(i, float(r >= 4)) for i, r in everything["history"].iloc[180]]
    # N shots come from the first 160 only; the same seed gives nested draws, another seed another draw
    key = everything.iloc[:160].assign(h=everything["history"].iloc[:160].map(str))
    pool = set(zip(key["user"], key["item"]))
    shots = {n: set(zip(*(tallrec(fake_ml, n_shots=n, seed=1, n_samples=200, history_len=5).train[c]
                          for c in ("user", "item")))) for n in (4, 8, 16)}
    assert shots[4] <= shots[8] <= shots[16] <= pool
    other = set(zip(*(tallrec(fake_ml, n_shots=8, seed=2, n_samples=200, history_len=5).train[c]
                      for c in ("user", "item"))))
    assert other != shots[8]
    assert split.info["n_shots"] == 8 and split.info["pool"] == 160 and split.task == "ctr"


def test_valid_modes_and_augmentation(fake_ml):
    kw = dict(n_shots=8, seed=0, n_samples=200, history_len=5)
    none = tallrec(fake_ml, valid="none", **kw)
    assert none.valid[["user", "item"]].equals(none.train[["user", "item"]])  # nothing beyond the shots
    hold = tallrec(fake_ml, valid="holdout", holdout_ratio=0.25, **kw)
    assert len(hold.train) == 6 and len(hold.valid) == 2
    assert set(zip(hold.train.user, hold.train.item)) | set(zip(hold.valid.user, hold.valid.item)) == set(
        zip(none.train.user, none.train.item))
    loo = tallrec(fake_ml, augment="loo", **kw)
    # each shot's 5 history items, each predicted from the other 5 labelled items (the target is the shot)
    assert len(loo.train) == 8 * (1 + 5) and loo.train["augmented"].sum() == 8 * 5
    first = none.train.iloc[0]
    extra = loo.train[loo.train["augmented"]].iloc[:5]
    seq = first["history"] + [(first["item"], float(first["label"]))]
    for j, row in enumerate(extra.itertuples()):
        assert (row.item, float(row.label)) == seq[j]
        assert row.history == seq[:j] + seq[j + 1:]
    prefix = augment_samples(none.train.iloc[:1], "prefix", min_history=2)
    assert [len(h) for h in prefix["history"]] == [5, 2, 3, 4]
    with pytest.raises(DataError, match="split.valid='bogus'"):
        tallrec(fake_ml, valid="bogus", **kw)
    with pytest.raises(DataError, match="split.n_shots=500 but the pool holds only 160"):
        tallrec(fake_ml, n_shots=500, n_samples=200, history_len=5)


# ---------------------------------------------------------------- JSON prompt files
def test_parse_prompt_movies_with_commas_and_quotes():
    text = ('User Preference: "Shawshank Redemption, The (1994)", "Monty Python\'s Life of Brian (1979)", '
            '"Lawnmower Man 2: Beyond Cyberspace (1996)"\nUser Unpreference: "Paris, Texas (1984)", '
            '"Foo, "Bar" Baz (1989)"\nWhether the user will like the target movie "Heat (1995)"?')
    liked, disliked, target = parse_prompt(text)
    assert liked == [("Shawshank Redemption, The (1994)", ""), ("Monty Python's Life of Brian (1979)", ""),
                     ("Lawnmower Man 2: Beyond Cyberspace (1996)", "")]
    # '"Foo' cannot be an item (no closing quote), so the ', "' inside that title is not a cut
    assert disliked == [("Paris, Texas (1984)", ""), ('Foo, "Bar" Baz (1989)', "")]
    assert target == ("Heat (1995)", "")


def test_parse_prompt_books_with_authors_quotes_and_empty_lists():
    text = ('User Preference: \nUser Unpreference: "\'Gentlemen Prefer Blondes\' \'but Gentlemen Marry '
            'Brunettes\'" written by Anita Loos, "Say "Hello", "Goodbye"" written by A. N. Other, "Pride, '
            'Prejudice" written by JANE  AUSTEN\nWhether the user will like the target book ""Friday" written '
            'by Robert Heinlein"?')
    liked, disliked, target = parse_prompt(text)
    assert liked == []
    assert disliked == [("'Gentlemen Prefer Blondes' 'but Gentlemen Marry Brunettes'", "Anita Loos"),
                        ('Say "Hello", "Goodbye"', "A. N. Other"), ("Pride, Prejudice", "JANE AUSTEN")]
    assert target == ("Friday", "Robert Heinlein")
    # TALLRec's preprocess script writes the target without spaces around "written by"
    assert parse_prompt('User Preference: "A" written by B\nUser Unpreference: \nWhether the user will like '
                        'the target book "X"written byY Z?')[2] == ("X", "Y Z")
    assert parse_item('"T" written by A') == ("T", "A") and parse_item("no quotes") is None
    assert split_items('"A" written by X, "B', with_author=True) is None
    with pytest.raises(ValueError, match="User Preference"):
        parse_prompt("Does the user like Heat?")


def test_read_tallrec_json_parts_and_items_by_text(tmp_path):
    write_tallrec_json(tmp_path / "train.json", [(["A (1990)", "B, The (1991)"], ["C (1992)"], "D (1993)", 1),
                                                 (["D (1993)"], [], "A (1990)", 0)])
    write_tallrec_json(tmp_path / "test.json", [([], ["B, The (1991)"], "E (1994)", 0)])
    data = read_tallrec_json(tmp_path, "train.json", None, "test.json")
    assert data.items["item_id"].tolist() == ["A (1990)", "B, The (1991)", "C (1992)", "D (1993)", "E (1994)"]
    inter = data.interactions
    assert inter["item"].tolist() == [3, 0, 4] and inter["label"].tolist() == [1, 0, 0]
    assert inter["history"].tolist() == [[(0, 1.0), (1, 1.0), (2, 0.0)], [(3, 1.0)], [(1, 0.0)]]
    assert data.folds["given"].tolist() == [TRAIN, TRAIN, TEST]
    assert data.users["user_id"].tolist() == ["train-0", "train-1", "test-0"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "", "input": "x", "output": "Maybe."}]))
    with pytest.raises(DataError, match=r"bad\.json: sample 0: output 'Maybe\.'"):
        read_tallrec_json(tmp_path, "bad.json")
    with pytest.raises(DataError, match="dataset.test_file: .*missing.json does not exist"):
        read_tallrec_json(tmp_path, "train.json", None, "missing.json")


def test_one_file_is_partitioned_and_a_test_file_is_the_whole_test_set(tmp_path):
    samples, titles = planted_ctr_samples(100, seed=1)
    rows = [([titles[i] for i, v in zip(h, lab) if v], [titles[i] for i, v in zip(h, lab) if not v], titles[t], y)
            for h, lab, t, y in samples]
    write_tallrec_json(tmp_path / "train.json", rows[:80])
    write_tallrec_json(tmp_path / "test.json", rows[80:])
    one = read_tallrec_json(tmp_path, "train.json")
    split = tallrec(one, n_shots=10, seed=0, train_ratio=0.5, valid_ratio=0.2, partition_seed=3)
    assert split.sizes() == {"train": 10, "valid": 16, "test": 24}
    assert split.info["source"] == "train file partitioned"
    again = tallrec(one, n_shots=10, seed=5, train_ratio=0.5, valid_ratio=0.2, partition_seed=3)
    assert again.test["user"].tolist() == split.test["user"].tolist()  # one test set for every shot seed
    assert not set(split.train["user"]) & set(split.test["user"])
    both = read_tallrec_json(tmp_path, "train.json", None, "test.json")
    split = tallrec(both, n_shots=10, seed=0)
    assert split.test["user"].tolist() == list(range(80, 100))  # the whole test file, in file order
    assert len(split.valid) == 8 and not set(split.valid["user"]) & set(split.train["user"])
    no_test = read_tallrec_json(tmp_path, "train.json", "test.json", None)  # a valid file, no test file
    with pytest.raises(DataError, match="dataset.test_file"):
        tallrec(no_test, n_shots=10, seed=0)


def test_sample_users_see_only_their_own_history(tmp_path):
    data = read_csv_dir(write_ctr_csv(tmp_path / "ctr", n_samples=40))
    from recsys_fewshot.data.protocols import given

    split = given(data)
    view = as_sample_users(data, split, positive_threshold=4.0)
    n_tr, n_va, n_te = (len(f) for f in (split.train, split.valid, split.test))
    assert view.data.n_users == n_tr + n_va + n_te
    assert view.data.users["user_id"].iloc[n_tr + n_va] == "test-0"
    assert view.split.test["user"].tolist() == list(range(n_tr + n_va, n_tr + n_va + n_te))
    lengths = view.history.lengths()
    assert (lengths[:n_tr] == 6).all() and (lengths[n_tr:] == 0).all()  # training: train samples only
    assert (view.valid_history.lengths()[n_tr + n_va:] == 0).all()
    assert (view.test_history.lengths() == 6).all()
    first = split.test["history"].iloc[0]
    row = view.test_history.indptr[n_tr + n_va]
    assert view.test_history.items[row: row + 6].tolist() == [i for i, _ in first]
    assert view.test_history.weights[row: row + 6].tolist() == [1.0 if v else -1.0 for _, v in first]


# ---------------------------------------------------------------- the real data
def _root() -> Path:
    root = os.environ.get("RECSYS_FEWSHOT_DATA")
    if not root:
        pytest.skip("RECSYS_FEWSHOT_DATA is not set")
    return Path(root)


@pytest.mark.realdata
def test_real_movielens_matches_tallrec_released_files():
    folder = _root() / "ml-100k"
    if not (folder / "u.data").exists():
        pytest.skip("no ml-100k under RECSYS_FEWSHOT_DATA")
    data = read_ml100k(folder)
    raw = pd.read_csv(folder / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    # the reader keeps u.data's file order (the protocol depends on it) ...
    assert (data.user_raw_ids()[data.interactions["user"]].astype(int) == raw["u"]).all()
    assert (data.item_raw_ids()[data.interactions["item"]].astype(int) == raw["i"]).all()
    # ... and TALLRec's sort of the timestamp strings is the numeric sort: every timestamp has 9 digits
    assert (raw["t"].astype(str).str.len() == 9).all()
    split = tallrec(data, n_shots=256, seed=0)
    assert split.sizes() == {"train": 256, "valid": 1000, "test": 1000}
    assert split.valid["label"].mean() == pytest.approx(0.658) and split.test["label"].mean() == pytest.approx(0.528)
    titles = data.items["title"] + " (" + data.items["year"] + ")"

    def text(i: int) -> str:  # u.item's own "Title (year)", as TALLRec's prompts show it
        return titles[i]
    # the first and last samples of TALLRec's released data/movie/valid.json and test.json
    v0, t0, t_last = split.valid.iloc[0], split.test.iloc[0], split.test.iloc[-1]
    assert (text(v0["item"]), v0["label"]) == ("Scream (1996)", 0)
    assert [text(i) for i, v in v0["history"] if v] == ["Silence of the Lambs, The (1991)",
                                                      "Indiana Jones and the Last Crusade (1989)", "Taxi Driver (1976)",
                                                      "My Favorite Year (1982)", "Titanic (1997)"]
    assert (text(t0["item"]), t0["label"]) == ("Perez Family, The (1995)", 0)
    assert [text(i) for i, v in t0["history"] if not v] == ["Kalifornia (1993)"]
    assert (text(t_last["item"]), t_last["label"]) == ("Toy Story (1995)", 1)
    assert [text(i) for i, v in t_last["history"] if not v] == ["Happy Gilmore (1996)",
                                                                "Star Trek: First Contact (1996)", "Heat (1995)"]
    pool = tallrec(data, n_shots=0, seed=0)
    assert len(pool.train) == 8000


@pytest.mark.realdata
def test_real_tallrec_book_file_parses_completely():
    folder = _root() / "tallrec-book"
    if not (folder / "valid.json").exists():
        pytest.skip("no tallrec-book under RECSYS_FEWSHOT_DATA")
    data = read_tallrec_json(folder, "valid.json")
    inter = data.interactions
    assert len(inter) == 2427 and int(inter["label"].sum()) == 1011
    lengths = inter["history"].map(len)
    assert lengths.max() <= 10 and lengths.mean() == pytest.approx(7.2, abs=0.1)
    assert (data.items["author"] != "").all()  # every book item carries its author
    split = tallrec(data, n_shots=16, seed=0, train_ratio=0.3, valid_ratio=0.2)
    assert split.sizes() == {"train": 16, "valid": 485, "test": 1214}


def test_a_click_log_without_ratings_takes_its_labels_and_one_file_cannot_be_two_parts(tmp_path):
    from recsys_fewshot.data.tallrec import read_tallrec_json, tallrec

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(0, 40)}", int(rng.random() < 0.4), t) for u in range(6) for t in range(30)]
    folder = tmp_path / "clicks"
    folder.mkdir()
    pd.DataFrame(rows, columns=["user_id", "item_id", "label", "timestamp"]).to_csv(folder / "interactions.csv",
                                                                                      index=False)
    data = read_csv_dir(folder)
    split = tallrec(data, n_shots=20, seed=0, n_samples=100, history_len=5)
    labels = pd.concat([split.train, split.valid, split.test])["label"].to_numpy()
    assert 0.2 < labels.mean() < 0.6  # the log's own labels (all 0 when ratings >= 4 were read from NaN)
    hist_values = {v for h in split.test["history"] for _, v in h}
    assert hist_values == {0.0, 1.0}
    # the same log without its label column: nothing says what was liked
    pd.DataFrame([r[:2] + r[3:] for r in rows], columns=["user_id", "item_id", "timestamp"]).to_csv(
        folder / "interactions.csv", index=False)
    with pytest.raises(DataError, match="has neither ratings nor a 'label' column"):
        tallrec(read_csv_dir(folder), n_shots=20, n_samples=100, history_len=5)

    write_tallrec_json(tmp_path / "book" / "valid.json", [(["A"], ["B"], "C", 1), (["B"], [], "A", 0)], noun="book")
    with pytest.raises(DataError, match=r"dataset.train_file and dataset.test_file are the same file"):
        read_tallrec_json(tmp_path / "book", "valid.json", None, str(tmp_path / "book" / "valid.json"))


def test_book_authors_may_hold_quotes(tmp_path):
    # an author with quotes, in a list (followed by ', "' and at the list's end) and in the target
    text = ('User Preference: "T1" written by Dwayne "The Rock" Johnson, "Say "Hi", "Bye"" written by A. B, '
            '"T3" written by J\\ \\"j\\""\nUser Unpreference: "T4" written by X\nWhether the user will like the '
            'target book ""T5" written by Dwayne "The Rock" Johnson"?')
    liked, disliked, target = parse_prompt(text)
    assert liked == [("T1", 'Dwayne "The Rock" Johnson'), ('Say "Hi", "Bye"', "A. B"), ("T3", 'J\\ \\"j\\""')]
    assert disliked == [("T4", "X")] and target == ("T5", 'Dwayne "The Rock" Johnson')
    # an author never swallows the next ', "' (that is a cut), so a dangling quote is still no item
    assert split_items('"A" written by X "Y", "B', with_author=True) is None
    # and the whole file loads (it failed with a DataError before)
    (tmp_path / "train.json").write_text(json.dumps([{
        "instruction": "", "output": "Yes.",
        "input": 'User Preference: "T1" written by Dwayne "The Rock" Johnson, "T2" written by Y\nUser '
                 'Unpreference: \nWhether the user will like the target book ""T3" written by Z"?'}]))
    data = read_tallrec_json(tmp_path, "train.json")
    assert set(zip(data.items["title"], data.items["author"])) == {
        ("T1", 'Dwayne "The Rock" Johnson'), ("T2", "Y"), ("T3", "Z")}


def test_a_target_with_an_empty_author_keeps_the_lists_authored(tmp_path):
    liked, disliked, target = parse_prompt('User Preference: "A" written by B\nUser Unpreference: "C" written '
                                           'by D\nWhether the user will like the target book ""T" written by "?')
    assert liked == [("A", "B")] and disliked == [("C", "D")] and target == ("T", "")
    (tmp_path / "train.json").write_text(json.dumps([{
        "instruction": "", "output": "No.",
        "input": 'User Preference: "A" written by B\nUser Unpreference: \nWhether the user will like the '
                 'target book ""T" written by "?'}]))
    data = read_tallrec_json(tmp_path, "train.json")
    assert set(zip(data.items["title"], data.items["author"])) == {("A", "B"), ("T", "")}
