"""head=episodic: episodes cut as documented, the closed form is the ridge optimum, a planted onboarding ->
later-taste link is learnt, and bad set-ups fail naming the key."""

import numpy as np
import pytest
import torch

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.episodic import EpisodicRidge


def history(rows, n_users):
    """rows: per user, a list of (item, liked) oldest first -> a history with weight 1 liked / 0 not."""
    users = np.concatenate([np.full(len(r), u) for u, r in enumerate(rows)]).astype(np.int64)
    items = np.array([i for r in rows for i, _ in r], np.int64)
    liked = np.array([float(w) for r in rows for _, w in r], np.float32)
    return UserHistory.from_pairs(users, items, n_users, weights=liked)


def test_episodes_are_windows_of_k_and_the_likes_after_them():
    rows = [[(0, 1), (1, 0), (2, 1), (3, 1), (4, 0), (5, 1)],  # 6 ratings: windows [0, 2), [2, 4)
            [(1, 1), (2, 1), (6, 1)],  # 3 ratings: window [0, 2) only
            [(3, 1), (4, 1)]]  # nothing after its first window: no episode
    model = EpisodicRidge(3, 7, history=history(rows, 3), k=2, episodes=3, negative_weight=0.25, reg=1.0)
    x, y = model._episodes(history(rows, 3))
    expected_x = np.zeros((3, 7))
    expected_y = np.zeros((3, 7))
    expected_x[0, [0, 1]] = [1.0, 0.25]
    expected_y[0, [2, 3, 5]] = 1.0  # item 4 was rated but not liked: not a target
    expected_x[1, [1, 2]] = 1.0
    expected_y[1, 6] = 1.0
    expected_x[2, [2, 3]] = 1.0  # user 0's second window
    expected_y[2, 5] = 1.0
    assert np.array_equal(x.numpy(), expected_x) and np.array_equal(y.numpy(), expected_y)
    assert model.n_episodes == 3
    # an item met twice in a window keeps its largest weight, in training as in scoring
    twice = history([[(0, 1), (0, 0), (1, 1)]], 1)
    model = EpisodicRidge(1, 3, history=twice, k=2, negative_weight=0.25, reg=1.0)
    x, _ = model._episodes(twice)
    assert x[0].tolist() == [1.0, 0.0, 0.0]
    reversed_order = history([[(0, 0), (0, 1), (1, 1)]], 1)
    assert model._episodes(reversed_order)[0][0].tolist() == [1.0, 0.0, 0.0]
    model.set_history(history([[(0, 0), (0, 1)]], 1))
    assert model._score(torch.tensor([0]), torch.eye(3, dtype=torch.float32), None, torch.zeros(3))[0, 0].item() \
        == pytest.approx(1.0 - model.input_mean[0].item())


def test_weights_are_the_ridge_optimum_and_scores_follow_the_swapped_in_support():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 30, 9, 3
    rows = [[(int(i), int(rng.random() < 0.7)) for i in rng.choice(n_items, 7, replace=False)]
            for _ in range(n_users)]
    model = EpisodicRidge(n_users, n_items, history=history(rows, n_users), k=k, episodes=2, reg=2.0,
                          negative_weight=0.5)
    x, y = (t.numpy() for t in model._episodes(history(rows, n_users)))
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = model.weights.double().numpy()
    # normal equations of min ||Yc - Xc W||^2 + reg ||W||^2, checked with numpy
    assert np.abs((xc.T @ xc + 2.0 * np.eye(n_items)) @ w - xc.T @ yc).max() < 1e-4
    support = history([[(1, 1), (4, 0), (7, 1)]] + [[] for _ in range(n_users - 1)], n_users)
    model.set_history(support)
    xu = np.zeros(n_items)
    xu[[1, 4, 7]] = [1.0, 0.5, 1.0]
    scores = model.score_candidates(torch.tensor([0]), torch.arange(n_items))[0].detach().numpy()
    assert np.allclose(scores, y.mean(0) + (xu - x.mean(0)) @ w, atol=1e-5)
    pairs = model(torch.zeros(n_items, dtype=torch.long), torch.arange(n_items)).detach().numpy()
    assert np.allclose(pairs, scores, atol=1e-5)
    assert np.allclose(model.candidate_scorer(torch.arange(n_items))(torch.tensor([0]))[0].detach().numpy(), scores, atol=1e-5)


def test_ease_term_is_the_zero_diagonal_ease_of_the_whole_histories_scaled_to_the_ridge_term():
    rng = np.random.default_rng(2)
    n_users, n_items = 25, 8
    rows = [[(int(i), int(rng.random() < 0.6)) for i in rng.choice(n_items, 6, replace=False)]
            for _ in range(n_users)]
    hist = history(rows, n_users)
    plain = EpisodicRidge(n_users, n_items, history=hist, k=2, episodes=2, reg=3.0)
    both = EpisodicRidge(n_users, n_items, history=hist, k=2, episodes=2, reg=3.0, ease_weight=0.7, ease_reg=5.0)
    h = np.zeros((n_users, n_items))
    for u, r in enumerate(rows):
        for i, liked in r:
            h[u, i] = 1.0 if liked else 0.5
    p = np.linalg.inv(h.T @ h + 5.0 * np.eye(n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    assert np.allclose(both.ease.double().numpy(), b, atol=1e-5)
    x, _ = (t.numpy() for t in both._episodes(hist))
    w = both.weights.double().numpy()
    assert both.blend == pytest.approx(0.7 * ((x - x.mean(0)) @ w).std(ddof=1) / (x @ b).std(ddof=1), rel=1e-5)
    users, items = torch.arange(n_users), torch.arange(n_items)
    diff = (both.score_candidates(users, items) - plain.score_candidates(users, items)).detach().numpy()
    assert np.allclose(diff, both.blend * h @ b, atol=1e-4)  # the whole difference is the EASE term
    pairs = both(users.repeat_interleave(n_items), items.repeat(n_users)).detach().numpy().reshape(n_users, n_items)
    assert np.allclose(pairs, both.score_candidates(users, items).detach().numpy(), atol=1e-4)
    assert np.allclose(both.candidate_scorer(items)(users).detach().numpy(), pairs, atol=1e-4)


def test_a_planted_onboarding_to_later_taste_link_is_learnt():
    """Two tastes: users of taste A rate onboarding items 0-4 first (liking 0-1), then like items 10-19; taste
    B rate the same onboarding items first but like 2-4, then like items 20-29. Both later sets are equally
    popular overall, so only the support's likes can tell them apart: a cold user of taste A must get taste-A
    items on top, far above the 0.5 share of chance."""
    rng = np.random.default_rng(1)
    rows = []
    for u in range(80):
        a = u % 2 == 0
        onboarding = [(i, int((i < 2) == a)) for i in rng.permutation(5)]
        later = rng.choice(np.arange(10, 20) if a else np.arange(20, 30), 6, replace=False)
        noise = rng.choice(np.arange(30, 40), 2, replace=False)
        rows.append(onboarding + [(int(i), 1) for i in later] + [(int(i), 0) for i in noise])
    model = EpisodicRidge(80, 40, history=history(rows, 80), k=5, episodes=1, reg=1.0, negative_weight=0.5)
    cold = [[(3, 0), (0, 1), (4, 0), (1, 1), (2, 0)], [(0, 0), (2, 1), (1, 0), (3, 1), (4, 1)]]
    model.set_history(history(cold, 2))
    scores = model.score_candidates(torch.tensor([0, 1]), torch.arange(10, 30))
    top_a = (scores[0].topk(10).indices < 10).float().mean().item()  # candidates 10-19 are indices 0-9
    top_b = (scores[1].topk(10).indices >= 10).float().mean().item()
    assert top_a == 1.0 and top_b == 1.0, (top_a, top_b)


def test_bad_setups_fail_naming_the_key():
    rows = [[(0, 1), (1, 1), (2, 1)], [(1, 1), (2, 0), (3, 1)]]
    hist = history(rows, 2)
    rated = UserHistory.from_pairs(np.array([0]), np.array([1]), 2, ratings=np.array([4.0], np.float32))
    with pytest.raises(ValueError, match="task=ranking"):
        EpisodicRidge(2, 4, history=rated, k=1)
    with pytest.raises(ValueError, match="head.max_items"):
        EpisodicRidge(2, 4, history=hist, max_items=3, k=1)
    for key, value in (("k", 0), ("k", 1.5), ("episodes", 0), ("reg", 0.0), ("negative_weight", 1.5),
                       ("ease_weight", -1.0), ("ease_reg", 0.0)):
        with pytest.raises(ValueError, match=f"head.{key}"):
            EpisodicRidge(2, 4, history=hist, **{"k": 1, key: value})
    with pytest.raises(ValueError, match="head.k=3"):  # nobody has a rating after their first 3
        EpisodicRidge(2, 4, history=hist, k=3)
    with pytest.raises(ValueError, match="head.k .*not set"):
        EpisodicRidge(2, 4, history=hist)
