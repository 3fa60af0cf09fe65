"""Training losses by task: MSE (rating), binary cross-entropy (ctr), sampled softmax (ranking).

`TaskLoss` wraps a recommender into a module whose forward returns the loss of a batch, so the
engine can hand it to Accelerate (DDP then sees every parameter the loss touches).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("rating", "ctr", "ranking")


class TaskLoss(nn.Module):
    def __init__(self, model: nn.Module, task: str, num_negatives: int = 64,
                 negative_pool: Optional[torch.Tensor] = None):
        """`negative_pool`: the item indices ranking negatives are drawn from (the items seen in training, so
        held-out cold items stay unseen); None or every item: uniform over all items."""
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
        self.model, self.task, self.num_negatives = model, task, num_negatives
        if negative_pool is not None and len(negative_pool) in (0, model.n_items):
            negative_pool = None
        self.register_buffer("negative_pool", negative_pool, persistent=False)

    def forward(self, batch: tuple) -> torch.Tensor:
        loss = self.task_loss(batch)
        kg = getattr(self.model, "kg", None)
        if kg is not None:  # kg=...: joint training, CKE-style: + kg.weight x the KG loss of sampled triples
            loss = loss + kg.weight * kg.loss()
        return loss

    def task_loss(self, batch: tuple) -> torch.Tensor:
        users, items, target = batch
        reg = self.model.regularization(users, items)
        if self.task == "rating":
            return F.mse_loss(self.model(users, items), target) + reg
        if self.task == "ctr":
            return F.binary_cross_entropy_with_logits(self.model(users, items), target) + reg
        # ranking: softmax over the positive and uniformly drawn negatives shared by the batch;
        # a negative that happens to be the row's positive is masked out
        if self.num_negatives <= 0:  # full softmax: every item of the pool (cheap up to ~10^4 items)
            negatives = self.negative_pool if self.negative_pool is not None \
                else torch.arange(self.model.n_items, device=items.device)
        elif self.negative_pool is None:
            negatives = torch.randint(0, self.model.n_items, (self.num_negatives,), device=items.device)
        else:
            draw = torch.randint(0, len(self.negative_pool), (self.num_negatives,), device=items.device)
            negatives = self.negative_pool[draw]
        if hasattr(self.model, "sampled_scores"):  # one user pass for the positive and the negatives
            logits = self.model.sampled_scores(users, items, negatives)
            pos, neg = logits[:, :1], logits[:, 1:]
        else:
            pos = self.model(users, items).unsqueeze(-1)
            neg = self.model.score_candidates(users, negatives)
        neg = neg.masked_fill(negatives.unsqueeze(0) == items.unsqueeze(-1), float("-inf"))
        logits = torch.cat([pos, neg], -1)
        return F.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long, device=users.device)) + reg
