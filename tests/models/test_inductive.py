"""Inductive user tower (histories with ratings, leave-one-out, K-shot episodes) and the sequential head."""

import numpy as np
import pytest
import torch

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.heads import MF
from recsys_fewshot.models.sequential import SeqRec

N_USERS, N_ITEMS = 6, 12


def history(users, items, ratings):
    return UserHistory.from_pairs(np.array(users), np.array(items), N_USERS, ratings=np.array(ratings, np.float32))


def make_mf(hist, **kw):
    torch.manual_seed(0)
    feats = torch.randn(N_ITEMS, 8)
    return MF(N_USERS, N_ITEMS, item_features=feats, history=hist, dim=4, user_id=False, history_weights="centred",
              history_bias=True, loo_history=True, init_std=0.3, global_mean=3.5, **kw)


def test_unseen_user_gets_a_vector_and_bias_from_a_swapped_in_history():
    hist = history([0, 0, 0, 1, 1], [1, 2, 3, 2, 4], [5, 1, 4, 3, 2])
    model = make_mf(hist).eval()
    user = torch.tensor([5])  # never seen in training: no history, no ID
    before = model.users(user)
    assert torch.allclose(before, model.users(torch.tensor([4])))  # no history: the same constant vector
    with torch.no_grad():
        model.item_bias.weight.normal_()
    model.users.set_history(history([0, 0, 0, 1, 1, 5, 5], [1, 2, 3, 2, 4, 7, 8], [5, 1, 4, 3, 2, 5, 2]))
    after = model.users(user)
    assert not torch.allclose(after, before) and torch.isfinite(after).all()
    # bias: shrunk mean of (rating - mu - item bias) over the two support ratings (scale starts at 1)
    b = model.item_bias.weight.squeeze(-1)
    expected = ((5 - 3.5 - b[7]) + (2 - 3.5 - b[8])) / (2 + model.bias_shrink)
    assert model._user_bias(user).item() == pytest.approx(expected.item(), rel=1e-5)


def test_leave_one_out_equals_the_history_without_that_item_and_hides_its_rating():
    hist = history([0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 2, 4], [5, 1, 4, 2, 3, 2])
    model = make_mf(hist).train()
    users, items = torch.tensor([0, 1]), torch.tensor([3, 2])
    with torch.no_grad():
        model.item_bias.weight.normal_()
        trained_view = model(users, items)
        # the same rows with those items really removed from the histories, scored in eval mode
        model.users.set_history(history([0, 0, 0, 1], [1, 2, 4, 4], [5, 1, 2, 2]))
        model.eval()
        reference = model(users, items)
        # changing the held-out ratings changes nothing in training mode: no label leak
        model.users.set_history(history([0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 2, 4], [5, 1, 1, 2, 5, 2]))
        model.train()
        leaked = model(users, items)
    assert torch.allclose(trained_view, reference, atol=1e-5)
    assert torch.allclose(leaked, reference, atol=1e-5)


def test_k_shot_episodes_pool_about_k_items_and_differ_between_batches():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(N_USERS), 10)
    items = np.concatenate([rng.choice(N_ITEMS, 10, replace=False) for _ in range(N_USERS)])
    model = make_mf(history(users, items, rng.integers(1, 6, len(users))), history_sample_k=3).train()
    u, i = torch.arange(N_USERS), torch.zeros(N_USERS, dtype=torch.long)
    counts = [model.users.select(u, i)[2].sum().item() / N_USERS for _ in range(200)]
    assert np.mean(counts) == pytest.approx(3 * 9 / 10 + 0.3 * 0, abs=0.35)  # ~k of the entries (minus item 0)
    torch.manual_seed(1)
    a = model(u, i)
    b = model(u, i)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.allclose(model(u, i), model(u, i))  # evaluation pools the whole history


def test_sequential_head_reads_only_the_past_in_training_and_everything_at_evaluation():
    torch.manual_seed(0)
    feats = torch.randn(N_ITEMS, 8)
    seqs = {0: [1, 2, 3, 4], 1: [5, 6], 2: [7]}
    users = np.concatenate([[u] * len(s) for u, s in seqs.items()])
    items = np.concatenate(list(seqs.values()))
    hist = UserHistory.from_pairs(users, items, N_USERS)
    model = SeqRec(N_USERS, N_ITEMS, item_features=feats, history=hist, dim=8, heads=2, dropout=0.0, max_len=3)
    model.train()
    u = torch.tensor([0, 0])
    prefix = model.user_vectors(u, torch.tensor([3, 11]))  # before item 3 = [1, 2]; 11 absent = all
    short = UserHistory.from_pairs(np.array([0, 0]), np.array([1, 2]), N_USERS)
    model.set_history(short)
    model.eval()
    assert torch.allclose(prefix[0], model.user_vectors(torch.tensor([0]))[0], atol=1e-5)
    model.set_history(hist)
    full = model.user_vectors(torch.tensor([0]))
    assert torch.allclose(prefix[1], full[0], atol=1e-5)  # max_len=3: reads [2, 3, 4]
    unseen = model.user_vectors(torch.tensor([4]))  # no history at all: still a finite unit vector
    assert torch.isfinite(unseen).all() and unseen.norm().item() == pytest.approx(1.0, abs=1e-5)
    scores = model.score_candidates(torch.arange(N_USERS), torch.arange(N_ITEMS))
    assert scores.shape == (N_USERS, N_ITEMS) and torch.isfinite(scores).all()


def test_text_pool_weights_recent_items_by_decay_and_has_nothing_to_train():
    from recsys_fewshot.models.sequential import TextPool

    feats = torch.eye(N_ITEMS)[:, :8] + 0.01  # item k (k < 8) points along axis k
    hist = UserHistory.from_pairs(np.array([0, 0, 0]), np.array([1, 2, 3]), N_USERS)  # oldest first
    model = TextPool(N_USERS, N_ITEMS, item_features=feats, history=hist, decay=0.5)
    scores = model.score_candidates(torch.tensor([0]), torch.tensor([1, 2, 3]))[0]
    assert scores[2] > scores[1] > scores[0]  # the newest item (3) weighs most
    w = torch.tensor([0.25, 0.5, 1.0])
    unit = torch.nn.functional.normalize(feats[[1, 2, 3]], dim=-1)
    user = torch.nn.functional.normalize((w.unsqueeze(-1) * unit).sum(0), dim=0)
    assert torch.allclose(model.user_text[0], user, atol=1e-6)
    assert [n for n, p in model.named_parameters()] == ["anchor"]


def test_text_pool_max_sim_is_a_weighted_soft_maximum_of_cosines_on_centred_vectors():
    from recsys_fewshot.models.sequential import TextPool

    torch.manual_seed(0)
    feats = torch.randn(N_ITEMS, 8)
    hist = UserHistory.from_pairs(np.array([0, 0, 0, 1, 1]), np.array([1, 2, 3, 4, 5]), N_USERS)  # oldest first
    model = TextPool(N_USERS, N_ITEMS, item_features=feats, history=hist, decay=0.5, pool="max_sim",
                     temperature=0.1, center=True)
    unit = torch.nn.functional.normalize(feats - feats.mean(0), dim=-1)
    cos = unit[[1, 2, 3]] @ unit.T  # user 0's history x every item
    w = torch.tensor([0.25, 0.5, 1.0]).unsqueeze(-1)
    expected = 0.1 * torch.log((w * torch.exp(cos / 0.1)).sum(0))
    items = torch.arange(N_ITEMS)
    full = model.score_candidates(torch.tensor([0, 1]), items)
    assert torch.allclose(full[0], expected, atol=1e-5)
    assert torch.allclose(model(torch.zeros(N_ITEMS, dtype=torch.long), items), expected, atol=1e-5)
    assert torch.allclose(model.candidate_scorer(items)(torch.tensor([0, 1])), full, atol=1e-5)
    # a soft maximum, not a mean: every history item scores near its own (top) cosine of 1
    assert (full[0, [1, 2, 3]] > 1 + 0.1 * np.log(0.25) - 1e-4).all()
    # a user two tastes apart: each taste's item beats what the mean of both vectors would rank first
    two = UserHistory.from_pairs(np.array([2, 2]), np.array([0, 7]), N_USERS)
    axes = torch.eye(N_ITEMS)[:, :8].clone()
    axes[9] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 1.0])  # between the two tastes
    for pool, winner in (("mean", 9), ("max_sim", 0)):
        m = TextPool(N_USERS, N_ITEMS, item_features=axes, history=two, decay=1.0, pool=pool, temperature=0.05)
        s = m.score_candidates(torch.tensor([2]), torch.tensor([0, 9]))[0]
        assert int(torch.tensor([0, 9])[s.argmax()]) == winner
    # users without a history: finite, equal scores
    assert torch.isfinite(full[1]).all() and torch.isfinite(model.score_candidates(torch.tensor([5]), items)).all()
    assert model.score_candidates(torch.tensor([5]), items).unique().numel() == 1
    with pytest.raises(ValueError, match="head.pool"):
        TextPool(N_USERS, N_ITEMS, item_features=feats, history=hist, pool="max")
    with pytest.raises(ValueError, match="head.temperature"):
        TextPool(N_USERS, N_ITEMS, item_features=feats, history=hist, pool="max_sim", temperature=0.0)


def test_hubness_correction_subtracts_each_items_mean_cosine_to_its_nearest_items():
    from recsys_fewshot.models.sequential import TextPool, hubness

    torch.manual_seed(1)
    unit = torch.nn.functional.normalize(torch.randn(N_ITEMS, 8), dim=-1)
    cos = unit @ unit.T
    cos.fill_diagonal_(-2.0)  # never its own neighbour
    expected = cos.topk(3, dim=1).values.mean(1)
    assert torch.allclose(hubness(unit, 3), expected, atol=1e-6)
    many = torch.nn.functional.normalize(torch.randn(300, 8), dim=-1)
    assert torch.allclose(hubness(many, 5, block=7), hubness(many, 5), atol=1e-6)  # blocks change nothing

    hist = UserHistory.from_pairs(np.array([0, 0, 1]), np.array([1, 2, 4]), N_USERS)
    items = torch.arange(N_ITEMS)
    for pool in ("mean", "max_sim"):
        plain = TextPool(N_USERS, N_ITEMS, item_features=unit, history=hist, pool=pool)
        hub = TextPool(N_USERS, N_ITEMS, item_features=unit, history=hist, pool=pool, hub_k=3, hub_weight=0.5)
        diff = plain.score_candidates(torch.tensor([0, 1]), items) - hub.score_candidates(torch.tensor([0, 1]), items)
        assert torch.allclose(diff, 0.5 * expected.expand(2, -1), atol=1e-5)  # every user, every item: -0.5 x hub
        assert torch.allclose(hub(torch.zeros(N_ITEMS, dtype=torch.long), items),
                              hub.score_candidates(torch.tensor([0]), items)[0], atol=1e-5)
        assert torch.allclose(hub.candidate_scorer(items)(torch.tensor([0, 1])),
                              hub.score_candidates(torch.tensor([0, 1]), items), atol=1e-5)
    # a hub (an item close to many others) drops below a slightly less similar item in an empty region
    e = torch.eye(8)
    axes = torch.cat([e, e[0] + 0.1 * torch.randn(4, 8)])  # items 8..11 crowd around axis 0
    axes[0], axes[1] = e[3] + 0.9 * e[0], e[3] + e[1]  # cosines with item 3: 0.743 and 0.707
    one = UserHistory.from_pairs(np.array([0]), np.array([3]), N_USERS)
    pair = torch.tensor([0, 1])
    s_plain = TextPool(N_USERS, N_ITEMS, item_features=axes, history=one).score_candidates(torch.tensor([0]), pair)[0]
    s_hub = TextPool(N_USERS, N_ITEMS, item_features=axes, history=one, hub_k=4, hub_weight=1.0).score_candidates(
        torch.tensor([0]), pair)[0]
    assert s_plain[0] > s_plain[1] and s_hub[1] > s_hub[0]
    for bad in ({"hub_weight": -0.1}, {"hub_weight": 0.3, "hub_k": 0}, {"hub_weight": 0.3, "hub_k": N_ITEMS}):
        with pytest.raises(ValueError, match="head.hub"):
            TextPool(N_USERS, N_ITEMS, item_features=unit, history=hist, **bad)


def test_init_from_loads_what_fits_and_fails_clearly(tmp_path):
    from recsys_fewshot import tracking
    from recsys_fewshot.inductive import load_init

    torch.manual_seed(0)
    feats = torch.randn(N_ITEMS, 8)
    hist = UserHistory.from_pairs(np.array([0, 0]), np.array([1, 2]), N_USERS)
    source = SeqRec(N_USERS, N_ITEMS, item_features=feats, history=hist, dim=8, heads=2)
    tracking.write_safetensors(tmp_path / "model.safetensors", source.state_dict())
    # another catalogue: more items, so the item ID embedding does not fit; everything else does
    target = SeqRec(N_USERS, N_ITEMS + 5, item_features=torch.randn(N_ITEMS + 5, 8), history=hist, dim=8, heads=2)
    info = load_init(target, str(tmp_path))
    assert info["skipped"] == ["items.id_emb.weight"] and info["not_initialised"] == ["items.id_emb.weight"]
    assert torch.equal(target.items.proj.weight, source.items.proj.weight)
    with pytest.raises(FileNotFoundError, match="init_from"):
        load_init(target, str(tmp_path / "nowhere"))
    other = SeqRec(N_USERS, N_ITEMS, item_features=torch.randn(N_ITEMS, 4), history=hist, dim=4, heads=2)
    with pytest.raises(ValueError, match="none of its"):
        load_init(other, str(tmp_path))


def test_per_user_adaptation_leaves_frozen_parameters_frozen():
    import pandas as pd

    from recsys_fewshot.inductive import adapt_users

    model = make_mf(history([0, 0, 1], [1, 2, 3], [5, 1, 4]))
    model.global_bias.requires_grad_(False)  # e.g. a frozen base encoder's weights
    support = pd.DataFrame({"user": [5, 5], "item": [7, 8], "rating": [5.0, 2.0]})
    adapted = adapt_users(model, support, N_USERS, steps=20, lr=0.05)
    assert not model.global_bias.requires_grad  # stays frozen
    assert model.item_bias.weight.requires_grad  # trainable ones are trainable again
    assert adapted.bias[5].abs().item() > 0  # the support moved the cold user's own bias


def test_whitening_evens_out_principal_directions_and_finds_a_signal_a_loud_direction_hides():
    from recsys_fewshot.models.sequential import TextPool, whitened

    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, 6, generator=g) * torch.tensor([9.0, 3.0, 1.0, 1.0, 0.5, 0.2])
    x = x - x.mean(0)
    s = torch.linalg.svdvals(x.double())
    assert torch.allclose(torch.linalg.svdvals(whitened(x, 1.0)), s[0].expand(6), rtol=1e-6)  # all equal
    assert torch.allclose(torch.linalg.svdvals(whitened(x, 0.5)), (s * s[0]).sqrt(), rtol=1e-6)
    assert torch.allclose(whitened(x, 0.0), x.double(), atol=1e-9)
    few = x[:4] - x[:4].mean(0)  # rank 3 < 6 dimensions: the null directions are dropped, nothing blows up
    assert torch.isfinite(whitened(few, 1.0)).all() and torch.linalg.matrix_rank(whitened(few, 1.0)) == 3

    # 200 items: five loud noise directions (std 3) and one quiet taste direction (+-0.5, two tastes); the
    # user's history holds 20 taste-A items. Raw cosines follow the noise: about half the top 20 is taste A
    # (0.25-0.70 over seeds 0-7); whitened, the taste direction counts as much as each noise one: all A.
    n = 200
    taste = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    feats = torch.cat([3 * torch.randn(n, 5, generator=g), 0.5 * taste[:, None]], dim=1)
    seen = np.arange(0, 40, 2)
    hist = UserHistory.from_pairs(np.zeros(len(seen), dtype=np.int64), seen, 1)
    share = {}
    for a in (0.0, 1.0):
        pool = TextPool(1, n, item_features=feats, history=hist, whiten=a)
        scores = pool.score_candidates(torch.tensor([0]), torch.arange(n))[0]
        scores[seen] = float("-inf")
        share[a] = (taste[scores.topk(20).indices] > 0).float().mean().item()
    assert share[0.0] < 0.8 and share[1.0] > 0.95, share
    for bad in (-0.2, 1.2):
        with pytest.raises(ValueError, match="head.whiten"):
            TextPool(1, n, item_features=feats, history=hist, whiten=bad)
