"""`head=episodic`: a closed-form few-shot ranker trained on episodes that mimic the cold-user protocol.

Each warm (training) user's history, oldest first, is cut into `episodes` windows of `k` consecutive
interactions, starting at 0, k, 2k, ...: an episode's input is the window (a liked item counts 1, a
rated-but-not-liked one `negative_weight`), its target every item the user liked after the window. A user
contributes an episode when the window and what follows it are not empty. With X the inputs (episodes x
items), Y the targets, x̄ and ȳ their column means, the model is the ridge regression

    W = ((X - x̄)ᵀ(X - x̄) + reg·I)⁻¹ (X - x̄)ᵀ (Y - ȳ),      score(u, j) = ȳ_j + (x_u - x̄)·W[:, j]

so an item's score starts from how often it is liked *after* a user's first k ratings (not its popularity
over whole histories) and moves with what the user's k ratings say. `ease_weight` = β > 0 adds an EASE
(Steck 2019) co-occurrence term fitted on the whole training histories, B = −P / diag(P), P = (HᵀH +
`ease_reg`·I)⁻¹, diag(B) = 0: score += β·r·(x_u·B), r = the ratio of the two terms' spreads over the
training episodes (so β is free of their scales). This is what the cold-user protocol asks
(a new user's first K ratings by time; their later liked items are the queries); a user's K support ratings
are swapped in as x_u at evaluation, without retraining. Nothing is trained by gradient (declared `closed_form`);
W is n_items² floats (`max_items` guards). Deterministic.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.capabilities import Capabilities
from recsys_fewshot.models.ease import _dense_rows, check_item_item_head, ease_solution, history_gram


class EpisodicRidge(nn.Module):
    # fitted when built (no epochs); histories hold the not-liked rows too (weight 0), so windows count every rating
    capabilities = Capabilities(tasks=("ranking",), closed_form=True, all_rows=True, new_users=True)
    chunk_pairs = 2048

    def __init__(self, n_users: int, n_items: int, history: Optional[UserHistory] = None,
                 k: Optional[int] = None,  # window size: the support size of the cold-user protocol (split.k)
                 episodes: int = 1,  # windows per training user, starting at 0, k, 2k, ...
                 reg: float = 100.0,  # ridge of the window -> later-likes regression: tune on valid
                 negative_weight: float = 0.5,  # input weight of a rated-but-not-liked window item (liked: 1)
                 ease_weight: float = 0.0,  # > 0: + this x (scale-matched) EASE co-occurrence scores
                 ease_reg: float = 400.0,  # that EASE's lambda
                 max_items: int = 30000,  # the weight matrix is n_items^2 floats
                 item_text: Optional[nn.Module] = None):
        super().__init__()
        if item_text is not None:
            raise ValueError("head=episodic reads no text: use peft=frozen")
        check_item_item_head("episodic", history, n_items, max_items, "model=inductive")
        if k is None:
            raise ValueError("head.k (the window size) is not set: split=cold_users sets it from split.k; "
                             "with another split give head.k=<number of ratings a new user brings>")
        if int(k) != k or k < 1:
            raise ValueError(f"head.k must be a whole number >= 1 (the support size), got {k}")
        if int(episodes) != episodes or episodes < 1:
            raise ValueError(f"head.episodes must be a whole number >= 1, got {episodes}")
        if not reg > 0:
            raise ValueError(f"head.reg must be > 0, got {reg}")
        if not 0 <= negative_weight <= 1:
            raise ValueError(f"head.negative_weight must be in [0, 1], got {negative_weight}")
        if ease_weight < 0 or not ease_reg > 0:
            raise ValueError(f"head.ease_weight must be >= 0 and head.ease_reg > 0, got {ease_weight}, {ease_reg}")
        self.n_users, self.n_items, self.k, self.episodes = n_users, n_items, int(k), int(episodes)
        self.reg, self.negative_weight = float(reg), float(negative_weight)
        self.ease_weight, self.ease_reg = float(ease_weight), float(ease_reg)
        self.anchor = nn.Parameter(torch.zeros(()))  # lets the optimiser and the engine run; unused in scores
        n, x_sum, y_sum, xtx, xty = 0, 0.0, 0.0, 0.0, 0.0
        for x, y in self._episode_chunks(history):  # X^T X and X^T Y a chunk of episodes at a time
            n, x_sum, y_sum = n + len(x), x_sum + x.sum(0), y_sum + y.sum(0)
            xtx, xty = xtx + x.T @ x, xty + x.T @ y
        if n == 0:
            raise ValueError(f"head=episodic: no training user has an interaction after their first "
                             f"head.k={self.k}: lower head.k")
        self.n_episodes = n
        x_mean, y_mean = x_sum / n, y_sum / n
        gram = xtx - n * torch.outer(x_mean, x_mean)  # (X - x̄)^T (X - x̄)
        gram.diagonal().add_(self.reg)
        weights = torch.cholesky_solve(xty - n * torch.outer(x_mean, y_mean), torch.linalg.cholesky(gram))
        ease, blend = torch.zeros(0, 0, dtype=torch.float64), 0.0
        if self.ease_weight > 0:
            ease = self._ease(history)
            ridge_part, ease_part = _Spread(), _Spread()
            for x, _ in self._episode_chunks(history):
                ridge_part.add((x - x_mean) @ weights)
                ease_part.add(x @ ease)
            blend = self.ease_weight * ridge_part.std() / max(ease_part.std(), 1e-12)
        device = self.anchor.device
        self.blend = blend
        self.register_buffer("weights", weights.float().to(device), persistent=False)
        self.register_buffer("input_mean", x_mean.float().to(device), persistent=False)
        self.register_buffer("target_mean", y_mean.float().to(device), persistent=False)
        self.register_buffer("ease", ease.float().to(device), persistent=False)
        self.history = history

    def _episode_chunks(self, history: UserHistory, chunk: int = 2048):
        """(inputs, targets) float64 blocks of at most `chunk` episodes: one row per (user, window) with a
        non-empty window and at least one rating after it. An item met twice in a window keeps its largest
        weight, as the scoring rows (`_dense_rows`) do."""
        lengths = history.lengths()
        starts = history.indptr[:-1]
        liked = history.weights > 0
        for e in range(self.episodes):
            lo = e * self.k
            users = np.flatnonzero(lengths > lo + self.k)
            for first in range(0, len(users), chunk):
                block = users[first: first + chunk]
                x = np.zeros((len(block), self.n_items), np.float64)
                y = np.zeros((len(block), self.n_items), np.float64)
                for row, u in enumerate(block):
                    s = starts[u]
                    window = slice(s + lo, s + lo + self.k)
                    np.maximum.at(x[row], history.items[window], np.where(liked[window], 1.0, self.negative_weight))
                    later = slice(s + lo + self.k, history.indptr[u + 1])
                    y[row, history.items[later][liked[later]]] = 1.0
                yield torch.as_tensor(x), torch.as_tensor(y)

    def _episodes(self, history: UserHistory) -> tuple[torch.Tensor, torch.Tensor]:
        """All episodes at once (inputs, targets) — for inspection; the fit streams `_episode_chunks`."""
        blocks = list(self._episode_chunks(history))
        if not blocks:
            empty = torch.zeros(0, self.n_items, dtype=torch.float64)
            return empty, empty.clone()
        return torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])

    def _ease(self, history: UserHistory) -> torch.Tensor:
        """EASE's B on the whole training histories (liked 1, not liked `negative_weight`)."""
        gram = history_gram(history, self.n_items, self.negative_weight)[0].double()
        gram.diagonal().add_(self.ease_reg)
        return ease_solution(gram)

    # --- histories -----------------------------------------------------------------------
    def set_history(self, history: UserHistory) -> None:
        """Score from `history` from now on (e.g. the cold users' support ratings); no refit."""
        self.history = history

    def explain_inputs(self, users: torch.Tensor) -> torch.Tensor:
        """[users, n_items] the users' input rows x_u (explanations; the x̄ W part is a baseline of no item)."""
        return _dense_rows(self.history, users.cpu(), self.n_items, None, self.negative_weight).to(self.weights.device)

    def explain_kernel(self, history_items: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """W[i, j] (+ the scaled EASE B[i, j]): history item i's weight in the score of item j."""
        out = self.weights[history_items][:, items]
        return out + self.blend * self.ease[history_items][:, items] if self.blend else out

    def _columns(self, items: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.weights[:, items], (self.blend * self.ease[:, items] if self.blend else None)

    def _score(self, users: torch.Tensor, cols: torch.Tensor, ease_cols: Optional[torch.Tensor],
               base: torch.Tensor) -> torch.Tensor:
        x = _dense_rows(self.history, users.cpu(), self.n_items, None, self.negative_weight).to(cols.device)
        out = (x - self.input_mean) @ cols + base
        if ease_cols is not None:
            out = out + x @ ease_cols
        return out + 0 * self.anchor

    # --- scores --------------------------------------------------------------------------
    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(users), self.chunk_pairs):
            u, i = users[s: s + self.chunk_pairs], items[s: s + self.chunk_pairs]
            cols, ease_cols = self._columns(i)  # [n_items, pairs]: each pair's own item column
            x = _dense_rows(self.history, u.cpu(), self.n_items, None, self.negative_weight).to(cols.device)
            score = ((x - self.input_mean) * cols.T).sum(-1) + self.target_mean[i]
            if ease_cols is not None:
                score = score + (x * ease_cols.T).sum(-1)
            out.append(score)
        return (torch.cat(out) if out else self.anchor.new_zeros(0)) + 0 * self.anchor

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._score(users, *self._columns(items), self.target_mean[items])

    def candidate_scorer(self, items: torch.Tensor):
        cols, ease_cols = self._columns(items)  # once per evaluation
        cols, base = cols.contiguous(), self.target_mean[items]
        return lambda users: self._score(users, cols, ease_cols, base)

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=users.device)


class _Spread:
    """Running sample standard deviation of every entry of the blocks added (float64 sums)."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, block: torch.Tensor) -> None:
        self.n += block.numel()
        self.total += float(block.sum())
        self.squares += float((block * block).sum())

    def std(self) -> float:
        if self.n < 2:
            return 0.0
        mean = self.total / self.n
        return max(self.squares - self.n * mean * mean, 0.0) ** 0.5 / (self.n - 1) ** 0.5
