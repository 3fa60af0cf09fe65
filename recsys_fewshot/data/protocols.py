"""Split protocols: pure, seeded functions ``RecData -> Split``.

Valid is always carved from train, never from test. Row order inside each part follows the
interactions table (file order), so results do not depend on hash order or thread timing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from recsys_fewshot.data.recdata import TEST, TRAIN, VALID, DataError, RecData

log = logging.getLogger(__name__)
TASKS = ("rating", "ctr", "ranking")


@dataclass
class Split:
    """Train/valid/test interaction tables (same columns as ``RecData.interactions``)."""

    task: Optional[str]  # the task the protocol implies (None: the data set's choice)
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    info: dict = field(default_factory=dict)
    # cold-start protocols (data/coldstart.py): the items each part ranks ("valid"/"test" -> item
    # indices; a part not named ranks all items), and the cold users' support interactions, shown to
    # the user tower at evaluation (never trained on) and removed from their rankings
    candidates: dict = field(default_factory=dict)
    support: Optional[pd.DataFrame] = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def check_nonempty(self, name: str) -> "Split":
        for part, frame in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            if len(frame) == 0:
                raise DataError(
                    f"split={name}: the {part} set is empty ({self.sizes()}); "
                    "check the split ratios or the data files"
                )
        return self


def _carve(rows: np.ndarray, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move a random `ratio` of `rows` out; returns (kept, carved), both in original order."""
    if not 0.0 <= ratio < 1.0:
        raise DataError(f"a split ratio must be in [0, 1), got {ratio}")
    n_out = int(round(len(rows) * ratio))
    mask = np.zeros(len(rows), dtype=bool)
    mask[rng.permutation(len(rows))[:n_out]] = True
    return rows[~mask], rows[mask]


def pair_groups(inter: pd.DataFrame) -> np.ndarray:
    """Each row's (user, item) pair as a group id, numbered by first appearance (rows 0..n-1 when no pair
    repeats). Random splits deal out groups, not rows, so a repeated pair never lands in train and test both."""
    key = inter["user"].to_numpy(np.int64) * (int(inter["item"].max()) + 1 if len(inter) else 1) \
        + inter["item"].to_numpy(np.int64)
    return pd.factorize(key)[0]


def rows_of(groups: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The rows whose group is in `chosen`."""
    mask = np.zeros(int(groups.max()) + 1 if len(groups) else 0, dtype=bool)
    mask[chosen] = True
    return np.flatnonzero(mask[groups])


def _make(data: RecData, name: str, task: Optional[str], train, valid, test, **info) -> Split:
    inter = data.interactions
    split = Split(
        task=task,
        train=inter.iloc[np.sort(train)].reset_index(drop=True),
        valid=inter.iloc[np.sort(valid)].reset_index(drop=True),
        test=inter.iloc[np.sort(test)].reset_index(drop=True),
        info={"protocol": name, **info},
    )
    return split.check_nonempty(name)


def given(data: RecData, fold: str = "given", valid_ratio: float = 0.05, seed: int = 0,
          task: Optional[str] = None) -> Split:
    """The files' own split (MovieLens ``u1``..``ub``, a CSV folder's train/valid/test files)."""
    if fold not in data.folds:
        known = ", ".join(sorted(data.folds)) or "none"
        raise DataError(f"split.fold={fold!r}: data set {data.name!r} has no such split (has: {known})")
    codes = data.folds[fold]
    train = np.flatnonzero(codes == TRAIN)
    valid = np.flatnonzero(codes == VALID)
    test = np.flatnonzero(codes == TEST)
    if len(valid) == 0:
        train, valid = _carve(train, valid_ratio, np.random.default_rng(seed))
    return _make(data, "given", task, train, valid, test, fold=fold, seed=seed)


def random_split(data: RecData, test_ratio: float = 0.2, valid_ratio: float = 0.05, seed: int = 0,
                 task: Optional[str] = None) -> Split:
    """Each interaction goes to test with probability ~test_ratio (exact count, seeded); the copies of a
    repeated (user, item) pair go together."""
    rng = np.random.default_rng(seed)
    groups = pair_groups(data.interactions)
    train, test = _carve(np.arange(int(groups.max()) + 1 if len(groups) else 0), test_ratio, rng)
    train, valid = _carve(train, valid_ratio, rng)
    return _make(data, "random", task, rows_of(groups, train), rows_of(groups, valid), rows_of(groups, test),
                 seed=seed)


def _refuse_partial_timestamps(ts: np.ndarray, data: RecData, name: str) -> None:
    """Rows without a timestamp (-1: an empty cell) among rows with one would silently sort as the oldest."""
    missing = ts < 0
    if missing.any() and not missing.all():
        raise DataError(f"split={name}: {int(missing.sum())} of {len(ts)} interactions of data set {data.name!r} "
                        f"have no timestamp (the first: row {int(np.flatnonzero(missing)[0])} of the interactions) "
                        "while the others have one: fill them in, or drop the timestamp column")


def warn_file_order(ts: np.ndarray, data: RecData, name: str, what: str) -> None:
    """A protocol that orders each user's interactions by time, on data without any timestamp (Last.fm's play
    counts, a CSV without the column): it goes on in file order, which says nothing of time; say so."""
    if len(ts) and (ts < 0).all():
        log.warning("split=%s: data set %r has no timestamps, so %s by file order, not by time", name, data.name,
                    what)


def temporal(data: RecData, test_ratio: float = 0.2, valid_ratio: float = 0.05, seed: int = 0,
             task: Optional[str] = None) -> Split:
    """Global time cut: the latest `test_ratio` of interactions is test, the latest part of the rest valid.

    Ties in time keep file order (stable sort), so the cut is deterministic.
    """
    ts = data.interactions["timestamp"].to_numpy()
    if (ts < 0).all():
        raise DataError(f"split=temporal: data set {data.name!r} has no timestamps")
    _refuse_partial_timestamps(ts, data, "temporal")
    order = np.argsort(ts, kind="stable")
    n = len(order)
    n_test = int(round(n * test_ratio))
    n_valid = int(round((n - n_test) * valid_ratio))
    train = order[: n - n_test - n_valid]
    valid = order[n - n_test - n_valid: n - n_test]
    test = order[n - n_test:]
    return _make(data, "temporal", task, train, valid, test, seed=seed)


def leave_one_out(data: RecData, min_interactions: int = 3, seed: int = 0,
                  task: Optional[str] = "ranking") -> Split:
    """Per user, by time (ties: file order): last -> test, second-to-last -> valid, rest -> train.

    Users with fewer than `min_interactions` interactions stay entirely in train.
    """
    inter = data.interactions
    _refuse_partial_timestamps(inter["timestamp"].to_numpy(), data, "leave_one_out")  # none at all: file order
    warn_file_order(inter["timestamp"].to_numpy(), data, "leave_one_out", "each user's last interaction is the last")
    order = np.lexsort((np.arange(len(inter)), inter["timestamp"].to_numpy(), inter["user"].to_numpy()))
    users = inter["user"].to_numpy()[order]
    # position from the end within each user's (time-ordered) run
    counts = np.bincount(users, minlength=data.n_users)
    ends = np.cumsum(counts)[users]
    from_end = ends - np.arange(len(order)) - 1  # 0 for the user's last interaction
    eligible = counts[users] >= min_interactions
    test = order[eligible & (from_end == 0)]
    valid = order[eligible & (from_end == 1)]
    train = order[~eligible | (from_end >= 2)]
    return _make(data, "leave_one_out", task, train, valid, test, seed=seed,
                 min_interactions=min_interactions)
