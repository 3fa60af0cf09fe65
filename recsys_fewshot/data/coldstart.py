"""Cold-start and per-user protocols: pure, seeded functions ``RecData -> Split``.

* ``cold_items``: a seeded ``cold_ratio`` of the items is cold: every interaction with them is test,
  and test ranks only them (``Split.candidates["test"]``). Valid is made the same way from the warm
  items (a further ``valid_ratio`` of them turned cold), so model selection sees the same situation.
* ``cold_users``: a seeded ``cold_ratio`` of the users is cold; each cold user's first ``k``
  interactions by time (ties: file order) are support (``Split.support``: shown to the user tower at
  evaluation, never trained on), the rest are queries (test). Valid: a further ``valid_ratio`` of the
  warm users, made cold the same way. Warm users' interactions train the model.
* ``per_user``: per user, a seeded ``test_ratio`` of their interactions is test and ``valid_ratio`` of
  the rest valid (every user is warm: the "warm 80/20" protocol).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from recsys_fewshot.data.protocols import Split, _make, pair_groups, rows_of, warn_file_order
from recsys_fewshot.data.recdata import DataError, RecData


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise DataError(f"split.{name} must be in [0, 1), got {value}")


def cold_items(data: RecData, cold_ratio: float = 0.2, valid_ratio: float = 0.1, seed: int = 0,
               task: Optional[str] = None) -> Split:
    """Cold items: all their interactions go to test (valid: a further slice of the warm items)."""
    _check_ratio("cold_ratio", cold_ratio)
    _check_ratio("valid_ratio", valid_ratio)
    items = data.interactions["item"].to_numpy()
    used = np.unique(items)
    rng = np.random.default_rng(seed)
    order = used[rng.permutation(len(used))]
    n_test = int(round(len(used) * cold_ratio))
    n_valid = int(round((len(used) - n_test) * valid_ratio))
    test_items, valid_items = np.sort(order[:n_test]), np.sort(order[n_test: n_test + n_valid])
    rows = np.arange(len(items))
    in_test, in_valid = np.isin(items, test_items), np.isin(items, valid_items)
    split = _make(data, "cold_items", task, rows[~in_test & ~in_valid], rows[in_valid], rows[in_test],
                  seed=seed, cold_ratio=cold_ratio, cold_items=len(test_items), valid_cold_items=len(valid_items))
    split.candidates = {"valid": valid_items, "test": test_items}
    return split


def _first_by_time(inter: pd.DataFrame, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` (all interactions of some users) into each user's first k by time and the rest."""
    sub = inter.iloc[rows]
    order = np.lexsort((rows, sub["timestamp"].to_numpy(), sub["user"].to_numpy()))
    users = sub["user"].to_numpy()[order]
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    ranked = rows[order]
    return ranked[position < k], ranked[position >= k]


def cold_users(data: RecData, k: int = 5, cold_ratio: float = 0.2, valid_ratio: float = 0.1,
               min_queries: int = 1, seed: int = 0, task: Optional[str] = None, adapt_steps: int = 0,
               adapt_lr: float = 0.01) -> Split:
    """Cold users: their first k interactions by time are support, the rest queries (test or valid).

    Users are drawn in one seeded order, skipping those with fewer than ``k + min_queries``
    interactions, so cold sets for different k overlap as much as they can. Support sizes are exactly k.
    ``adapt_steps``/``adapt_lr`` are recorded for train.py (optional per-user fine-tuning on the support).
    """
    _check_ratio("cold_ratio", cold_ratio)
    _check_ratio("valid_ratio", valid_ratio)
    if k < 1:
        raise DataError(f"split.k must be >= 1 (support interactions per cold user), got {k}")
    inter = data.interactions
    warn_file_order(inter["timestamp"].to_numpy(), data, "cold_users", f"a cold user's support is their first {k}")
    user_col = inter["user"].to_numpy()
    counts = np.bincount(user_col, minlength=data.n_users)
    present = np.flatnonzero(counts > 0)
    order = present[np.random.default_rng(seed).permutation(len(present))]
    eligible = order[counts[order] >= k + min_queries]
    n_test = int(round(len(present) * cold_ratio))
    n_valid = int(round((len(present) - n_test) * valid_ratio))
    if n_test + n_valid > len(eligible):
        raise DataError(f"split=cold_users: {n_test + n_valid} cold users wanted but only {len(eligible)} users "
                        f"have >= k + min_queries = {k + min_queries} interactions")
    test_users, valid_users = eligible[:n_test], eligible[n_test: n_test + n_valid]
    rows = np.arange(len(inter))
    is_test, is_valid = np.isin(user_col, test_users), np.isin(user_col, valid_users)
    test_support, test_queries = _first_by_time(inter, rows[is_test], k)
    valid_support, valid_queries = _first_by_time(inter, rows[is_valid], k)
    split = _make(data, "cold_users", task, rows[~is_test & ~is_valid], valid_queries, test_queries,
                  seed=seed, k=k, cold_ratio=cold_ratio, cold_users=len(test_users),
                  valid_cold_users=len(valid_users), adapt_steps=adapt_steps, adapt_lr=adapt_lr)
    support = np.sort(np.concatenate([valid_support, test_support]))
    split.support = inter.iloc[support].reset_index(drop=True)
    return split


def per_user(data: RecData, test_ratio: float = 0.2, valid_ratio: float = 0.1, seed: int = 0,
             task: Optional[str] = None) -> Split:
    """Per user: a seeded round(test_ratio * n) of their n interactions to test, then valid from the rest
    (n counts distinct items: the copies of a repeated (user, item) pair go to the same part)."""
    _check_ratio("test_ratio", test_ratio)
    _check_ratio("valid_ratio", valid_ratio)
    groups = pair_groups(data.interactions)
    firsts = np.unique(groups, return_index=True)[1]  # one row per pair: the deal is over these
    users = data.interactions["user"].to_numpy()[firsts]
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))  # per user, a random order of their pairs
    sorted_users = users[order]
    counts = np.bincount(users, minlength=data.n_users)
    starts = np.cumsum(counts) - counts
    position = np.arange(len(order)) - starts[sorted_users]
    n = counts[sorted_users]
    n_test = np.round(n * test_ratio).astype(np.int64)
    n_valid = np.round((n - n_test) * valid_ratio).astype(np.int64)
    test = rows_of(groups, order[position < n_test])
    valid = rows_of(groups, order[(position >= n_test) & (position < n_test + n_valid)])
    train = rows_of(groups, order[position >= n_test + n_valid])
    return _make(data, "per_user", task, train, valid, test, seed=seed, test_ratio=test_ratio)
