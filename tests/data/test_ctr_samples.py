"""History -> target samples from any rated table (data/ctr_samples.py) and the recipes of split=tallrec that use
them: the order of a user's ratings, which positions are targets, which items form the history, the cut by time."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from recsys_fewshot.data.ctr_samples import build_samples, user_sequences
from recsys_fewshot.data.recdata import DataError, RecData
from recsys_fewshot.data.tallrec import tallrec


def table(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64})


def as_data(inter: pd.DataFrame) -> RecData:
    n_users, n_items = int(inter["user"].max()) + 1, int(inter["item"].max()) + 1
    items = pd.DataFrame({"item": np.arange(n_items), "item_id": [f"i{k}" for k in range(n_items)]})
    users = pd.DataFrame({"user": np.arange(n_users), "user_id": [f"u{k}" for k in range(n_users)]})
    return RecData("hand", inter, items, users).validate()


def seeded_shuffle(values: list, seed: int = 42) -> list:
    """What the published recipes run per user: random.seed(seed); random.shuffle(the list)."""
    random.seed(seed)
    values = list(values)
    random.shuffle(values)
    return values


def test_last_target_and_the_two_history_choices_by_hand():
    # user 0 by time: items 10..15; user 1 has 3 ratings only
    inter = table([(0, 10 + k, 5.0 if k % 2 else 1.0, 100 + k) for k in range(6)]
                  + [(1, 20 + k, 4.0, 50 + k) for k in range(3)])
    recent = build_samples(inter, history_len=2, targets="last", min_history=2)
    assert recent["user"].tolist() == [0, 1] and recent["item"].tolist() == [15, 22]
    assert recent["history"].tolist() == [[(13, 5.0), (14, 1.0)], [(20, 4.0), (21, 4.0)]]
    assert recent["label"].tolist() == [1, 1]
    first = build_samples(inter, history_len=4, targets="last", min_history=2, history_from="first")
    assert first["history"].tolist() == [[(10, 1.0), (11, 5.0), (12, 1.0), (13, 5.0)], [(20, 4.0), (21, 4.0)]]
    # min_history 3: user 1 (2 earlier items) gives no sample
    assert build_samples(inter, history_len=4, targets="last", min_history=3)["user"].tolist() == [0]


def test_every_position_with_short_histories():
    inter = table([(0, k, 4.0, k) for k in range(4)])
    samples = build_samples(inter, history_len=3, min_history=1)
    assert samples["item"].tolist() == [1, 2, 3]
    assert [[i for i, _ in h] for h in samples["history"]] == [[0], [0, 1], [0, 1, 2]]
    # the default needs full histories (TALLRec's Movie recipe)
    assert build_samples(inter, history_len=3)["item"].tolist() == [3]


def test_shuffle_orders_follow_the_recipes_seeded_python_shuffle():
    # file order: user 7 rates items 3, 1, 4, 5, 9; user 2 rates 1, 3 in between
    rows = [(7, 3, 1.0, 0), (2, 1, 2.0, 0), (7, 1, 3.0, 0), (7, 4, 4.0, 0), (2, 3, 5.0, 0), (7, 5, 6.0, 0),
            (7, 9, 7.0, 0)]
    inter = table(rows)
    seq = user_sequences(inter, "shuffle", 42)
    # ReLLa's BookCrossing: each user's rows in file order, then random.seed(42); random.shuffle(...)
    assert inter["item"].to_numpy()[seq[:5]].tolist() == seeded_shuffle([3, 1, 4, 5, 9])
    assert inter["item"].to_numpy()[seq[5:]].tolist() == seeded_shuffle([1, 3])
    # TALLRec's Book: the rows grouped by item in order of the item's first row (3, 1, 4, 5, 9), then shuffled;
    # user 2's rows become item 3 (row 4) before item 1 (row 1)
    by_item = user_sequences(inter, "shuffle_by_item", 42)
    assert inter["item"].to_numpy()[by_item[:5]].tolist() == seeded_shuffle([3, 1, 4, 5, 9])
    assert inter["item"].to_numpy()[by_item[5:]].tolist() == seeded_shuffle([3, 1])
    assert seeded_shuffle([3, 1]) != seeded_shuffle([1, 3])  # the two orders differ for user 2
    other = user_sequences(inter, "shuffle", 7)
    assert sorted(other.tolist()) == list(range(7))
    samples = build_samples(inter, history_len=10, targets="last", min_history=1, order="shuffle",
                            history_from="first", positive_threshold=4.0)
    expected = seeded_shuffle([(3, 1.0), (1, 3.0), (4, 4.0), (5, 6.0), (9, 7.0)])
    assert samples["item"].tolist()[0] == expected[-1][0]
    assert samples["history"].iloc[0] == expected[:-1]


def test_time_recipe_cuts_samples_by_target_time_and_n_samples_zero_keeps_all():
    # two users whose ratings interleave in time; every position with 1 earlier item is a sample
    rows = [(0, k, 5.0, 10 * k) for k in range(6)] + [(1, 10 + k, 1.0, 10 * k + 5) for k in range(6)]
    data = as_data(table(rows))
    split = tallrec(data, n_shots=0, n_samples=0, history_len=2, min_history=1, recipe="time", train_ratio=0.6,
                    valid_ratio=0.2)
    # 10 samples, targets at t = 10, 15, 20, 25, ..., 55: the first 6 by time train, then 2 valid, 2 test
    assert split.sizes() == {"train": 6, "valid": 2, "test": 2}
    assert sorted(split.train["timestamp"].tolist()) == [10, 15, 20, 25, 30, 35]
    assert split.valid["timestamp"].tolist() == [40, 45] and split.test["timestamp"].tolist() == [50, 55]
    assert split.test["label"].tolist() == [1, 0]
    last4 = tallrec(data, n_shots=0, n_samples=4, history_len=2, min_history=1, recipe="time", train_ratio=0.5,
                    valid_ratio=0.25)
    assert last4.test["timestamp"].tolist() == [55] and sorted(last4.train["timestamp"]) == [40, 45]
    # recipe=users with n_samples <= 0: every sample of the valid and test users
    by_users = tallrec(as_data(table([(u, k, 4.0, k) for u in range(10) for k in range(3)])), n_shots=0,
                       n_samples=0, history_len=2, min_history=1, targets="last", recipe="users")
    assert by_users.sizes() == {"train": 8, "valid": 1, "test": 1}


def test_bad_options_are_named():
    inter = table([(0, k, 4.0, k) for k in range(4)])
    with pytest.raises(DataError, match=r"split.order='random'"):
        build_samples(inter, order="random")
    with pytest.raises(DataError, match=r"split.min_history must be in 1..split.history_len=3"):
        build_samples(inter, history_len=3, min_history=5)
    with pytest.raises(DataError, match=r"split.history_from=first needs split.targets=last"):
        build_samples(inter, history_from="first")
    with pytest.raises(DataError, match=r"split.recipe='weekly'"):
        tallrec(as_data(inter), recipe="weekly")
