"""History-based CTR heads: the like-rate and random baselines (known answers) and the few-shot Rasch model
(its zero-shot start, the per-sample MAP ability, history swaps, and a planted item appeal it must learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fakes import GENRES, planted_ctr_samples
from recsys_fewshot import metrics as M
from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.fewshot import FewShotCTR, LikeRate, RandomScore
from recsys_fewshot.models.objectives import TaskLoss


def histories(rows: list[list[tuple[int, int]]]) -> UserHistory:
    """One user per row of (item, 0/1 label) pairs, oldest first, as data/tallrec.py builds them."""
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    items = np.asarray([i for r in rows for i, _ in r], np.int64)
    labels = np.asarray([v for r in rows for _, v in r], np.float32)
    return UserHistory.from_pairs(users, items, len(rows), weights=2 * labels - 1, ratings=labels)


def scores(model, users, items) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(users), torch.as_tensor(items)).numpy()


def test_likerate_auc_by_hand():
    hist = histories([[(0, 1), (1, 1), (2, 0), (3, 0)],  # 2/4 liked
                      [(0, 1), (1, 1), (2, 1), (3, 0)],  # 3/4
                      [(0, 0), (1, 0), (2, 0), (3, 1)],  # 1/4
                      []])  # no history: 0.5
    model = LikeRate(4, 5, history=hist)
    s = scores(model, [0, 1, 2, 3], [4, 4, 4, 4])
    assert 1 / (1 + np.exp(-s)) == pytest.approx([0.5, 0.75, 0.25, 0.5], abs=1e-5)
    # labels 1, 1, 0, 0: positives 0.5, 0.75 against negatives 0.25, 0.5 -> wins 1 + 1 + 1, one tie -> 3.5 / 4
    assert M.auc([1, 1, 0, 0], s) == pytest.approx(0.875)
    assert [p.shape for p in model.parameters()] == [torch.Size([])]  # a calibration bias, nothing else


def test_likerate_prior_and_recency():
    hist = histories([[(0, 1), (1, 0)]])  # the latest item (1) is disliked
    model = LikeRate(1, 2, history=hist, prior=1.0, recency=0.5)
    p = 1 / (1 + np.exp(-scores(model, [0], [0])))
    # weights: latest 1.0 (label 0), previous 0.5 (label 1): (0.5 + 1) / (1.5 + 2)
    assert p[0] == pytest.approx(1.5 / 3.5, abs=1e-5)
    with pytest.raises(ValueError, match="head.recency must be in"):
        LikeRate(1, 2, history=hist, recency=0.0)
    with pytest.raises(ValueError, match="split=tallrec"):
        LikeRate(1, 2, history=None)
    with pytest.raises(ValueError, match="use peft=frozen"):
        LikeRate(1, 2, history=hist, item_text=torch.nn.Linear(1, 1))  # a trainable text tower (joint training)


def test_random_is_fixed_per_pair_and_uninformative():
    hist = histories([[(0, 1)]] * 2000)
    model = RandomScore(2000, 50, history=hist, seed=3)
    users, items = np.arange(2000), np.arange(2000) % 50
    a, b = scores(model, users, items), scores(model, users, items)
    assert np.array_equal(a, b) and len(np.unique(a)) > 1900
    y = np.random.default_rng(0).integers(0, 2, 2000)
    assert abs(M.auc(y, a) - 0.5) < 0.05
    assert not np.array_equal(a, scores(RandomScore(2000, 50, history=hist, seed=4), users, items))


def test_fewshot_starts_as_the_zero_shot_map_ability():
    rows = [[(0, 1), (1, 1), (2, 1), (3, 0)], [(0, 0), (1, 0), (2, 1), (3, 0)], [(0, 1), (1, 0)]]
    model = FewShotCTR(3, 6, item_features=torch.randn(6, 8), history=histories(rows), global_mean=0.3,
                       recency=0.8, prior_precision=2.0, newton_steps=20)
    s = scores(model, [0, 1, 2], [5, 5, 5])
    # w = delta = gamma = 0: the score is the MAP ability, solving sum w_j (y_j - sigmoid(t)) = 2 (t - 0.3)
    for row, t in zip(rows, s):
        y = np.array([v for _, v in row], float)
        w = 0.8 ** (len(row) - 1 - np.arange(len(row)))
        assert (w * (y - 1 / (1 + np.exp(-t)))).sum() == pytest.approx(2.0 * (t - 0.3), abs=1e-4)
    assert s[0] > s[2] > s[1]  # more (and more recent) likes, higher ability
    # the per-target score does not depend on the target item until something is learnt
    assert scores(model, [0, 0], [1, 4]) == pytest.approx([s[0], s[0]], abs=1e-6)
    cands = model.score_candidates(torch.tensor([0, 1]), torch.arange(6)).detach().numpy()
    assert cands[:, 5] == pytest.approx(s[:2], abs=1e-5)


def test_history_swap_changes_only_who_is_read():
    train = histories([[(0, 1), (1, 1)], []])
    full = histories([[(0, 1), (1, 1)], [(0, 0), (1, 0)]])
    model = FewShotCTR(2, 3, item_features=torch.randn(3, 4), history=train)
    before = scores(model, [0, 1], [2, 2])
    model.set_history(full)
    after = scores(model, [0, 1], [2, 2])
    assert after[0] == pytest.approx(before[0]) and after[1] < before[1]  # user 1 now shows two dislikes
    model.set_history(train)
    assert scores(model, [0, 1], [2, 2]) == pytest.approx(before)


def test_regularisation_is_a_fixed_prior_shared_per_training_sample():
    model = FewShotCTR(10, 4, item_features=torch.randn(4, 3), history=histories([[(0, 1)]] * 10),
                       known_users=torch.tensor([1.0] * 5 + [0.0] * 5), l2_text=2.0, l2_id=3.0, l2_content=4.0)
    with torch.no_grad():
        model.w.copy_(torch.tensor([1.0, 0.0, 2.0]))
        model.delta.copy_(torch.tensor([1.0, 1.0, 0.0, 0.0]))
        model.gamma.fill_(0.5)
    expected = (2.0 * 5 + 3.0 * 2 + 4.0 * 0.25) / 5  # over the 5 training samples, whatever the batch
    for batch in (1, 5):
        assert float(model.regularization(torch.arange(batch), torch.zeros(batch, dtype=torch.long)).detach()) == \
            pytest.approx(expected)


def test_fewshot_learns_a_planted_item_appeal_the_like_rate_cannot_see():
    samples, titles = planted_ctr_samples(n_samples=500, n_items=30, seed=4)
    rng = np.random.default_rng(0)
    genre = np.array([GENRES.index(t.split()[2]) for t in titles])
    features = torch.as_tensor(np.eye(len(GENRES))[genre] + 0.1 * rng.normal(size=(30, len(GENRES))),
                               dtype=torch.float32)
    rows = [list(zip(h, lab)) for h, lab, _, _ in samples]
    targets = np.array([t for _, _, t, _ in samples])
    y = np.array([v for *_, v in samples], np.float32)
    n_train = 64  # few-shot: 64 samples train, 436 test
    model = FewShotCTR(500, 30, item_features=features, history=histories(rows),
                       known_users=torch.tensor([1.0] * n_train + [0.0] * (500 - n_train)), recency=1.0)
    loss = TaskLoss(model, "ctr")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    users, items = torch.arange(n_train), torch.as_tensor(targets[:n_train])
    for _ in range(150):
        opt.zero_grad()
        loss((users, items, torch.as_tensor(y[:n_train]))).backward()
        opt.step()
    test = np.arange(n_train, 500)
    learnt = M.auc(y[test], scores(model, test, targets[test]))
    rate = M.auc(y[test], scores(LikeRate(500, 30, history=histories(rows)), test, targets[test]))
    assert learnt > rate + 0.1, (learnt, rate)
    appeal = model.item_appeal().detach().numpy()
    liked_genres = np.isin(genre, [1, 2, 4])
    assert appeal[liked_genres].mean() > appeal[~liked_genres].mean() + 0.3  # shrunk by the priors, but there
