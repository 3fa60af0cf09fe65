"""Split protocols: sizes, disjointness, determinism, and the rules each one promises."""

import pandas as pd
import pytest

from fakes import write_ml100k
from recsys_fewshot.data import protocols as P
from recsys_fewshot.data.recdata import TEST, TRAIN, DataError
from recsys_fewshot.data.sources import read_ml100k
from recsys_fewshot.data.text import render_texts


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return read_ml100k(write_ml100k(tmp_path_factory.mktemp("d") / "ml-100k", n_users=50, n_items=30,
                                    n_per_user=12, seed=2))


def keys(frame):
    return set(zip(frame.user, frame.item))


def test_random_split_is_a_seeded_partition(data):
    a = P.random_split(data, test_ratio=0.2, valid_ratio=0.1, seed=5)
    b = P.random_split(data, test_ratio=0.2, valid_ratio=0.1, seed=5)
    c = P.random_split(data, test_ratio=0.2, valid_ratio=0.1, seed=6)
    n = len(data.interactions)
    assert a.sizes() == {"test": round(0.2 * n), "valid": round(0.1 * (n - round(0.2 * n))),
                         "train": n - round(0.2 * n) - round(0.1 * (n - round(0.2 * n)))}
    assert keys(a.train) | keys(a.valid) | keys(a.test) == keys(data.interactions)
    assert not keys(a.train) & keys(a.test) and not keys(a.valid) & keys(a.test) and not keys(a.train) & keys(a.valid)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert keys(a.test) != keys(c.test)


def test_given_fold_keeps_the_files_test_and_carves_valid_from_train(data):
    s = P.given(data, fold="u1", valid_ratio=0.1, seed=0)
    codes = data.folds["u1"]
    file_test = keys(data.interactions[codes == TEST])
    file_train = keys(data.interactions[codes == TRAIN])
    assert keys(s.test) == file_test
    assert keys(s.train) | keys(s.valid) == file_train  # valid comes from train, never from test
    assert len(s.valid) == round(0.1 * len(file_train))
    with pytest.raises(DataError, match="split.fold='u9'"):
        P.given(data, fold="u9")


def test_temporal_split_puts_the_latest_interactions_in_test(data):
    s = P.temporal(data, test_ratio=0.25, valid_ratio=0.1)
    assert s.train.timestamp.max() <= s.valid.timestamp.min() <= s.valid.timestamp.max() <= s.test.timestamp.min()
    assert len(s.test) == round(0.25 * len(data.interactions))


def test_leave_one_out_takes_each_users_last_two(data):
    s = P.leave_one_out(data)
    assert s.task == "ranking"
    assert len(s.test) == len(s.valid) == data.interactions.user.nunique()
    inter = data.interactions.reset_index().rename(columns={"index": "row"})
    for user, rows in inter.groupby("user"):
        ordered = rows.sort_values(["timestamp", "row"], kind="stable")  # ties: file order
        assert s.test[s.test.user == user].item.tolist() == [ordered.item.iloc[-1]]
        assert s.valid[s.valid.user == user].item.tolist() == [ordered.item.iloc[-2]]


def test_empty_part_is_an_error_naming_the_split(data):
    with pytest.raises(DataError, match="test set is empty"):
        P.random_split(data, test_ratio=0.0)


def test_text_template_renders_and_names_missing_columns(data):
    texts = render_texts(data.items, "{title} ({year}). Genres: {genres}.", ["genres"])
    assert len(texts) == data.n_items
    first = data.items.iloc[0]
    assert texts[0].startswith(f"{first.title} ({first.year}). Genres: ")
    assert "|" not in texts[0]
    with pytest.raises(DataError, match="plot"):
        render_texts(data.items, "{title} {plot}")


def test_random_splits_keep_the_copies_of_a_repeated_pair_together(data):
    from recsys_fewshot.data.coldstart import per_user
    from recsys_fewshot.data.recdata import RecData

    inter = data.interactions
    twice = pd.concat([inter, inter.iloc[::3].assign(rating=1.0)], ignore_index=True)  # a third of the pairs again
    doubled = RecData(data.name, twice, data.items, data.users, {})
    for seed in range(5):
        for split in (P.random_split(doubled, test_ratio=0.3, valid_ratio=0.2, seed=seed),
                      per_user(doubled, test_ratio=0.3, valid_ratio=0.2, seed=seed)):
            parts = [keys(split.train), keys(split.valid), keys(split.test)]
            assert not parts[0] & parts[2] and not parts[1] & parts[2] and not parts[0] & parts[1]
            assert sum(split.sizes().values()) == len(twice)  # every row dealt, copies included
    # without repeats, dealing pairs is dealing rows: the same split as before
    assert P.pair_groups(inter).tolist() == list(range(len(inter)))


def test_time_splits_refuse_a_partly_missing_timestamp_column(data):
    from recsys_fewshot.data.recdata import RecData

    inter = data.interactions.copy()
    inter.loc[[3, 7], "timestamp"] = -1  # empty cells in an otherwise filled column
    partial = RecData(data.name, inter, data.items, data.users, {})
    for split in (P.temporal, P.leave_one_out):
        with pytest.raises(DataError, match=r"2 of \d+ interactions .* have no timestamp \(the first: row 3"):
            split(partial)
    none = RecData(data.name, inter.assign(timestamp=-1), data.items, data.users, {})
    assert len(P.leave_one_out(none).test) > 0  # no timestamps at all: file order, as documented


def test_templates_leave_no_debris_of_empty_fields_in_any_script():
    items = pd.DataFrame({"title": ["Amélie", "Heat"], "director": ["", "Mann"], "genres": ["", "Crime"],
                          "genero": ["", "Crimen"], "year": ["", "1995"]})
    assert render_texts(items, "{title}. Director: {director}. Genres: {genres}.") == [
        "Amélie.", "Heat. Director: Mann. Genres: Crime."]  # two empty clauses in a row
    assert render_texts(items, "{title}. Género: {genero}.") == ["Amélie.", "Heat. Género: Crimen."]
    assert render_texts(items, "{title}. Sub-genre: {genres}.") == ["Amélie.", "Heat. Sub-genre: Crime."]
    assert render_texts(items, "{title} [{year}].") == ["Amélie.", "Heat [1995]."]
    with pytest.raises(DataError, match=r"dataset.text_template='\{\} x': name each field after a column"):
        render_texts(items, "{} x")
