"""Joint training of a KG embedding with the recommender (CKE-style): the `kg=` config group.

`KGSide` lives inside the recommender (``model.kg``), so Accelerate/DDP and the optimizer see its
parameters and ``model.safetensors`` holds them. It gives the item tower the item's knowledge vector
and the user tower the user's (a linear map of the entity embedding, plus, with ``aggregate=neighbors``,
the mean of the entity's one-hop tail entities: genres, decade, occupation, ...), and `TaskLoss` adds
``weight * loss()`` (a batch of triples sampled each step, scored by TransE/DistMult/RotatE against
corrupted ones) to the recommendation loss. A cold item or user that no interaction trained still gets
a vector: its entity and its attribute entities are trained by the KG loss (and those attributes by
every warm item or user sharing them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_fewshot.kg.graph import KGEmbedding, KnowledgeGraph, attribute_triples, graph_summary, read_triples_tsv

log = logging.getLogger(__name__)

SOURCES = ("none", "attributes", "triples")
AGGREGATES = ("entity", "neighbors", "both")


def build_graph(source: str, data, path: Optional[str] = None) -> KnowledgeGraph:
    """The KG of `kg.source`: the data set's own attributes, or a user's TSV (`kg.path`)."""
    if source == "attributes":
        return attribute_triples(data)
    if source == "triples":
        if not path:
            raise ValueError("kg=triples needs kg.path=<file.tsv> (head<TAB>relation<TAB>tail lines)")
        return read_triples_tsv(Path(path).expanduser(), data)
    raise ValueError(f"kg.source={source!r}: expected one of {', '.join(SOURCES)}")


def _neighbour_lists(triples: np.ndarray, n_rows: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (flat tail entities, offsets) of the tails of rows `offset .. offset + n_rows` as heads."""
    heads = triples[:, 0] - offset
    keep = (heads >= 0) & (heads < n_rows)
    heads, tails = heads[keep], triples[keep, 2]
    order = np.argsort(heads, kind="stable")
    counts = np.bincount(heads, minlength=n_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return torch.as_tensor(tails[order], dtype=torch.long), torch.as_tensor(offsets, dtype=torch.long)


class KGSide(nn.Module):
    """KG embedding + the knowledge vectors of items and users + the sampled KG loss of one step."""

    def __init__(self, graph: KnowledgeGraph, dim: int, model: str = "transe", weight: float = 0.1,
                 margin: float = 6.0, num_negatives: int = 8, batch_size: int = 1024, aggregate: str = "entity",
                 init_std: float = 0.1):
        super().__init__()
        if aggregate not in AGGREGATES:
            raise ValueError(f"kg.aggregate={aggregate!r}: expected one of {', '.join(AGGREGATES)}")
        if len(graph.triples) == 0:
            raise ValueError("kg: the knowledge graph has no triples (nothing to train on)")
        self.n_items, self.n_users, self.aggregate = graph.n_items, graph.n_users, aggregate
        self.weight, self.num_negatives, self.batch_size = float(weight), int(num_negatives), int(batch_size)
        self.stats = graph.stats()
        self.embedding = KGEmbedding(graph.n_entities, len(graph.relations), dim, model, margin, init_std)
        self.item_map = nn.Linear(dim, dim, bias=False)  # decouples the KG geometry from the CF dot product
        self.user_map = nn.Linear(dim, dim, bias=False)
        self.register_buffer("triples", torch.as_tensor(graph.triples, dtype=torch.long), persistent=False)
        for side, n, offset in (("item", graph.n_items, 0), ("user", graph.n_users, graph.n_items)):
            tails, offsets = _neighbour_lists(graph.triples, n, offset)
            self.register_buffer(f"{side}_tails", tails, persistent=False)
            self.register_buffer(f"{side}_offsets", offsets, persistent=False)
        self._loss_sum = torch.zeros(())  # this epoch's KG loss (unweighted), for the epoch row
        self._loss_steps = 0

    def _vectors(self, entities: torch.Tensor, side: str) -> torch.Tensor:
        out = 0
        table = self.embedding.entity
        if self.aggregate in ("entity", "both"):
            out = table(entities)
        if self.aggregate in ("neighbors", "both"):
            rows = entities - (0 if side == "item" else self.n_items)
            tails, offsets = getattr(self, f"{side}_tails"), getattr(self, f"{side}_offsets")
            # every item's (user's) mean at once, then the rows asked for: a few thousand tails, cheaper than
            # gathering per row; an entity without tails gets zeros
            out = out + F.embedding_bag(tails, table.weight, offsets, mode="mean")[rows]
        return out

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_map(self._vectors(items, "item"))

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_map(self._vectors(users + self.n_items, "user"))

    def loss(self) -> torch.Tensor:
        """KG loss of `batch_size` triples drawn uniformly (with replacement), each against `num_negatives`
        corrupted heads or tails; also accumulated (detached) for `epoch_loss`."""
        pick = torch.randint(0, len(self.triples), (self.batch_size,), device=self.triples.device)
        value = self.embedding.loss(self.triples[pick], self.num_negatives)
        self._loss_sum = self._loss_sum.to(value.device) + value.detach()
        self._loss_steps += 1
        return value

    def attach(self, model: nn.Module) -> None:
        """Registers this module as `model.kg` and hooks its vectors into the model's item and user towers."""
        model.kg = self
        model.items.kg_vectors = self.item_vectors
        model.users.kg_vectors = self.user_vectors

    def epoch_loss(self) -> torch.Tensor:
        """Mean KG loss over the steps since the last call (a 0-d tensor, for a cross-process mean); resets."""
        value = self._loss_sum / max(self._loss_steps, 1)
        self._loss_sum, self._loss_steps = torch.zeros((), device=value.device), 0
        return value


def build_side(data, source: str, path: Optional[str], dim: int, model: str, weight: float, margin: float,
               num_negatives: int, batch_size: int, aggregate: str) -> KGSide:
    """The KG of `source` for `data` and the module joint training adds to the recommender."""
    graph = build_graph(source, data, path)
    log.info(graph_summary(graph) + (f"; unknown ids skipped: {graph.unknown}" if graph.unknown else ""))
    return KGSide(graph, dim, model, weight, margin, num_negatives, batch_size, aggregate)


def run_summary(side: KGSide, history: list[dict]) -> dict:
    """metrics.json's ``kg``: graph statistics, the knobs, and the KG loss per epoch (first, last, all)."""
    losses = [row["train/kg_loss"] for row in history if "train/kg_loss" in row]
    return {**side.stats, "model": side.embedding.model, "weight": side.weight, "aggregate": side.aggregate,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "loss_per_epoch": [round(x, 6) for x in losses]}
