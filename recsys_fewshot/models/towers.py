"""Item and user towers: text vectors and IDs in, one vector per item/user out.

Item tower: projection of the item's (frozen) text vector, plus an ID embedding for items seen in
training (cold items are text only). User tower: an ID embedding for users seen in training, plus a
pooling of the user's history items (which is what lets it serve a user it never saw: give it a
history). Text vectors and histories are non-persistent buffers: they come from the data and the
embedding cache, and the saved weights stay small.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from recsys_fewshot.data.recdata import UserHistory


def _mlp(d_in: int, d_out: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class ItemTower(nn.Module):
    def __init__(self, n_items: int, dim: int, features: Optional[torch.Tensor], use_id: bool,
                 warm: Optional[torch.Tensor], id_dropout: float = 0.0, text_hidden: int = 0,
                 init_std: float = 0.01):
        super().__init__()
        if features is None and not use_id:
            raise ValueError("head.item_id=false needs text vectors: set an encoder, or head.item_id=true")
        self.n_items = n_items
        self.id_dropout = id_dropout
        self.proj: Optional[nn.Module] = None
        if features is not None:
            if features.shape[0] != n_items:
                raise ValueError(f"{features.shape[0]} text vectors for {n_items} items")
            self.register_buffer("features", features.float(), persistent=False)
            self.proj = _mlp(features.shape[1], dim, text_hidden)
        self.id_emb: Optional[nn.Embedding] = None
        if use_id:
            self.id_emb = nn.Embedding(n_items, dim)
            nn.init.normal_(self.id_emb.weight, std=init_std)
            warm = torch.ones(n_items) if warm is None else warm.float()
            self.register_buffer("warm", warm, persistent=False)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        out = 0
        if self.proj is not None:
            out = self.proj(self.features[items])
        if self.id_emb is not None:
            keep = self.warm[items]
            if self.training and self.id_dropout > 0:
                keep = keep * (torch.rand_like(keep) >= self.id_dropout).float()
            out = out + self.id_emb(items) * keep.unsqueeze(-1)
        return out


class UserTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, use_id: bool, history: Optional[UserHistory],
                 features: Optional[torch.Tensor], known: Optional[torch.Tensor], init_std: float = 0.01,
                 text_hidden: int = 0):
        super().__init__()
        if not use_id and history is None:
            raise ValueError("the user tower needs head.user_id=true or head.user_history=true")
        self.dim = dim
        self.id_emb: Optional[nn.Embedding] = None
        if use_id:
            self.id_emb = nn.Embedding(n_users, dim)
            nn.init.normal_(self.id_emb.weight, std=init_std)
            known = torch.ones(n_users) if known is None else known.float()
            self.register_buffer("known", known, persistent=False)
        self.hist_id: Optional[nn.EmbeddingBag] = None
        self.hist_proj: Optional[nn.Module] = None
        self.has_history = history is not None
        if history is not None:
            # SVD++-style implicit factors of history items ...
            self.hist_id = nn.EmbeddingBag(n_items, dim, mode="sum")
            nn.init.normal_(self.hist_id.weight, std=init_std)
            # ... and, with text, a projection of the mean text vector of the history
            if features is not None:
                self.hist_proj = _mlp(features.shape[1], dim, text_hidden)
            self.register_buffer("_features", features.float() if features is not None else None,
                                 persistent=False)
            self.set_history(history)

    def set_history(self, history: UserHistory) -> None:
        """Swap in another set of histories (e.g. cold users' support items); no retraining."""
        dev = self.hist_id.weight.device
        lengths = np.maximum(history.lengths(), 1).astype(np.float32)
        per_entry = history.weights / np.repeat(lengths, history.lengths())
        self.register_buffer("h_indptr", torch.as_tensor(history.indptr, device=dev), persistent=False)
        self.register_buffer("h_items", torch.as_tensor(history.items, device=dev), persistent=False)
        self.register_buffer("h_w", torch.as_tensor(per_entry, dtype=torch.float32, device=dev),
                             persistent=False)
        if self._features is not None:
            # mean (weighted) text vector of each user's history: fixed, so computed once
            n_users = len(history.indptr) - 1
            rows = torch.as_tensor(np.repeat(np.arange(n_users), history.lengths()), device=dev)
            pooled = torch.zeros(n_users, self._features.shape[1], device=dev)
            pooled.index_add_(0, rows, self._features[self.h_items] * self.h_w.unsqueeze(-1))
            self.register_buffer("hist_text", pooled, persistent=False)

    def _bags(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        starts, ends = self.h_indptr[users], self.h_indptr[users + 1]
        lengths = ends - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum())
        # positions of every history entry of the batch's users, without a Python loop
        idx = torch.arange(total, device=users.device) - torch.repeat_interleave(offsets - starts, lengths)
        return self.h_items[idx], offsets, self.h_w[idx]

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(users), self.dim, device=users.device)
        if self.id_emb is not None:
            out = out + self.id_emb(users) * self.known[users].unsqueeze(-1)
        if self.has_history:
            items, offsets, weights = self._bags(users)
            out = out + self.hist_id(items, offsets, per_sample_weights=weights)
            if self.hist_proj is not None:
                out = out + self.hist_proj(self.hist_text[users])
        return out
