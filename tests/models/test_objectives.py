"""TaskLoss: ranking negatives are drawn only from the items seen in training (cold items stay unseen)."""

import torch

from recsys_fewshot.models.heads import MF
from recsys_fewshot.models.objectives import TaskLoss


class Spy(MF):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: set[int] = set()

    def sampled_scores(self, users, items, negatives):
        self.seen |= set(negatives.tolist())
        return super().sampled_scores(users, items, negatives)


def test_ranking_negatives_come_from_the_pool_only():
    torch.manual_seed(0)
    model = Spy(5, 20, dim=4)
    pool = torch.arange(0, 20, 2)  # the even items were seen in training; the odd ones are cold
    loss = TaskLoss(model, "ranking", num_negatives=64, negative_pool=pool)
    batch = (torch.tensor([0, 1, 2]), torch.tensor([0, 2, 4]), torch.ones(3))
    for _ in range(5):
        assert torch.isfinite(loss(batch))
    assert model.seen == set(pool.tolist())
    everything = Spy(5, 20, dim=4)
    TaskLoss(everything, "ranking", num_negatives=256, negative_pool=torch.arange(20))(batch)  # all warm: uniform
    assert len(everything.seen) > 10 and everything.seen & set(range(1, 20, 2))


def test_zero_negatives_is_the_full_softmax_over_the_pool():
    torch.manual_seed(0)
    model = MF(5, 20, dim=4, init_std=0.5)
    pool = torch.arange(0, 20, 2)
    users, items = torch.tensor([0, 1, 3]), torch.tensor([0, 2, 4])
    loss = TaskLoss(model, "ranking", num_negatives=0, negative_pool=pool)((users, items, torch.ones(3)))
    scores = model.score_candidates(users, pool)  # every pool item; each row's positive is in the pool
    target = torch.tensor([int((pool == i).nonzero()) for i in items])
    expected = torch.nn.functional.cross_entropy(scores, target) + model.regularization(users, items)
    torch.testing.assert_close(loss, expected)
