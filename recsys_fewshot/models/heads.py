"""Scoring heads. Each is a whole recommender (towers + biases + a pair scorer), built from the
``head=`` config group by Hydra's ``_target_`` with the data-derived arguments passed by train.py.

``MF``: the seed's formula ``ŷ_ij = M(x_i')·M(x_j')ᵀ`` + user, item and global biases.
``NCF``: the dot product plus an MLP over ``[u, v, u*v]`` (NeuMF-style).

Fallback (documented, counted in metrics.json): a user or item the model cannot represent (no ID
embedding because unseen in training, and no text/history) scores ``global mean + the other bias``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.capabilities import Capabilities
from recsys_fewshot.models.towers import ItemTower, UserTower


class Recommender(nn.Module):
    chunk_users = 4096  # users scored at once by score_candidates (heads with big temporaries lower it)
    capabilities = Capabilities(kg=True, text_tower=True, new_users=True, new_items=True)

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None, warm_items: Optional[torch.Tensor] = None,
                 known_users: Optional[torch.Tensor] = None, global_mean: float = 0.0,
                 dim: int = 64,  # width of user/item vectors: more capacity, more over-fitting
                 item_id: bool = True,  # add an ID embedding to warm items (cold items use text only)
                 user_id: bool = True,  # user ID embedding
                 user_history: bool = True,  # add a pooling of the user's training items (serves unseen users)
                 biases: bool = True,  # user, item and global biases
                 id_dropout: float = 0.0,  # drop the item ID part in training so the text part learns to stand alone
                 text_hidden: int = 0,  # 0: linear projection of the text vectors; >0: one hidden layer this wide
                 init_std: float = 0.01,  # std of the initial embeddings
                 l2: float = 0.1,  # L2 on the embeddings and biases a batch touches: the main guard against over-fitting
                 history_weights: str = "none",  # none | centred: history items weighted by the user's centred ratings
                 history_bias: bool = False,  # user bias from the history's ratings (shrunk mean residual): unseen users
                 bias_shrink: float = 5.0,  # pseudo-count of that shrinkage: larger trusts few ratings less
                 loo_history: bool = False,  # in training, leave the predicted item out of its user's history
                 history_sample_k: int = 0,  # >0: training pools ~k random history items per user (K-shot episodes)
                 item_text: Optional[nn.Module] = None, kg: Optional[nn.Module] = None):
        super().__init__()
        self.n_users, self.n_items, self.l2 = n_users, n_items, l2
        self.items = ItemTower(n_items, dim, item_features, item_id, warm_items, id_dropout, text_hidden, init_std,
                               text=item_text)  # item_text: trainable text tower (joint training), else None
        self.users = UserTower(n_users, n_items, dim, user_id, history if user_history else None,
                               item_features, known_users, init_std, text_hidden, history_weights,
                               history_sample_k)
        if history_bias and not (biases and user_history):
            raise ValueError("head.history_bias=true needs head.biases=true and head.user_history=true")
        # inductive user bias: shrunk mean of (rating - mu - item bias) over the history, scaled by a learnt factor
        self.history_bias, self.bias_shrink, self.loo_history = history_bias, bias_shrink, loo_history
        if history_bias:
            self.history_bias_scale = nn.Parameter(torch.tensor(1.0))
        self.biases = biases
        if biases:
            self.user_bias = nn.Embedding(n_users, 1)
            self.item_bias = nn.Embedding(n_items, 1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
        self.global_bias = nn.Parameter(torch.tensor(float(global_mean)))
        self.kg: Optional[nn.Module] = None
        if kg is not None:  # kg=...: a kg.joint.KGSide; its vectors join both towers, TaskLoss adds its loss
            kg.attach(self)

    # --- serving beyond the trained users and items (models/extend.py) ----------------------
    @contextlib.contextmanager
    def with_user_slots(self, owners: torch.Tensor) -> Iterator[None]:
        """A context: user index = a slot of posted histories; its ID embedding, user bias and KG vector are
        those of `owners[slot]`, zeros for a user the run never saw (-1), as for cold users."""
        from recsys_fewshot.models.extend import Remapped, swapped

        if not self.users.has_history:
            raise ValueError("head.user_history=false: this head knows users only by their trained ID embedding, "
                             "so a posted history cannot be read")
        owners = owners.to(self.global_bias.device).long()
        tower = {}
        if self.users.id_emb is not None:
            known = self.users.known[owners.clamp(min=0)] * (owners >= 0)
            tower.update(id_emb=Remapped(self.users.id_emb, owners), known=known)
        if self.users.kg_vectors is not None:
            tower["kg_vectors"] = Remapped(self.users.kg_vectors, owners)
        head = {"user_bias": Remapped(self.user_bias, owners)} if self.biases else {}
        with swapped(self.users, **tower), swapped(self, **head):
            yield

    @contextlib.contextmanager
    def with_new_items(self, features: torch.Tensor) -> Iterator[None]:
        """A context: items `n_items ..` are new, with frozen text `features`: item vector = the text projection
        alone, item bias 0 (no trained ID parts), as for cold items; users' histories may hold them."""
        from recsys_fewshot.models.extend import grown, swapped

        n_new = len(features)
        values = {"n_items": self.n_items + n_new}
        if self.biases:
            values["item_bias"] = nn.Embedding.from_pretrained(grown(self.item_bias.weight, n_new), freeze=True)
        with self.items.with_new_items(features), self.users.with_new_items(features, n_new), swapped(self, **values):
            yield

    # --- pair scorers, specialised by subclasses -------------------------------------------
    def pair_score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cross_score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scores of every row of u against every row of v: [B, N]."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------
    def _user_bias(self, users: torch.Tensor, selection: Optional[tuple] = None) -> torch.Tensor:
        if not self.biases:
            return torch.zeros(len(users), device=users.device)
        bias = self.user_bias(users).squeeze(-1)
        known = getattr(self.users, "known", None)
        bias = bias * known[users] if known is not None else bias
        if self.history_bias:
            residual, n = self.users.rating_residual(users, self.item_bias.weight, self.global_bias, selection)
            bias = bias + self.history_bias_scale * residual / (n + self.bias_shrink)
        return bias

    def _selection(self, users: torch.Tensor, items: torch.Tensor) -> Optional[tuple]:
        """Training: the history entries each row pools (head.loo_history leaves the row's own item out,
        head.history_sample_k draws K-shot episodes); None at evaluation (the whole history)."""
        if not self.training:
            return None
        return self.users.select(users, items if self.loo_history else None)

    def _user_vectors(self, users: torch.Tensor, selection: Optional[tuple]) -> torch.Tensor:
        """User vectors of the batch rows. Without a row-specific selection a user's vector depends on the user
        only, so it is computed once per distinct user and shared by that user's rows (the same values and
        gradients; with user-grouped batches, trainer.batching=users, the history pooling of an epoch then
        costs the number of interactions, not the sum of squared history lengths)."""
        if selection is not None or len(users) < 2:
            return self.users(users, selection)
        distinct, inverse = torch.unique(users, return_inverse=True)
        if len(distinct) == len(users):
            return self.users(users)
        return self.users(distinct)[inverse]

    def _item_bias(self, items: torch.Tensor) -> torch.Tensor:
        if not self.biases:
            return torch.zeros(len(items), device=items.device)
        return self.item_bias(items).squeeze(-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        selection = self._selection(users, items)
        u, v = self._user_vectors(users, selection), self.items(items)
        return self.pair_score(u, v) + self._user_bias(users, selection) + self._item_bias(items) + self.global_bias

    def sampled_scores(self, users: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """[B, 1 + N] training scores: each row's own item, then the shared negatives, from one user pass
        (so a history that leaves the row's item out is the same for its positive and its negatives)."""
        selection = self._selection(users, items)
        u = self._user_vectors(users, selection)
        ub = self._user_bias(users, selection) + self.global_bias
        pos = self.pair_score(u, self.items(items)) + self._item_bias(items) + ub
        neg = self.cross_score(u, self.items(negatives)) + self._item_bias(negatives).unsqueeze(0)
        return torch.cat([pos.unsqueeze(-1), neg + ub.unsqueeze(-1)], -1)

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[len(users), len(items)] scores, e.g. all items for full ranking or sampled negatives."""
        return self.candidate_scorer(items)(users)

    def candidate_scorer(self, items: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function users -> [len(users), len(items)] scores with the item side computed once here (full
        ranking scores every chunk of users against the same items)."""
        v, ib = self.items(items), self._item_bias(items)

        def score(users: torch.Tensor) -> torch.Tensor:
            out = []
            for start in range(0, len(users), self.chunk_users):
                chunk = users[start: start + self.chunk_users]
                s = self.cross_score(self.users(chunk), v) + ib.unsqueeze(0)
                out.append(s + self._user_bias(chunk).unsqueeze(-1) + self.global_bias)
            return torch.cat(out) if out else torch.zeros(0, len(items), device=items.device)

        return score

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """MF-style L2 on the embeddings and biases this batch touched (mean over the batch)."""
        if self.l2 == 0:
            return torch.zeros((), device=users.device)
        terms = []
        if self.users.id_emb is not None:
            terms.append(self.users.id_emb(users).pow(2).sum(-1))
        if self.items.id_emb is not None:
            terms.append(self.items.id_emb(items).pow(2).sum(-1))
        if self.biases:
            terms.append(self.user_bias(users).pow(2).sum(-1) + self.item_bias(items).pow(2).sum(-1))
        if not terms:
            return torch.zeros((), device=users.device)
        return self.l2 * torch.stack(terms).sum(0).mean()


class MF(Recommender):
    def pair_score(self, u, v):
        return (u * v).sum(-1)

    def cross_score(self, u, v):
        return u @ v.T

    def candidate_scorer(self, items: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Biases folded into one matmul: [u, user bias + global, 1] . [v, 1, item bias], so each score is
        written once (a users x items block is the largest thing full ranking touches)."""
        v = self.items(items)
        ones = torch.ones(len(items), 1, device=v.device, dtype=v.dtype)
        right = torch.cat([v, ones, self._item_bias(items).unsqueeze(-1).to(v.dtype)], -1).T.contiguous()

        def score(users: torch.Tensor) -> torch.Tensor:
            u = self.users(users)
            bias = (self._user_bias(users) + self.global_bias).unsqueeze(-1).to(u.dtype)
            return torch.cat([u, bias, torch.ones_like(bias)], -1) @ right

        return score


class NCF(Recommender):
    chunk_users = 64

    def __init__(self, *args,
                 hidden: Sequence[int] = (128, 64),  # MLP widths: wider fits more, over-fits sooner
                 dropout: float = 0.1,  # in the MLP
                 **kwargs):
        super().__init__(*args, **kwargs)
        dim = kwargs.get("dim", 64)
        layers: list[nn.Module] = []
        width = 3 * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def pair_score(self, u, v):
        return (u * v).sum(-1) + self.mlp(torch.cat([u, v, u * v], -1)).squeeze(-1)

    def cross_score(self, u, v):
        b, n = len(u), len(v)
        uu = u.unsqueeze(1).expand(b, n, -1)
        vv = v.unsqueeze(0).expand(b, n, -1)
        return u @ v.T + self.mlp(torch.cat([uu, vv, uu * vv], -1)).squeeze(-1)
