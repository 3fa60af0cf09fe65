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
