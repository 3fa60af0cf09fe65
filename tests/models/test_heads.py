"""Towers and heads: shapes, the cold-item/unseen-user rules, and score_candidates == forward."""

import numpy as np
import pytest
import torch

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.heads import MF, NCF


def build(cls=MF, features=True, **kw):
    torch.manual_seed(0)
    n_users, n_items = 6, 5
    history = UserHistory.from_pairs(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 3, 0]), n_users)
    warm = torch.tensor([1.0, 1, 1, 1, 0])  # item 4 never seen in training
    known = torch.tensor([1.0, 1, 1, 0, 0, 0])
    feats = torch.randn(n_items, 8) if features else None
    return cls(n_users=n_users, n_items=n_items, item_features=feats, history=history, warm_items=warm,
               known_users=known, global_mean=3.5, dim=4, init_std=0.5, **kw)


@pytest.mark.parametrize("cls", [MF, NCF])
def test_score_candidates_matches_pairwise_forward(cls):
    model = build(cls).eval()
    users, items = torch.arange(6), torch.arange(5)
    grid = model.score_candidates(users, items)
    pairs = model(users.repeat_interleave(5), items.repeat(6)).view(6, 5)
    torch.testing.assert_close(grid, pairs, rtol=1e-5, atol=1e-5)


def test_cold_item_id_embedding_is_masked_and_text_still_scores():
    model = build()
    with torch.no_grad():
        model.items.id_emb.weight[4] += 100.0  # an untrained ID row must never leak into scores
    v = model.items(torch.tensor([4]))
    expected = model.items.proj(model.items.features[4:5])
    torch.testing.assert_close(v, expected)


def test_id_only_model_falls_back_to_biases_for_unseen_user_and_item():
    model = build(features=False, user_history=False)
    with torch.no_grad():
        model.item_bias.weight[2] = 0.7
        model.user_bias.weight[4] = 5.0  # unseen user: its bias must be ignored
    score = model(torch.tensor([4]), torch.tensor([2]))
    assert score.item() == pytest.approx(3.5 + 0.7)  # global mean + item bias


def test_history_gives_unseen_users_a_vector_and_set_history_swaps_it():
    model = build()
    u = model.users(torch.tensor([3]))  # unseen, no history: zero vector (+ projection bias)
    model.users.set_history(UserHistory.from_pairs(np.array([3, 3]), np.array([1, 4]), 6))
    u2 = model.users(torch.tensor([3]))
    assert not torch.allclose(u, u2)


def test_id_dropout_only_in_training():
    model = build(id_dropout=1.0)
    model.train()
    trained = model.items(torch.tensor([0]))
    torch.testing.assert_close(trained, model.items.proj(model.items.features[0:1]))
    model.eval()
    assert not torch.allclose(model.items(torch.tensor([0])), trained)


def test_regularization_touches_only_batch_rows():
    model = build(l2=0.1)
    reg = model.regularization(torch.tensor([0]), torch.tensor([1]))
    reg.backward()
    grad = model.items.id_emb.weight.grad
    assert grad[1].abs().sum() > 0 and grad[[0, 2, 3, 4]].abs().sum() == 0
