"""Few-shot CTR on history samples: TALLRec's protocol (`split=tallrec`), its JSON prompt files
(`dataset=tallrec_json`), and the sample-as-user view the models train on.

A *sample* is (history: the previous items of one user with their 0/1 labels, oldest first; a target
item; its label). In an interactions table a sample is one row: ``user`` (the source user), ``item``
(the target), ``rating``, ``timestamp``, ``label`` and ``history`` (a list of ``(item_index, value)``
pairs, where value is a rating or already a 0/1 label).

TALLRec's construction on rating data (its ``preprocess_movie.py``, reproduced exactly): users in order
of their first appearance in the file; each user's ratings sorted by timestamp with a stable sort (ties
keep file order; TALLRec sorts the timestamp strings, which on MovieLens-100K, all 9 digits, is the same
order); label = rating >= ``positive_threshold`` (4, i.e. TALLRec's rating > 3); every position i >= H of
a user's sequence gives a sample (the previous H items -> item i); all users' samples are concatenated in
that order, the last ``n_samples`` kept and cut in order into train / valid / test (``int(n * 0.8)``,
``int(n * 0.9)``: 8,000 / 1,000 / 1,000). ``split.n_shots=N split.seed=S`` trains on the first N samples
of a seeded shuffle of the train part (so the N=16 shots are among the N=64 ones for the same seed). The other
published recipes (TALLRec's Book, ReLLa's, CoLLM's) are options of the same construction: the order of a
user's ratings, which positions are targets, the history's length and side (data/ctr_samples.py), and
``recipe=time`` (a global time cut).

Data that already holds samples (a ``history`` column: TALLRec's JSON files, a CSV CTR folder) uses its
files: train file = the pool the shots are drawn from, valid file, test file. With no test file, a seeded
partition (``split.partition_seed``, the same for every shot seed) cuts the train file in order of a
shuffle into pool (``train_ratio``) / valid (``valid_ratio``) / test (the rest).

Few-shot means: training reads the N shots (with their histories) and nothing else; a test sample's own
history is read when it is scored. `as_sample_users` makes every sample a user of its own, whose history
is the sample's history, so the model only ever sees a sample's history through that sample.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from recsys_fewshot.config import TallrecJsonReaderConfig
from recsys_fewshot.data.ctr_samples import build_samples
from recsys_fewshot.data.protocols import Split
from recsys_fewshot.data.recdata import TEST, TRAIN, VALID, DataError, RecData, UserHistory
from recsys_fewshot.data.sources import Reader

VALID_MODES = ("full", "holdout", "none")
AUGMENT_MODES = ("none", "loo", "prefix")


# ---------------------------------------------------------------- samples from ratings: data/ctr_samples.py
def _shots(pool: np.ndarray, n_shots: int, seed: int) -> np.ndarray:
    """The first `n_shots` of a seeded shuffle of `pool` (all of it when n_shots <= 0)."""
    if n_shots > len(pool):
        raise DataError(f"split.n_shots={n_shots} but the pool holds only {len(pool)} samples")
    perm = pool[np.random.default_rng(seed).permutation(len(pool))]
    return perm if n_shots <= 0 else perm[:n_shots]


def augment_samples(frame: pd.DataFrame, mode: str, min_history: int = 1) -> pd.DataFrame:
    """Extra training samples made from each sample's OWN labelled items (no other data is read).

    ``loo``: each of the sample's labelled items (history + target) predicted from the others, in order;
    ``prefix``: each history item predicted from the items before it (at least `min_history` of them).
    History values must be 0/1 labels here. The original samples come first, then the extra ones, marked
    by the ``augmented`` column.
    """
    if mode not in AUGMENT_MODES:
        raise DataError(f"split.augment={mode!r}: expected one of {', '.join(AUGMENT_MODES)}")
    frame = frame.assign(augmented=False)
    if mode == "none" or frame.empty:
        return frame
    extra: dict[str, list] = {c: [] for c in ("user", "item", "rating", "timestamp", "label", "history")}
    for row in frame.itertuples(index=False):
        seq = [(int(i), float(v)) for i, v in row.history] + [(int(row.item), float(row.label))]
        for j in range(len(seq) - 1):
            context = seq[:j] + seq[j + 1:] if mode == "loo" else seq[:j]
            if len(context) < min_history:
                continue
            extra["user"].append(row.user)
            extra["item"].append(seq[j][0])
            extra["rating"].append(seq[j][1])
            extra["timestamp"].append(row.timestamp)
            extra["label"].append(int(seq[j][1]))
            extra["history"].append(context)
    more = pd.DataFrame({k: v for k, v in extra.items() if k != "history"})
    more = more.astype({"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64,
                        "label": np.int8})
    more["history"] = pd.Series(extra["history"], dtype=object)
    more["augmented"] = True
    return pd.concat([frame, more], ignore_index=True)


def values_are_labels(histories: pd.Series) -> bool:
    """Whether a table's history values are 0/1 labels (else ratings, thresholded into labels)."""
    values = np.fromiter((v for h in histories for _, v in h), np.float32)
    return bool(np.isin(values, (0.0, 1.0)).all())


def history_as_labels(histories: pd.Series, positive_threshold: float, are_labels: bool) -> pd.Series:
    """Histories with 0/1 labels as values (ratings >= `positive_threshold` are liked)."""
    if are_labels:
        return histories
    return pd.Series([[(i, float(v >= positive_threshold)) for i, v in h] for h in histories],
                     dtype=object, index=histories.index)


def _by_users(samples: pd.DataFrame, n_samples: int, train_ratio: float, valid_ratio: float,
              partition_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`split.recipe=users`: (pool, valid, test) rows of all users' samples, the users cut at random into
    train / valid / test users (`train_ratio`, `valid_ratio`, the rest); valid and test keep `n_samples` x their
    ratio samples drawn at random from their users (so the test comes from many users, not TALLRec's 16)."""
    rng = np.random.default_rng(partition_seed)
    users = np.unique(samples["user"].to_numpy())
    perm = users[rng.permutation(len(users))]
    a, b = int(round(len(perm) * train_ratio)), int(round(len(perm) * (train_ratio + valid_ratio)))
    owner = samples["user"].to_numpy()

    def draw(part: np.ndarray, size: int) -> np.ndarray:
        rows = np.flatnonzero(np.isin(owner, part))
        if n_samples <= 0:  # every sample of those users
            return rows
        return np.sort(rng.choice(rows, size=min(size, len(rows)), replace=False))

    test_share = 1.0 - train_ratio - valid_ratio
    return (np.flatnonzero(np.isin(owner, perm[:a])), draw(perm[a:b], int(round(n_samples * valid_ratio))),
            draw(perm[b:], int(round(n_samples * test_share))))


RECIPES = ("released", "users", "time")


def tallrec(data: RecData, n_shots: int = 64, seed: int = 0, valid: str = "full", n_samples: int = 10_000,
            history_len: int = 10, train_ratio: float = 0.8, valid_ratio: float = 0.1,
            holdout_ratio: float = 0.25, partition_seed: int = 0, augment: str = "none",
            positive_threshold: float = 4.0, recipe: str = "released", order: str = "time", order_seed: int = 42,
            targets: str = "every", min_history: Optional[int] = None, history_from: str = "recent",
            task: Optional[str] = "ctr") -> Split:
    """TALLRec's few-shot protocol (see the module doc). `valid`: ``full`` (the protocol's valid part,
    TALLRec's model selection), ``holdout`` (a `holdout_ratio` of the N shots, trained on the rest) or
    ``none`` (no data beyond the shots: valid = the shots themselves). `recipe` (rating data): ``released``
    (TALLRec's: the last `n_samples` samples cut in order, the test from the latest few users) or ``users``
    (our extension: the same samples of every user, users cut at random into train / valid / test users, the
    valid and test samples drawn from theirs: a test from many users; `n_samples` <= 0: all their samples) or
    ``time`` (the samples in order of their target's timestamp, stably, the last `n_samples` cut in order: a
    global time split, as ReLLa's and CoLLM's MovieLens). `order`, `order_seed`, `targets`, `min_history` and
    `history_from` choose how samples are made from ratings (data/ctr_samples.py)."""
    if valid not in VALID_MODES:
        raise DataError(f"split.valid={valid!r}: expected one of {', '.join(VALID_MODES)}")
    if recipe not in RECIPES:
        raise DataError(f"split.recipe={recipe!r}: expected one of {', '.join(RECIPES)}")
    for name, value in (("train_ratio", train_ratio), ("valid_ratio", valid_ratio)):
        if not 0.0 < value < 1.0:
            raise DataError(f"split.{name} must be in (0, 1), got {value}")
    if train_ratio + valid_ratio >= 1.0:
        raise DataError(f"split.train_ratio + split.valid_ratio must be < 1 (the rest is test), got "
                        f"{train_ratio} + {valid_ratio}")
    inter = data.interactions
    if "history" in inter.columns and recipe != "released":
        raise DataError(f"split.recipe={recipe}: {data.name} holds ready-made samples; the recipe builds samples "
                        "from ratings only (use split.recipe=released)")
    if "history" in inter.columns:
        samples, source = inter.reset_index(drop=True), "files"
        if "label" not in samples.columns:
            raise DataError(f"{data.name}: samples with a history need a 'label' column (0/1)")
        codes = data.folds.get("given", np.full(len(samples), TRAIN, np.int8))
        pool, valid_rows, test_rows = (np.flatnonzero(codes == c) for c in (TRAIN, VALID, TEST))
        rng = np.random.default_rng(partition_seed)
        if len(test_rows) == 0 and len(valid_rows):  # re-cutting would silently drop the valid file
            raise DataError(f"{data.name}: a valid file but no test file: set dataset.test_file too (or leave "
                            "dataset.valid_file out, and a seeded cut of the train file makes pool / valid / test)")
        if len(test_rows) == 0:  # only a train file: a seeded partition of it
            perm = pool[rng.permutation(len(pool))]
            a, b = int(len(perm) * train_ratio), int(len(perm) * (train_ratio + valid_ratio))
            pool, valid_rows, test_rows = perm[:a], perm[a:b], perm[b:]
            source = "train file partitioned"
        elif len(valid_rows) == 0 and valid == "full":  # a test file but no valid file: valid from the pool
            perm = pool[rng.permutation(len(pool))]
            cut = int(round(len(perm) * valid_ratio))
            pool, valid_rows = np.sort(perm[cut:]), np.sort(perm[:cut])
    else:
        use_labels = False
        if inter["rating"].isna().all():  # a click log: its 0/1 labels take the place of thresholded ratings
            if "label" not in inter.columns:
                raise DataError(f"split=tallrec: data set {data.name!r} has neither ratings nor a 'label' column "
                                "to say which items a user liked")
            inter, use_labels = inter.assign(rating=inter["label"].astype(np.float32)), True
        threshold = 1.0 if use_labels else positive_threshold
        how = dict(order=order, order_seed=order_seed, targets=targets, min_history=min_history,
                   history_from=history_from)
        if recipe == "users":
            samples = build_samples(inter, history_len, threshold, **how)
            pool, valid_rows, test_rows = _by_users(samples, n_samples, train_ratio, valid_ratio, partition_seed)
        else:
            samples = build_samples(inter, history_len, threshold, last=n_samples if recipe == "released" else 0,
                                    **how)
            if recipe == "time":  # by the target's time (ties: sample order), the latest n_samples kept
                by_time = np.argsort(samples["timestamp"].to_numpy(), kind="stable")
                samples = samples.iloc[by_time[-n_samples:] if n_samples > 0 else by_time].reset_index(drop=True)
            n = len(samples)
            a, b = int(n * train_ratio), int(n * (train_ratio + valid_ratio))
            pool, valid_rows, test_rows = np.arange(a), np.arange(a, b), np.arange(b, n)
        source = "ratings"
    shots = _shots(pool, n_shots, seed)
    if valid == "holdout":
        n_hold = max(1, int(round(len(shots) * holdout_ratio)))
        if n_hold >= len(shots):
            raise DataError(f"split.valid=holdout leaves no training shot (n_shots={len(shots)}, "
                            f"holdout_ratio={holdout_ratio})")
        shots, valid_rows = shots[:-n_hold], shots[-n_hold:]
    elif valid == "none":
        valid_rows = shots
    # ratings (built from a rating table) or, in sample files, whatever the whole file holds: its format, not content
    are_labels = values_are_labels(samples["history"]) if source != "ratings" else use_labels

    def part(rows: np.ndarray) -> pd.DataFrame:
        frame = samples.iloc[rows].reset_index(drop=True)
        return frame.assign(history=history_as_labels(frame["history"], positive_threshold, are_labels))

    train = augment_samples(part(shots), augment)
    split = Split(task=task, train=train, valid=part(valid_rows), test=part(test_rows),
                  info={"protocol": "tallrec", "source": source if source != "ratings" else f"built from ratings "
                        + {"released": f"(last {len(samples)} samples)", "time": f"({len(samples)} samples by time)",
                           "users": f"({len(samples)} samples of every user, split by users)"}[recipe]
                        + ("" if source != "ratings" or (order, targets) == ("time", "every") else
                           f", order={order}, targets={targets}"), "recipe": recipe, "n_shots": int(len(shots)), "valid_mode": valid,
                        "augment": augment, "pool": int(len(pool)), "seed": seed,
                        "partition_seed": partition_seed, "test_positive_rate": float(
                            samples["label"].to_numpy()[test_rows].mean()) if len(test_rows) else float("nan")})
    return split.check_nonempty("tallrec")


# ---------------------------------------------------------------- every sample a user of its own
@dataclass
class SampleView:
    """The split with one pseudo-user per sample, and what each stage shows the model of the histories."""

    data: RecData
    split: Split
    history: UserHistory  # training: the training samples' histories only (valid/test users empty)
    valid_history: UserHistory  # + the valid samples' histories (for early stopping)
    test_history: UserHistory  # + the test samples' histories (swapped in only to score the test)


def history_labels(values: np.ndarray, positive_threshold: float) -> np.ndarray:
    """0/1 labels of history values: kept when every value is 0 or 1, else rating >= threshold."""
    values = np.asarray(values, np.float32)
    if np.isin(values, (0.0, 1.0)).all():
        return values.astype(np.float32)
    return (values >= positive_threshold).astype(np.float32)


def as_sample_users(data: RecData, split: Split, positive_threshold: float) -> SampleView:
    """Make every sample (row) of train, valid and test a user of its own whose history is its history.

    The users table keeps the source user (``source_user``) and names each sample ``<part>-<k>``
    (k: the row in that part, e.g. the sample's position in a test file). Histories are `UserHistory`
    rows (oldest first) with weight +1 (liked) / -1 (not liked) and the 0/1 label in ``ratings``.
    """
    parts = [("train", split.train), ("valid", split.valid), ("test", split.test)]
    sizes = [len(f) for _, f in parts]
    offsets = np.r_[0, np.cumsum(sizes)]
    n_users = int(offsets[-1])
    source = data.user_raw_ids()
    users = pd.DataFrame({
        "user": np.arange(n_users, dtype=np.int64),
        "user_id": pd.Series([f"{name}-{k}" for name, f in parts for k in range(len(f))], dtype=str),
        "source_user": pd.Series(np.concatenate([source[f["user"].to_numpy()] for _, f in parts]), dtype=str),
    })
    frames, codes = [], []
    hist_users, hist_items, hist_values = [], [], []
    for (name, frame), start, code in zip(parts, offsets[:-1], (TRAIN, VALID, TEST)):
        new = frame.drop(columns=["history", "augmented"], errors="ignore").copy()
        new["user"] = np.arange(start, start + len(frame), dtype=np.int64)
        frames.append(new)
        codes.append(np.full(len(frame), code, np.int8))
        for u, hist in zip(new["user"].to_numpy(), frame["history"]):
            hist_users.extend([u] * len(hist))
            hist_items.extend(int(i) for i, _ in hist)
            hist_values.extend(float(v) for _, v in hist)
    hu, hi = np.asarray(hist_users, np.int64), np.asarray(hist_items, np.int64)
    labels = history_labels(np.asarray(hist_values, np.float32), positive_threshold)
    if len(hi) and (hi.min() < 0 or hi.max() >= data.n_items):
        raise DataError(f"{data.name}: a history item index is out of range 0..{data.n_items - 1}")

    def restricted(n_visible: int) -> UserHistory:
        keep = hu < n_visible
        return UserHistory.from_pairs(hu[keep], hi[keep], n_users, weights=2 * labels[keep] - 1,
                                      ratings=labels[keep])

    inter = pd.concat(frames, ignore_index=True)
    new_data = RecData(data.name, inter, data.items, users, {"given": np.concatenate(codes)},
                       implicit=False).validate()
    new_split = Split(task=split.task, train=frames[0], valid=frames[1], test=frames[2], info=dict(split.info))
    return SampleView(new_data, new_split, restricted(offsets[1]), restricted(offsets[2]), restricted(n_users))


# ---------------------------------------------------------------- TALLRec's JSON prompt files
_PROMPT = re.compile(r"^\s*User Preference:(?P<liked>.*?)\n\s*User Unpreference:(?P<disliked>.*?)\n\s*"
                     r"Whether the user will like the target (?P<noun>\w+)\s*(?P<target>.*?)\?\s*$", re.S)
# an author may hold quotes (Dwayne "The Rock" Johnson) but not ', "': split_items cuts lists there, so an
# author runs to the end of its list or to the next ', "' (else '"A" written by X, "B' would be one item)
_BOOK = re.compile(r'^"(?P<title>.*)"\s*written by\s*(?P<author>(?:(?!, ").)*)$', re.S)
_QUOTED = re.compile(r'^"(?P<title>.*)"$', re.S)
ANSWERS = {"Yes.": 1, "No.": 0}


def parse_item(text: str) -> Optional[tuple[str, str]]:
    """``"Title" written by Author`` -> (title, author); ``"Title"`` -> (title, ""); else None."""
    text = text.strip()
    match = _BOOK.match(text)
    if match:
        return match["title"].strip(), " ".join(match["author"].split())
    match = _QUOTED.match(text)
    return (match["title"].strip(), "") if match else None


def split_items(text: str, with_author: bool) -> Optional[list[tuple[str, str]]]:
    """Cut a ``"A", "B"`` (or ``"A" written by X, "B" written by Y``) list into items.

    Titles may hold commas and quotes, so every ``, "`` is only a candidate cut: the cuts kept are those
    that make every piece a well-formed item of the list's kind (with an author or not), and among those
    the most pieces. None when no cut gives well-formed pieces. An author may hold quotes but never
    ``, "``, so it runs to the end of the list or to the next cut.
    """
    text = text.strip()
    if not text:
        return []
    atoms = text.split(', "')
    atoms = [atoms[0]] + ['"' + a for a in atoms[1:]]

    def piece(a: int, b: int) -> Optional[tuple[str, str]]:
        parsed = parse_item(", ".join(atoms[a:b]))
        if parsed is None or (with_author != bool(_BOOK.match(", ".join(atoms[a:b]).strip()))):
            return None
        return parsed

    best: list[Optional[list]] = [None] * (len(atoms) + 1)  # best[k]: best cut of atoms[:k]
    best[0] = []
    for end in range(1, len(atoms) + 1):
        for start in range(end - 1, -1, -1):
            if best[start] is None:
                continue
            parsed = piece(start, end)
            if parsed is not None and (best[end] is None or len(best[start]) + 1 > len(best[end])):
                best[end] = best[start] + [parsed]
    return best[-1]


def parse_prompt(text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], tuple[str, str]]:
    """A TALLRec ``input``: (liked items, disliked items, target), each item (title, author or "").

    Raises ValueError when the text does not have TALLRec's three lines or an item list cannot be cut.
    """
    match = _PROMPT.match(text)
    if match is None:
        raise ValueError("expected 'User Preference: ...', 'User Unpreference: ...' and "
                         "'Whether the user will like the target ...?' lines")
    raw = match["target"].strip()
    # TALLRec's book files quote the whole target again: ""Title" written by Author"
    inner = raw[1:-1] if raw.startswith('"') and raw.endswith('"') and len(raw) > 1 else ""
    target = parse_item(inner) if _BOOK.match(inner.strip()) else None
    if target is None:
        target = parse_item(raw) or (raw.strip('"'), "")
    # the target's form, not its author, says whether the lists' items carry authors ('"T" written by '
    # with nothing after is still a book whose history items are authored)
    with_author = bool(_BOOK.match(inner.strip()) or _BOOK.match(raw))
    lists = []
    for name in ("liked", "disliked"):
        items = split_items(match[name], with_author)
        if items is None:
            raise ValueError(f"cannot cut the {'User Preference' if name == 'liked' else 'User Unpreference'} "
                             f"list into quoted items: {match[name].strip()[:120]!r}")
        lists.append(items)
    return lists[0], lists[1], target


def item_key(title: str, author: str) -> str:
    """An item's identity: its text (title, and author when the files name one)."""
    return f"{title} written by {author}" if author else title


def read_tallrec_json(folder: Path, train_file: Optional[str] = "train.json", valid_file: Optional[str] = None,
                      test_file: Optional[str] = None) -> RecData:
    """TALLRec prompt files -> one interaction per sample (each its own user), items identified by text.

    Files are relative to `folder` (or absolute); None or "" leaves a part out. A sample's history is its
    liked items then its disliked items (the files keep no order between the two: use head.recency=1).
    Fold ``given`` codes the parts, for `split=tallrec`.
    """
    folder = Path(folder)
    files = [(f, code) for f, code in ((train_file, TRAIN), (valid_file, VALID), (test_file, TEST)) if f]
    if not files:
        raise DataError("dataset=tallrec_json: set at least dataset.train_file (or valid_file / test_file)")
    keys: dict[str, int] = {}
    item_rows: list[tuple[str, str]] = []

    def index(item: tuple[str, str]) -> int:
        key = item_key(*item)
        if key not in keys:
            keys[key] = len(item_rows)
            item_rows.append(item)
        return keys[key]

    resolved: dict[Path, str] = {}
    for name, code in files:
        path = Path(name).expanduser()
        path = (path if path.is_absolute() else folder / path).resolve()
        part = ("train", "valid", "test")[code]
        if path in resolved:  # the same samples in two parts: a leak (test samples trained on)
            raise DataError(f"dataset.{resolved[path]}_file and dataset.{part}_file are the same file ({path})")
        resolved[path] = part
    rows, codes, user_ids = [], [], []
    for name, code in files:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise DataError(f"dataset.{('train', 'valid', 'test')[code]}_file: {path} does not exist")
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: not a JSON file ({err})") from err
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of {{instruction, input, output}} objects")
        for k, rec in enumerate(records):
            if not isinstance(rec, dict) or "input" not in rec or "output" not in rec:
                raise DataError(f"{path}: sample {k} lacks the 'input' or 'output' field")
            answer = str(rec["output"]).strip()
            if answer not in ANSWERS:
                raise DataError(f"{path}: sample {k}: output {rec['output']!r} is neither 'Yes.' nor 'No.'")
            try:
                liked, disliked, target = parse_prompt(str(rec["input"]))
            except ValueError as err:
                raise DataError(f"{path}: sample {k}: {err}") from err
            history = [(index(i), 1.0) for i in liked] + [(index(i), 0.0) for i in disliked]
            rows.append((index(target), ANSWERS[answer], history))
            codes.append(code)
            user_ids.append(f"{path.stem}-{k}")
    n = len(rows)
    inter = pd.DataFrame({
        "user": np.arange(n, dtype=np.int64),
        "item": np.asarray([r[0] for r in rows], np.int64),
        "rating": np.asarray([r[1] for r in rows], np.float32),
        "timestamp": np.full(n, -1, np.int64),
        "label": np.asarray([r[1] for r in rows], np.int8),
    })
    inter["history"] = pd.Series([r[2] for r in rows], dtype=object)
    items = pd.DataFrame({
        "item": np.arange(len(item_rows), dtype=np.int64),
        "item_id": pd.Series([item_key(*i) for i in item_rows], dtype=str),
        "title": pd.Series([i[0] for i in item_rows], dtype=str),
        "author": pd.Series([i[1] for i in item_rows], dtype=str),
        "text": pd.Series([item_key(*i) for i in item_rows], dtype=str),
    })
    users = pd.DataFrame({"user": np.arange(n, dtype=np.int64), "user_id": pd.Series(user_ids, dtype=str)})
    return RecData(f"tallrec-json:{folder.name}", inter, items, users,
                   {"given": np.asarray(codes, np.int8)}).validate()


class TallrecJson(Reader, TallrecJsonReaderConfig):
    """`dataset=tallrec_json`: `read_tallrec_json` of `train_file`, `valid_file`, `test_file`. Not cached: the
    files may lie outside dataset.dir, and parsing them takes well under a second."""

    cached = False

    def read(self, folder: Path) -> RecData:
        return read_tallrec_json(folder, self.train_file, self.valid_file, self.test_file)
