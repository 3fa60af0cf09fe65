"""The item and user vectors of a loaded run (`serving.TrainedRun`): vectors by raw id, similar items by cosine,
and the export of the vectors with their raw ids (`recommend export=DIR`).

`similar_items` and `item_vectors` read the head's trained item vectors (its item tower: text projection plus ID
embedding, for `head=mf`, `mlp` and `seq`), or the frozen text vectors of the encoder (`vectors="text"`, the only
ones a head without an item tower has, e.g. `head=ease`). Items added after training (`add_items`) come after the
catalogue's rows: their model vector is the text projection alone (no ID embedding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import pandas as pd

from recsys_fewshot.serving_common import VECTOR_KINDS, ServeError, check_k, log, no_grad, resolve_ids


class VectorMethods:
    """The vector methods of `TrainedRun` (which provides run, item_ids, user_ids, new_items, device, head,
    `_items` and `serving`)."""

    def vector_kinds(self) -> list[str]:
        """The item vectors this run has: "model" (the head's item tower), "text" (the encoder's)."""
        kinds = ["model"] if towers_of(self.run.model) is not None else []
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

    @no_grad
    def item_matrix(self, vectors: Optional[str] = None):
        """[items, dim] float32 tensor of `vectors` ("model", "text"; None: model where the head has an
        item tower, else text), rows in `item_ids` order (the added items after the catalogue)."""
        import torch

        kind = self._kind(vectors)
        if kind == "text":
            text = torch.as_tensor(self.run.features).float().cpu()
            return text if self.new_items is None else torch.cat([text, self.new_items.features])
        items = torch.arange(len(self.item_ids), device=self.device)
        with self._items():
            return towers_of(self.run.model)[0](items).float().cpu()

    @no_grad
    def user_matrix(self):
        """[n_users, dim] user vectors of the head's user tower (the test ranking's histories), or None."""
        import torch

        towers = towers_of(self.run.model)
        if towers is None:
            return None
        users = torch.arange(len(self.user_ids), device=self.device)
        with self.serving():
            return torch.cat([towers[1](users[s: s + 4096]).float().cpu() for s in range(0, len(users), 4096)])

    def item_vectors(self, vectors: Optional[str] = None) -> pd.DataFrame:
        """Item vectors as a DataFrame indexed by raw `item_id`, one column per dimension."""
        return pd.DataFrame(self.item_matrix(vectors).numpy(), index=self.item_ids)

    @no_grad
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

    def export(self, folder: Union[str, Path]) -> dict:
        """Write the run's vectors with their raw ids into `folder` (see docs/usage/recommend.md): `items.parquet`
        and `users.parquet` (ids, then one list column per vector), `vectors.safetensors` (the same matrices,
        rows in the parquet files' order) and `export.json` (what each matrix is). Items added after training are
        rows after the catalogue's. Returns export.json's content."""
        return export_run(self, folder)


def export_run(trained, folder: Union[str, Path]) -> dict:
    """`TrainedRun.export`."""
    import torch

    from recsys_fewshot import tracking

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    items = {"text": trained.item_matrix("text")} if "text" in trained.vector_kinds() else {}
    users = {}
    towers = towers_of(trained.run.model)
    if towers is not None:
        items["vector"] = trained.item_matrix("model")
        users["vector"] = trained.user_matrix()
    biases = _biases(trained.run.model, trained.device, trained.serving)
    if biases is not None:
        items["bias"], users["bias"], global_bias = biases
    matrices = {f"item_{name}": m for name, m in items.items()}
    matrices.update({f"user_{name}": m for name, m in users.items()})
    if biases is not None:
        matrices["global_bias"] = global_bias.reshape(1)
    tracking.write_parquet(folder / "items.parquet", _table("item_id", trained.item_ids, items))
    tracking.write_parquet(folder / "users.parquet", _table("user_id", trained.user_ids, users))
    tracking.write_safetensors(folder / "vectors.safetensors",
                               {name: torch.as_tensor(m).contiguous() for name, m in matrices.items()})
    record = {"run_dir": str(trained.run_dir.resolve()), "head": trained.head, "task": trained.task,
              "items": len(trained.item_ids), "users": len(trained.user_ids),
              "matrices": {name: list(m.shape) for name, m in matrices.items()},
              "text": "frozen encoder vectors of the item texts" if "text" in items else None,
              "vector": towers[2] if towers is not None else None}
    tracking.write_json(folder / "export.json", record)
    return record


def towers_of(model):
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


def _biases(model, device, serving):
    """(item biases, user biases, global bias) of an MF-family head with biases, else None."""
    import torch

    from recsys_fewshot.models.heads import Recommender

    if not isinstance(model, Recommender) or not model.biases:
        return None
    with torch.no_grad(), serving():
        items = model._item_bias(torch.arange(model.n_items, device=device)).float().cpu()
        users = model._user_bias(torch.arange(model.n_users, device=device)).float().cpu()
    return items, users, model.global_bias.detach().float().cpu()


def _table(id_column: str, ids: pd.Index, columns: dict) -> pd.DataFrame:
    out = pd.DataFrame({id_column: ids.to_numpy()})
    for name, matrix in columns.items():
        values = np.asarray(matrix, np.float32)
        out[name] = list(values) if values.ndim == 2 else values
    return out
