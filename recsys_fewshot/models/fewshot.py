"""History-based CTR heads for few-shot samples (`split=tallrec`; every sample is a user of its own,
see data/tallrec.py). A user is read only through its history: (item, liked?) pairs, oldest first (a
`UserHistory` with weight +1 liked / -1 not liked), so no user ID is needed or learnt.

* `RandomScore` (``head=random``): a fixed pseudo-random score per (user, item) pair: the floor.
* `LikeRate` (``head=likerate``): the history's like-rate, i.e. the fraction of liked items (optionally
  smoothed and recency-weighted), as a logit.
* `FewShotCTR` (``head=fewshot``): a one-parameter-per-user logistic (Rasch) model.
  ``P(like) = sigmoid(theta_u + beta_i + gamma * content(u, i))`` where

  - ``beta_i = w . x_i + delta_i``: the item's appeal, from its frozen text vector ``x_i`` (a linear
    probe ``w``) plus an ID offset ``delta_i`` for items the training samples labelled;
  - ``theta_u`` is not a parameter: it is estimated for each sample from its own history, as the MAP of
    the same model on the history labels (a few Newton steps, differentiable) under a normal prior
    ``N(mu, 1 / prior_precision)``, with each history item weighted by ``recency ** (age - 1)``
    (age 1 = the latest). A user who dislikes items the model finds appealing is read as a harsh one;
  - ``content(u, i) = x_i . (mean x of liked history items - mean x of disliked ones)``: zero-shot
    similarity of the target to the user's likes and dislikes.

  At initialisation (w = 0, delta = 0, gamma = 0) this is the zero-shot score: a shrunk, recency-weighted
  like-rate. Training moves away from it only as far as the L2 priors allow; the penalties are not
  divided by the number of samples (a fixed prior), so 16 samples move it little and 256 more.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.capabilities import Capabilities

EPS = 1e-4


class HistoryHead(nn.Module):
    """Holds the users' histories as padded tensors; subclasses score (users, items) from them."""

    capabilities = Capabilities(new_users=True)  # users are their (sample) histories

    chunk_users = 1024
    cached_histories = 4  # padded histories kept for swapping (train, valid, test, + one)

    def __init__(self, n_users: int, n_items: int, history: Optional[UserHistory] = None,
                 max_history: int = 50, recency: float = 1.0, item_text: Optional[nn.Module] = None):
        super().__init__()
        if item_text is not None:
            raise ValueError("the history heads (random, likerate, fewshot) read frozen, cached text vectors: "
                             "use peft=frozen")
        if history is None:
            raise ValueError("this head reads users from their histories: use a split with sample histories "
                             "(split=tallrec, or CSV CTR data with a history column)")
        if not 0.0 < recency <= 1.0:
            raise ValueError(f"head.recency must be in (0, 1], got {recency}")
        self.n_users, self.n_items, self.max_history, self.recency = n_users, n_items, max_history, recency

    def set_history(self, history: UserHistory) -> None:
        """Swap in other users' histories (valid/test samples); no retraining. Keeps the latest `max_history`.

        The padded tensors of each history object are kept, so swapping back and forth (every validation)
        costs nothing after the first time.
        """
        cache = self.__dict__.setdefault("_padded", {})
        key = id(history)
        if key not in cache:
            while len(cache) >= self.cached_histories:  # the oldest goes first
                cache.pop(next(iter(cache)))
            cache[key] = (history, self._pad(history))  # holding `history` keeps its id from being reused
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        tensors = {name: value.to(device) for name, value in cache[key][1].items()}
        cache[key] = (history, tensors)
        for name, value in tensors.items():
            self.register_buffer(name, value, persistent=False)

    def _pad(self, history: UserHistory) -> dict[str, torch.Tensor]:
        lengths = np.minimum(history.lengths(), self.max_history)
        n_users, width = len(lengths), max(int(lengths.max(initial=0)), 1)
        items = np.zeros((n_users, width), np.int64)
        liked = np.zeros((n_users, width), np.float32)
        mask = np.zeros((n_users, width), np.float32)
        age = np.zeros((n_users, width), np.float32)
        rows = np.repeat(np.arange(n_users), lengths)
        cols = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        src = np.repeat(history.indptr[1:] - lengths, lengths) + cols  # the latest `lengths` entries of each user
        items[rows, cols] = history.items[src]
        liked[rows, cols] = (history.weights[src] > 0).astype(np.float32)
        mask[rows, cols] = 1.0
        age[rows, cols] = np.repeat(lengths, lengths) - cols  # 1 = the latest
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        out = {name: torch.as_tensor(value, device=device) for name, value in
               (("h_items", items), ("h_liked", liked), ("h_mask", mask), ("h_age", age))}
        out.update(self._user_cache(out))
        return out

    def _user_cache(self, padded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook: extra per-user tensors derived from the padded history (kept with it)."""
        return {}

    def history_weights(self, users: torch.Tensor, recency: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, L] weight of each history entry: 0 for padding, recency ** (age - 1) otherwise."""
        mask = self.h_mask[users]
        decay = recency if recency is not None else torch.tensor(self.recency, device=mask.device)
        if recency is None and self.recency == 1.0:
            return mask
        return mask * decay ** (self.h_age[users] - 1).clamp(min=0)

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[len(users), len(items)] scores (pairwise forward; CTR evaluation does not rank)."""
        out = []
        for start in range(0, len(users), self.chunk_users):
            chunk = users[start: start + self.chunk_users]
            uu = chunk.repeat_interleave(len(items))
            ii = items.repeat(len(chunk))
            out.append(self(uu, ii).view(len(chunk), len(items)))
        return torch.cat(out) if out else torch.zeros(0, len(items), device=items.device)

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=users.device)


class RandomScore(HistoryHead):
    """A fixed pseudo-random score per (user, item) pair (a hash of both and the seed), plus a trained bias."""

    def __init__(self, n_users: int, n_items: int, history: Optional[UserHistory] = None,
                 seed: int = 0,  # the fixed pseudo-random score per (sample, item)
                 global_mean: float = 0.0, item_text: Optional[nn.Module] = None):
        super().__init__(n_users, n_items, history, item_text=item_text)
        self.seed = seed
        self.bias = nn.Parameter(torch.tensor(float(global_mean)))
        self.set_history(history)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        # the classic fract(sin(.) * 43758.5453) hash, in float64: another seed gives unrelated scores
        x = users.double() * 12.9898 + items.double() * 78.233 + (self.seed + 1) * 37.719
        u = torch.frac(torch.sin(x).abs() * 43758.5453)
        return ((u - 0.5) * 4.0).float() + self.bias


class LikeRate(HistoryHead):
    """Score = logit((liked + prior) / (n + 2 prior)) + a trained bias; liked and n recency-weighted.

    With ``prior=0`` and ``recency=1`` the ranking is exactly that of the fraction of liked items (an
    empty history scores 0.5).
    """

    def __init__(self, n_users: int, n_items: int, history: Optional[UserHistory] = None,
                 prior: float = 0.0,  # pseudo-counts: (liked + prior) / (n + 2 prior); 0: the plain fraction liked
                 recency: float = 1.0,  # history item weight = recency ** (age - 1), age 1 the latest; 1: none
                 max_history: int = 50,  # the latest items of a history that are read
                 global_mean: float = 0.0, item_text: Optional[nn.Module] = None):
        super().__init__(n_users, n_items, history, max_history, recency, item_text)
        if prior < 0:
            raise ValueError(f"head.prior must be >= 0, got {prior}")
        self.prior = prior
        self.bias = nn.Parameter(torch.tensor(0.0))
        self.set_history(history)

    def rate(self, users: torch.Tensor) -> torch.Tensor:
        w = self.history_weights(users)
        liked = (w * self.h_liked[users]).sum(1)
        n = w.sum(1)
        rate = torch.where(n + self.prior > 0, (liked + self.prior) / (n + 2 * self.prior).clamp(min=EPS),
                           torch.full_like(n, 0.5))
        return rate.clamp(EPS, 1 - EPS)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        rate = self.rate(users)
        return torch.log(rate / (1 - rate)) + self.bias


class FewShotCTR(HistoryHead):
    """The few-shot Rasch model of the module doc (``head=fewshot``)."""

    capabilities = Capabilities(new_users=True, new_items=True)  # new items: appeal and content from their text

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None, known_users: Optional[torch.Tensor] = None,
                 global_mean: float = 0.0,
                 recency: float = 0.9,  # history weight recency ** (age - 1); 1 for unordered histories
                 prior_precision: float = 1.0,  # of the per-sample ability's prior: larger trusts a short history less
                 learn_prior: bool = False,  # also learn the prior's mean, precision and the recency (over-fits)
                 newton_steps: int = 5,  # steps of the per-sample MAP estimate
                 text_probe: bool = True,  # item appeal from a linear probe of the frozen text vector
                 item_id: bool = True,  # + an ID offset for items the training samples labelled
                 content: bool = True,  # + similarity of the target to the history's liked minus disliked items
                 l2_text: float = 3.0,  # L2 prior strengths (fixed, not per sample): larger stays nearer zero-shot
                 l2_id: float = 3.0,  # of the ID offsets
                 l2_content: float = 3.0,  # of the content weight
                 max_history: int = 50,  # the latest items of a history that are read
                 item_text: Optional[nn.Module] = None):
        if item_features is None and text_probe:
            raise ValueError("head.text_probe=true needs text vectors: set an encoder, or head.text_probe=false")
        if prior_precision <= 0:
            raise ValueError(f"head.prior_precision must be > 0, got {prior_precision}")
        self.use_text, self.use_id = text_probe and item_features is not None, item_id
        self.use_content = content and item_features is not None
        super().__init__(n_users, n_items, history, max_history, recency, item_text)
        self.newton_steps, self.l2_text, self.l2_id, self.l2_content = newton_steps, l2_text, l2_id, l2_content
        n_train = float(known_users.sum()) if known_users is not None else float(n_users)
        self.n_train = max(n_train, 1.0)  # training samples: the L2 priors are spread over them per batch
        self.mu = nn.Parameter(torch.tensor(float(global_mean)), requires_grad=learn_prior)
        self.log_precision = nn.Parameter(torch.tensor(float(np.log(prior_precision))), requires_grad=learn_prior)
        self.recency_logit = nn.Parameter(torch.logit(torch.tensor(min(recency, 1 - EPS))),
                                          requires_grad=learn_prior and recency < 1.0)
        if self.use_text:
            self.w = nn.Parameter(torch.zeros(item_features.shape[1]))
        if self.use_id:
            self.delta = nn.Parameter(torch.zeros(n_items))
        if self.use_content:
            self.gamma = nn.Parameter(torch.tensor(0.0))
        if item_features is not None:
            self.register_buffer("features", item_features.float(), persistent=False)
        self.set_history(history)

    def _user_cache(self, padded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.use_content:
            return {}
        features = self.features
        # mean text vector of each user's liked and of its disliked history items (fixed: computed once)
        liked = padded["h_mask"] * padded["h_liked"]
        disliked = padded["h_mask"] - liked
        taste = torch.zeros(len(liked), features.shape[1], device=features.device)
        for start in range(0, len(liked), 2048):  # chunks bound the [users, L, d] temporary
            sl = slice(start, start + 2048)
            x = features[padded["h_items"][sl]]
            mean_l = (x * liked[sl].unsqueeze(-1)).sum(1) / liked[sl].sum(1, keepdim=True).clamp(min=1)
            mean_d = (x * disliked[sl].unsqueeze(-1)).sum(1) / disliked[sl].sum(1, keepdim=True).clamp(min=1)
            taste[sl] = mean_l - mean_d
        return {"taste": taste}

    @contextlib.contextmanager
    def with_new_items(self, features: torch.Tensor) -> Iterator[None]:
        """A context (models/extend.py): items `n_items ..` are new: appeal w . x from their text, no ID
        offset (0), content from their text."""
        from recsys_fewshot.models.extend import grown, swapped

        if not hasattr(self, "features"):
            raise ValueError("this run has no text vectors (encoder=none): a new item has nothing to be scored by")
        values = {"features": torch.cat([self.features, features.to(self.features)]),
                  "n_items": self.n_items + len(features)}
        if self.use_id:
            values["delta"] = nn.Parameter(grown(self.delta, len(features)), requires_grad=False)
        with swapped(self, **values):
            yield

    def item_appeal(self, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        """beta of `items` (all items when None)."""
        device = self.h_items.device
        idx = items if items is not None else torch.arange(self.n_items, device=device)
        beta = torch.zeros(len(idx), device=device)
        if self.use_text:
            beta = beta + self.features[idx] @ self.w
        if self.use_id:
            beta = beta + self.delta[idx]
        return beta

    def theta(self, users: torch.Tensor, beta_all: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each user's MAP ability given its history labels and the history items' appeal."""
        recency = torch.sigmoid(self.recency_logit) if self.recency < 1.0 else None
        w = self.history_weights(users, recency)
        y = self.h_liked[users]
        beta_all = self.item_appeal() if beta_all is None else beta_all
        b = beta_all[self.h_items[users]]
        precision = self.log_precision.exp()
        theta = self.mu.expand(len(users))
        for _ in range(self.newton_steps):
            p = torch.sigmoid(theta.unsqueeze(1) + b)
            grad = (w * (y - p)).sum(1) - precision * (theta - self.mu)
            hess = (w * p * (1 - p)).sum(1) + precision
            theta = theta + grad / hess
        return theta

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        beta_all = self.item_appeal()
        out = self.theta(users, beta_all) + beta_all[items]
        if self.use_content:
            out = out + self.gamma * (self.taste[users] * self.features[items]).sum(-1)
        return out

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        beta_all = self.item_appeal()
        out = self.theta(users, beta_all).unsqueeze(1) + beta_all[items].unsqueeze(0)
        if self.use_content:
            out = out + self.gamma * self.taste[users] @ self.features[items].T
        return out

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """L2 priors (towards the zero-shot score) over the training samples: the batch loss is a mean, so
        mean loss + prior / n_train is the per-sample share of (summed loss + prior), whatever the batch size."""
        reg = torch.zeros((), device=users.device)
        if self.use_text:
            reg = reg + self.l2_text * self.w.pow(2).sum()
        if self.use_id:
            reg = reg + self.l2_id * self.delta.pow(2).sum()
        if self.use_content:
            reg = reg + self.l2_content * self.gamma.pow(2)
        return reg / self.n_train
