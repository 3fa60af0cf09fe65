"""Scoring a split with a trained recommender: pointwise metrics on pairs, full ranking over items.

Works with any model exposing ``forward(users, items) -> scores`` and
``score_candidates(users, items) -> [U, I] scores``. Under several processes each rank scores its
shard and the results are gathered, so metrics do not depend on the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from recsys_fewshot import metrics as M
from recsys_fewshot.data.recdata import UserHistory


@dataclass
class TaskSpec:
    task: str  # rating | ctr | ranking
    positive_threshold: float  # rating >= this is relevant / liked
    rating_range: Optional[tuple[float, float]] = None  # predictions are clipped to it (rating task)
    ks: Sequence[int] = (10, 20)
    chunk_size: int = 1024
    rank_all: bool = True  # rating/ctr tasks also report full-ranking metrics
    candidates: Optional[str] = None  # all | test_items (the scored part's items) | sampled; None: the split's
    sampler: Any = None  # sampled.NegativeSampler of eval.candidates=sampled (each positive against drawn negatives)


def resolve_candidates(mode: Optional[str], frame: pd.DataFrame, given: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The item indices a part ranks (None: all items); with `sampled`, those its negatives are drawn from.
    `given`: the split's own set for that part."""
    if mode is None or mode == "sampled":
        return None if given is None else np.asarray(given, np.int64)
    if mode == "all":
        return None
    if mode == "test_items":
        return np.unique(frame["item"].to_numpy()).astype(np.int64)
    raise ValueError(f"eval.candidates={mode!r}: expected all, test_items, sampled or null (the split's choice)")


def default_monitor(task: str) -> str:
    return {"rating": "rmse", "ctr": "auc", "ranking": "ndcg@10"}[task]


def relevant(frame: pd.DataFrame, spec: TaskSpec) -> np.ndarray:
    """Boolean mask of the rows that count as liked / relevant."""
    if "label" in frame.columns and frame["label"].notna().all():
        return frame["label"].to_numpy() > 0
    ratings = frame["rating"].to_numpy()
    if np.isnan(ratings).all():  # implicit data: every interaction is a positive
        return np.ones(len(frame), dtype=bool)
    return ratings >= spec.positive_threshold


def targets(frame: pd.DataFrame, spec: TaskSpec) -> np.ndarray:
    if spec.task == "rating":
        return frame["rating"].to_numpy(np.float32)
    return relevant(frame, spec).astype(np.float32)


@torch.no_grad()
def predict_pairs(model, users: np.ndarray, items: np.ndarray, accelerator, batch_size: int = 4096) -> np.ndarray:
    """Scores of (user, item) pairs, in input order, sharded over processes and gathered.

    Pairs are scored grouped by user (then put back in input order), so a batch holds few distinct users and
    each user's vector, a pooling over their whole history, is computed about once."""
    from recsys_fewshot.engine import batch_loader

    order = np.argsort(np.asarray(users), kind="stable")
    loader = accelerator.prepare_data_loader(batch_loader(
        torch.as_tensor(np.asarray(users)[order]), torch.as_tensor(np.asarray(items)[order]),
        batch_size=batch_size, shuffle=False))
    out = []
    for u, i in loader:
        out.append(accelerator.gather_for_metrics(model(u, i).float()))
    if not out:
        return np.zeros(0, np.float32)
    scores = np.empty(len(order), np.float32)
    scores[order] = torch.cat(out).cpu().numpy()
    return scores


def pointwise_metrics(spec: TaskSpec, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    if spec.task == "rating":
        y = frame["rating"].to_numpy(np.float64)
        pred = np.clip(scores, *spec.rating_range) if spec.rating_range else scores
        out = {"rmse": M.rmse(y, pred), "mae": M.mae(y, pred)}
        liked = relevant(frame, spec)
        out["auc"] = M.auc(liked.astype(int), pred)
        return out
    if spec.task == "ctr":
        y = relevant(frame, spec).astype(int)
        probs = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
        return {"auc": M.auc(y, scores), "accuracy": M.accuracy(y, probs), "f1": M.f1(y, probs),
                "logloss": M.logloss(y, probs)}
    return {}


TIE_SEED = 0  # the permutation that orders tied scores in rankings


def tie_order(n_items: int, candidates: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(ranked, slot): the ranked items (all, or the `candidates`) in the fixed pseudo-random order their
    columns are scored in, so topk's ties follow it; and item index -> its column (-1 outside the candidates)."""
    ranked = np.arange(n_items) if candidates is None else np.asarray(candidates, np.int64)
    ranked = ranked[torch.randperm(len(ranked), generator=torch.Generator().manual_seed(TIE_SEED)).numpy()]
    slot = np.full(n_items, -1, np.int64)
    slot[ranked] = np.arange(len(ranked))
    return ranked, slot


def candidate_scorer(model, items: torch.Tensor):
    """users -> [len(users), len(items)] scores, the item side computed once where the model offers it."""
    scorer = getattr(model, "candidate_scorer", None)
    return scorer(items) if scorer is not None else (lambda u: model.score_candidates(u, items))


def finite_or_fail(model, scores: torch.Tensor, users: np.ndarray) -> None:
    """FloatingPointError naming the users when `scores` ([users, items]) hold NaN or +inf."""
    bad = torch.isnan(scores) | (scores == float("inf"))
    if bad.any():
        who = users[bad.any(1).nonzero()[:, 0].cpu().numpy()]
        raise FloatingPointError(f"the model ({type(model).__name__}) scored {int(bad.sum())} (user, item) pairs "
                                 f"as NaN or +inf, for {len(who)} users (first: {who[:5].tolist()}): rankings "
                                 "need finite scores")


def top_items(model, score, users: np.ndarray, exclude: UserHistory, ranked: np.ndarray, slot: np.ndarray,
              k: int, device) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best items of each of `users` (item indices, -1 where fewer are left) and their scores: `score`
    (from `candidate_scorer` over the `ranked` columns of `tie_order`) with the user's `exclude` items
    removed. Full ranking (metrics) and recommendations both rank through here. NaN or +inf scores stop
    with an error naming the users."""
    scores = score(torch.as_tensor(users, device=device)).float()
    finite_or_fail(model, scores, users)
    rows, cols = exclude.entries(users)
    cols = slot[cols]
    rows, cols = rows[cols >= 0], cols[cols >= 0]
    scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = float("-inf")
    top = torch.topk(scores, min(k, len(ranked)), dim=1)
    # an excluded item never counts, even when fewer than k items are left to rank
    index = torch.where(torch.isfinite(top.values), top.indices, -1).cpu().numpy()
    return np.where(index >= 0, ranked[np.maximum(index, 0)], -1), top.values.cpu().numpy()


@torch.no_grad()
def rank_users(model, users: np.ndarray, positives: Sequence[np.ndarray], exclude: UserHistory, n_items: int,
               ks: Sequence[int], chunk_size: int, accelerator,
               candidates: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Per-user ranking metrics over all items (or the `candidates` only), the user's `exclude` items removed.

    Users are split across processes; each rank scores `chunk_size` users at a time (never the full
    users x items matrix) and the per-user arrays are gathered in user order. Tied scores are ordered by a
    fixed pseudo-random permutation of the candidates (the same in every run and process), not by item
    index: a model that cannot tell items apart gets a random ranking's metrics, whatever the numbering.
    NaN or +inf scores stop the evaluation with an error.
    """
    k_max = max(ks)
    device = accelerator.device
    ranked, slot = tie_order(n_items, candidates)
    score = candidate_scorer(model, torch.as_tensor(ranked, device=device))

    def per_chunk(idx: np.ndarray) -> dict[str, np.ndarray]:
        top, _ = top_items(model, score, users[idx], exclude, ranked, slot, k_max, device)
        if top.shape[1] < k_max:  # fewer items than k: pad (negative entries never count as hits)
            top = np.pad(top, ((0, 0), (0, k_max - top.shape[1])), constant_values=-1)
        return M.ranking_metrics_per_user(top, [positives[i] for i in idx], ks)

    return per_user_chunks(len(users), chunk_size, accelerator, per_chunk)


def per_user_chunks(n_users: int, chunk_size: int, accelerator,
                    per_chunk: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`per_chunk(indices)` (per-user metric arrays of those users) over every user, `chunk_size` at a time,
    each process taking every world-th user; the arrays gathered back in user order."""
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = np.arange(rank, n_users, world)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(mine), chunk_size):
        idx = mine[start: start + chunk_size]
        for name, values in per_chunk(idx).items():
            parts.setdefault(name, []).append(values)
        parts.setdefault("_index", []).append(idx.astype(np.float64))
    local = {name: np.concatenate(v) for name, v in parts.items()}
    if world == 1:
        return {k: v for k, v in local.items() if k != "_index"}
    gathered = gather_object([local])
    index = np.concatenate([g.get("_index", np.zeros(0)) for g in gathered]).astype(np.int64)
    order = np.argsort(index)
    names = [n for n in gathered[0] if n != "_index"] if gathered[0] else []
    return {n: np.concatenate([g[n] for g in gathered if n in g])[order] for n in names}


def empty_table() -> pd.DataFrame:
    """The per-user table of a part without ranked users."""
    return pd.DataFrame({"user": np.zeros(0, np.int64), "relevant": np.zeros(0, np.int64)})


def ranking_metrics(model, frame: pd.DataFrame, exclude: UserHistory, n_items: int, spec: TaskSpec,
                    accelerator, candidates: Optional[np.ndarray] = None) -> tuple[dict[str, float], pd.DataFrame]:
    """Mean ranking metrics over users with at least one relevant item in `frame`, and the per-user table
    behind them (`user`, `relevant`: their number of distinct relevant items, then one column per metric).

    `candidates`: the items ranked (None: all); relevant items outside them cannot be hit but still count.
    """
    liked = frame[relevant(frame, spec)]
    if liked.empty:
        return {}, empty_table()
    grouped = liked.groupby("user", sort=True)["item"]
    users = np.fromiter(grouped.groups.keys(), dtype=np.int64)
    positives = [g.to_numpy(np.int64) for _, g in grouped]
    if spec.sampler is not None:  # eval.candidates=sampled: each positive against its user's drawn negatives
        from recsys_fewshot.sampled import chunk_scorer

        ranked, slot = tie_order(n_items, candidates)
        with torch.no_grad():
            per_user = per_user_chunks(len(users), spec.chunk_size, accelerator, chunk_scorer(
                model, users, positives, exclude, spec.sampler, ranked, slot, spec.ks, accelerator.device))
    else:
        per_user = rank_users(model, users, positives, exclude, n_items, spec.ks, spec.chunk_size, accelerator,
                              candidates)
    table = pd.DataFrame({"user": users, "relevant": [len(np.unique(p)) for p in positives], **per_user})
    return M.mean_over_users(per_user), table


class PartResult(NamedTuple):
    """One evaluated part of a split: its metrics, the pair scores (input order; clipped to the rating range
    on the rating task), and the per-user ranking table (empty when no ranking was done)."""

    metrics: dict[str, float]
    scores: np.ndarray
    per_user: pd.DataFrame


def standard_errors(spec: TaskSpec, frame: pd.DataFrame, scores: np.ndarray,
                    per_user: pd.DataFrame) -> dict[str, float]:
    """Standard errors of a part's metrics, with users as the independent units: ranking metrics over the
    per-user values (`metrics.mean_se`); RMSE and MAE over the pairs clustered by user
    (`metrics.clustered_error_se`). Metrics without one here (AUC, ...) are left out."""
    out = {name: M.mean_se(per_user[name].to_numpy()) for name in per_user.columns if "@" in name}
    if spec.task == "rating" and len(frame):
        errors = scores.astype(np.float64) - frame["rating"].to_numpy(np.float64)
        users = frame["user"].to_numpy()
        out["rmse"] = M.clustered_error_se(users, errors, "rmse")
        out["mae"] = M.clustered_error_se(users, errors, "mae")
    return out


def evaluate_frame(model, frame: pd.DataFrame, exclude: UserHistory, n_items: int, spec: TaskSpec,
                   accelerator, batch_size: int = 4096,
                   candidates: Optional[np.ndarray] = None) -> PartResult:
    """All metrics that apply to the task on one part of a split: (metrics, pair scores, per-user table).

    `candidates`: the split's item set for this part (used unless `spec.candidates` says all/test_items).
    """
    scores = predict_pairs(model, frame["user"].to_numpy(), frame["item"].to_numpy(), accelerator, batch_size)
    out = pointwise_metrics(spec, frame, scores)
    if spec.task == "ranking" and "rating" in frame and frame["rating"].notna().all() and len(frame):
        liked = relevant(frame, spec)  # explicit ratings: do liked items outscore disliked ones?
        out["auc"] = M.auc(liked.astype(int), scores)
    if spec.task == "ranking" or (spec.rank_all and spec.task == "rating"):
        ranked, per_user = ranking_metrics(model, frame, exclude, n_items, spec, accelerator,
                                           resolve_candidates(spec.candidates, frame, candidates))
        out.update(ranked)
    else:
        per_user = empty_table()
    if spec.task == "rating" and spec.rating_range:
        scores = np.clip(scores, *spec.rating_range)
    return PartResult(out, scores, per_user)
