"""Users and items that arrived after training, served by a loaded run (`serving.TrainedRun`) without retraining.

*Posted histories* (`recommend(history=...)`, `score(history=...)`, the `history=FILE` of the recommend command):
rows `user_id, item_id[, rating]`, oldest first per user. Each posted user gets a *slot*; the model reads the slots'
histories exactly as it reads its own users' (`inductive.history_of`: the liked rows for task=ranking, or every
row weighted liked / not liked where the head reads both; for few-shot CTR samples, labels +1 / -1), swapped in
with `using_history` as the evaluation swaps in the test part's. Per-user parameters are read through the head's
`with_user_slots` (models/extend.py): a posted id that is one of the run's users keeps that user's trained ID
parts and the posted history replaces theirs; any other id has none (zeros), as a cold user.

*New items* (`add_items`, `items=FILE`): rows of an items table in the data set's CSV form (`item_id` and the
columns `dataset.text_template` names), rendered and encoded by the run's own frozen encoder, then scored by the
head's `with_new_items` (text projection only, no ID parts) under the indices after the catalogue's.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import pandas as pd

from recsys_fewshot.data.recdata import DataError, UserHistory
from recsys_fewshot.serving_common import UNKNOWN_CHOICES, ServeError, listed

log = logging.getLogger("recsys_fewshot.recommend")


@dataclass
class Posted:
    """Posted histories, resolved against a loaded run."""

    ids: pd.Index  # raw user ids, one per slot (in order of first appearance)
    owners: np.ndarray  # slot -> the run's user index when the id is one of its users, else -1
    history: UserHistory  # what the model reads, one row per slot
    items: UserHistory  # every posted item of each slot (what exclude_known=true leaves out)


@dataclass
class NewItems:
    """Items added to a loaded run after training."""

    ids: pd.Index  # raw item ids (indices n_items .. in this order)
    texts: list[str]  # as rendered from dataset.text_template
    features: Any  # torch [len(ids), dim] float32: the run's encoder's vectors of `texts`


def _heads(flag) -> str:
    from recsys_fewshot.models.capabilities import heads_that
    from recsys_fewshot.registry import head_options

    return ", ".join(heads_that(flag, head_options()))


def head_name(target: str) -> str:
    """The `head=` option of a `_target_` (for messages), else the class path."""
    from recsys_fewshot.registry import head_options

    names = [name for name, t in head_options().items() if t == target]
    return f"head={names[0]}" if names else f"head {target}"


# --- histories ------------------------------------------------------------------------------
def history_table(frame: pd.DataFrame, where: str = "history", lines: Optional[np.ndarray] = None) -> pd.DataFrame:
    """A posted history checked: `user_id`, `item_id` (non-empty strings) and `rating` (float64; NaN when the
    column is absent, else a finite float32 on every row). Errors name `where`, the column and the line
    (`lines`: each row's line in a file; default: rows counted from 1)."""
    from recsys_fewshot.data.checks import check_ratings, parse_numbers

    if not isinstance(frame, pd.DataFrame):
        raise ServeError(f"{where}: expected a table (DataFrame) with columns user_id, item_id[, rating]")
    lines = np.arange(1, len(frame) + 1) if lines is None else np.asarray(lines, np.int64)
    out = {}
    for column in ("user_id", "item_id"):
        if column not in frame.columns:
            raise ServeError(f"{where}: no column {column!r} (columns: {', '.join(map(str, frame.columns))}); a "
                             "history holds user_id, item_id[, rating]")
        values = frame[column]
        text = values.astype(str).str.strip()
        empty = (values.isna() | (text == "")).to_numpy()
        if empty.any():
            raise ServeError(f"{where}: column {column!r} line {int(lines[int(empty.argmax())])}: empty")
        out[column] = text.to_numpy(dtype=object)
    ratings = np.full(len(frame), np.nan)
    if "rating" in frame.columns:
        try:
            ratings = parse_numbers(frame["rating"].astype(object).where(frame["rating"].notna(), ""), where,
                                    "rating", lines)
            check_ratings(ratings, where, "rating", lines)
        except DataError as err:
            raise ServeError(str(err)) from None
    return pd.DataFrame({**out, "rating": ratings})


def post(trained, frame: pd.DataFrame, unknown: str = "skip", where: str = "history",
         lines: Optional[np.ndarray] = None) -> Posted:
    """`frame`'s histories as the run's model reads its own users' (see the module doc)."""
    from omegaconf import OmegaConf

    from recsys_fewshot.evaluation import relevant
    from recsys_fewshot.inductive import history_of
    from recsys_fewshot.models.capabilities import reads_all_rows

    check_new_users(trained)
    if unknown not in UNKNOWN_CHOICES:
        raise ServeError(f"unknown={unknown!r}: expected skip or error")
    table = history_table(frame, where, lines)
    ids = pd.Index(pd.unique(table["user_id"].to_numpy()), name="user_id")
    items = trained.item_ids.get_indexer(table["item_id"].to_numpy())
    missing = items < 0
    if missing.any():
        names = list(dict.fromkeys(table["item_id"].to_numpy()[missing]))
        message = (f"{where}: {int(missing.sum())} of {len(table)} rows name {len(names)} items not in the run's "
                   f"catalogue ({listed(names)})")
        if unknown == "error":
            raise ServeError(f"{message}; unknown=skip leaves them out")
        log.warning("%s: skipped", message)
    table, items = table[~missing], items[~missing]
    slots = ids.get_indexer(table["user_id"].to_numpy()).astype(np.int64)
    owners = trained.user_ids.get_indexer(ids).astype(np.int64)
    run, n = trained.run, len(ids)
    rating = table["rating"].to_numpy(np.float64)
    if "source_user" in run.data.users.columns:  # few-shot CTR samples (data/tallrec.py): labels +1 / -1
        from recsys_fewshot.data.tallrec import history_labels

        labels = (np.ones(len(table), np.float32) if np.isnan(rating).all()
                  else history_labels(rating, run.prep.spec.positive_threshold))
        history = UserHistory.from_pairs(slots, items, n, weights=2 * labels - 1, ratings=labels)
    else:
        if run.task == "rating" and len(table) and np.isnan(rating).any():
            raise ServeError(f"{where}: no column 'rating': a task=rating run reads each history item's rating")
        rows = pd.DataFrame({"user": slots, "item": items, "rating": rating.astype(np.float32),
                             "timestamp": np.full(len(table), -1, np.int64)})
        knobs = OmegaConf.to_container(trained.cfg.head, resolve=True)
        all_rows = run.task == "ranking" and reads_all_rows(trained.head, knobs)
        history = history_of(rows, n, run.task, relevant(rows, run.prep.spec), all_rows)
    users = getattr(run.model, "users", None)
    if getattr(users, "id_emb", None) is not None and (owners < 0).any() and not trained.warned_id:
        trained.warned_id = True
        log.warning("%s has user ID embeddings: a posted user the run never saw is served by its history alone "
                    "(no ID vector, no user bias), as cold users are", head_name(trained.head))
    return Posted(ids, owners, history, UserHistory.from_pairs(slots, items, n))


def check_new_users(trained) -> None:
    """A run whose head cannot read a posted history stops here, naming the heads that can."""
    caps, model = trained.capabilities, trained.run.model
    can = _heads(lambda c: c.new_users and not c.prompts)
    name = head_name(trained.head)
    if caps.prompts:
        raise ServeError(f"{name} builds language-model prompts from a sample's history: posted histories are not "
                         f"served to it; heads that serve them: {can}")
    if not caps.new_users:
        raise ServeError(f"{name} cannot read a posted history; heads that serve new users: {can}")
    if not getattr(getattr(model, "users", None), "has_history", True):
        raise ServeError(f"{name} was trained with head.user_history=false: it knows users only by their trained ID "
                         f"embedding; heads that serve new users: {can} (mf and mlp with head.user_history=true)")


def exclusions(posted: Posted, exclude_known: Union[bool, str], data) -> UserHistory:
    """What each slot's ranking leaves out: its posted items (true), plus every interaction in the data set of the
    run's user it stands for ("all"), or nothing (false)."""
    n = len(posted.ids)
    if isinstance(exclude_known, str):
        if exclude_known != "all":
            raise ServeError(f"exclude_known={exclude_known!r}: expected true, false or all")
        rows = data.interactions
        slot_of = pd.Series(np.arange(n), index=posted.owners)[posted.owners >= 0]
        mine = rows[rows["user"].isin(slot_of.index)]
        slots = np.concatenate([np.repeat(np.arange(n), posted.items.lengths()),
                                slot_of.reindex(mine["user"].to_numpy()).to_numpy(np.int64)])
        items = np.concatenate([posted.items.items, mine["item"].to_numpy(np.int64)])
        return UserHistory.from_pairs(slots, items, n)
    if exclude_known:
        return posted.items
    return UserHistory.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), n)


@contextlib.contextmanager
def reading(model, posted: Posted, restore: UserHistory) -> Iterator[None]:
    """Inside the block the model's user indices are `posted`'s slots and it reads their histories; `restore`:
    the history it held before."""
    import torch

    from recsys_fewshot.inductive import using_history

    slots = getattr(model, "with_user_slots", None)
    with (slots(torch.as_tensor(posted.owners)) if slots is not None else contextlib.nullcontext()):
        with using_history(model, posted.history, restore):
            yield


# --- new items ------------------------------------------------------------------------------
def read_items_file(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """An items table in the data set's CSV form (`item_id` + text columns), with each row's line (blank lines
    skipped, so the lines errors name are the file's)."""
    from recsys_fewshot.serving_io import read_csv_lines

    if path.suffix.lower() != ".csv":
        raise ServeError(f"items={path}: expected a .csv file (item_id and the text columns, as the data set's "
                         "items.csv)")
    if not path.is_file():
        raise ServeError(f"items={path}: no such file")
    table, lines = read_csv_lines(path)
    if "item_id" not in table.columns:
        raise ServeError(f"{path}: missing column 'item_id' (has: {', '.join(table.columns)})")
    table = table.fillna("")
    table["item_id"] = table["item_id"].str.strip()
    empty, repeated = (table["item_id"] == "").to_numpy(), table["item_id"].duplicated().to_numpy()
    if empty.any():
        raise ServeError(f"{path}: column 'item_id' line {int(lines[empty.argmax()])}: empty")
    if repeated.any():
        i = int(repeated.argmax())
        raise ServeError(f"{path}: column 'item_id' line {int(lines[i])}: id {table['item_id'].iloc[i]!r} repeats")
    return table, lines


def encode_items(trained, table: pd.DataFrame, where: str, lines: np.ndarray) -> Optional[NewItems]:
    """The rows of `table` whose `item_id` the run does not hold yet, rendered and encoded as the catalogue was
    (None when there are none); rows naming a known item are left as trained."""
    from recsys_fewshot.build import encoder_spec, item_vectors
    from recsys_fewshot.config import resolve_cache_dir
    from recsys_fewshot.data.text import render_texts, template_fields

    name, run, cfg = head_name(trained.head), trained.run, trained.cfg
    if not trained.capabilities.new_items:
        raise ServeError(f"{name} cannot score items added after training (its item side is fitted per trained "
                         f"item); heads that score new items from their text: "
                         f"{_heads(lambda c: c.new_items)}")
    if run.features is None or encoder_spec(cfg) is None:
        raise ServeError("items=: this run has no text encoder (encoder=none): a new item is scored from its text")
    if run.text is not None:
        raise ServeError(f"items=: this run trained its text encoder jointly (peft={cfg.peft.method}); new items "
                         "are served by runs with a frozen encoder (peft=frozen)")
    if "item_id" not in table.columns:
        raise ServeError(f"{where}: no column 'item_id' (columns: {', '.join(map(str, table.columns))})")
    table = table.fillna("").astype(str).apply(lambda c: c.str.strip()).reset_index(drop=True)
    repeated = table["item_id"].duplicated().to_numpy()
    if repeated.any():
        i = int(repeated.argmax())
        raise ServeError(f"{where}: column 'item_id' line {int(lines[i])}: id {table['item_id'].iloc[i]!r} repeats")
    held = trained.item_ids.get_indexer(table["item_id"].to_numpy()) >= 0
    if held.any():
        log.warning("%s: %d of %d items are already in the run's catalogue (%s): kept as they are", where,
                    int(held.sum()), len(table), listed(table["item_id"][held].tolist()))
    table, lines = table[~held].reset_index(drop=True), np.asarray(lines)[~held]
    if table.empty:
        return None
    try:
        texts = render_texts(table, cfg.dataset.text_template, list(cfg.dataset.list_columns))
    except DataError as err:
        raise ServeError(f"{where}: {err}") from None
    fields = [f for f in template_fields(cfg.dataset.text_template) if f in table.columns]
    empty = (table[fields] == "").all(axis=1).to_numpy() if fields else np.ones(len(table), bool)
    blank = [i for i, t in enumerate(texts) if not t.strip() or empty[i]]  # "." is what an empty row renders
    if blank:
        raise ServeError(f"{where}: line {int(lines[blank[0]])}: item {table['item_id'].iloc[blank[0]]!r} has no "
                         f"text (dataset.text_template={cfg.dataset.text_template!r})")
    vectors, _ = item_vectors(encoder_spec(cfg), texts, resolve_cache_dir(cfg.cache_dir), trained.accelerator)
    return NewItems(pd.Index(table["item_id"].to_numpy(dtype=object), name="item_id"), texts,
                    vectors.float().cpu())
