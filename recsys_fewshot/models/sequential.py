"""`head=seq`: a small SASRec-style next-item recommender over frozen text vectors.

Item vector: projection of the item's text vector (+ an ID embedding for items seen in training;
cold and zero-shot items are text only). User vector: a transformer over the user's latest
`max_len` history items (oldest first, as `UserHistory` keeps them), read at the most recent
position; positions count back from the newest item, so the model learns recency. Scores are
cosine similarities divided by `temperature`.

Training pairs (user, item) read the history *before* that item (its first occurrence), so a
next-item target never sees itself; at evaluation the whole history is read (`set_history` swaps
in another one, e.g. train + valid items for the test, or a cold user's support, without retraining).
Only the text projection and the transformer carry over to another catalogue (`init_from=`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.towers import ItemTower


def _frozen_text_only(head: str, item_text: Optional[nn.Module]) -> None:
    """These heads read frozen, cached text vectors: a trainable text tower would be silently unused."""
    if item_text is not None:
        raise ValueError(f"head={head} reads frozen, cached text vectors: use peft=frozen "
                         "(joint training works with head=mf, mlp or inductive)")


class SeqRec(nn.Module):
    chunk_users = 1024  # users scored at once by score_candidates

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None, warm_items: Optional[torch.Tensor] = None,
                 known_users: Optional[torch.Tensor] = None, global_mean: float = 0.0, dim: int = 64,
                 item_id: bool = True, id_dropout: float = 0.0, text_hidden: int = 0, init_std: float = 0.02,
                 l2: float = 0.0, loo_history: bool = True, layers: int = 2, heads: int = 2, max_len: int = 50,
                 dropout: float = 0.2, temperature: float = 0.07, item_text: Optional[nn.Module] = None,
                 **unused):
        super().__init__()
        _frozen_text_only("seq", item_text)
        if history is None:
            raise ValueError("head=seq reads user histories: keep head.user_history=true")
        if dim % heads:
            raise ValueError(f"head.dim={dim} must be divisible by head.heads={heads}")
        self.n_users, self.n_items, self.l2 = n_users, n_items, l2
        self.max_len, self.temperature, self.loo_history = max_len, temperature, loo_history
        self.items = ItemTower(n_items, dim, item_features, item_id, warm_items, id_dropout, text_hidden, init_std)
        self.bos = nn.Parameter(torch.zeros(dim))
        self.position = nn.Embedding(max_len + 1, dim)  # column max_len is the newest item
        nn.init.normal_(self.position.weight, std=init_std)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.out = nn.LayerNorm(dim)
        self.set_history(history)

    def set_history(self, history: UserHistory) -> None:
        """Swap in other histories (oldest first per user); no retraining."""
        dev = self.bos.device
        owner = torch.repeat_interleave(torch.arange(len(history.indptr) - 1),
                                        torch.as_tensor(history.lengths()))
        keys = owner * self.n_items + torch.as_tensor(history.items)
        sorted_keys, entry = torch.sort(keys, stable=True)  # first occurrence first
        self.register_buffer("h_indptr", torch.as_tensor(history.indptr, device=dev), persistent=False)
        self.register_buffer("h_items", torch.as_tensor(history.items, device=dev), persistent=False)
        self.register_buffer("h_keys", sorted_keys.to(dev), persistent=False)
        self.register_buffer("h_key_entry", entry.to(dev), persistent=False)

    def _item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.items(items), dim=-1)

    def user_vectors(self, users: torch.Tensor, before: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised user vectors from each history; `before` (one item per user): read only the
        history preceding that item's first occurrence (all of it where the item is absent)."""
        start, end = self.h_indptr[users], self.h_indptr[users + 1]
        if before is not None and len(self.h_keys):
            keys = users * self.n_items + before
            pos = torch.searchsorted(self.h_keys, keys).clamp(max=len(self.h_keys) - 1)
            end = torch.where(self.h_keys[pos] == keys, self.h_key_entry[pos], end)
        # only as wide as the longest history read in this batch (most are short)
        width = int(min(self.max_len, max(int((end - start).max()) if len(users) else 1, 1)))
        cols = end.unsqueeze(1) - width + torch.arange(width, device=users.device)  # right-aligned
        valid = cols >= start.unsqueeze(1)
        if len(self.h_items):
            tokens = self.items(self.h_items[cols.clamp(min=0, max=len(self.h_items) - 1)])
        else:
            tokens = torch.zeros(len(users), width, self.bos.shape[0], device=users.device)
        tokens = tokens * valid.unsqueeze(-1)
        # BOS has position 0; items count back from the newest (position max_len), whatever the width
        positions = torch.cat([self.position.weight[:1], self.position.weight[-width:]])
        x = torch.cat([self.bos.expand(len(users), 1, -1), tokens], 1) + positions
        pad = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], 1)
        h = self.encoder(self.drop(self.norm(x)), src_key_padding_mask=pad)
        last = torch.where(valid[:, -1], width, 0)  # the newest item, or BOS for an empty history
        return F.normalize(self.out(h[torch.arange(len(users), device=users.device), last]), dim=-1)

    def _before(self, items: torch.Tensor) -> Optional[torch.Tensor]:
        return items if (self.training and self.loo_history) else None

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(users, self._before(items))
        return (u * self._item_vectors(items)).sum(-1) / self.temperature

    def sampled_scores(self, users: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """[B, 1 + N] training scores: each row's own item, then the shared negatives (one user pass)."""
        u = self.user_vectors(users, self._before(items))
        pos = (u * self._item_vectors(items)).sum(-1, keepdim=True)
        return torch.cat([pos, u @ self._item_vectors(negatives).T], -1) / self.temperature

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        v = self._item_vectors(items)
        out = [self.user_vectors(users[s: s + self.chunk_users]) @ v.T / self.temperature
               for s in range(0, len(users), self.chunk_users)]
        return torch.cat(out) if out else torch.zeros(0, len(items), device=items.device)

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.l2 == 0 or self.items.id_emb is None:
            return torch.zeros((), device=users.device)
        return self.l2 * self.items.id_emb(items).pow(2).sum(-1).mean()


class TextPool(nn.Module):
    """`head=text_pool`: no trained parameters. User vector = recency-weighted mean of the history's
    text vectors (weight `decay`^age, age 0 for the newest item); score = its cosine with the item's
    text vector. The zero-shot baseline of a frozen encoder (`trainer.max_epochs=0`)."""

    chunk_users = 2048

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None, decay: float = 0.5, max_len: int = 50,
                 item_text: Optional[nn.Module] = None, **unused):
        super().__init__()
        _frozen_text_only("text_pool", item_text)
        if item_features is None or history is None:
            raise ValueError("head=text_pool needs an encoder (text vectors) and head.user_history=true")
        self.n_users, self.n_items, self.decay, self.max_len = n_users, n_items, decay, max_len
        self.register_buffer("features", F.normalize(item_features.float(), dim=-1), persistent=False)
        self.anchor = nn.Parameter(torch.zeros(()))  # lets the optimiser and the engine run; unused in scores
        self.set_history(history)

    def set_history(self, history: UserHistory) -> None:
        lengths = torch.as_tensor(history.lengths())
        owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        age = torch.as_tensor(history.indptr[1:])[owner] - 1 - torch.arange(len(owner))  # 0: newest
        weight = torch.where(age < self.max_len, self.decay ** age.float(), torch.zeros(()))
        pooled = torch.zeros(len(lengths), self.features.shape[1], device=self.features.device)
        pooled.index_add_(0, owner.to(pooled.device),
                          self.features[torch.as_tensor(history.items, device=pooled.device)]
                          * weight.to(pooled.device).unsqueeze(-1))
        self.register_buffer("user_text", F.normalize(pooled, dim=-1), persistent=False)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_text[users] * self.features[items]).sum(-1) + 0 * self.anchor

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user_text[users] @ self.features[items].T + 0 * self.anchor

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=users.device)
