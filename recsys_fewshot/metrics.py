"""Evaluation metrics: pure functions, numpy in, Python floats (or numpy arrays) out.

Rating prediction: `rmse`, `mae`. Binary click/like prediction: `auc`, `accuracy`, `f1`,
`logloss`. Top-k ranking: `ranking_metrics_per_user` (vectorised over users),
`mean_over_users` and `ranking_metrics`. Standard errors: `mean_se` (per-user values) and
`clustered_error_se` (RMSE / MAE over pairs grouped by user). scikit-learn is imported lazily, inside the
functions that use it, to keep `import recsys_fewshot.metrics` cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

PROB_EPS = 1e-7
RANKING_METRICS = ("recall", "ndcg", "precision", "hr", "mrr")


def _pair(a: npt.ArrayLike, b: npt.ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long, non-empty, finite 1-D float arrays (raises ValueError naming the arguments)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{names[0]} is empty")
    if x.size != y.size:
        raise ValueError(f"length mismatch: {names[0]} has {x.size} values, {names[1]} has {y.size}")
    for arr, name in zip((x, y), names):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return x, y


def _labels_probs(
    labels: npt.ArrayLike, probs: npt.ArrayLike, name: str = "probs", unit: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validated 0/1 labels (int) and scores (float); `unit` also requires scores in [0, 1]."""
    y, p = _pair(labels, probs, ("labels", name))
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if unit and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{p.min()}, {p.max()}]")
    return y.astype(np.int64), p


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared error. Empty input, length mismatch or NaN/inf -> ValueError."""
    t, p = _pair(y_true, y_pred, ("y_true", "y_pred"))
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean absolute error. Empty input, length mismatch or NaN/inf -> ValueError."""
    t, p = _pair(y_true, y_pred, ("y_true", "y_pred"))
    return float(np.mean(np.abs(t - p)))


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (tied scores get half credit). Scores may be any real numbers.

    Returns `float("nan")` when `labels` hold only one class (AUC is undefined there).
    """
    y, s = _labels_probs(labels, scores, name="scores", unit=False)
    if y.min() == y.max():
        return float("nan")
    # Mann-Whitney U over average ranks (ties share their mean rank): equal to sklearn's roc_auc_score, without
    # importing scikit-learn (about 1 s of a run's start-up; a rating run needs only this metric)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy(labels: npt.ArrayLike, probs: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Share of examples where `probs >= threshold` equals the 0/1 label."""
    y, p = _labels_probs(labels, probs)
    return float(np.mean((p >= threshold).astype(np.int64) == y))


def f1(labels: npt.ArrayLike, probs: npt.ArrayLike, threshold: float = 0.5) -> float:
    """F1 of the positive class with predictions `probs >= threshold`; 0.0 when it is undefined
    (no positive label and no positive prediction)."""
    y, p = _labels_probs(labels, probs)
    from sklearn.metrics import f1_score

    return float(f1_score(y, (p >= threshold).astype(np.int64), zero_division=0.0))


def logloss(labels: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Binary cross-entropy (natural log), probabilities clipped to [1e-7, 1 - 1e-7]."""
    y, p = _labels_probs(labels, probs)
    from sklearn.metrics import log_loss

    return float(log_loss(y, np.clip(p, PROB_EPS, 1.0 - PROB_EPS), labels=[0, 1]))


def _check_ks(ks: Sequence[int], width: int) -> list[int]:
    """The cut-offs as ints; each must be >= 1 and <= the width of `topk`."""
    out = [int(k) for k in ks]
    if not out:
        raise ValueError("ks is empty")
    if min(out) < 1:
        raise ValueError(f"ks must be >= 1; got {out}")
    if max(out) > width:
        raise ValueError(f"max(ks)={max(out)} exceeds the number of ranked items per user (topk.shape[1]={width})")
    return out


def _flatten_positives(positives: Sequence[npt.ArrayLike], n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item id) pairs of all positives, as two int64 arrays."""
    if len(positives) != n_users:
        raise ValueError(f"positives has {len(positives)} users, topk has {n_users} rows")
    arrays = [np.asarray(p).ravel() for p in positives]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=n_users)
    nonempty = [a for a in arrays if a.size]
    if not nonempty:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    items = np.concatenate(nonempty)
    if items.dtype.kind not in "iu":
        raise ValueError(f"positives must hold integer item ids; got dtype {items.dtype}")
    if items.min() < 0:
        raise ValueError("positives contain a negative item id")
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    return users, items.astype(np.int64)


def ranking_metrics_per_user(
    topk: np.ndarray, positives: Sequence[npt.ArrayLike], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Top-k metrics for each user, vectorised over users.

    Args:
        topk: int array [U, K] of item ids, best first, the user's training items already
            excluded. Negative entries (padding) never count as hits. Ids must not repeat in a row.
        positives: length-U sequence of int arrays, the user's relevant items (duplicates count once).
        ks: cut-offs, each in 1..K (ValueError otherwise).

    Returns:
        For each k in ks, float arrays of length U under `recall@k`, `ndcg@k`, `precision@k`,
        `hr@k` and `mrr@k`, with hits(k) = relevant items among the first k, P = |positives|:
          - recall@k = hits(k) / P (RecBole's definition, so it is < 1 when P > k);
          - precision@k = hits(k) / k;
          - hr@k = 1 if hits(k) > 0 else 0;
          - mrr@k = 1 / rank of the first hit if that rank <= k else 0 (ranks start at 1);
          - ndcg@k = DCG@k / IDCG@k, DCG@k = sum over r = 1..k of hit_r / log2(r + 1),
            IDCG@k = the DCG of min(P, k) hits at ranks 1..min(P, k).
        Users with no positives (P = 0) get NaN in every array; `mean_over_users` drops them.
    """
    topk = np.asarray(topk)
    if topk.ndim != 2 or topk.dtype.kind not in "iu":
        raise ValueError(f"topk must be a 2-D integer array [users, K]; got shape {topk.shape}, dtype {topk.dtype}")
    n_users, width = topk.shape
    ks = _check_ks(ks, width)
    topk = topk.astype(np.int64)
    ordered = np.sort(topk, axis=1)
    if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)):
        raise ValueError("topk repeats an item id within a row")

    pos_users, pos_items = _flatten_positives(positives, n_users)
    # One int64 key per (user, item) pair: user * n_items + item.
    n_items = int(max(topk.max(initial=0), pos_items.max(initial=0))) + 1
    if n_users * n_items >= np.iinfo(np.int64).max:
        raise ValueError(f"too many (user, item) pairs to encode: {n_users} users x {n_items} items")
    pos_keys = np.sort(pos_users * n_items + pos_items)
    duplicate = np.zeros(pos_keys.size, dtype=bool)
    duplicate[1:] = pos_keys[1:] == pos_keys[:-1]
    pos_keys = pos_keys[~duplicate]
    n_pos = np.bincount(pos_keys // n_items, minlength=n_users).astype(np.float64)
    # Membership by binary search (faster here than np.isin's hashing); the int64-max sentinel,
    # larger than any key, keeps every search result a valid index.
    table = np.append(pos_keys, np.iinfo(np.int64).max)
    keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + topk
    hits = (topk >= 0) & (table[np.searchsorted(pos_keys, keys)] == keys)

    discount = 1.0 / np.log2(np.arange(2, width + 2, dtype=np.float64))
    hits_cum = np.cumsum(hits, axis=1, dtype=np.float64)
    dcg_cum = np.cumsum(hits * discount, axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discount)])
    has_hit = hits.any(axis=1)
    first_rank = np.argmax(hits, axis=1) + 1  # meaningful only where has_hit
    no_pos = n_pos == 0
    safe_pos = np.where(no_pos, 1.0, n_pos)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits_cum[:, k - 1]
        idcg = ideal_cum[np.minimum(n_pos, k).astype(np.int64)]
        values = {
            "recall": h / safe_pos,
            "ndcg": dcg_cum[:, k - 1] / np.where(no_pos, 1.0, idcg),
            "precision": h / k,
            "hr": (h > 0).astype(np.float64),
            "mrr": np.where(has_hit & (first_rank <= k), 1.0 / first_rank, 0.0),
        }
        for name in RANKING_METRICS:
            out[f"{name}@{k}"] = np.where(no_pos, np.nan, values[name])
    return out


def mean_over_users(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """NaN-mean of each array (NaN users, i.e. those without positives, are skipped).

    A key whose array holds no finite value maps to NaN. Per-user arrays gathered from several
    processes can be concatenated first, then averaged here.
    """
    out: dict[str, float] = {}
    for key, values in per_user.items():
        arr = np.asarray(values, dtype=np.float64).ravel()
        kept = arr[~np.isnan(arr)]
        out[key] = float(kept.mean()) if kept.size else float("nan")
    return out


def ranking_metrics(
    topk: np.ndarray, positives: Sequence[npt.ArrayLike], ks: Sequence[int]
) -> dict[str, float]:
    """Means over users (with at least one positive) of `ranking_metrics_per_user`."""
    return mean_over_users(ranking_metrics_per_user(topk, positives, ks))


def mean_se(values: npt.ArrayLike) -> float:
    """Standard error of the mean of per-unit values (NaN units dropped): the sample standard deviation
    (ddof=1) / sqrt(n). NaN with fewer than two units."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[~np.isnan(arr)]
    return float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size >= 2 else float("nan")


def clustered_error_se(clusters: npt.ArrayLike, errors: npt.ArrayLike, kind: str = "rmse") -> float:
    """Standard error of RMSE (`kind="rmse"`) or MAE (`"mae"`) over pairs that are not independent but
    grouped in clusters (the pairs of one user), from the clusters' totals.

    With per-cluster loss totals s_c (squared or absolute errors), counts n_c, C clusters and the pooled mean
    m = sum s_c / sum n_c (the MSE or the MAE), the linearised ratio estimator gives
    var(m) = C / (C - 1) * sum_c (s_c - m n_c)^2 / (sum_c n_c)^2; se(MAE) = sqrt(var(m)) and, by the delta
    method, se(RMSE) = sqrt(var(m)) / (2 RMSE). NaN with fewer than two clusters (or an RMSE of 0)."""
    if kind not in ("rmse", "mae"):
        raise ValueError(f"kind must be 'rmse' or 'mae', got {kind!r}")
    clusters, errors = _pair(clusters, errors, ("clusters", "errors"))
    loss = errors.astype(np.float64) ** 2 if kind == "rmse" else np.abs(errors.astype(np.float64))
    _, index = np.unique(clusters, return_inverse=True)
    totals, counts = np.bincount(index, loss), np.bincount(index).astype(np.float64)
    n_clusters = totals.size
    if n_clusters < 2:
        return float("nan")
    m = totals.sum() / counts.sum()
    var = n_clusters / (n_clusters - 1) * np.sum((totals - m * counts) ** 2) / counts.sum() ** 2
    if kind == "mae":
        return float(math.sqrt(var))
    return float(math.sqrt(var) / (2 * math.sqrt(m))) if m > 0 else float("nan")
