"""Serving users and items the model never trained on: histories, candidate sets, transfer, adaptation.

Called by train.py (a few lines each), so the orchestration stays readable:

* `history_of`: the users' histories the user tower pools, oldest first, with ratings for the rating task;
* `eval_histories`: what each evaluated part shows the user tower: train (+ cold users' support for
  `split=cold_users`, + valid for the test when `eval.history_with_valid`), and the items each part
  removes from the ranking (the same, so support and known items are never counted);
* `using_history`: swap a history into a model for one evaluation (`set_history`, no retraining);
* `load_init`: load another run's `model.safetensors` where names and shapes match (zero-shot transfer);
* `adapt_users`: optional per-user fine-tuning (`split.adapt_steps`) of a bias and a vector per cold
  user on their support ratings, the trained model frozen; reported apart (`test_adapted`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import torch

from recsys_fewshot.data.recdata import UserHistory

log = logging.getLogger(__name__)


def history_of(frame: pd.DataFrame, n_users: int, task: str, relevant: np.ndarray,
               all_rows: bool = False) -> UserHistory:
    """The rows a model learns from (ranking: the relevant ones), per user oldest first (ties: row order);
    ratings ride along for the rating task. `all_rows` (ranking): every row, weight 1 if relevant else 0
    (for heads that also read what a user did not like, e.g. head=ease with head.negative_weight > 0)."""
    keep = np.ones(len(frame), bool) if task != "ranking" or all_rows else relevant
    users = frame["user"].to_numpy()[keep]
    order = np.lexsort((np.arange(len(users)), frame["timestamp"].to_numpy()[keep], users))
    items = frame["item"].to_numpy()[keep][order]
    ratings = frame["rating"].to_numpy(np.float32)[keep][order] if task == "rating" else None
    weights = np.asarray(relevant, np.float32)[keep][order] if task == "ranking" and all_rows else None
    return UserHistory.from_pairs(users[order], items, n_users, weights=weights, ratings=ratings)


@dataclass
class EvalHistories:
    valid: Optional[UserHistory]  # None: the training history as it is
    test: Optional[UserHistory]
    exclude_valid: UserHistory  # items removed from the valid ranking
    exclude_test: UserHistory


def _pairs(frames: list[pd.DataFrame], n_users: int) -> UserHistory:
    frame = pd.concat(frames) if frames else pd.DataFrame({"user": [], "item": []})
    return UserHistory.from_pairs(frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64), n_users)


def eval_histories(split, n_users: int, task: str, relevant_of, with_valid: bool,
                   all_rows: bool = False) -> EvalHistories:
    """Histories and exclusions for valid and test. `relevant_of(frame)` is the task's relevance mask;
    `all_rows`: as `history_of`'s."""
    support = split.support if split.support is not None else split.train.iloc[:0]
    valid_seen = pd.concat([split.train, support])
    test_seen = pd.concat([split.train, support] + ([split.valid] if with_valid else []))
    swap_valid = split.support is not None
    swap_test = split.support is not None or with_valid
    return EvalHistories(
        valid=history_of(valid_seen, n_users, task, relevant_of(valid_seen), all_rows) if swap_valid else None,
        test=history_of(test_seen, n_users, task, relevant_of(test_seen), all_rows) if swap_test else None,
        exclude_valid=_pairs([split.train, support], n_users),
        exclude_test=_pairs([split.train, split.valid, support], n_users))


def _set_history(model, history: UserHistory) -> None:
    users = getattr(model, "users", None)
    if users is not None and hasattr(users, "set_history"):
        if not users.has_history:
            raise ValueError("this split serves users through their histories: set head.user_history=true")
        users.set_history(history)
    elif hasattr(model, "set_history"):
        model.set_history(history)
    else:
        raise ValueError(f"{type(model).__name__} cannot take new user histories (no set_history)")


def set_history(model, history: UserHistory) -> None:
    """Show `history` to the model's user tower from now on (a loaded run served after training)."""
    _set_history(model, history)


@contextlib.contextmanager
def using_history(model, history: Optional[UserHistory], restore: UserHistory) -> Iterator[None]:
    """Show `history` to the model's user tower inside the block (nothing to do when None)."""
    if history is None:
        yield
        return
    _set_history(model, history)
    try:
        yield
    finally:
        _set_history(model, restore)


def load_init(model: torch.nn.Module, run_dir: str) -> dict:
    """Copy the weights of another run's model.safetensors whose names and shapes match this model's;
    the rest (e.g. ID embeddings sized for another catalogue) keep their initial values."""
    from recsys_fewshot.checkpoint import read_tensors

    path = Path(run_dir).expanduser()
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"init_from={run_dir}: no model.safetensors there (a finished run's directory)")
    source = read_tensors(path, f"init_from={run_dir}")
    # a trainable text tower starts from its pretrained encoder, not from the run's head weights
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("items.text.")}
    loaded = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in source if k not in loaded)
    if not loaded:
        raise ValueError(f"init_from={run_dir}: none of its {len(source)} tensors fits this model "
                         "(another head=, head.dim or encoder?)")
    model.load_state_dict(loaded, strict=False)
    log.info("init_from %s: loaded %d tensors, skipped %d (%s)", path, len(loaded), len(skipped),
             ", ".join(skipped[:6]))
    return {"path": str(path), "loaded": len(loaded), "skipped": skipped,
            "not_initialised": sorted(k for k in own if k not in loaded)}


class Adapted(torch.nn.Module):
    """A trained recommender plus, per user, a bias and a vector fitted on that user's support:
    score = base score + b_u + d_u · v_i (v_i: the base item tower's vector). The base stays frozen."""

    def __init__(self, base: torch.nn.Module, n_users: int, dim: int):
        super().__init__()
        self.base = base
        self.bias = torch.nn.Parameter(torch.zeros(n_users))
        self.vec = torch.nn.Parameter(torch.zeros(n_users, dim))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        v = self.base.items(items)
        return self.base(users, items) + self.bias[users] + (self.vec[users] * v).sum(-1)

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        v = self.base.items(items)
        return self.base.score_candidates(users, items) + self.bias[users].unsqueeze(-1) + self.vec[users] @ v.T


def adapt_users(model: torch.nn.Module, support: pd.DataFrame, n_users: int, steps: int, lr: float,
                l2: float = 1.0) -> Adapted:
    """Fit the per-user bias and vector of `Adapted` on the support ratings (MSE + L2), `steps` full-batch
    Adam steps for all support users at once (their parameters are independent); rating task only."""
    if not hasattr(model, "items"):
        raise ValueError("split.adapt_steps needs a head with an item tower (head=mf, mlp or inductive)")
    dim = model.items(torch.zeros(1, dtype=torch.long, device=next(model.parameters()).device)).shape[-1]
    adapted = Adapted(model, n_users, dim).to(next(model.parameters()).device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # restored after (a frozen base stays frozen)
    for p in trainable:
        p.requires_grad_(False)
    device = adapted.bias.device
    # copies: the support table's arrays may be read-only (Arrow-backed), which torch warns about
    users = torch.tensor(support["user"].to_numpy(), device=device)
    items = torch.tensor(support["item"].to_numpy(), device=device)
    y = torch.tensor(support["rating"].to_numpy(np.float32), device=device)
    optimizer = torch.optim.Adam([adapted.bias, adapted.vec], lr=lr)
    model.eval()
    with torch.no_grad():
        base = model(users, items)
    for _ in range(steps):
        optimizer.zero_grad()
        pred = base + adapted.bias[users] + (adapted.vec[users] * model.items(items).detach()).sum(-1)
        loss = torch.nn.functional.mse_loss(pred, y) + l2 * (adapted.bias[users].pow(2).mean()
                                                              + adapted.vec[users].pow(2).sum(-1).mean())
        loss.backward()
        optimizer.step()
    for p in trainable:
        p.requires_grad_(True)
    return adapted.eval()
