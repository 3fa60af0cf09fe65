"""Item and user towers: text vectors and IDs in, one vector per item/user out.

Item tower: projection of the item's (frozen) text vector, plus an ID embedding for items seen in
training (cold items are text only). User tower: an ID embedding for users seen in training, plus a
pooling of the user's history items (which is what lets it serve a user it never saw: give it a
history). Text vectors and histories are non-persistent buffers: they come from the data and the
embedding cache, and the saved weights stay small.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_fewshot.data.recdata import UserHistory


def _mlp(d_in: int, d_out: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def _csr_times(indptr: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, n_columns: int,
               dense: torch.Tensor) -> torch.Tensor:
    """(the CSR matrix [len(indptr) - 1, n_columns] given by indptr/columns/values) @ dense."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR x dense matmul is long stable
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(indptr, columns, values.to(dense.dtype), size=(len(indptr) - 1, n_columns),
                                         check_invariants=False)
        return matrix @ dense


def _pool_rows(features: torch.Tensor, indptr: torch.Tensor, items: torch.Tensor, weights: torch.Tensor,
               n_rows: int) -> torch.Tensor:
    """``out[r] = sum over entries e of row r of weights[e] * features[items[e]]``: a sparse (CSR) rows x items
    matrix times the features, never the [entries, dim] gather (10M interactions x 384-wide text vectors would
    be 15 GB), and an order of magnitude faster than gathering and adding a block at a time."""
    if len(items) == 0:
        return torch.zeros(n_rows, features.shape[1], device=features.device)
    return _csr_times(indptr, items, weights, features.shape[0], features)


class _BagSum(torch.autograd.Function):
    """``out[b] = sum over bag b's entries e of weights[e] * table[items[e]]``: embedding_bag's forward, and a
    backward that is one sparse (CSR) items x bags matrix times the output gradient, ~3x faster on CPU than
    embedding_bag's own (a sort and a scatter per entry), with the same result."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor):
        ctx.save_for_backward(items, offsets, weights)
        ctx.n_rows, ctx.dtype = table.shape[0], table.dtype
        return F.embedding_bag(items, table, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        items, offsets, weights = ctx.saved_tensors
        bags = torch.repeat_interleave(torch.arange(len(offsets), device=items.device),
                                       torch.diff(offsets, append=offsets.new_tensor([len(items)])))
        order = torch.argsort(items)
        indptr = torch.zeros(ctx.n_rows + 1, dtype=torch.int64, device=items.device)
        indptr[1:] = torch.cumsum(torch.bincount(items, minlength=ctx.n_rows), 0)
        return _csr_times(indptr, bags[order], weights[order], len(offsets), grad).to(ctx.dtype), None, None, None


def bag_sum(bag: nn.EmbeddingBag, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`bag(items, offsets, per_sample_weights=weights)` (a sum-mode bag) with `_BagSum`'s faster backward."""
    if weights.requires_grad or bag.sparse or len(items) == 0:
        return bag(items, offsets, per_sample_weights=weights)
    return _BagSum.apply(bag.weight, items, offsets, weights)


class ItemTower(nn.Module):
    def __init__(self, n_items: int, dim: int, features: Optional[torch.Tensor], use_id: bool,
                 warm: Optional[torch.Tensor], id_dropout: float = 0.0, text_hidden: int = 0,
                 init_std: float = 0.01, text: Optional[nn.Module] = None):
        super().__init__()
        if features is None and text is None and not use_id:
            raise ValueError("head.item_id=false needs text vectors: set an encoder, or head.item_id=true")
        self.n_items = n_items
        self.id_dropout = id_dropout
        self.proj: Optional[nn.Module] = None
        # joint training: a trainable text tower (items -> vectors, see encoders/trainable.py) replaces `features`
        self.text: Optional[nn.Module] = text
        if text is not None:
            self.proj = _mlp(text.dim, dim, text_hidden)
        elif features is not None:
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
        self.kg_vectors = None  # kg=...: items -> knowledge vectors (kg/joint.py; the module lives in model.kg)

    def with_new_items(self, features: torch.Tensor):
        """A context (see `models/extend.py`): items `n_items ..` are new, vectors from their frozen text
        `features` through the trained projection; no ID embedding or KG vector (zeros), as cold items."""
        from recsys_fewshot.models.extend import Remapped, items_map, swapped

        if self.text is not None:
            raise ValueError("this run trained its text encoder jointly (peft other than frozen): new items would "
                             "need that encoder; items outside the catalogue are served by runs with peft=frozen")
        if self.proj is None:
            raise ValueError("head.item_id=true without text vectors (encoder=none): a new item has no vector")
        n_new = len(features)
        device = self.features.device
        values = {"features": torch.cat([self.features, features.to(device, self.features.dtype)]),
                  "n_items": self.n_items + n_new}
        index_map = items_map(self.n_items, n_new, device)
        if self.id_emb is not None:
            values.update(warm=torch.cat([self.warm, self.warm.new_zeros(n_new)]),
                          id_emb=Remapped(self.id_emb, index_map))
        if self.kg_vectors is not None:
            values["kg_vectors"] = Remapped(self.kg_vectors, index_map)
        return swapped(self, **values)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        out = 0 if self.kg_vectors is None else self.kg_vectors(items)
        if self.text is not None:
            out = out + self.proj(self.text(items))
        elif self.proj is not None:
            out = out + self.proj(self.features[items])
        if self.id_emb is not None:
            keep = self.warm[items]
            if self.training and self.id_dropout > 0:
                keep = keep * (torch.rand_like(keep) >= self.id_dropout).float()
            out = out + self.id_emb(items) * keep.unsqueeze(-1)
        return out


class UserTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, use_id: bool, history: Optional[UserHistory],
                 features: Optional[torch.Tensor], known: Optional[torch.Tensor], init_std: float = 0.01,
                 text_hidden: int = 0, weighting: str = "none", sample_k: int = 0):
        super().__init__()
        if weighting not in ("none", "centred"):
            raise ValueError(f"head.history_weights={weighting!r}: expected none or centred")
        self.weighting, self.n_items, self.sample_k = weighting, n_items, sample_k
        if not use_id and history is None:
            raise ValueError("the user tower needs head.user_id=true or head.user_history=true")
        self.dim = dim
        self.kg_vectors = None  # kg=...: users -> knowledge vectors (kg/joint.py)
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
        """Swap in another set of histories (e.g. cold users' support items); no retraining.

        Pooling: the mean over a user's history of (weight x item vector); with
        `history_weights=centred` the weight is the rating minus the user's mean rating, computed as
        mean(r x vec) - mean(r) x mean(vec), so leaving one entry out stays exact (no rating leaks).
        """
        dev = self.hist_id.weight.device
        n_users = len(history.indptr) - 1
        counts = history.lengths()
        lengths = np.maximum(counts, 1).astype(np.float32)
        owner = np.repeat(np.arange(n_users), counts)
        ratings = history.ratings
        if ratings is None:
            if self.weighting == "centred":
                raise ValueError("head.history_weights=centred needs explicit ratings (task=rating on rated data)")
            ratings = np.zeros(len(history.items), np.float32)
        values = ratings if self.weighting == "centred" else history.weights  # what the mean is taken of
        inv = (1.0 / lengths)[owner]

        def buf(name: str, array, dtype=torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(array), dtype=dtype, device=dev), persistent=False)

        buf("h_indptr", history.indptr, torch.int64)
        buf("h_items", history.items, torch.int64)
        buf("h_a", values)  # per entry: the pooled value (weight, or rating when centred)
        buf("h_w", values * inv)
        buf("h_r", ratings)
        buf("h_rsum", np.bincount(owner, weights=ratings, minlength=n_users))
        buf("h_len", counts)
        if self._features is not None:
            # mean (weighted) text vector of each user's history: fixed, so computed once
            pooled = _pool_rows(self._features, self.h_indptr, self.h_items, self.h_w, n_users)
            self.register_buffer("hist_text", pooled, persistent=False)
            # the unweighted mean, used by centring
            plain = _pool_rows(self._features, self.h_indptr, self.h_items, torch.as_tensor(inv, device=dev), n_users)
            self.register_buffer("hist_text_mean", plain, persistent=False)

    def with_new_items(self, features: Optional[torch.Tensor], n_new: int):
        """A context: histories may hold the new items `n_items ..` (text `features`, zero ID factors)."""
        from recsys_fewshot.models.extend import grown, swapped

        if not self.has_history:
            return swapped(self)
        values = {"n_items": self.n_items + n_new,
                  "hist_id": nn.EmbeddingBag.from_pretrained(grown(self.hist_id.weight, n_new), freeze=True,
                                                             mode="sum")}
        if self._features is not None:
            values["_features"] = torch.cat([self._features, features.to(self._features)])
        return swapped(self, **values)

    def _bags(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        starts, ends = self.h_indptr[users], self.h_indptr[users + 1]
        lengths = ends - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum())
        # positions of every history entry of the batch's users, without a Python loop
        idx = torch.arange(total, device=users.device) - torch.repeat_interleave(offsets - starts, lengths)
        return self.h_items[idx], offsets, self.h_w[idx]

    def _entries(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the batch users' history entries, and the batch row each belongs to."""
        starts, ends = self.h_indptr[users], self.h_indptr[users + 1]
        lengths = ends - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        idx = torch.arange(int(lengths.sum()), device=users.device) - offsets[rows] + starts[rows]
        return idx, rows

    def select(self, users: torch.Tensor, exclude: Optional[torch.Tensor]) -> Optional[tuple]:
        """Training only: which history entries each row pools. `exclude` (the row's own item) is left
        out; with `sample_k` > 0 each entry is also kept with probability k / n (K-shot episodes, so
        warm users train the way cold users with k ratings are served). None: every entry (fast path)."""
        if not self.has_history or (exclude is None and self.sample_k <= 0):
            return None
        idx, rows = self._entries(users)
        keep = torch.ones(len(idx), dtype=torch.bool, device=users.device)
        if exclude is not None:
            keep &= self.h_items[idx] != exclude[rows]
        if self.sample_k > 0:
            p = (self.sample_k / self.h_len[users].clamp(min=1)).clamp(max=1.0)[rows]
            keep &= torch.rand(len(idx), device=users.device) < p
        return idx, rows, keep.float()

    def rating_residual(self, users: torch.Tensor, item_bias: torch.Tensor, mu: torch.Tensor,
                        selection: Optional[tuple] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over each user's (selected) history of (rating - mu - item bias), and the count."""
        if selection is None:
            idx, rows = self._entries(users)
            keep = torch.ones(len(idx), device=users.device)
        else:
            idx, rows, keep = selection
        resid = (self.h_r[idx] - mu - item_bias[self.h_items[idx]].squeeze(-1)) * keep
        total = torch.zeros(len(users), device=users.device).index_add_(0, rows, resid)
        return total, torch.zeros(len(users), device=users.device).index_add_(0, rows, keep)

    def _selected_means(self, users: torch.Tensor, selection: tuple) -> tuple:
        """Means over the selected entries of: value x ID vector, ID vector, rating, value x text, text.

        Sums over the few entries that matter: the kept ones when sampling K-shot episodes, else the
        full sums (precomputed for text) minus the dropped ones (one per row when leaving one out)."""
        idx, rows, keep = selection
        n_rows = len(users)
        count = torch.zeros(n_rows, device=users.device).index_add_(0, rows, keep).clamp(min=1).unsqueeze(-1)
        direct = self.sample_k > 0
        chosen = keep > 0 if direct else keep == 0
        idx_s, rows_s = idx[chosen], rows[chosen]
        items, a = self.h_items[idx_s], self.h_a[idx_s].unsqueeze(-1)

        def total(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(n_rows, *values.shape[1:], device=users.device).index_add_(0, rows_s, values)

        vec = self.hist_id.weight[items]
        sums = [total(a * vec), total(vec), total(self.h_r[idx_s].unsqueeze(-1))]
        if self.hist_proj is not None:
            feats = self._features[items]
            sums += [total(a * feats), total(feats)]
        if not direct:  # full sums minus the dropped entries
            all_items, offsets, _ = self._bags(users)
            n = self.h_len[users].unsqueeze(-1)
            full = [bag_sum(self.hist_id, all_items, offsets, self.h_a[idx]),
                    bag_sum(self.hist_id, all_items, offsets, torch.ones_like(self.h_a[idx])),
                    self.h_rsum[users].unsqueeze(-1)]
            if self.hist_proj is not None:
                full += [self.hist_text[users] * n, self.hist_text_mean[users] * n]
            sums = [f - s for f, s in zip(full, sums)]
        means = [s / count for s in sums]
        return tuple(means) if len(means) == 5 else (*means, None, None)

    def forward(self, users: torch.Tensor, selection: Optional[tuple] = None) -> torch.Tensor:
        """User vectors; `selection` (from `select`, training only) restricts the pooled history entries."""
        out = torch.zeros(len(users), self.dim, device=users.device)
        if self.kg_vectors is not None:
            out = out + self.kg_vectors(users)
        if self.id_emb is not None:
            out = out + self.id_emb(users) * self.known[users].unsqueeze(-1)
        if not self.has_history:
            return out
        centred = self.weighting == "centred"
        text = None
        if selection is None:  # every entry: pooled text was computed once by set_history
            items, offsets, weights = self._bags(users)
            pooled = bag_sum(self.hist_id, items, offsets, weights)  # mean of value x vector
            if centred:
                n = self.h_len[users].clamp(min=1)
                inv = torch.repeat_interleave(1.0 / n, self.h_len[users].long())
                pooled_mean = bag_sum(self.hist_id, items, offsets, inv)
                mean_r = (self.h_rsum[users] / n).unsqueeze(-1)
            if self.hist_proj is not None:
                text = self.hist_text[users]
                text_mean = self.hist_text_mean[users] if centred else None
        else:
            pooled, pooled_mean, mean_r, text, text_mean = self._selected_means(users, selection)
        if centred:  # mean((r - mean r) x vec) = mean(r x vec) - mean(r) x mean(vec)
            pooled = pooled - mean_r * pooled_mean
            if text is not None:
                text = text - mean_r * text_mean
        out = out + pooled
        if text is not None:
            out = out + self.hist_proj(text)
        return out
