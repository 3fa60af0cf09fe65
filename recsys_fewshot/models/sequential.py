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

import contextlib
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.capabilities import Capabilities
from recsys_fewshot.models.towers import ItemTower


def _frozen_text_only(head: str, item_text: Optional[nn.Module]) -> None:
    """These heads read frozen, cached text vectors: a trainable text tower would be silently unused."""
    if item_text is not None:
        raise ValueError(f"head={head} reads frozen, cached text vectors: use peft=frozen "
                         "(joint training works with head=mf, mlp or inductive)")


class SeqRec(nn.Module):
    chunk_users = 1024  # users scored at once by score_candidates

    capabilities = Capabilities(new_users=True, new_items=True)

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None, warm_items: Optional[torch.Tensor] = None,
                 dim: int = 64,  # width of item/user vectors and of the transformer
                 item_id: bool = True,  # add an ID embedding to warm items (false: text only, what transfers)
                 id_dropout: float = 0.0,  # drop the item ID part in training so the text part learns to stand alone
                 text_hidden: int = 0,  # 0: linear projection of the frozen text vectors; >0: one hidden layer
                 init_std: float = 0.02,  # std of the initial embeddings
                 l2: float = 0.0,  # L2 on the ID embeddings a batch touches
                 loo_history: bool = True,  # a training pair reads only the history before its item (next-item)
                 layers: int = 2,  # transformer blocks over the history sequence
                 heads: int = 2,  # attention heads (dim must divide by it)
                 max_len: int = 50,  # the latest items of a history that the user tower reads
                 dropout: float = 0.2,  # in the transformer
                 temperature: float = 0.07,  # scores are cosine similarities / temperature
                 item_text: Optional[nn.Module] = None):
        super().__init__()
        _frozen_text_only("seq", item_text)
        if history is None:
            raise ValueError("head=seq reads user histories: the split must give the users a training history")
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

    @contextlib.contextmanager
    def with_new_items(self, features: torch.Tensor) -> Iterator[None]:
        """A context (models/extend.py): items `n_items ..` are new, their vectors the text projection alone."""
        from recsys_fewshot.models.extend import swapped

        with self.items.with_new_items(features), swapped(self, n_items=self.n_items + len(features)):
            yield

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


def hubness(vectors: torch.Tensor, k: int, block: Optional[int] = None) -> torch.Tensor:
    """Each row's mean cosine with its `k` nearest other rows (`vectors`: unit length), `block` rows at a time
    (default: about 2^26 similarities per block) so the whole n x n matrix is never held."""
    n = len(vectors)
    block = block or max(1, 2 ** 26 // max(n, 1))
    out = torch.empty(n, device=vectors.device)
    for start in range(0, n, block):
        sims = vectors[start: start + block] @ vectors.T
        rows = torch.arange(len(sims), device=vectors.device)
        sims[rows, rows + start] = float("-inf")  # not its own neighbour
        out[start: start + block] = sims.topk(k, dim=1).values.mean(1)
    return out


def whitening(vectors: torch.Tensor, power: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions, scales) of `whitened`: the principal directions of `vectors` (centred rows) kept, and each
    one's factor (its singular value / the largest)^-`power`; float64. Applied to any rows by `whiten_rows`."""
    _, s, vh = torch.linalg.svd(vectors.double(), full_matrices=False)
    keep = s > s[0] * 1e-6 if len(s) and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    return vh[keep], (s[keep] / s[0]).pow(-power)


def whiten_rows(rows: torch.Tensor, directions: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return ((rows.double() @ directions.T) * scales) @ directions


def whitened(vectors: torch.Tensor, power: float) -> torch.Tensor:
    """`vectors` (centred rows) with each principal direction's spread scaled by (its singular value / the
    largest)^-`power`: 0 leaves them as they are, 1 is full whitening (every direction equally spread).
    Directions with a singular value under 1e-6 of the largest (rank-deficient catalogues) are dropped."""
    return whiten_rows(vectors, *whitening(vectors, power))


class TextPool(nn.Module):
    """`head=text_pool`: no trained parameters. Each history item weighs `decay`^age (age 0 for the newest).

    `pool=mean`: user vector = the weighted mean of the history's text vectors; score = its cosine with the
    item's text vector. `pool=max_sim`: score = `temperature` * log sum_h w_h exp(cos(h, item) / `temperature`),
    a soft maximum over the history of each item's similarity (a user with two interests is not averaged into
    neither). `center=true` subtracts the catalogue's mean text vector first (sentence embeddings share a common
    direction that otherwise dominates every cosine). `hub_weight` > 0 subtracts `hub_weight` times each item's
    hubness, the mean cosine with its `hub_k` nearest catalogue items (CSLS, Conneau et al. 2018): items in
    dense regions of the text space otherwise turn up in every user's list. `whiten` = a in (0, 1] centres the
    vectors and scales each principal direction by (its singular value / the largest)^-a (a = 1: full
    whitening, Su et al. 2021): the few directions that dominate sentence-embedding cosines are evened out.
    The zero-shot baseline of a frozen encoder (`trainer.max_epochs=0`)."""

    chunk_users = 2048
    POOLS = ("mean", "max_sim")

    capabilities = Capabilities(closed_form=True, new_users=True, new_items=True, needs_text=True)

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None,
                 decay: float = 0.5,  # weight of an item = decay ** (its age in the history); 1: plain mean
                 max_len: int = 50,  # latest history items pooled
                 pool: str = "mean",  # mean: cosine with the weighted mean vector | max_sim: soft maximum of cosines
                 temperature: float = 0.2,  # pool=max_sim: lower is closer to a hard max over the history
                 center: bool = False,  # subtract the catalogue's mean text vector before the cosines
                 hub_k: int = 10,  # hub_weight > 0: an item's hubness = its mean cosine with its hub_k nearest items
                 hub_weight: float = 0.0,  # subtract hub_weight x hubness from every score of the item (CSLS); 0: off
                 whiten: float = 0.0,  # > 0: centre, scale principal directions by (s / s_max)^-whiten; 1: full
                 item_text: Optional[nn.Module] = None):
        super().__init__()
        _frozen_text_only("text_pool", item_text)
        if item_features is None or history is None:
            raise ValueError("head=text_pool needs an encoder (text vectors) and users with a training history")
        if pool not in self.POOLS:
            raise ValueError(f"head.pool={pool!r}: expected one of {', '.join(self.POOLS)}")
        if not temperature > 0:
            raise ValueError(f"head.temperature must be > 0, got {temperature}")
        if not 0 < decay <= 1:
            raise ValueError(f"head.decay must be in (0, 1], got {decay}")
        if hub_weight < 0 or (hub_weight > 0 and not 1 <= hub_k < n_items):
            raise ValueError(f"head.hub_weight must be >= 0 (got {hub_weight}) and, when > 0, head.hub_k in "
                             f"[1, n_items) = [1, {n_items}) (got {hub_k})")
        if not 0 <= whiten <= 1:
            raise ValueError(f"head.whiten must be in [0, 1], got {whiten}")
        self.n_users, self.n_items, self.decay, self.max_len = n_users, n_items, decay, max_len
        self.pool, self.temperature = pool, temperature
        self.hub_k, self.hub_weight = hub_k, hub_weight
        feats = item_features.float()
        # the catalogue's mean and principal directions, kept: items added after training get the same map
        mean = feats.mean(0, keepdim=True) if center or whiten > 0 else None
        self._text_map = (mean, whitening(feats - mean, whiten) if whiten > 0 else None)
        self.register_buffer("features", self.unit_text(feats), persistent=False)
        penalty = hub_weight * hubness(self.features, hub_k) if hub_weight > 0 else torch.zeros(n_items)
        self.register_buffer("hub_penalty", penalty, persistent=False)
        self.anchor = nn.Parameter(torch.zeros(()))  # lets the optimiser and the engine run; unused in scores
        if pool == "max_sim":  # [users, max_len] temporaries per scored item: fewer users at once
            self.chunk_users = max(1, 2 ** 24 // (max_len * max(n_items, 1)))
        self.set_history(history)

    def unit_text(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder vectors -> the unit vectors this head compares: centred on the trained catalogue's mean and
        whitened with its directions when `center` / `whiten` say so."""
        mean, basis = self._text_map
        feats = features.float()
        if mean is not None:
            feats = feats - mean.to(feats.device)
        if basis is not None:
            feats = whiten_rows(feats, *(b.to(feats.device) for b in basis)).float()
        return F.normalize(feats, dim=-1)

    @contextlib.contextmanager
    def with_new_items(self, features: torch.Tensor) -> Iterator[None]:
        """A context (models/extend.py): items `n_items ..` are new, compared by their text as the catalogue
        is; with `hub_weight` > 0 a new item's hubness is over the grown catalogue (itself left out)."""
        from recsys_fewshot.models.extend import swapped

        new = self.unit_text(features.to(self.features.device))
        grown = torch.cat([self.features, new])
        penalty = torch.zeros(len(new), device=grown.device)
        if self.hub_weight > 0:
            sims = new @ grown.T
            rows = torch.arange(len(new), device=grown.device)
            sims[rows, rows + self.n_items] = float("-inf")  # not its own neighbour
            penalty = self.hub_weight * sims.topk(self.hub_k, dim=1).values.mean(1)
        with swapped(self, features=grown, hub_penalty=torch.cat([self.hub_penalty, penalty]),
                     n_items=len(grown)):
            yield

    def explain_inputs(self, users: torch.Tensor) -> torch.Tensor:
        """[users, n_items] each history item's pooled weight (explanations): decay^age, repeats adding up;
        for pool=mean divided by the length of the pooled vector, so input x kernel sums to the cosine."""
        rows, entry = self.history.entry_index(users.cpu().numpy())
        age = self.history.indptr[users.cpu().numpy() + 1][rows] - 1 - entry
        keep = age < self.max_len
        out = torch.zeros(len(users), self.n_items, device=self.features.device)
        weight = torch.as_tensor(self.decay ** age[keep].astype(np.float64), dtype=torch.float32, device=out.device)
        out.index_put_((torch.as_tensor(rows[keep], device=out.device),
                        torch.as_tensor(self.history.items[entry[keep]], device=out.device)), weight, accumulate=True)
        if self.pool == "mean":
            out = out / (out @ self.features).norm(dim=1, keepdim=True).clamp(min=1e-12)
        return out

    def explain_kernel(self, history_items: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[history items, items]: cosine (pool=mean), or exp((cosine - 1) / temperature), a history item's
        share of the soft maximum (pool=max_sim)."""
        cos = self.features[history_items] @ self.features[items].T
        return cos if self.pool == "mean" else ((cos - 1.0) / self.temperature).exp()

    def set_history(self, history: UserHistory) -> None:
        self.history = history
        lengths = torch.as_tensor(history.lengths())
        owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        age = torch.as_tensor(history.indptr[1:])[owner] - 1 - torch.arange(len(owner))  # 0: newest
        keep = age < self.max_len
        weight = self.decay ** age[keep].float()
        items = torch.as_tensor(history.items)[keep]
        owner, age = owner[keep], age[keep]
        device = self.features.device
        pooled = torch.zeros(len(lengths), self.features.shape[1], device=device)
        pooled.index_add_(0, owner.to(device), self.features[items.to(device)] * weight.to(device).unsqueeze(-1))
        self.register_buffer("user_text", F.normalize(pooled, dim=-1), persistent=False)
        if self.pool == "max_sim":  # the latest max_len items per user, newest in column 0; -inf weight: padding
            width = max(1, int(min(self.max_len, int(lengths.max()) if len(lengths) else 1)))
            slots = torch.zeros(len(lengths), width, dtype=torch.long)
            log_w = torch.full((len(lengths), width), float("-inf"))
            slots[owner, age] = items
            log_w[owner, age] = torch.log(weight)
            self.register_buffer("hist_items", slots.to(device), persistent=False)
            self.register_buffer("hist_log_w", log_w.to(device), persistent=False)

    def _soft_max_sim(self, users: torch.Tensor, item_vecs: torch.Tensor, pairwise: bool) -> torch.Tensor:
        """T * log sum_h w_h exp(cos(h, item) / T), computed as exp((cos - 1) / T) <= 1 (no overflow: the
        vectors are unit length) weighted by w_h in one batched product."""
        h = self.features[self.hist_items[users]]  # [U, L, d]
        w = self.hist_log_w[users].exp()  # [U, L]; 0 on padding
        if pairwise:
            e = ((h * item_vecs.unsqueeze(1)).sum(-1) - 1.0).div_(self.temperature).exp_()  # [U, L]
            total = (w * e).sum(-1)
        else:
            e = torch.matmul(h, item_vecs.T).sub_(1.0).div_(self.temperature).exp_()  # [U, L, I]
            total = torch.bmm(w.unsqueeze(1), e).squeeze(1)
        out = self.temperature * torch.log(total) + 1.0
        return torch.nan_to_num(out, neginf=-1.0)  # no history (or all underflowed): every item alike

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.pool == "max_sim":
            out = self._soft_max_sim(users, self.features[items], pairwise=True)
        else:
            out = (self.user_text[users] * self.features[items]).sum(-1)
        return out - self.hub_penalty[items] + 0 * self.anchor

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.pool == "max_sim":
            v = self.features[items]
            out = [self._soft_max_sim(users[s: s + self.chunk_users], v, pairwise=False)
                   for s in range(0, len(users), self.chunk_users)]
            scores = torch.cat(out) if out else v.new_zeros(0, len(items))
        else:
            scores = self.user_text[users] @ self.features[items].T
        return scores - self.hub_penalty[items] + 0 * self.anchor

    def candidate_scorer(self, items: torch.Tensor):
        """Scores of many users against fixed `items` (rankings). pool=max_sim with a catalogue small enough
        (n_items x candidates <= 2^26): exp((cos - 1) / T) of every catalogue item against the candidates is
        computed once, and each user's scores are one dense product of their history weights with it."""
        if self.pool != "max_sim" or self.n_items * len(items) > 2 ** 26:
            return lambda users: self.score_candidates(users, items)
        e = (self.features @ self.features[items].T).sub_(1.0).div_(self.temperature).exp_()  # [n_items, C]
        penalty = self.hub_penalty[items]

        def score(users: torch.Tensor) -> torch.Tensor:
            weights = torch.zeros(len(users), self.n_items, device=e.device)
            weights.scatter_add_(1, self.hist_items[users], self.hist_log_w[users].exp())  # repeats add up
            out = self.temperature * torch.log(weights @ e) + 1.0
            return torch.nan_to_num(out, neginf=-1.0) - penalty

        return score

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=users.device)
