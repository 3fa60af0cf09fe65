"""Full-ranking evaluation scores users in chunks (never the users x items matrix); whatever the chunk size,
the per-user metrics equal those of one brute-force pass over the full score matrix."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recsys_fewshot import metrics as M
from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.evaluation import rank_users
from recsys_fewshot.models.heads import MF

N_USERS, N_ITEMS, KS = 37, 53, (5, 10)
SINGLE = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)


def small_problem(seed: int = 0):
    """A trained-looking MF (random weights, text vectors, histories), train histories and test positives."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pairs = np.unique(np.stack([rng.integers(0, N_USERS, 600), rng.integers(0, N_ITEMS, 600)], 1), axis=0)
    train = pairs[rng.random(len(pairs)) < 0.7]
    test = pairs[~np.isin(pairs[:, 0] * N_ITEMS + pairs[:, 1], train[:, 0] * N_ITEMS + train[:, 1])]
    history = UserHistory.from_pairs(train[:, 0], train[:, 1], N_USERS)
    model = MF(N_USERS, N_ITEMS, item_features=torch.randn(N_ITEMS, 8), history=history, dim=6, init_std=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.eval()
    users = np.unique(test[:, 0])
    positives = [test[test[:, 0] == u, 1] for u in users]
    return model, history, users, positives


def brute_force(model, history: UserHistory, users: np.ndarray, positives, candidates=None) -> dict[str, np.ndarray]:
    """The whole [users, items] score matrix at once, history items set to -inf, a full sort per user."""
    with torch.no_grad():
        scores = model.score_candidates(torch.as_tensor(users), torch.arange(N_ITEMS)).numpy().astype(np.float64)
    allowed = np.zeros(N_ITEMS, bool)
    allowed[np.arange(N_ITEMS) if candidates is None else candidates] = True
    top = np.full((len(users), max(KS)), -1, np.int64)
    for row, user in enumerate(users):
        s = np.where(allowed, scores[row], -np.inf)
        s[history.row(user)] = -np.inf
        order = [i for i in np.argsort(-s, kind="stable") if np.isfinite(s[i])][: max(KS)]
        top[row, : len(order)] = order
    return M.ranking_metrics_per_user(top, positives, KS)


@pytest.mark.parametrize("candidates", [None, "subset"])
def test_chunked_ranking_equals_the_full_matrix(candidates):
    model, history, users, positives = small_problem()
    cands = None if candidates is None else np.arange(0, N_ITEMS, 2)
    expected = brute_force(model, history, users, positives, cands)
    assert 30 <= len(users) <= N_USERS
    for chunk in (1, 4, 7, len(users) - 1, len(users), 1000):  # 4 and 7 do not divide the user count
        got = rank_users(model, users, positives, history, N_ITEMS, KS, chunk, SINGLE, cands)
        assert set(got) == set(expected)
        for name in expected:
            assert np.array_equal(got[name], expected[name], equal_nan=True), (chunk, name)
        assert M.mean_over_users(got) == M.mean_over_users(expected)
    # the metrics are not trivially equal: some users hit, some miss
    assert 0 < np.nanmean(expected["hr@10"]) < 1


def test_chunk_size_bounds_the_score_block():
    """No block of scores wider than chunk_size users is ever asked of the model."""
    model, history, users, positives = small_problem(1)
    seen, prepared = [], []
    original = model.candidate_scorer

    def spy_scorer(items):
        prepared.append(len(items))
        score = original(items)

        def spy(u):
            seen.append(len(u))
            return score(u)

        return spy

    model.candidate_scorer = spy_scorer
    rank_users(model, users, positives, history, N_ITEMS, KS, 7, SINGLE)
    assert max(seen) == 7 and sum(seen) == len(users)
    assert prepared == [N_ITEMS]  # the item side is computed once for all the chunks


class Constant(torch.nn.Module):
    """Scores every item alike (or NaN for the users in `nan_users`)."""

    def __init__(self, nan_users=()):
        super().__init__()
        self.nan_users = set(nan_users)

    def score_candidates(self, users, items):
        out = torch.zeros(len(users), len(items))
        for row, u in enumerate(users.tolist()):
            if u in self.nan_users:
                out[row, 0] = float("nan")
        return out


def test_ties_are_broken_by_a_fixed_permutation_not_by_item_number():
    n_items, n_users = 2000, 200
    users = np.arange(n_users)
    positives = [np.array([u % 10]) for u in users]  # every user's one item is among the ten lowest numbers
    empty = UserHistory.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), n_users)
    first = rank_users(Constant(), users, positives, empty, n_items, KS, 64, SINGLE)
    # lowest-index-first tie order would hit every user (recall@10 = 1); a random order expects 10 of these 10
    # low items x 10/2000 = 0.05 of them in its top 10
    assert first["recall@10"].mean() <= 0.2
    again = rank_users(Constant(), users, positives, empty, n_items, KS, 7, SINGLE)
    assert all(np.array_equal(first[k], again[k]) for k in first)  # the same order every time, any chunking


def test_nan_scores_stop_the_ranking_with_a_clear_error():
    users = np.arange(5)
    empty = UserHistory.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 5)
    with pytest.raises(FloatingPointError, match=r"Constant\) scored 1 \(user, item\) pairs as NaN or \+inf, for 1 users "
                                         r"\(first: \[3\]\)"):
        rank_users(Constant(nan_users=[3]), users, [np.array([1])] * 5, empty, N_ITEMS, KS, 2, SINGLE)
