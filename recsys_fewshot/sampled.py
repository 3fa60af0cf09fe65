"""Sampled-candidate evaluation (``eval.candidates=sampled``): each relevant test item ranked against a few
negatives drawn for its user, instead of against the whole catalogue.

* The negatives of a user are drawn once, from `eval.candidates_seed` and the user alone (not the model seed,
  the process count or the other users), so every run of a comparison ranks the same candidates.
* They are drawn without replacement from the items the part would otherwise rank (the split's own set, e.g.
  the cold items, else every item), never among the user's items in the data set (any part, any rating):
  ``uniform``, or ``popularity`` (in proportion to each item's number of interactions in the data set, every
  part, so an item nobody interacted with is never drawn). Where fewer items are left, all of them are taken.
* Each positive is ranked against the user's negatives alone; a tie with a negative is broken at a seeded
  random place among the tied ones (a model that scores everything alike gets a random ranking's metrics).
  A positive outside the ranked items, or among the items removed from the user's ranking (their history),
  is never a hit, as in full ranking.
* Per positive, at cut-off k: hit = rank < k (ranks from 0); ``hr`` = ``recall`` = hit, ``precision`` = hit / k,
  ``ndcg`` = hit / log2(rank + 2), ``mrr`` = hit / (rank + 1). A user's value is the mean over their positives;
  the run's metric the mean over users (the per-user values are what `compare` pairs).

Scores come from the model's candidate scorer, as in full ranking (`evaluation.top_items`), so a sampled and a
full ranking of one run score every (user, item) pair alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from recsys_fewshot.data.recdata import UserHistory

SAMPLING = ("uniform", "popularity")


@dataclass
class NegativeSampler:
    """How the negatives of `eval.candidates=sampled` are drawn (see the module's notes)."""

    known: UserHistory  # every item of each user in the data set: never one of their negatives
    popularity: np.ndarray  # float64 [n_items]: interactions per item (every part)
    num_negatives: int = 100
    kind: str = "uniform"  # uniform | popularity
    seed: int = 0  # eval.candidates_seed
    _drawn: dict = field(default_factory=dict, repr=False)  # (pool, user, positives) -> draw: valid is scored each epoch

    @classmethod
    def from_data(cls, data, num_negatives: int, kind: str, seed: int) -> "NegativeSampler":
        if kind not in SAMPLING:
            raise ValueError(f"eval.negatives={kind!r}: expected {' or '.join(SAMPLING)}")
        users, items = data.interactions["user"].to_numpy(), data.interactions["item"].to_numpy()
        return cls(UserHistory.from_pairs(users, items, data.n_users),
                   np.bincount(items, minlength=data.n_items).astype(np.float64), int(num_negatives), kind, int(seed))

    def label(self) -> str:
        """What metrics.json records as `candidates`, e.g. ``sampled-100-uniform-seed0``."""
        return f"sampled-{self.num_negatives}-{self.kind}-seed{self.seed}"

    def draw(self, user: int, pool: np.ndarray, n_positives: int) -> tuple[np.ndarray, np.ndarray]:
        """(the user's negatives, one uniform [0, 1) tie-break draw per positive) from `pool` (sorted item
        indices); the same for the same seed, user, pool and count whatever else runs."""
        rng = np.random.default_rng([self.seed, int(user)])
        known = np.unique(self.known.row(int(user)))
        in_pool = np.zeros(len(pool), bool)
        at = np.searchsorted(pool, known)
        hit = at < len(pool)
        at, known_in = at[hit], known[hit]
        in_pool[at[pool[at] == known_in]] = True
        if self.kind == "uniform":
            # the first num_negatives unknown items of a uniformly random ordering are a uniform draw among them;
            # among num_negatives + (known items in the pool) drawn ones there are always enough
            order = rng.choice(len(pool), size=min(len(pool), self.num_negatives + int(in_pool.sum())), replace=False)
            chosen = order[~in_pool[order]][: self.num_negatives]
        else:
            # weighted draw without replacement as exponential races (Efraimidis and Spirakis): the items with
            # the smallest Exp(1) / weight win, one vectorised pass where Generator.choice(p=...) loops
            weights = np.where(in_pool, 0.0, self.popularity[pool])
            size = min(self.num_negatives, int((weights > 0).sum()))
            keys = np.divide(rng.exponential(size=len(pool)), weights, out=np.full(len(pool), np.inf),
                             where=weights > 0)
            chosen = np.argpartition(keys, size - 1)[:size] if size else np.zeros(0, np.int64)
        return pool[chosen].astype(np.int64), rng.random(n_positives)


    def draws(self, users: np.ndarray, pool: np.ndarray, n_positives: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`draw` of each user (with their count of positives), each kept for the next call with this pool."""
        key = hashlib.sha1(np.ascontiguousarray(pool, np.int64).tobytes()).hexdigest()  # noqa: S324 (a cache key)
        out = []
        for user, n in zip(users, n_positives):
            index = (key, int(user), int(n))
            if index not in self._drawn:
                self._drawn[index] = self.draw(int(user), pool, int(n))
            out.append(self._drawn[index])
        return out


def positive_ranks(scores: torch.Tensor, rows: np.ndarray, pos_cols: np.ndarray, neg_cols: np.ndarray,
                   tie: np.ndarray) -> np.ndarray:
    """Each positive's rank (0 = above every negative) among its user's negatives. `scores` [U, C]; positive p
    is column `pos_cols[p]` of row `rows[p]` (-1: never a hit); `neg_cols` [U, N] the rows' negatives' columns
    (-1: padding); `tie` [P] uniform draws placing a positive among the negatives it ties with."""
    device = scores.device
    cols = torch.as_tensor(neg_cols, device=device)
    neg = scores.gather(1, cols.clamp(min=0)).masked_fill(cols < 0, float("-inf"))[torch.as_tensor(rows, device=device)]
    pos = scores[torch.as_tensor(rows, device=device), torch.as_tensor(pos_cols, device=device).clamp(min=0)]
    above = (neg > pos[:, None]).sum(1).cpu().numpy()
    tied = ((neg == pos[:, None]) & (neg > float("-inf"))).sum(1).cpu().numpy()
    ranks = above + np.floor(tie * (tied + 1)).astype(np.int64)
    return np.where((pos_cols >= 0) & np.isfinite(pos.cpu().numpy()), ranks, np.iinfo(np.int64).max // 2)


def metrics_of_ranks(ranks: np.ndarray, rows: np.ndarray, n_rows: int, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-row means over the positives of each `metrics.RANKING_METRICS` at each k (the module's notes)."""
    from recsys_fewshot.metrics import RANKING_METRICS

    count = np.bincount(rows, minlength=n_rows).astype(np.float64)
    out = {}
    for k in ks:
        hit = ranks < k
        gain = {"recall": hit, "hr": hit, "precision": hit / k,
                "ndcg": np.where(hit, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0),
                "mrr": np.where(hit, 1.0 / (np.minimum(ranks, k) + 1.0), 0.0)}
        for name in RANKING_METRICS:
            out[f"{name}@{k}"] = np.bincount(rows, gain[name].astype(np.float64), minlength=n_rows) / count
    return out


def chunk_scorer(model, users: np.ndarray, positives: Sequence[np.ndarray], exclude: UserHistory,
                 sampler: NegativeSampler, ranked: np.ndarray, slot: np.ndarray, ks: Sequence[int], device):
    """idx -> per-user metrics of `users[idx]` (for `evaluation.per_user_chunks`): their negatives drawn from
    the `ranked` items, every candidate scored by the model's candidate scorer over `ranked`."""
    from recsys_fewshot.evaluation import candidate_scorer, finite_or_fail

    score = candidate_scorer(model, torch.as_tensor(ranked, device=device))
    pool = np.sort(ranked)

    def per_chunk(idx: np.ndarray) -> dict[str, np.ndarray]:
        chunk = users[idx]
        scores = score(torch.as_tensor(chunk, device=device)).float()
        finite_or_fail(model, scores, chunk)
        rows, pos_cols, ties, negs = [], [], [], []
        distinct = [np.unique(positives[i]) for i in idx]
        drawn = sampler.draws(chunk, pool, [len(p) for p in distinct])
        for r, (u, pos, (neg, tie)) in enumerate(zip(chunk, distinct, drawn)):
            cols = slot[pos]
            cols[np.isin(pos, exclude.row(int(u)))] = -1  # removed from the user's ranking: never a hit
            rows.append(np.full(len(pos), r))
            pos_cols.append(cols)
            ties.append(tie)
            negs.append(slot[neg])
        width = max((len(n) for n in negs), default=0)
        neg_cols = np.full((len(chunk), max(width, 1)), -1, np.int64)
        for r, n in enumerate(negs):
            neg_cols[r, : len(n)] = n
        rows_a = np.concatenate(rows).astype(np.int64)
        ranks = positive_ranks(scores, rows_a, np.concatenate(pos_cols), neg_cols, np.concatenate(ties))
        return metrics_of_ranks(ranks, rows_a, len(chunk), ks)

    return per_chunk


def candidates_label(spec, given: Optional[np.ndarray]) -> str:
    """What a part's ranking ranked, as metrics.json's `candidates` records it: ``all`` (the catalogue),
    ``test_items``, ``split`` (the split's own set, e.g. the cold items) or the sampler's label."""
    if spec.candidates == "sampled" and spec.sampler is not None:
        return spec.sampler.label()
    if spec.candidates in ("all", "test_items"):
        return spec.candidates
    return "all" if given is None else "split"
