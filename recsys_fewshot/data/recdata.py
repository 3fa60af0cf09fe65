"""The one in-memory shape every source produces, and every protocol consumes.

A `RecData` holds three tables with contiguous integer indices (assigned once, by the source):

* ``interactions``: columns ``user`` (int64 index), ``item`` (int64 index), ``rating`` (float32,
  NaN for implicit data), ``timestamp`` (int64, -1 when unknown) and, for CTR data, ``label``
  (int8 0/1) and ``history`` (object: a list of ``(item_index, rating)`` pairs, oldest first).
  Row order is the file order (protocols rely on it for stable tie-breaks).
* ``items``: one row per item index 0..n_items-1, columns ``item`` (index), ``item_id`` (raw id as
  a string) and free text/attribute columns (``title``, ``genres``...).
* ``users``: one row per user index 0..n_users-1, columns ``user``, ``user_id`` (raw, string) and
  attribute columns.

``folds`` carries splits that come with the files (MovieLens ``u1``..``ub``, a CSV folder's
train/valid/test files, UniSRec's leave-one-out files): fold name -> int8 array aligned with the
interactions rows, with codes TRAIN/VALID/TEST (or ABSENT for rows the fold does not use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

TRAIN, VALID, TEST, ABSENT = 0, 1, 2, -1
PART_CODES = {"train": TRAIN, "valid": VALID, "test": TEST}


class DataError(ValueError):
    """Bad input data; the message names the file and column at fault."""


@dataclass
class RecData:
    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    folds: dict[str, np.ndarray] = field(default_factory=dict)
    implicit: bool = False  # True when ratings carry no grade (every interaction is positive)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_raw_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy()

    def user_raw_ids(self) -> np.ndarray:
        return self.users["user_id"].to_numpy()

    def validate(self) -> "RecData":
        """Check the invariants above; raise DataError naming what is wrong."""
        inter = self.interactions
        for col in ("user", "item", "rating", "timestamp"):
            if col not in inter.columns:
                raise DataError(f"{self.name}: interactions table lacks column {col!r}")
        if not np.array_equal(self.items["item"].to_numpy(), np.arange(len(self.items))):
            raise DataError(f"{self.name}: items table must hold indices 0..n_items-1 in order")
        if not np.array_equal(self.users["user"].to_numpy(), np.arange(len(self.users))):
            raise DataError(f"{self.name}: users table must hold indices 0..n_users-1 in order")
        if len(inter):
            if inter["user"].min() < 0 or inter["user"].max() >= len(self.users):
                raise DataError(f"{self.name}: interaction user index out of range")
            if inter["item"].min() < 0 or inter["item"].max() >= len(self.items):
                raise DataError(f"{self.name}: interaction item index out of range")
        for name, codes in self.folds.items():
            if len(codes) != len(inter):
                raise DataError(f"{self.name}: fold {name!r} has {len(codes)} codes for {len(inter)} rows")
        return self


def remap_ids(raw: pd.Series, known: pd.Index | None = None) -> tuple[np.ndarray, pd.Index]:
    """Map raw ids (as strings) to contiguous indices.

    ``known`` (an index of raw ids, in index order) is extended with ids not seen before, in order of
    first appearance; returns the indices and the (possibly extended) id index.
    """
    raw = raw.astype(str)
    if known is None:
        known = pd.Index([], dtype=object)
    new = pd.Index(pd.unique(raw.to_numpy())).difference(known, sort=False)
    if len(new):
        # keep first-appearance order for the new ids
        first = pd.unique(raw.to_numpy())
        new_set = set(new)
        known = known.append(pd.Index([x for x in first if x in new_set], dtype=object))
    codes = known.get_indexer(raw.to_numpy())
    return codes.astype(np.int64), known


@dataclass
class UserHistory:
    """Users' history items in CSR form: user u's items are ``items[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 [nnz]
    weights: np.ndarray  # float32 [nnz], e.g. 1 or a centred rating
    ratings: Optional[np.ndarray] = None  # float32 [nnz], explicit ratings when known (towers may weight by them)

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int,
                   weights: Optional[np.ndarray] = None, ratings: Optional[np.ndarray] = None) -> "UserHistory":
        """Rows grouped by user; within a user the input order is kept (pass rows oldest first for sequences)."""
        order = np.argsort(users, kind="stable")
        counts = np.bincount(users, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        w = np.ones(len(users), np.float32) if weights is None else np.asarray(weights, np.float32)
        r = None if ratings is None else np.asarray(ratings, np.float32)[order]
        return cls(indptr, np.asarray(items, np.int64)[order], w[order], r)

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user]: self.indptr[user + 1]]

    def entry_index(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in `users`, index into `items`/`weights`) of every history entry of `users`, in order."""
        starts, ends = self.indptr[users], self.indptr[np.asarray(users) + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(lengths)), lengths)
        offsets = np.cumsum(lengths) - lengths
        return rows, np.arange(int(lengths.sum())) - offsets[rows] + starts[rows]

    def entries(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in `users`, item) of every history entry of `users`, in order, without a Python loop."""
        rows, index = self.entry_index(users)
        return rows, self.items[index]
