"""History -> target CTR samples built from any rated interactions table (`split=tallrec` on rating data).

A sample is (the previous items of one user with their ratings, oldest first; a target item; its label). The
published recipes differ in three choices, each an option of `build_samples` (and of `split=tallrec`):

* the order of a user's ratings (`order`): ``time`` (by timestamp, stably: ties keep file order; TALLRec's Movie
  recipe, ReLLa's and CoLLM's MovieLens), ``shuffle`` (file order, then Python's ``random.shuffle`` after
  ``random.seed(order_seed)`` for every user: ReLLa's BookCrossing, whose ratings carry no time) or
  ``shuffle_by_item`` (the same shuffle of the rows grouped by their item's first appearance in the file, then in
  file order: the order TALLRec's ``preprocess_book.py`` shuffled, left by the inner merge of the ratings with
  the books in pandas before 2.2, which grouped the result by join key);
* which positions are targets (`targets`): ``every`` position with at least `min_history` earlier items
  (TALLRec's Movie: `min_history` = `history_len` = 10; ReLLa's MovieLens: 5) or the ``last`` one of each user
  with at least `min_history` earlier items (TALLRec's Book: 3; ReLLa's BookCrossing: 5);
* which earlier items form the history (`history_from`, ``targets=last`` only): the ``recent`` `history_len`
  (the ones just before the target) or the ``first`` `history_len` of the order (TALLRec's Book takes
  ``items[:-1][:10]``).

Users come in order of their first appearance in the file and each user's samples in sequence order, as TALLRec
concatenates them. The label is rating >= `positive_threshold`. How the samples are cut into pool / valid /
test is the protocol's (`data/tallrec.py`: ``split.recipe``).
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import pandas as pd

from recsys_fewshot.data.recdata import DataError

ORDERS = ("time", "shuffle", "shuffle_by_item")
TARGETS = ("every", "last")
HISTORY_FROM = ("recent", "first")


def _check(history_len: int, min_history: int, order: str, targets: str, history_from: str) -> None:
    if history_len < 1:
        raise DataError(f"split.history_len must be >= 1, got {history_len}")
    if not 1 <= min_history <= history_len:
        raise DataError(f"split.min_history must be in 1..split.history_len={history_len}, got {min_history}")
    for key, value, allowed in (("order", order, ORDERS), ("targets", targets, TARGETS),
                                ("history_from", history_from, HISTORY_FROM)):
        if value not in allowed:
            raise DataError(f"split.{key}={value!r}: expected one of {', '.join(allowed)}")
    if history_from == "first" and targets != "last":
        raise DataError("split.history_from=first needs split.targets=last (every position's history is the "
                        "items just before it)")


def user_sequences(inter: pd.DataFrame, order: str = "time", order_seed: int = 42) -> np.ndarray:
    """Row indices of `inter` grouped by user (users by first appearance), each user's rows in `order`."""
    n = len(inter)
    rows = np.arange(n)
    users = inter["user"].to_numpy()
    first = pd.Series(rows).groupby(users).transform("min").to_numpy()  # first appearance of the user
    if order == "time":
        return np.lexsort((rows, inter["timestamp"].to_numpy(), first))
    base = rows
    if order == "shuffle_by_item":
        items = inter["item"].to_numpy()
        base = pd.Series(rows).groupby(items).transform("min").to_numpy()  # the item's first row in the file
    seq = np.lexsort((rows, base, first))
    u = users[seq]
    starts = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1] if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n]
    perms: dict[int, np.ndarray] = {}
    for a, b in zip(starts, ends):
        size = int(b - a)
        if size not in perms:
            # the shuffle of the recipes: random.seed(order_seed) then random.shuffle(the user's list); the
            # permutation depends on the length only, so it is drawn once per length
            perm = list(range(size))
            random.Random(order_seed).shuffle(perm)
            perms[size] = np.asarray(perm, np.int64)
        seq[a:b] = seq[a:b][perms[size]]
    return seq


def build_samples(inter: pd.DataFrame, history_len: int = 10, positive_threshold: float = 4.0, last: int = 0,
                  order: str = "time", order_seed: int = 42, targets: str = "every",
                  min_history: Optional[int] = None, history_from: str = "recent") -> pd.DataFrame:
    """The samples of every user, users in order of first appearance (only the `last` ones when > 0).

    Columns: ``user``, ``item`` (the target), ``rating``, ``timestamp``, ``label`` (rating >=
    `positive_threshold`) and ``history`` (a list of ``(item, rating)`` pairs, oldest first). `min_history`
    None means `history_len` (every history full, as TALLRec's Movie recipe)."""
    min_history = history_len if min_history is None else int(min_history)
    _check(history_len, min_history, order, targets, history_from)
    n = len(inter)
    seq = user_sequences(inter, order, order_seed)
    u = inter["user"].to_numpy()[seq]
    starts = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1] if n else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, n])
    position = np.arange(n) - np.repeat(starts, lengths)
    if targets == "every":
        at = np.flatnonzero(position >= min_history)  # indices into `seq` of the target rows
    else:
        ends = starts + lengths - 1
        at = ends[lengths - 1 >= min_history]
    if last > 0:
        at = at[-last:]
    pos = position[at]
    if history_from == "first":  # the first `history_len` rows of the user's order (never the target)
        lo = at - pos
        hi = lo + np.minimum(pos, history_len)
    else:
        hi = at
        lo = at - np.minimum(pos, history_len)
    offsets = np.arange(history_len)
    index = lo[:, None] + offsets
    valid = index < hi[:, None]
    hist_rows = seq[np.where(valid, index, 0)]
    items, ratings = inter["item"].to_numpy(), inter["rating"].to_numpy(np.float32)
    target = seq[at]
    out = inter.iloc[target][["user", "item", "rating", "timestamp"]].reset_index(drop=True)
    out["label"] = (out["rating"].to_numpy() >= positive_threshold).astype(np.int8)
    hist_items, hist_ratings = items[hist_rows], ratings[hist_rows]
    if valid.all():
        pairs = (list(zip(i.tolist(), r.tolist())) for i, r in zip(hist_items, hist_ratings))
    else:
        pairs = (list(zip(i[m].tolist(), r[m].tolist())) for i, r, m in zip(hist_items, hist_ratings, valid))
    out["history"] = pd.Series(list(pairs), dtype=object)
    return out
