"""A trained run as a recommender: `load_run(run_dir)` and what it answers, in the data set's raw ids.

The run is rebuilt from its run folder exactly as `evaluate` rebuilds it (`evaluate.load_trained`: this project's
classes only, the saved weights loaded), then served as its test ranking saw it: the user tower reads the
history the test part read, and the items that ranking excluded (the split's training, valid and support
rows: what the model was shown) are the user's *known* items. Top-k lists come from the ranking code of the
evaluation (`evaluation.top_items`: the same exclusions, the same tie order), so a user's recommendations
are the list their test metrics were computed on.

Beyond the trained data, without retraining (posted.py): users given by a history with the request (`history=`,
read as the run reads its own users' histories) and items added after training (`add_items`, scored from their
text). `explain=True` names the history items behind each score (serving_explain.py). The vector methods
(`item_vectors`, `similar_items`, `export`) are in serving_vectors.py.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import pandas as pd

from recsys_fewshot.serving_common import (SHOWN, UNKNOWN_CHOICES, VECTOR_KINDS, ServeError,  # noqa: F401
                                           check_k, listed, log, no_grad, resolve_ids)
from recsys_fewshot.serving_vectors import VectorMethods, towers_of  # noqa: F401


class TrainedRun(VectorMethods):
    """A saved run, loaded (`load_run`): recommendations, pair scores, similar items and vectors by raw id, for
    its users and for histories posted with a request (`history=`), over its catalogue and the items added
    with `add_items` (posted.py)."""

    def __init__(self, run_dir: Path, cfg, run, accelerator):
        from recsys_fewshot.models.capabilities import capabilities_of

        self.run_dir, self.cfg, self.run, self.accelerator = Path(run_dir), cfg, run, accelerator
        data = run.data
        self.user_ids = pd.Index(data.user_raw_ids().astype(str), name="user_id")
        self.item_ids = pd.Index(data.item_raw_ids().astype(str), name="item_id")  # + the items added
        self.head = cfg.head._target_
        self.capabilities = capabilities_of(self.head)
        self.new_items = None  # posted.NewItems: the items added after training (add_items)
        self.warned_id = False  # the warning that new users get no ID embedding is given once
        self._ranking = None  # (ranked items, their columns, the candidate scorer), built by the first ranking
        self._grown = False  # inside an `_items` block
        # the model is shared by every request and each swaps its histories and items in: one request at a time
        # (other threads wait for the lock; the same thread entering a second request is refused)
        self._lock = threading.RLock()
        self._serving = False
        run.model.eval()

    # --- what the run serves ---------------------------------------------------------------
    @property
    def task(self) -> str:
        """rating (scores are predicted ratings), ranking, or ctr (scores are logits)."""
        return self.run.task

    @property
    def device(self):
        return self.accelerator.device

    def _held_history(self):
        """The history the model reads while serving its own users: the test ranking's."""
        prep = self.run.prep
        return prep.eval_histories.test if prep.eval_histories.test is not None else prep.history

    @contextlib.contextmanager
    def _items(self) -> Iterator[None]:
        """The items added after training take part inside the block (once, however deeply nested)."""
        with self._lock:
            if self.new_items is None or self._grown:
                yield
                return
            self._grown = True
            try:
                with self.run.model.with_new_items(self.new_items.features.to(self.device)):
                    yield
            finally:
                self._grown = False

    @contextlib.contextmanager
    def serving(self, posted=None) -> Iterator[None]:
        """The model as requests see it, inside the block: the added items, the test ranking's histories, and
        (`posted`: a `posted.Posted`) user indices as the posted histories' slots. One block at a time: another
        thread waits for the running one to end; the same thread opening a second (two `iter_recommendations`
        generators consumed in turn) is refused, since each would read the other's histories."""
        from recsys_fewshot.inductive import using_history
        from recsys_fewshot.posted import reading

        prep = self.run.prep
        with self._lock:
            if self._serving:
                raise ServeError("this run is already answering a request in this thread (an iter_recommendations "
                                 "generator not yet finished?): finish or close it before the next request")
            self._serving = True
            try:
                with self._items(), using_history(self.run.model, prep.eval_histories.test, prep.history):
                    if posted is None:
                        yield
                    else:
                        with reading(self.run.model, posted, self._held_history()):
                            yield
            finally:
                self._serving = False

    def known_items(self, exclude_known: Union[bool, str] = True):
        """The items left out of each user's ranking (`UserHistory`): True, what the test ranking excluded
        (the split's training, valid and support rows); "all", every interaction of the data set; False, none."""
        from recsys_fewshot.data.recdata import UserHistory

        n_users = self.run.data.n_users
        if isinstance(exclude_known, str):
            if exclude_known != "all":
                raise ServeError(f"exclude_known={exclude_known!r}: expected true, false or all")
            rows = self.run.data.interactions
            return UserHistory.from_pairs(rows["user"].to_numpy(np.int64), rows["item"].to_numpy(np.int64), n_users)
        if exclude_known:
            return self.run.prep.exclude_test
        return UserHistory.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), n_users)

    def users(self, users: Union[str, Iterable[Any], None] = "all", unknown: str = "skip") -> np.ndarray:
        """Model indices of raw user ids ("all" or None: every user of the run's data)."""
        if users is None or (isinstance(users, str) and users == "all"):
            return np.arange(len(self.user_ids), dtype=np.int64)
        if isinstance(users, (str, int)):
            users = [users]
        return resolve_ids(users, self.user_ids, "user", unknown)[0]

    # --- users and items after training (posted.py) ----------------------------------------
    def post_history(self, history: pd.DataFrame, unknown: str = "skip", where: str = "history",
                     lines: Optional[np.ndarray] = None):
        """`history` (columns user_id, item_id[, rating]; oldest first per user) as the model reads it: a
        `posted.Posted`. Items outside the catalogue are counted, listed and skipped (or refused)."""
        from recsys_fewshot.posted import post

        return post(self, history, unknown, where, lines)

    def add_items(self, items: Union[pd.DataFrame, str, Path]) -> pd.DataFrame:
        """Add items to the catalogue: a DataFrame or an items .csv in the data set's form (`item_id` and the
        columns `dataset.text_template` names). Each is encoded by the run's encoder and scored from its text
        from now on (recommend, score, similar_items, vectors); ids the run already holds are kept as they
        are. Returns the added items: item_id, text."""
        import torch

        from recsys_fewshot.posted import NewItems, encode_items, read_items_file

        with self._lock:  # not while another thread's request reads the catalogue
            if self._serving:
                raise ServeError("add_items during a request (an iter_recommendations generator not yet "
                                 "finished?): add items between requests")
            if isinstance(items, (str, Path)):
                path = Path(items).expanduser()
                table, lines = read_items_file(path)
                where = str(path)
            else:
                table, lines, where = pd.DataFrame(items), np.arange(1, len(items) + 1), "items"
            fresh = encode_items(self, table, where, lines)
            if fresh is None:
                return pd.DataFrame({"item_id": pd.Series([], dtype=object), "text": pd.Series([], dtype=object)})
            old = self.new_items
            self.new_items = fresh if old is None else NewItems(old.ids.append(fresh.ids), old.texts + fresh.texts,
                                                                torch.cat([old.features, fresh.features]))
            self.item_ids = self.item_ids.append(fresh.ids).rename("item_id")
            self._ranking = None
        return pd.DataFrame({"item_id": fresh.ids.to_numpy(), "text": fresh.texts})

    def users_and_slots(self, users, posted, unknown: str = "skip") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(the run's users asked for, the posted slots asked for, the raw ids in the order asked): `users` None
        with posted histories is every posted user."""
        if users is None or (isinstance(users, str) and users == "all"):
            return np.zeros(0, np.int64), np.arange(len(posted.ids)), list(posted.ids)
        if isinstance(users, (str, int)):
            users = [users]
        asked = list(dict.fromkeys(str(u) for u in users))
        slots = posted.ids.get_indexer(asked)
        own = self.users([u for u, s in zip(asked, slots) if s < 0], unknown) if (slots < 0).any() else []
        return np.asarray(own, np.int64), slots[slots >= 0].astype(np.int64), asked

    # --- recommendations -------------------------------------------------------------------
    def recommend(self, users: Union[str, Iterable[Any], None] = None, k: int = 20,
                  exclude_known: Union[bool, str] = True, unknown: str = "skip",
                  history: Optional[pd.DataFrame] = None, explain: bool = False) -> pd.DataFrame:
        """Top-`k` items per user: a DataFrame `user_id, rank, item_id, score` (raw ids; rank from 1; score:
        the model's own, a predicted rating for task=rating, a logit for task=ctr). `users`: raw ids, or None /
        "all" (every user of the run; with `history`, every posted user). `history`: rows user_id, item_id[,
        rating] of users served through them (posted.py); their posted items are what exclude_known=True
        leaves out. `explain`: + `because` (up to 3 history item ids) and `because_weight` (their terms)."""
        if history is None:
            chosen = self.users("all" if users is None else users, unknown)
            frames = list(self.iter_recommendations(chosen, k, exclude_known, explain=explain))
            return pd.concat(frames, ignore_index=True) if frames else empty_recommendations(explain)
        posted = self.post_history(history, unknown)
        own, slots, asked = self.users_and_slots(users, posted, unknown)
        frames = list(self.iter_recommendations(own, k, exclude_known, explain=explain)) if len(own) else []
        frames += list(self.iter_recommendations(slots, k, exclude_known, explain=explain, posted=posted))
        if not frames:
            return empty_recommendations(explain)
        out = pd.concat(frames, ignore_index=True)
        order = {u: n for n, u in enumerate(asked)}
        return out.iloc[np.lexsort((out["rank"].to_numpy(), out["user_id"].map(order).to_numpy()))].reset_index(
            drop=True)

    def _scorer(self):
        """(ranked items, their columns, the candidate scorer): the item side, once per catalogue (the weights
        never change here); call inside `serving`."""
        import torch

        from recsys_fewshot.evaluation import candidate_scorer, tie_order

        n_items = len(self.item_ids)
        if self._ranking is None or len(self._ranking[0]) != n_items:
            ranked, slot = tie_order(n_items)  # all items, in the evaluation's tie order
            with torch.no_grad():
                self._ranking = ranked, slot, candidate_scorer(self.run.model,
                                                               torch.as_tensor(ranked, device=self.device))
        return self._ranking

    def iter_recommendations(self, users: np.ndarray, k: int = 20, exclude_known: Union[bool, str] = True,
                             chunk_size: Optional[int] = None, explain: bool = False,
                             posted=None) -> Iterator[pd.DataFrame]:
        """`recommend` for model indices `users` (or, with `posted`, its slots), one frame per chunk of users
        (`eval.chunk_size` by default)."""
        import torch

        from recsys_fewshot.evaluation import top_items
        from recsys_fewshot.posted import exclusions
        from recsys_fewshot.serving_explain import because

        if not self.capabilities.full_ranking:
            raise ServeError(f"head {self.head} scores (user, item) pairs only (one language-model call per pair): "
                             "score chosen pairs with score(), or rank with a head that scores every item")
        k = check_k(k)
        n_items = len(self.item_ids)
        if k > n_items:
            log.warning("k=%d is more than the run's %d items: every candidate is returned", k, n_items)
        if posted is None:
            exclude, user_ids, read = self.known_items(exclude_known), self.user_ids.to_numpy(), self._held_history()
        else:
            exclude, user_ids, read = exclusions(posted, exclude_known, self.run.data), posted.ids.to_numpy(), \
                posted.history
        chunk_size = int(chunk_size or self.cfg.eval.chunk_size)
        model, short = self.run.model, 0
        with self.serving(posted):
            item_ids = self.item_ids.to_numpy()  # read inside: another thread may add items before the block
            ranked, slot, score = self._scorer()
            for start in range(0, len(users), chunk_size):
                chunk = np.asarray(users[start: start + chunk_size], np.int64)
                with torch.no_grad():
                    items, values = top_items(model, score, chunk, exclude, ranked, slot, k, self.device)
                rows, cols = np.nonzero(items >= 0)  # excluded items only ever fill a row's end
                short += int((items < 0).any(1).sum())
                frame = pd.DataFrame({"user_id": user_ids[chunk[rows]], "rank": (cols + 1).astype(np.int64),
                                      "item_id": item_ids[items[rows, cols]],
                                      "score": values[rows, cols].astype(np.float32)})
                if explain:
                    frame["because"], frame["because_weight"] = because(self, read, chunk, items)
                yield frame
        if short and k <= n_items:
            log.warning("%d users have fewer than k=%d items left once their known items are excluded: all their "
                        "candidates are returned", short, k)

    # --- pairs -----------------------------------------------------------------------------
    @no_grad
    def score(self, pairs: pd.DataFrame, unknown: str = "skip", history: Optional[pd.DataFrame] = None,
              explain: bool = False, posted=None) -> pd.DataFrame:
        """`pairs` (columns `user_id`, `item_id`: raw ids) with a `score` column: the model's score of each pair
        (as `recommend`'s), and for task=ctr `probability` (its sigmoid). Users in `history` are read through it
        (see `recommend`; or `posted`, the histories `post_history` already read). Rows with an unknown user or
        item are counted and left out (or refused)."""
        from recsys_fewshot.evaluation import predict_pairs
        from recsys_fewshot.serving_explain import because

        if unknown not in UNKNOWN_CHOICES:
            raise ServeError(f"unknown={unknown!r}: expected skip or error")
        for column in ("user_id", "item_id"):
            if column not in pairs.columns:
                raise ServeError(f"pairs: no column {column!r} (columns: {', '.join(map(str, pairs.columns))})")
        if history is not None:
            posted = self.post_history(history, unknown)
        names = pairs["user_id"].astype(str).str.strip().to_numpy()
        slots = posted.ids.get_indexer(names) if posted is not None else np.full(len(pairs), -1)
        users = np.where(slots >= 0, slots, self.user_ids.get_indexer(names))
        items = self.item_ids.get_indexer(pairs["item_id"].astype(str).str.strip())
        keep = (users >= 0) & (items >= 0)
        if not keep.all():
            bad = pairs[~keep]
            shown = [f"({u}, {i})" for u, i in zip(bad["user_id"].astype(str), bad["item_id"].astype(str))]
            message = (f"{len(bad)} of {len(pairs)} pairs name a user or item not in the run's data "
                       f"({listed(shown)})")
            if unknown == "error":
                raise ServeError(f"{message}; unknown=skip leaves them out")
            log.warning("%s: skipped", message)
        out = pairs[keep].reset_index(drop=True)
        users, items, slots = users[keep], items[keep], slots[keep]
        scores = np.zeros(len(out), np.float32)
        reasons: list = [None] * len(out)
        for group, mask in ((None, slots < 0), (posted, slots >= 0)):
            if not mask.any():
                continue
            with self.serving(group):
                scores[mask] = predict_pairs(self.run.model, users[mask], items[mask], self.accelerator,
                                             self.run.eval_batch_size)
                if explain:
                    read = self._held_history() if group is None else group.history
                    found = because(self, read, users[mask], items[mask].reshape(-1, 1))
                    for n, row in enumerate(np.flatnonzero(mask)):
                        reasons[row] = (found[0][n], found[1][n])
        out = out.assign(score=scores)
        if self.task == "ctr":
            out["probability"] = (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32)
        if explain:
            out["because"] = [r[0] for r in reasons]
            out["because_weight"] = [r[1] for r in reasons]
        return out


def empty_recommendations(explain: bool = False) -> pd.DataFrame:
    out = pd.DataFrame({"user_id": pd.Series([], dtype=object), "rank": np.zeros(0, np.int64),
                        "item_id": pd.Series([], dtype=object), "score": np.zeros(0, np.float32)})
    if explain:
        out["because"], out["because_weight"] = pd.Series([], dtype=object), pd.Series([], dtype=object)
    return out


def check_id_map(run_dir: Path, data) -> None:
    """A run folder's `ids.parquet` (runs written before it have none) must list the ids the rebuilt data give:
    the data set changed since training otherwise, and every index would name another user or item."""
    from recsys_fewshot.results import IDS

    file = run_dir / IDS
    if not file.is_file():
        return
    saved = pd.read_parquet(file)
    for kind, ids in (("user", data.user_raw_ids()), ("item", data.item_raw_ids())):
        rows = saved[saved["kind"] == kind].sort_values("index")
        now = ids.astype(str)
        if len(rows) != len(now) or not np.array_equal(rows["id"].to_numpy().astype(str), now):
            raise ServeError(f"{file}: the run was trained on {len(rows)} {kind}s, the data set as read now "
                             f"({data.name}) gives {len(now)} or other ids: the data changed since training "
                             "(dataset.root=... points at the data the run used)")


def load_run(run_dir: Union[str, Path], overrides: Optional[list[str]] = None) -> TrainedRun:
    """The saved run in `run_dir`, rebuilt through the build path with its trained weights (only this project's
    classes are built from its config.yaml). `overrides`: `key=value` settings, as `evaluate` takes them
    (`dataset.root=/elsewhere`, `trainer.cpu=true`)."""
    from recsys_fewshot.evaluate import load_trained

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir={run_dir}: no such folder")
    cfg, run, accelerator = load_trained(run_dir, overrides)
    check_id_map(run_dir, run.data)
    return TrainedRun(run_dir, cfg, run, accelerator)
