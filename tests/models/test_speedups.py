"""The fast paths give the answers of the plain ones: one user pass per distinct user (values and gradients),
the MF full-ranking scorer with its biases folded into the matmul, CSR history pooling, vectorised history
entries, and user-grouped batches (every row once, each user's rows together, seeded)."""

import numpy as np
import pytest
import torch

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.engine import GroupedSampler, batch_loader
from recsys_fewshot.models.heads import MF, NCF
from recsys_fewshot.models.towers import _pool_rows, bag_sum

N_USERS, N_ITEMS = 9, 7


def build(cls=MF, seed=0, **kw):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    users, items = rng.integers(0, N_USERS, 40), rng.integers(0, N_ITEMS, 40)
    history = UserHistory.from_pairs(users, items, N_USERS, ratings=rng.integers(1, 6, 40).astype(np.float32))
    model = cls(n_users=N_USERS, n_items=N_ITEMS, item_features=torch.randn(N_ITEMS, 5), history=history,
                global_mean=3.0, dim=4, init_std=0.5, **kw)
    with torch.no_grad():  # biases away from their zero start, so a misplaced bias changes the scores
        model.user_bias.weight.normal_()
        model.item_bias.weight.normal_()
    return model


def per_row_scores(model, users, items):
    """The score of every row with the user tower run on every row (no sharing between rows)."""
    u, v = model.users(users), model.items(items)
    return model.pair_score(u, v) + model._user_bias(users) + model._item_bias(items) + model.global_bias


@pytest.mark.parametrize("cls", [MF, NCF])
def test_one_user_pass_per_distinct_user_gives_the_same_values_and_gradients(cls):
    model = build(cls).train()
    model.apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)
    users = torch.tensor([3, 1, 3, 3, 0, 1, 8, 3])  # repeats: the shared path is taken
    items = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])
    target = torch.randn(len(users))
    shared = model(users, items)
    ((shared - target) ** 2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    plain = per_row_scores(model, users, items)
    ((plain - target) ** 2).sum().backward()
    torch.testing.assert_close(shared, plain)
    assert grads, "no gradients reached the model"
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, msg=name)
    assert model.users.hist_id.weight.grad.abs().sum() > 0  # the history part did take part


def test_mf_full_ranking_scorer_folds_the_biases_into_the_matmul():
    model = build().eval()
    users, items = torch.arange(N_USERS), torch.tensor([6, 2, 0, 5])
    with torch.no_grad():
        grid = model.candidate_scorer(items)(users)
        expected = per_row_scores(model, users.repeat_interleave(len(items)), items.repeat(N_USERS))
    torch.testing.assert_close(grid, expected.view(N_USERS, len(items)), rtol=1e-5, atol=1e-5)


def test_csr_pooling_equals_a_loop():
    rng = np.random.default_rng(1)
    features = torch.randn(11, 6)
    lengths = np.array([3, 0, 5, 1, 0, 4])  # empty rows included
    indptr = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)]))
    items = torch.as_tensor(rng.integers(0, 11, lengths.sum()))
    weights = torch.rand(int(lengths.sum()))
    pooled = _pool_rows(features, indptr, items, weights, len(lengths))
    for r in range(len(lengths)):
        part = slice(int(indptr[r]), int(indptr[r + 1]))
        expected = (features[items[part]] * weights[part, None]).sum(0)
        torch.testing.assert_close(pooled[r], expected)
    assert _pool_rows(features, torch.zeros(3, dtype=torch.long), items[:0], weights[:0], 2).abs().sum() == 0


def test_history_entries_match_rows():
    history = UserHistory.from_pairs(np.array([2, 0, 2, 2, 4]), np.array([5, 1, 3, 2, 0]), 6)
    users = np.array([2, 1, 4, 2])
    rows, items = history.entries(users)
    expected_rows = np.concatenate([np.full(len(history.row(u)), i) for i, u in enumerate(users)])
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(items, np.concatenate([history.row(u) for u in users]))


def test_grouped_sampler_covers_every_row_once_with_users_together():
    rng = np.random.default_rng(0)
    groups = torch.as_tensor(rng.integers(0, 50, 1000))
    sampler = GroupedSampler(groups, torch.Generator().manual_seed(3))
    first, second = list(sampler), list(sampler)
    for order in (first, second):
        assert sorted(order) == list(range(1000))
        seq = groups[torch.tensor(order)].numpy()
        changes = 1 + np.count_nonzero(seq[1:] != seq[:-1])
        assert changes == len(np.unique(seq))  # each user's rows form one run
    assert first != second  # a new order every epoch
    again = list(GroupedSampler(groups, torch.Generator().manual_seed(3)))
    assert again == first  # and the same orders for the same seed


def test_grouped_batches_hold_few_users():
    users = torch.arange(600) % 60  # 10 rows per user
    loader = batch_loader(users, torch.arange(600), batch_size=50, shuffle=True, seed=0, groups=users)
    batches = list(loader)
    assert sum(len(b[0]) for b in batches) == 600
    assert max(len(torch.unique(b[0])) for b in batches) <= 6  # 5 whole users, plus one split at an edge
    rows = batch_loader(users, torch.arange(600), batch_size=50, shuffle=True, seed=0)
    assert min(len(torch.unique(b[0])) for b in list(rows)[:-1]) > 20  # a uniform shuffle mixes users


def test_bag_sum_matches_embedding_bag_values_and_gradients():
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(12, 5, mode="sum")
    items = torch.tensor([3, 3, 0, 11, 7, 2, 3, 9])
    offsets = torch.tensor([0, 2, 2, 5, 8])  # bag 1 and the last bag are empty
    weights = torch.rand(len(items))
    grad = torch.randn(len(offsets), 5)
    expected = bag(items, offsets, per_sample_weights=weights)
    (expected * grad).sum().backward()
    reference = bag.weight.grad.clone()
    bag.weight.grad = None
    fast = bag_sum(bag, items, offsets, weights)
    (fast * grad).sum().backward()
    torch.testing.assert_close(fast, expected)
    torch.testing.assert_close(bag.weight.grad, reference)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lazy_adamw_is_adamw_on_dense_gradients_and_on_fully_touched_sparse_tables(weight_decay):
    from recsys_fewshot.optim import LazyAdamW

    torch.manual_seed(0)
    dense, sparse, reference = (torch.nn.Embedding(6, 3, sparse=s) for s in (False, True, False))
    sparse.load_state_dict(dense.state_dict())
    reference.load_state_dict(dense.state_dict())
    lin, lin_ref = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    lin_ref.load_state_dict(lin.state_dict())
    ours = LazyAdamW([*sparse.parameters(), *lin.parameters()], lr=0.05, weight_decay=weight_decay)
    torch_ = torch.optim.AdamW([*reference.parameters(), *lin_ref.parameters()], lr=0.05, weight_decay=weight_decay)
    every_row = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    for _ in range(5):
        for emb, head, opt in ((sparse, lin, ours), (reference, lin_ref, torch_)):
            opt.zero_grad()
            (head(emb(every_row)) ** 2).sum().backward()
            opt.step()
    assert sparse.weight.grad is None or sparse.weight.grad.is_sparse
    torch.testing.assert_close(sparse.weight, reference.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lin.weight, lin_ref.weight, rtol=1e-5, atol=1e-6)


def test_lazy_adamw_leaves_untouched_rows_alone():
    from recsys_fewshot.optim import LazyAdamW

    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4, sparse=True)
    before = emb.weight.detach().clone()
    opt = LazyAdamW(emb.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.zero_grad()
        emb(torch.tensor([1, 7, 7])).sum().backward()
        opt.step()
    changed = (emb.weight.detach() != before).any(-1)
    assert changed.tolist() == [i in (1, 7) for i in range(10)]
