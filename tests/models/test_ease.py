"""head=ease: the closed-form fit is the constrained optimum, text ties cold items to warm ones,
histories are swapped in without retraining, and bad set-ups fail clearly."""

import numpy as np
import pytest
import torch

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.ease import EASE, _dense_rows


def random_history(n_users, n_items, n_per_user, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), n_per_user)
    items = np.concatenate([rng.choice(n_items, n_per_user, replace=False) for _ in range(n_users)])
    return UserHistory.from_pairs(users, items, n_users)


def test_weights_are_the_zero_diagonal_optimum_of_the_regularised_objective():
    """KKT of min ||X - XB||^2 + w ||T^T - T^T B||^2 + reg ||B||^2 s.t. diag(B) = 0: (G + reg I) B - G is
    zero off the diagonal, G = X^T X + w T T^T; checked with numpy, independently of the fit's algebra."""
    n_users, n_items = 30, 12
    hist = random_history(n_users, n_items, 5)
    feats = torch.randn(n_items, 6, generator=torch.Generator().manual_seed(1))
    for text_weight in (0.0, 3.0):
        model = EASE(n_users, n_items, item_features=feats, history=hist, reg=2.0, text_weight=text_weight)
        b = model.weights.double().numpy()
        x = np.zeros((n_users, n_items))
        for u in range(n_users):
            x[u, hist.row(u)] = 1.0
        t = feats.double().numpy()
        t = t - t.mean(0)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        gram = x.T @ x + text_weight * t @ t.T
        residual = (gram + 2.0 * np.eye(n_items)) @ b - gram
        np.fill_diagonal(residual, 0.0)
        assert np.abs(np.diag(b)).max() == 0.0
        assert np.abs(residual).max() < 1e-4, text_weight
        scores = model.score_candidates(torch.arange(n_users), torch.arange(n_items)).detach().numpy()
        assert np.allclose(scores, x @ b, atol=1e-5)


def test_text_prior_scores_an_item_nobody_rated_through_its_text_twin():
    n_users, n_items = 40, 10
    rng = np.random.default_rng(3)
    users, items = [], []
    for u in range(n_users):  # item 9 is never rated; item 0 is its text twin
        for i in rng.choice(9, 4, replace=False):
            users.append(u)
            items.append(int(i))
    hist = UserHistory.from_pairs(np.array(users), np.array(items), n_users)
    feats = torch.randn(n_items, 16, generator=torch.Generator().manual_seed(0))
    feats[9] = feats[0]
    fan = next(u for u in range(n_users) if 0 in hist.row(u))
    plain = EASE(n_users, n_items, item_features=feats, history=hist, reg=5.0)
    text = EASE(n_users, n_items, item_features=feats, history=hist, reg=5.0, text_weight=10.0)
    assert plain.score_candidates(torch.tensor([fan]), torch.tensor([9])).item() == 0.0
    cold = text.score_candidates(torch.arange(n_users), torch.tensor([9]))[:, 0]
    fans = torch.tensor([0 in hist.row(u) for u in range(n_users)])
    assert cold[fans].min() > cold[~fans].max()  # item 9 reaches exactly the users of its twin


def test_planted_tastes_are_recovered_far_above_chance():
    """Two taste groups, each liking a half of the catalogue: held-out liked items rank near the top."""
    n_users, n_items, rng = 80, 40, np.random.default_rng(0)
    train_u, train_i, held = [], [], []
    for u in range(n_users):
        half = np.arange(20) + (20 if u % 2 else 0)
        picked = rng.choice(half, 8, replace=False)
        train_u += [u] * 7
        train_i += list(picked[:7])
        held.append(int(picked[7]))
    hist = UserHistory.from_pairs(np.array(train_u), np.array(train_i), n_users)
    model = EASE(n_users, n_items, history=hist, reg=10.0)
    scores = model.score_candidates(torch.arange(n_users), torch.arange(n_items))
    rows, cols = hist.entries(np.arange(n_users))
    scores[torch.as_tensor(rows), torch.as_tensor(cols)] = float("-inf")
    top10 = scores.topk(10, dim=1).indices.numpy()
    hits = np.mean([held[u] in top10[u] for u in range(n_users)])
    assert hits > 0.6  # random: 10 of 33 unseen items, 0.30


def test_cold_map_ranks_items_nobody_rated_by_their_text():
    """Two taste groups; an item's text says which group it belongs to. Items 30-39 are never rated: with
    head.cold_map their columns come from the text map, and each group's users rank their own cold items first."""
    n_users, n_items, rng = 60, 40, np.random.default_rng(1)
    side = np.arange(n_items) % 2  # the group an item belongs to
    feats = torch.as_tensor(rng.normal(size=(n_items, 12)) + 2.0 * np.outer(2 * side - 1, np.ones(12)) * 0.5,
                            dtype=torch.float32)
    users, items = [], []
    for u in range(n_users):
        mine = np.flatnonzero((side == u % 2) & (np.arange(n_items) < 30))
        for i in rng.choice(mine, 6, replace=False):
            users.append(u)
            items.append(int(i))
    hist = UserHistory.from_pairs(np.array(users), np.array(items), n_users)
    cold = torch.arange(30, 40)
    off = EASE(n_users, n_items, item_features=feats, history=hist, reg=5.0)
    assert off.score_candidates(torch.arange(n_users), cold).abs().max() == 0  # no interactions, no text prior
    model = EASE(n_users, n_items, item_features=feats, history=hist, reg=5.0, cold_map=0.01)
    scores = model.score_candidates(torch.arange(n_users), cold).detach()
    top = cold[scores.argmax(dim=1)].numpy()
    assert np.mean(side[top] == np.arange(n_users) % 2) > 0.9  # chance: 0.5
    warm_cols = model.weights[:, :30]
    assert torch.allclose(warm_cols, off.weights[:, :30])  # warm items keep their EASE columns
    with pytest.raises(ValueError, match="head.cold_map"):
        EASE(n_users, n_items, history=hist, cold_map=0.01)  # no text vectors


def test_cold_bias_puts_items_whose_text_says_popular_first():
    """Text axis 0 says how many users take an item; every user takes items at random in proportion. With
    head.cold_bias the never-rated items are ordered by that axis for everyone; the prior is what the warm
    items' mean entries regress to, so it must correlate with the truth far beyond chance."""
    n_users, n_items, rng = 200, 60, np.random.default_rng(2)
    appeal = rng.uniform(0.05, 0.6, n_items)
    feats = torch.as_tensor(np.c_[appeal * 10, 0.3 * rng.normal(size=(n_items, 7))], dtype=torch.float32)
    taken = rng.random((n_users, 50)) < appeal[:50]  # items 50-59 are never taken in training
    users, items = np.nonzero(taken)
    hist = UserHistory.from_pairs(users, items, n_users)
    model = EASE(n_users, n_items, item_features=feats, history=hist, reg=5.0, cold_map=0.01, cold_bias=2.0)
    cold = np.arange(50, 60)
    bias = model.bias[cold].numpy()
    assert np.corrcoef(bias, appeal[cold])[0, 1] > 0.9
    assert model.bias[:50].abs().max() == 0  # warm items: EASE columns, no prior
    off = EASE(n_users, n_items, item_features=feats, history=hist, reg=5.0, cold_map=0.01)
    assert off.bias.abs().max() == 0

    def rank_agreement(m: EASE) -> float:  # mean over users of Spearman(scores of the cold items, their appeal)
        scores = m.score_candidates(torch.arange(n_users), torch.as_tensor(cold)).detach().numpy()
        ranks, truth = np.argsort(np.argsort(scores, 1), 1), np.argsort(np.argsort(appeal[cold]))
        return float(np.mean([np.corrcoef(r, truth)[0, 1] for r in ranks]))

    assert rank_agreement(model) > rank_agreement(off) + 0.05  # measured: 0.85 vs 0.73
    with pytest.raises(ValueError, match="head.cold_map"):
        EASE(n_users, n_items, item_features=feats, history=hist, cold_bias=1.0)


def test_recency_weights_and_swapped_in_histories():
    hist = UserHistory.from_pairs(np.array([0, 0, 0, 0]), np.array([3, 1, 2, 1]), 3)  # oldest first: 3, 1, 2, 1
    rows = _dense_rows(hist, torch.tensor([0, 2]), 5, 0.5)
    assert rows[0].tolist() == [0.0, 1.0, 0.5, 0.125, 0.0]  # item 1 met twice: its newest weight
    assert rows[1].abs().sum() == 0  # no history
    assert _dense_rows(hist, torch.tensor([0]), 5, None)[0].tolist() == [0, 1, 1, 1, 0]

    n_users, n_items = 20, 8
    train = random_history(n_users, n_items, 3, seed=1)
    model = EASE(n_users + 1, n_items,
                 history=UserHistory.from_pairs(np.repeat(np.arange(n_users), 3), train.items, n_users + 1))
    newcomer = torch.tensor([n_users])  # never seen in training: no history, all-zero scores
    assert model.score_candidates(newcomer, torch.arange(n_items)).abs().sum() == 0
    before = model.weights
    swapped = UserHistory.from_pairs(np.array([n_users, n_users]), np.array([0, 1]), n_users + 1)
    model.set_history(swapped)
    expected = model.weights[0] + model.weights[1]
    assert torch.allclose(model.score_candidates(newcomer, torch.arange(n_items))[0], expected)
    assert model.weights is before  # refit=false: the training fit is kept
    pairs = model(torch.tensor([n_users, n_users]), torch.tensor([2, 5]))
    assert torch.allclose(pairs, expected[[2, 5]])

    refit = EASE(n_users, n_items, history=train, refit=True)
    first = refit.weights
    more = UserHistory.from_pairs(np.r_[np.repeat(np.arange(n_users), 3), 0], np.r_[train.items, 7], n_users)
    refit.set_history(more)
    assert not torch.allclose(refit.weights, first)  # fitted again on the new history
    refit.set_history(train)
    assert refit.weights is first  # a history seen before: its fit is reused


def test_bad_setups_fail_naming_the_key():
    hist = random_history(5, 6, 2)
    rated = UserHistory.from_pairs(np.array([0]), np.array([1]), 5, ratings=np.array([4.0], np.float32))
    with pytest.raises(ValueError, match="task=ranking"):
        EASE(5, 6, history=rated)
    with pytest.raises(ValueError, match="head.max_items"):
        EASE(5, 6, history=hist, max_items=4)
    with pytest.raises(ValueError, match="head.text_weight"):
        EASE(5, 6, history=hist, text_weight=1.0)
    with pytest.raises(ValueError, match="head.reg"):
        EASE(5, 6, history=hist, reg=0.0)
    with pytest.raises(ValueError, match="head.decay"):
        EASE(5, 6, history=hist, decay=0.0)


def test_pop_exponent_divides_each_column_by_its_items_popularity():
    """Known answer: the weights are the plain fit's columns / (1 + how many users hold the item)^g, so a
    popular item falls below a rarer one it was level with; g = 0 is the plain fit; g outside [0, 1] fails."""
    n_users, n_items = 40, 10
    hist = random_history(n_users, n_items, 4, seed=5)
    plain = EASE(n_users, n_items, history=hist, reg=3.0)
    damped = EASE(n_users, n_items, history=hist, reg=3.0, pop_exponent=0.5)
    counts = np.bincount(hist.items, minlength=n_items).astype(np.float64)
    expected = plain.weights.double().numpy() / np.sqrt(1.0 + counts)[None, :]
    assert np.allclose(damped.weights.double().numpy(), expected, atol=1e-6)
    assert torch.equal(EASE(n_users, n_items, history=hist, reg=3.0, pop_exponent=0.0).weights, plain.weights)
    # two items with the same score for a user but different popularity: the rarer one now ranks first
    scores = plain.score_candidates(torch.arange(n_users), torch.arange(n_items))
    damped_scores = damped.score_candidates(torch.arange(n_users), torch.arange(n_items))
    assert torch.allclose(damped_scores, scores / torch.as_tensor(np.sqrt(1.0 + counts), dtype=torch.float32),
                          atol=1e-5)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="head.pop_exponent"):
            EASE(n_users, n_items, history=hist, pop_exponent=bad)
