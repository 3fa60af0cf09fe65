"""A trained run as a recommender: `load_run(run_dir)` and what it answers, in the data set's raw ids.

The run is rebuilt from its run folder exactly as `evaluate` rebuilds it (`evaluate.load_trained`: this project's
classes only, the saved weights loaded), then served as its test ranking saw it: the user tower reads the
history the test part read, and the items that ranking excluded (the split's training, valid and support
rows: what the model was shown) are the user's *known* items. Top-k lists come from the ranking code of the
evaluation (`evaluation.top_items`: the same exclusions, the same tie order), so a user's recommendations
are the list their test metrics were computed on.

`similar_items` and `item_vectors` read the head's trained item vectors (its item tower: text projection
plus ID embedding, for `head=mf`, `mlp` and `seq`), or the frozen text vectors of the encoder
(`vectors="text"`, the only ones a head without an item tower has, e.g. `head=ease`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import pandas as pd

log = logging.getLogger("recsys_fewshot.recommend")

UNKNOWN_CHOICES = ("skip", "error")
VECTOR_KINDS = ("model", "text")
SHOWN = 5  # unknown ids listed in a message


class ServeError(ValueError):
    """A request a loaded run cannot answer: unknown ids, a malformed ids file, a run folder it cannot serve."""


def _listed(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")


def resolve_ids(raw: Iterable[Any], index: pd.Index, kind: str, unknown: str = "skip") -> tuple[np.ndarray, list[str]]:
    """(model indices of the known raw ids, in input order without repeats; the unknown raw ids). Unknown ids
    are counted, the first few listed, then skipped with a warning (`unknown="skip"`) or refused ("error")."""
    if unknown not in UNKNOWN_CHOICES:
        raise ServeError(f"unknown={unknown!r}: expected skip or error")
    raw = list(dict.fromkeys(str(x) for x in raw))
    codes = index.get_indexer(raw)
    missing = [r for r, c in zip(raw, codes) if c < 0]
    if missing:
        message = f"{len(missing)} of {len(raw)} {kind} ids are not in the run's data ({_listed(missing)})"
        if unknown == "error":
            raise ServeError(f"{message}; unknown=skip leaves them out")
        log.warning("%s: skipped", message)
    return codes[codes >= 0].astype(np.int64), missing


def _no_grad(fn):
    def wrapped(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


class TrainedRun:
    """A saved run, loaded (`load_run`): recommendations, pair scores, similar items and vectors by raw id."""

    def __init__(self, run_dir: Path, cfg, run, accelerator):
        from recsys_fewshot.models.capabilities import capabilities_of

        self.run_dir, self.cfg, self.run, self.accelerator = Path(run_dir), cfg, run, accelerator
        data = run.data
        self.user_ids = pd.Index(data.user_raw_ids().astype(str), name="user_id")
        self.item_ids = pd.Index(data.item_raw_ids().astype(str), name="item_id")
        self.head = cfg.head._target_
        self.capabilities = capabilities_of(self.head)
        self._ranking = None  # (ranked items, their columns, the candidate scorer), built by the first ranking
        run.model.eval()

    # --- what the run serves ---------------------------------------------------------------
    @property
    def task(self) -> str:
        """rating (scores are predicted ratings), ranking, or ctr (scores are logits)."""
        return self.run.task

    @property
    def device(self):
        return self.accelerator.device

    def _history(self):
        """The user histories of the test ranking, shown to the model inside a `with` block."""
        from recsys_fewshot.inductive import using_history

        prep = self.run.prep
        return using_history(self.run.model, prep.eval_histories.test, prep.history)

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

    # --- recommendations -------------------------------------------------------------------
    def recommend(self, users: Union[str, Iterable[Any], None] = "all", k: int = 20,
                  exclude_known: Union[bool, str] = True, unknown: str = "skip") -> pd.DataFrame:
        """Top-`k` items per user: a DataFrame `user_id, rank, item_id, score` (raw ids; rank from 1; score:
        the model's own, a predicted rating for task=rating, a logit for task=ctr)."""
        frames = list(self.iter_recommendations(self.users(users, unknown), k, exclude_known))
        return pd.concat(frames, ignore_index=True) if frames else empty_recommendations()

    def iter_recommendations(self, users: np.ndarray, k: int = 20, exclude_known: Union[bool, str] = True,
                             chunk_size: Optional[int] = None) -> Iterator[pd.DataFrame]:
        """`recommend` for model indices `users`, one frame per chunk of users (`eval.chunk_size` by default)."""
        import torch

        from recsys_fewshot.evaluation import candidate_scorer, tie_order, top_items

        if not self.capabilities.full_ranking:
            raise ServeError(f"head {self.head} scores (user, item) pairs only (one language-model call per pair): "
                             "score chosen pairs with score(), or rank with a head that scores every item")
        k = check_k(k)
        n_items = len(self.item_ids)
        if k > n_items:
            log.warning("k=%d is more than the run's %d items: every candidate is returned", k, n_items)
        exclude = self.known_items(exclude_known)
        chunk_size = int(chunk_size or self.cfg.eval.chunk_size)
        model, short = self.run.model, 0
        user_ids, item_ids = self.user_ids.to_numpy(), self.item_ids.to_numpy()
        with self._history():
            if self._ranking is None:  # the item side, once per loaded run (the weights never change here)
                ranked, slot = tie_order(n_items)  # all items, in the evaluation's tie order
                with torch.no_grad():
                    self._ranking = ranked, slot, candidate_scorer(model, torch.as_tensor(ranked, device=self.device))
            ranked, slot, score = self._ranking
            for start in range(0, len(users), chunk_size):
                chunk = np.asarray(users[start: start + chunk_size], np.int64)
                with torch.no_grad():
                    items, values = top_items(model, score, chunk, exclude, ranked, slot, k, self.device)
                rows, cols = np.nonzero(items >= 0)  # excluded items only ever fill a row's end
                short += int((items < 0).any(1).sum())
                yield pd.DataFrame({"user_id": user_ids[chunk[rows]], "rank": (cols + 1).astype(np.int64),
                                    "item_id": item_ids[items[rows, cols]],
                                    "score": values[rows, cols].astype(np.float32)})
        if short and k <= n_items:
            log.warning("%d users have fewer than k=%d items left once their known items are excluded: all their "
                        "candidates are returned", short, k)

    # --- pairs -----------------------------------------------------------------------------
    @_no_grad
    def score(self, pairs: pd.DataFrame, unknown: str = "skip") -> pd.DataFrame:
        """`pairs` (columns `user_id`, `item_id`: raw ids) with a `score` column: the model's score of each pair
        (as `recommend`'s). Rows with an unknown user or item are counted and left out (or refused)."""
        from recsys_fewshot.evaluation import predict_pairs

        if unknown not in UNKNOWN_CHOICES:
            raise ServeError(f"unknown={unknown!r}: expected skip or error")
        for column in ("user_id", "item_id"):
            if column not in pairs.columns:
                raise ServeError(f"pairs: no column {column!r} (columns: {', '.join(map(str, pairs.columns))})")
        users = self.user_ids.get_indexer(pairs["user_id"].astype(str))
        items = self.item_ids.get_indexer(pairs["item_id"].astype(str))
        keep = (users >= 0) & (items >= 0)
        if not keep.all():
            bad = pairs[~keep]
            names = [f"({u}, {i})" for u, i in zip(bad["user_id"].astype(str), bad["item_id"].astype(str))]
            message = (f"{len(bad)} of {len(pairs)} pairs name a user or item not in the run's data "
                       f"({_listed(names)})")
            if unknown == "error":
                raise ServeError(f"{message}; unknown=skip leaves them out")
            log.warning("%s: skipped", message)
        out = pairs[keep].reset_index(drop=True)
        with self._history():
            scores = predict_pairs(self.run.model, users[keep], items[keep], self.accelerator,
                                   self.run.eval_batch_size)
        return out.assign(score=scores)

    # --- vectors ---------------------------------------------------------------------------
    def vector_kinds(self) -> list[str]:
        """The item vectors this run has: "model" (the head's item tower), "text" (the encoder's)."""
        kinds = ["model"] if _towers(self.run.model) is not None else []
        return kinds + (["text"] if self.run.features is not None else [])

    def _kind(self, vectors: Optional[str]) -> str:
        have = self.vector_kinds()
        if vectors is None:
            if not have:
                raise ServeError(f"head {self.head} has no item vectors and the run has no encoder (encoder=none)")
            return have[0]
        if vectors not in VECTOR_KINDS:
            raise ServeError(f"vectors={vectors!r}: expected model or text")
        if vectors not in have:
            what = (f"head {self.head} has no item tower" if vectors == "model"
                    else "the run has no text encoder (encoder=none)")
            raise ServeError(f"vectors={vectors}: {what}; this run has: {', '.join(have) or 'none'}")
        return vectors

    @_no_grad
    def item_matrix(self, vectors: Optional[str] = None):
        """[n_items, dim] float32 tensor of `vectors` ("model", "text"; None: model where the head has an
        item tower, else text), rows in model index order (`item_ids`)."""
        import torch

        kind = self._kind(vectors)
        if kind == "text":
            return torch.as_tensor(self.run.features).float().cpu()
        items = torch.arange(len(self.item_ids), device=self.device)
        return _towers(self.run.model)[0](items).float().cpu()

    @_no_grad
    def user_matrix(self):
        """[n_users, dim] user vectors of the head's user tower (the test ranking's histories), or None."""
        import torch

        towers = _towers(self.run.model)
        if towers is None:
            return None
        users = torch.arange(len(self.user_ids), device=self.device)
        with self._history():
            return torch.cat([towers[1](users[s: s + 4096]).float().cpu() for s in range(0, len(users), 4096)])

    def item_vectors(self, vectors: Optional[str] = None) -> pd.DataFrame:
        """Item vectors as a DataFrame indexed by raw `item_id`, one column per dimension."""
        return pd.DataFrame(self.item_matrix(vectors).numpy(), index=self.item_ids)

    @_no_grad
    def similar_items(self, items: Iterable[Any], k: int = 10, vectors: Optional[str] = None,
                      unknown: str = "skip") -> pd.DataFrame:
        """The `k` items most similar to each of `items` (raw ids) by cosine of `vectors` (see `item_matrix`):
        a DataFrame `item_id, rank, similar_id, score`; an item is never its own neighbour."""
        import torch

        from recsys_fewshot.data.recdata import UserHistory
        from recsys_fewshot.evaluation import tie_order, top_items

        if isinstance(items, (str, int)):
            items = [items]
        query, _ = resolve_ids(items, self.item_ids, "item", unknown)
        k = check_k(k)
        n_items = len(self.item_ids)
        if k > n_items - 1:
            log.warning("k=%d is more than the run's other %d items: every item is returned", k, n_items - 1)
        unit = torch.nn.functional.normalize(self.item_matrix(vectors), dim=1)
        ranked, slot = tie_order(n_items)
        columns = unit[torch.as_tensor(ranked)].T.contiguous()
        itself = UserHistory.from_pairs(np.arange(len(query)), query, len(query))  # row r: query[r] left out
        found, values = top_items(self, lambda rows: unit[torch.as_tensor(query)[rows]] @ columns,
                                  np.arange(len(query)), itself, ranked, slot, k, "cpu")
        rows, cols = np.nonzero(found >= 0)
        ids = self.item_ids.to_numpy()
        return pd.DataFrame({"item_id": ids[query[rows]], "rank": (cols + 1).astype(np.int64),
                             "similar_id": ids[found[rows, cols]], "score": values[rows, cols].astype(np.float32)})

    # --- export ----------------------------------------------------------------------------
    def export(self, folder: Union[str, Path]) -> dict:
        """Write the run's vectors with their raw ids into `folder` (see docs/usage/recommend.md): `items.parquet`
        and `users.parquet` (ids, then one list column per vector), `vectors.safetensors` (the same matrices,
        rows in the parquet files' order) and `export.json` (what each matrix is). Returns export.json's content."""
        import torch

        from recsys_fewshot import tracking

        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        items = {"text": self.item_matrix("text")} if "text" in self.vector_kinds() else {}
        users = {}
        towers = _towers(self.run.model)
        if towers is not None:
            items["vector"] = self.item_matrix("model")
            users["vector"] = self.user_matrix()
        biases = _biases(self.run.model, self.device, self._history)
        if biases is not None:
            items["bias"], users["bias"], global_bias = biases
        matrices = {f"item_{name}": m for name, m in items.items()}
        matrices.update({f"user_{name}": m for name, m in users.items()})
        if biases is not None:
            matrices["global_bias"] = global_bias.reshape(1)
        tracking.write_parquet(folder / "items.parquet", _table("item_id", self.item_ids, items))
        tracking.write_parquet(folder / "users.parquet", _table("user_id", self.user_ids, users))
        tracking.write_safetensors(folder / "vectors.safetensors",
                                   {name: torch.as_tensor(m).contiguous() for name, m in matrices.items()})
        record = {"run_dir": str(self.run_dir.resolve()), "head": self.head, "task": self.task,
                  "items": len(self.item_ids), "users": len(self.user_ids),
                  "matrices": {name: list(m.shape) for name, m in matrices.items()},
                  "text": "frozen encoder vectors of the item texts" if "text" in items else None,
                  "vector": towers[2] if towers is not None else None}
        tracking.write_json(folder / "export.json", record)
        return record


def _towers(model):
    """(items -> vectors, users -> vectors, what their score is) of a head with an item and a user tower."""
    from recsys_fewshot.models.heads import MF, Recommender
    from recsys_fewshot.models.sequential import SeqRec

    if isinstance(model, SeqRec):
        return (model._item_vectors, model.user_vectors,
                f"unit vectors; score = user_vector . item_vector / {model.temperature}")
    if isinstance(model, Recommender):
        formula = ("score = user_vector . item_vector + user_bias + item_bias + global_bias" if isinstance(model, MF)
                   else f"the towers' vectors; the score of {type(model).__name__} is not their dot product")
        return model.items, model.users, formula
    return None


def _biases(model, device, history):
    """(item biases, user biases, global bias) of an MF-family head with biases, else None."""
    import torch

    from recsys_fewshot.models.heads import Recommender

    if not isinstance(model, Recommender) or not model.biases:
        return None
    with torch.no_grad(), history():
        items = model._item_bias(torch.arange(model.n_items, device=device)).float().cpu()
        users = model._user_bias(torch.arange(model.n_users, device=device)).float().cpu()
    return items, users, model.global_bias.detach().float().cpu()


def _table(id_column: str, ids: pd.Index, columns: dict) -> pd.DataFrame:
    out = pd.DataFrame({id_column: ids.to_numpy()})
    for name, matrix in columns.items():
        values = np.asarray(matrix, np.float32)
        out[name] = list(values) if values.ndim == 2 else values
    return out


def check_k(k: Any) -> int:
    try:
        value = int(k)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or str(value) != str(k).strip():
        raise ServeError(f"k={k}: expected a whole number >= 1")
    return value


def empty_recommendations() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series([], dtype=object), "rank": np.zeros(0, np.int64),
                         "item_id": pd.Series([], dtype=object), "score": np.zeros(0, np.float32)})


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
