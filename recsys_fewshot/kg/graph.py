"""Knowledge graphs for side information: building triples, and KG embedding models.

Entities are numbered items first (entity i = item index i), then users (n_items + user index), then
free entities (attribute values such as ``genre:Comedy`` or names from a user's TSV), so the item
tower can look an item's entity embedding up by its item index.

Two ways in:
* `attribute_triples(data)`: from the data set's own attributes (MovieLens: item -> genre, item ->
  release decade, item -> tag (ML-25M), user -> occupation, user -> age bucket, user -> gender;
  Amazon/UniSRec: item -> category path, item -> brand, parsed from the item text; Last.fm: item -> tag).
* `read_triples_tsv(path, data)`: ``head<TAB>relation<TAB>tail`` lines whose ends are ``item:<raw id>``,
  ``user:<raw id>`` or free entity names; ids unknown to the data set are counted and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recsys_fewshot.data.recdata import DataError, RecData

log = logging.getLogger(__name__)

AGE_BUCKETS = ((0, 18, "under 18"), (18, 25, "18-24"), (25, 35, "25-34"), (35, 45, "35-44"), (45, 50, "45-49"),
               (50, 56, "50-55"), (56, 200, "56+"))  # the MovieLens-1M age groups


@dataclass
class KnowledgeGraph:
    n_items: int
    n_users: int
    entities: list[str]  # names of all entities, items and users first
    relations: list[str]
    triples: np.ndarray  # int64 [T, 3]: (head entity, relation, tail entity)
    unknown: dict[str, int] = field(default_factory=dict)  # TSV ids not in the data set, by kind

    @property
    def n_entities(self) -> int:
        return len(self.entities)

    def stats(self) -> dict:
        per_relation = np.bincount(self.triples[:, 1], minlength=len(self.relations)) if len(self.triples) else []
        return {"entities": self.n_entities, "relations": len(self.relations), "triples": int(len(self.triples)),
                "per_relation": {r: int(c) for r, c in zip(self.relations, per_relation)},
                "unknown": dict(self.unknown)}

    def named(self) -> set[tuple[str, str, str]]:
        """The triples as (head name, relation, tail name), for tests and inspection."""
        return {(self.entities[h], self.relations[r], self.entities[t]) for h, r, t in self.triples}


class _Builder:
    def __init__(self, data: RecData):
        self.n_items, self.n_users = data.n_items, data.n_users
        self.entities = [f"item:{x}" for x in data.item_raw_ids()] + [f"user:{x}" for x in data.user_raw_ids()]
        self.free: dict[str, int] = {}
        self.relations: dict[str, int] = {}
        self.rows: list[tuple[int, int, int]] = []
        self.unknown: dict[str, int] = {}

    def entity(self, name: str) -> int:
        if name not in self.free:
            self.free[name] = len(self.entities)
            self.entities.append(name)
        return self.free[name]

    def add(self, head: int, relation: str, tail: int) -> None:
        rel = self.relations.setdefault(relation, len(self.relations))
        self.rows.append((head, rel, tail))

    def graph(self) -> KnowledgeGraph:
        triples = np.unique(np.asarray(self.rows, dtype=np.int64).reshape(-1, 3), axis=0)
        return KnowledgeGraph(self.n_items, self.n_users, self.entities, list(self.relations), triples,
                              self.unknown)


def _values(cell, list_sep: Optional[str]) -> list[str]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    text = str(cell).strip()
    if not text:
        return []
    parts = text.split(list_sep) if list_sep else [text]
    return [p.strip() for p in parts if p.strip() and p.strip().lower() != "unknown"]


def decade(year) -> str:
    text = str(year).strip()
    return f"{text[:3]}0s" if len(text) == 4 and text.isdigit() else ""


def age_bucket(age) -> str:
    try:
        value = int(age)
    except (TypeError, ValueError):
        return ""
    return next(name for lo, hi, name in AGE_BUCKETS if lo <= value < hi)


AMAZON_ROOTS = ("Industrial & Scientific",)  # catalogue roots a UniSRec category path starts with


def amazon_fields(text: str, roots: tuple[str, ...] = AMAZON_ROOTS) -> tuple[str, str]:
    """(category path, brand) from UniSRec's item text "title. category path. brand. " (best effort).

    The fields are joined by ". " and both the title and the brand may hold ". " themselves ("Mr. Heater",
    "Norton Abrasives - St. Gobain"), so the category path is found as the last part after the title that
    starts with a catalogue root (`roots`), or, failing that, an empty part (UniSRec writes ". . " for an
    item without categories); everything after it is the brand. Without either, the last two parts are
    taken as (category path, brand)."""
    parts = [p.strip() for p in str(text).strip().rstrip(".").split(". ")]
    if len(parts) < 3:
        return "", ""
    marks = [k for k in range(1, len(parts))
             if any(parts[k] == r or parts[k].startswith(r + " ") for r in roots)]
    marks = marks or [k for k in range(1, len(parts) - 1) if not parts[k]]
    if marks:
        return parts[marks[-1]], ". ".join(parts[marks[-1] + 1:])
    return parts[-2], parts[-1]


ML100K_ITEM_COLUMNS = {"item", "item_id", "title", "year", "genres", "release_date"}  # data/sources.read_ml100k's
FREE_TEXT_NAMES = ("title", "text", "description")  # never attributes, whatever they hold


def derived_attributes(data: RecData) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], dict[str, str]]:
    """Items and users tables with the attribute columns a KG is built from, and the column -> relation
    maps for this kind of data set (`table_attributes` for data without a known layout, e.g. a CSV folder)."""
    items, users = data.items.copy(), data.users.copy()
    if set(items.columns) == ML100K_ITEM_COLUMNS:  # MovieLens
        items["decade"] = items["year"].map(decade)
        users["age_bucket"] = users["age"].map(age_bucket) if "age" in users else ""
        item_rel = {"genres": "has_genre", "decade": "released_in"}
        if "tags" in items:  # the CSV releases (ML-25M): each movie's most applied tags
            item_rel["tags"] = "has_tag"
        user_rel = {c: r for c, r in (("occupation", "has_occupation"), ("age_bucket", "in_age_group"),
                                      ("gender", "has_gender")) if c in users}
        return items, users, item_rel, user_rel
    if "tags" in items and "name" in items:  # Last.fm: artists and the tags users gave them
        return items, users, {"tags": "has_tag"}, {}
    if "text" in items:  # UniSRec / Amazon
        fields = items["text"].map(amazon_fields)
        items["category"] = [f[0] for f in fields]
        items["brand"] = [f[1] for f in fields]
        return items, users, {"category": "in_category", "brand": "has_brand"}, {}
    items, item_rel = table_attributes(items, "year", "decade", decade, "released_in")
    users, user_rel = table_attributes(users, "age", "age_bucket", age_bucket, "in_age_group")
    return items, users, item_rel, user_rel


def table_attributes(table: pd.DataFrame, number: str, derived: str, bucket, relation: str
                     ) -> tuple[pd.DataFrame, dict[str, str]]:
    """The attributes of a table without a known layout (a CSV folder's items or users): every column as
    ``has_<column>`` (cells split on "|" by `attribute_triples`), except

    * the ids, ``title`` / ``text`` / ``description`` and prose (`columns.is_free_text`: a description or a
      plot links no two items), and a few-shot sample's ``source_user`` (linking samples through it would be
      a learnt user id, which the few-shot rules exclude);
    * the column named `number` (``year`` for items, ``age`` for users; any case): bucketed into `derived`
      (``decade`` of a year, as for MovieLens: ``decade:1990s``; ``age_bucket``) under `relation`. For items,
      a column whose name holds ``date`` gives the year where there is no year column or its cell is empty,
      and is not an attribute itself."""
    from recsys_fewshot.data.columns import ID_COLUMNS, find_column, is_free_text, year_of

    skip = {*ID_COLUMNS, "source_user", *FREE_TEXT_NAMES}
    relations = {c: f"has_{c}" for c in table.columns
                 if c not in skip and str(c).lower() not in FREE_TEXT_NAMES and not is_free_text(table[c])}
    source = find_column(table, number)
    dates = [c for c in table.columns if "date" in str(c).lower() and c in relations] if number == "year" else []
    if source is None and not dates:
        return table, relations
    values = table[source].astype(str) if source is not None else pd.Series("", index=table.index)
    for column in dates:  # release_date "01-Jan-1995": its year where the year column says nothing
        values = values.where(values.str.strip() != "", table[column].map(year_of))
    for column in [source, *dates, derived]:  # a column of the file named like the derived one gives way
        relations.pop(column, None)
    table = table.assign(**{derived: values.map(bucket)})
    return table, {**relations, derived: relation}


def attribute_triples(data: RecData, item_relations: Optional[dict[str, str]] = None,
                      user_relations: Optional[dict[str, str]] = None, list_sep: str = "|") -> KnowledgeGraph:
    """Triples from the data set's own attribute columns (see `derived_attributes` for the defaults)."""
    items, users, item_rel, user_rel = derived_attributes(data)
    item_rel = item_relations if item_relations is not None else item_rel
    user_rel = user_relations if user_relations is not None else user_rel
    b = _Builder(data)
    for table, relations, offset, what in ((items, item_rel, 0, "items"), (users, user_rel, b.n_items, "users")):
        for column, relation in relations.items():
            if column not in table:
                raise DataError(f"kg: the {what} table has no column {column!r} (has: {', '.join(table.columns)})")
            for index, cell in enumerate(table[column].tolist()):
                for value in _values(cell, list_sep):
                    b.add(offset + index, relation, b.entity(f"{column}:{value}"))
    return b.graph()


def read_triples_tsv(path: Path, data: RecData) -> KnowledgeGraph:
    """A user's own triples. Ends are ``item:<raw id>``, ``user:<raw id>`` or free names. Ids the data set
    does not know are counted (`KnowledgeGraph.unknown`) and logged; a line without exactly three
    tab-separated non-empty fields is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"kg.path: no such file {path}")
    b = _Builder(data)
    item_index = {str(x): i for i, x in enumerate(data.item_raw_ids())}
    user_index = {str(x): i for i, x in enumerate(data.user_raw_ids())}

    def resolve(token: str) -> Optional[int]:
        kind, _, raw = token.partition(":")
        kind = kind.lower() if kind.lower() in ("item", "user") else kind  # Item:1, USER:3 are references too
        if kind == "item" and raw:
            found = item_index.get(raw)
        elif kind == "user" and raw:
            found = user_index.get(raw)
            found = None if found is None else b.n_items + found
        else:
            return b.entity(token)
        if found is None:
            b.unknown[kind] = b.unknown.get(kind, 0) + 1
        return found

    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark would glue onto the first entity
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 3 or not all(x.strip() for x in fields):
                raise DataError(f"{path}: line {number}: expected head<TAB>relation<TAB>tail, got {line!r}")
            head, relation, tail = (x.strip() for x in fields)
            h, t = resolve(head), resolve(tail)
            if h is not None and t is not None:
                b.add(h, relation, t)
    graph = b.graph()
    if graph.unknown:
        log.warning("%s: %s ids unknown to the data set were skipped", path,
                    ", ".join(f"{n} {k}" for k, n in sorted(graph.unknown.items())))
    return graph


class KGEmbedding(nn.Module):
    """Entity and relation embeddings scored by TransE, DistMult or RotatE, trained with negative sampling
    (corrupted heads or tails) and a logistic loss."""

    def __init__(self, n_entities: int, n_relations: int, dim: int, model: str = "transe", margin: float = 6.0,
                 init_std: float = 0.1):
        super().__init__()
        if model not in ("transe", "distmult", "rotate"):
            raise ValueError(f"kg.model={model!r}: expected transe, distmult or rotate")
        if model == "rotate" and dim % 2:
            raise ValueError(f"kg.model=rotate needs an even dimension, got {dim}")
        self.model, self.margin = model, margin
        self.entity = nn.Embedding(n_entities, dim)
        rel_dim = dim // 2 if model == "rotate" else dim
        self.relation = nn.Embedding(n_relations, rel_dim)
        nn.init.normal_(self.entity.weight, std=init_std)
        nn.init.normal_(self.relation.weight, std=init_std)

    def score(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Plausibility of triples (higher is better); broadcasts over leading dimensions."""
        eh, er, et = self.entity(h), self.relation(r), self.entity(t)
        if self.model == "transe":
            return self.margin - (eh + er - et).norm(p=2, dim=-1)
        if self.model == "distmult":
            return (eh * er * et).sum(-1)
        re_h, im_h = eh.chunk(2, -1)
        re_t, im_t = et.chunk(2, -1)
        phase = er
        cos, sin = torch.cos(phase), torch.sin(phase)
        re = re_h * cos - im_h * sin - re_t
        im = re_h * sin + im_h * cos - im_t
        return self.margin - torch.sqrt(re ** 2 + im ** 2 + 1e-9).sum(-1)

    def loss(self, triples: torch.Tensor, num_negatives: int = 8) -> torch.Tensor:
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        n = self.entity.num_embeddings
        corrupt = torch.randint(0, n, (len(triples), num_negatives), device=triples.device)
        head_side = torch.rand(len(triples), num_negatives, device=triples.device) < 0.5
        neg_h = torch.where(head_side, corrupt, h.unsqueeze(-1))
        neg_t = torch.where(head_side, t.unsqueeze(-1), corrupt)
        pos = self.score(h, r, t)
        neg = self.score(neg_h, r.unsqueeze(-1).expand_as(neg_h), neg_t)
        return F.softplus(-pos).mean() + F.softplus(neg).mean()


def triples_tensor(graph: KnowledgeGraph) -> torch.Tensor:
    return torch.as_tensor(graph.triples, dtype=torch.long)


def graph_summary(graph: KnowledgeGraph) -> str:
    stats = graph.stats()
    rel = ", ".join(f"{k} {v}" for k, v in stats["per_relation"].items())
    return f"KG: {stats['entities']} entities, {stats['relations']} relations, {stats['triples']} triples ({rel})"

