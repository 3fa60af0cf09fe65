"""Cold-start protocols: the invariants each one promises, on small generated data."""

import numpy as np
import pandas as pd
import pytest

from fakes import write_ml100k
from recsys_fewshot.data import coldstart as C
from recsys_fewshot.data.recdata import DataError
from recsys_fewshot.data.sources import read_ml100k


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return read_ml100k(write_ml100k(tmp_path_factory.mktemp("d") / "ml-100k", n_users=80, n_items=40,
                                    n_per_user=25, seed=3))


def keys(frame):
    return set(zip(frame.user, frame.item, frame.timestamp))


def test_cold_items_never_train_and_are_the_only_test_candidates(data):
    s = C.cold_items(data, cold_ratio=0.2, valid_ratio=0.1, seed=4)
    train_items = set(s.train.item)
    test_cold, valid_cold = set(s.candidates["test"]), set(s.candidates["valid"])
    assert len(test_cold) == round(0.2 * 40) and len(valid_cold) == round(0.1 * (40 - 8))
    assert not test_cold & train_items and not valid_cold & train_items and not test_cold & valid_cold
    assert set(s.test.item) == test_cold and set(s.valid.item) == valid_cold  # every interaction of a cold item
    assert len(s.train) + len(s.valid) + len(s.test) == len(data.interactions)
    assert keys(s.train) | keys(s.valid) | keys(s.test) == keys(data.interactions)
    again = C.cold_items(data, cold_ratio=0.2, valid_ratio=0.1, seed=4)
    other = C.cold_items(data, cold_ratio=0.2, valid_ratio=0.1, seed=5)
    assert np.array_equal(again.candidates["test"], s.candidates["test"])
    assert not np.array_equal(other.candidates["test"], s.candidates["test"])


@pytest.mark.parametrize("k", [3, 5, 10])
def test_cold_users_support_is_their_first_k_by_time_and_queries_stay_hidden(data, k):
    s = C.cold_users(data, k=k, cold_ratio=0.2, valid_ratio=0.1, seed=1)
    test_users, valid_users, train_users = set(s.test.user), set(s.valid.user), set(s.train.user)
    assert len(test_users) == round(0.2 * 80) and len(valid_users) == round(0.1 * (80 - 16))
    assert not (test_users | valid_users) & train_users  # a cold user's ratings never train the model
    assert not test_users & valid_users
    support = s.support
    assert set(support.user) == test_users | valid_users
    assert (support.groupby("user").size() == k).all()  # exactly k each
    assert not keys(support) & (keys(s.test) | keys(s.valid) | keys(s.train))  # queries never in support
    assert keys(support) | keys(s.test) | keys(s.valid) | keys(s.train) == keys(data.interactions)
    for user, rows in support.groupby("user"):
        queries = pd.concat([s.test, s.valid])
        assert rows.timestamp.max() <= queries[queries.user == user].timestamp.min()


def test_cold_users_skip_users_with_too_few_ratings_and_fail_clearly(data):
    s = C.cold_users(data, k=20, cold_ratio=0.1, valid_ratio=0.05, min_queries=5, seed=0)
    assert (s.test.groupby("user").size() >= 5).all()
    with pytest.raises(DataError, match="k \\+ min_queries = 30"):
        C.cold_users(data, k=25, cold_ratio=0.5, seed=0, min_queries=5)
    with pytest.raises(DataError, match="split.k"):
        C.cold_users(data, k=0)


def test_per_user_holds_out_a_fraction_of_every_user(data):
    s = C.per_user(data, test_ratio=0.2, valid_ratio=0.1, seed=2)
    sizes = data.interactions.groupby("user").size()
    assert (s.test.groupby("user").size() == np.round(sizes * 0.2)).all()
    assert set(s.train.user) == set(data.interactions.user)
    assert keys(s.train) | keys(s.valid) | keys(s.test) == keys(data.interactions)
    assert not keys(s.train) & keys(s.test) and not keys(s.valid) & keys(s.test)


def test_candidate_sets_rank_only_those_items_and_never_count_known_ones():
    import torch
    from accelerate import Accelerator

    from recsys_fewshot.data.recdata import UserHistory
    from recsys_fewshot.evaluation import TaskSpec, ranking_metrics, resolve_candidates

    class ByIndex(torch.nn.Module):  # higher item index, higher score, for every user
        def score_candidates(self, users, items):
            return items.float().expand(len(users), -1).clone()

    frame = pd.DataFrame({"user": [0, 0, 1], "item": [2, 5, 3], "rating": [5.0, 5.0, 5.0]})
    known = UserHistory.from_pairs(np.array([0, 1]), np.array([9, 5]), 2)  # user 0 knows 9, user 1 knows 5
    spec = TaskSpec(task="ranking", positive_threshold=4.0, ks=[1, 2])
    acc = Accelerator(cpu=True)
    everything, _ = ranking_metrics(ByIndex(), frame, known, 10, spec, acc)
    # all items: user 0's top 2 are 8, 7 (9 is known); user 1's are 9, 8: no hits
    assert everything["hr@2"] == 0.0
    cands = resolve_candidates("test_items", frame, None)
    assert cands.tolist() == [2, 3, 5]
    restricted, _ = ranking_metrics(ByIndex(), frame, known, 10, spec, acc, cands)
    # among {2, 3, 5}: user 0 ranks 5, 3 (hit at 1); user 1 ranks 3, 2 (5 is known, never counted): hit at 1
    assert restricted["hr@1"] == 1.0 and restricted["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert resolve_candidates(None, frame, np.array([4, 1])).tolist() == [4, 1]
    assert resolve_candidates("all", frame, np.array([4, 1])) is None
    with pytest.raises(ValueError, match="eval.candidates"):
        resolve_candidates("cold", frame, None)
