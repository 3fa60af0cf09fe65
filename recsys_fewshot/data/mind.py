"""MIND-small (`dataset=mind_small`): Microsoft News' click logs (Wu et al., ACL 2020), its train and dev logs.

``mind-small/train/`` and ``mind-small/dev/`` each hold the release's ``news.tsv`` (tab-separated, no header: news id,
category, subcategory, title, abstract, URL, title entities, abstract entities) and ``behaviors.tsv`` (impression
id, user id, time ``11/15/2019 8:55:22 AM``, the user's click history ``N1 N2 ...`` (clicks before the logs),
the impression ``N3-1 N4-0 ...``: each shown news with 1 if clicked).

The interactions, in this order:

* each user's history clicks, label 1 and no timestamp (-1): the union of the user's histories over both logs,
  in order of first appearance, each news once; fold ``given``: train;
* each impression's candidates, label 1 (clicked) or 0, the impression's time (seconds since 1970, UTC as the
  files write it): the train log's in fold ``given`` train, the dev log's test (MIND-small publishes no test
  labels; its dev log, the day after the train log, is the usual test set).

Ratings are NaN: the labels are the CTR targets (``task=ctr``). Items: the news of both ``news.tsv`` files (the
first line of a news id wins), text columns ``title``, ``abstract``, ``category``, ``subcategory``; a news id the
behaviors name but no ``news.tsv`` holds becomes an item without text (counted in the log). Users are the
behaviors' user ids. A line with the wrong number of tab-separated fields, an unreadable time or a malformed
impression token is an error naming the file, line and column.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_fewshot.config import MindReaderConfig
from recsys_fewshot.data.download import RemoteFile, fetch, how_to_install, missing, offline
from recsys_fewshot.data.recdata import TEST, TRAIN, DataError, RecData
from recsys_fewshot.data.sources import Download, Reader

log = logging.getLogger("recsys_fewshot.data")

TITLE = "MIND-small"
FOLDER = "mind-small"
NEWS_COLUMNS = ["news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
                "abstract_entities"]
BEHAVIOR_COLUMNS = ["impression_id", "user_id", "time", "history", "impressions"]
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
# md5s of the two zips from the DataRec library's MIND-small builder (datarec/datasets/mind/mindSmall.py, which
# checks the files of the official download page msnews.github.io); the dev one is also recorded, with its size
# 30,948,560 bytes, in a DVC lock file of an independent project. Each zip holds the part's files at its top level.
FILES = {
    "train": RemoteFile("https://mind201910small.blob.core.windows.net/release/MINDsmall_train.zip",
                        "md5:8ab752c7d11564622d93132be05dcf6b", provides=("behaviors.tsv", "news.tsv"), archive=True),
    "dev": RemoteFile("https://mind201910small.blob.core.windows.net/release/MINDsmall_dev.zip",
                      "md5:e3bac5485be8fc7a9934e85e3b78615f", provides=("behaviors.tsv", "news.tsv"), archive=True),
}


def install(folder: Path) -> Path:
    """``folder/train`` and ``folder/dev`` with their files, the missing zips downloaded and checked first
    (offline: one message naming every missing zip and the folder to unpack it into)."""
    folder = Path(folder)
    todo = [(part, f) for part, f in FILES.items() if missing([f], folder / part)]
    if todo and offline():
        raise DataError("\n".join(how_to_install(f"{TITLE} ({part})", [f], folder, folder / part) for part, f in todo))
    for part, f in todo:
        fetch(f"{TITLE} ({part})", f"{folder.name}/{part}", [f], folder.parent)
    return folder


def read_tsv(path: Path, columns: list[str]) -> list[list[str]]:
    """The lines of a header-less tab-separated UTF-8 file, each split into exactly len(columns) fields."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 ({err.reason})") from err
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(f"{path} line {number}: expected {len(columns)} tab-separated fields "
                            f"({', '.join(columns)}), got {len(fields)}")
        rows.append([number, *fields])
    return rows


def read_news(path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(read_tsv(path, NEWS_COLUMNS), columns=["line", *NEWS_COLUMNS])
    empty = frame["news_id"].str.strip() == ""
    if empty.any():
        raise DataError(f"{path} line {frame['line'][empty].iloc[0]}: column 'news_id' is empty")
    return frame[["news_id", "title", "abstract", "category", "subcategory"]]


def _tokens(values: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """The space-separated tokens of every value (empty ones dropped) and the row each comes from."""
    lists = pc.split_pattern(pa.array(values.to_numpy(dtype=object), pa.string()), " ")
    tokens, rows = pc.list_flatten(lists), pc.list_parent_indices(lists).to_numpy()
    keep = pc.not_equal(tokens, "")
    return tokens.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]


def read_behaviors(path: Path) -> dict:
    """One log's behaviors: per line its user and time; the history tokens and the impression tokens (news id,
    label) with the line each comes from."""
    frame = pd.DataFrame(read_tsv(path, BEHAVIOR_COLUMNS), columns=["line", *BEHAVIOR_COLUMNS])
    lines = frame["line"].to_numpy()
    time = pd.to_datetime(frame["time"], format=TIME_FORMAT, errors="coerce")
    if time.isna().any():
        i = int(np.flatnonzero(time.isna())[0])
        raise DataError(f"{path}: column 'time' line {lines[i]}: expected a time like 11/15/2019 8:55:22 AM, got "
                        f"{frame['time'].iloc[i]!r}")
    users = frame["user_id"].str.strip()
    if (users == "").any():
        raise DataError(f"{path}: column 'user_id' line {lines[int(np.flatnonzero(users == '')[0])]}: empty")
    history, history_rows = _tokens(frame["history"])
    shown, shown_rows = _tokens(frame["impressions"])
    well_formed = pc.match_substring_regex(shown, r"^[^\s-]+-[01]$").to_numpy(zero_copy_only=False)
    no_candidate = np.setdiff1d(np.arange(len(frame)), shown_rows)
    malformed = shown_rows[~well_formed]
    if len(malformed) or len(no_candidate):
        row = min(np.r_[malformed, no_candidate])
        where = f"{path}: column 'impressions' line {lines[row]}"
        if row in set(no_candidate.tolist()):
            raise DataError(f"{where}: no news shown")
        token = shown[int(np.flatnonzero(~well_formed)[0])].as_py()
        raise DataError(f"{where}: malformed token {token!r} (expected <news id>-1 for a click, <news id>-0 for none)")
    seconds = ((time - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    return {"users": users.to_numpy(dtype=object), "time": seconds, "history": history, "history_rows": history_rows,
            "shown": pc.utf8_slice_codeunits(shown, 0, -2), "shown_rows": shown_rows,
            "labels": pc.ends_with(shown, "-1").to_numpy(zero_copy_only=False).astype(np.int8)}


def read_mind(folder: Path) -> RecData:
    folder = Path(folder)
    news = pd.concat([read_news(folder / part / "news.tsv") for part in FILES], ignore_index=True)
    news = news.drop_duplicates("news_id").reset_index(drop=True)
    logs = [read_behaviors(folder / part / "behaviors.tsv") for part in FILES]
    user_codes, user_ids = pd.factorize(np.concatenate([w["users"] for w in logs]))
    starts = np.cumsum([0] + [len(w["users"]) for w in logs])
    item_ids = pa.array(news["news_id"].to_numpy(dtype=object), pa.string())

    def items_of(tokens: pa.Array) -> np.ndarray:
        nonlocal item_ids
        index = pc.index_in(tokens, value_set=item_ids)
        unknown = pc.unique(tokens.filter(pc.is_null(index)))
        if len(unknown):
            item_ids = pa.concat_arrays([item_ids, unknown])
            index = pc.index_in(tokens, value_set=item_ids)
        return index.to_numpy(zero_copy_only=False).astype(np.int64)

    # history clicks: per user, in order of first appearance over both logs, each news once
    hist_users = np.concatenate([user_codes[s + w["history_rows"]] for s, w in zip(starts, logs)])
    hist_items = np.concatenate([items_of(w["history"]) for w in logs])
    history = pd.DataFrame({"user": hist_users, "item": hist_items}).drop_duplicates()
    history = history.iloc[np.argsort(history["user"].to_numpy(), kind="stable")]
    parts = [pd.DataFrame({"user": history["user"].to_numpy(), "item": history["item"].to_numpy(),
                           "timestamp": np.full(len(history), -1, np.int64), "label": np.ones(len(history), np.int8),
                           "code": np.full(len(history), TRAIN, np.int8)})]
    for s, w, code in zip(starts, logs, (TRAIN, TEST)):
        rows = w["shown_rows"]
        parts.append(pd.DataFrame({"user": user_codes[s + rows], "item": items_of(w["shown"]),
                                   "timestamp": w["time"][rows].astype(np.int64), "label": w["labels"],
                                   "code": np.full(len(rows), code, np.int8)}))
    inter = pd.concat(parts, ignore_index=True)
    n_unknown = len(item_ids) - len(news)
    if n_unknown:
        log.warning("%s: %d news id(s) of behaviors.tsv absent from every news.tsv: items without text", folder,
                    n_unknown)
    items = pd.DataFrame({"item": np.arange(len(item_ids), dtype=np.int64),
                          "item_id": pd.Series(item_ids.to_pylist(), dtype=str)})
    items = items.merge(news.rename(columns={"news_id": "item_id"}), on="item_id", how="left").fillna("")
    users = pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int64), "user_id": pd.Series(user_ids, dtype=str)})
    interactions = pd.DataFrame({"user": inter["user"].to_numpy(np.int64), "item": inter["item"].to_numpy(np.int64),
                                 "rating": np.full(len(inter), np.nan, np.float32),
                                 "timestamp": inter["timestamp"].to_numpy(np.int64),
                                 "label": inter["label"].to_numpy(np.int8)})
    return RecData("mind-small", interactions, items, users, {"given": inter["code"].to_numpy(np.int8)}).validate()


class Mind(Reader, MindReaderConfig):
    """`dataset=mind_small`; the two zips are downloaded (md5-checked) into ``train/`` and ``dev/`` when missing."""

    download = Download(FOLDER, lambda root: install(Path(root) / FOLDER))

    def check(self, folder: Path) -> None:
        install(Path(folder))

    def read(self, folder: Path) -> RecData:
        return read_mind(folder)

    def items_file(self) -> str:
        return "train/news.tsv"
