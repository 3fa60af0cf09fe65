#!/usr/bin/env python
"""Synthetic plain-CSV data with a planted signal, for benchmarks only (never a default data set).

    python scripts/make_synthetic.py OUT_DIR --interactions 1000000 --users 100000 --items 50000 --seed 0

Writes OUT_DIR/interactions.csv (user_id,item_id,rating,timestamp) and OUT_DIR/items.csv
(item_id,title,genres). The signal: items belong to topics; each user prefers three topics and draws
90% of their items from them (popular items more often, Zipf-like); ratings are higher on preferred
topics; an item's title and genres name its topic, so the text carries the signal too.
Deterministic for a seed; (user, item) pairs are unique.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

WORDS = ("amber", "basalt", "cinder", "delta", "ember", "fjord", "glacier", "harbor", "indigo", "jasper", "kelp",
         "lumen", "meadow", "nebula", "onyx", "prairie", "quartz", "reef", "sierra", "tundra", "umber", "vale",
         "willow", "xenon", "yarrow", "zephyr")


def generate(n_interactions: int, n_users: int, n_items: int, seed: int = 0, n_topics: int = 0,
             per_user_topics: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items); `n_topics` 0 means one topic per 500 items (at least 4, at most 100)."""
    rng = np.random.default_rng(seed)
    n_topics = n_topics or int(np.clip(n_items // 500, 4, 100))
    topic_of_item = np.sort(rng.integers(0, n_topics, n_items))  # contiguous item ranges per topic
    starts = np.searchsorted(topic_of_item, np.arange(n_topics))
    sizes = np.diff(np.append(starts, n_items))
    prefs = np.stack([rng.choice(n_topics, per_user_topics, replace=False) for _ in range(n_users)])

    oversample = 1.08  # a few duplicates are dropped below; dense data (10M pairs of 5e9) draws again with more
    while True:
        want = int(n_interactions * oversample) + 1000
        users = np.sort(rng.integers(0, n_users, want))
        on_topic = rng.random(want) < 0.9
        topics = np.where(on_topic, prefs[users, rng.integers(0, per_user_topics, want)],
                          rng.integers(0, n_topics, want))
        empty = sizes[topics] == 0
        topics[empty] = topic_of_item[rng.integers(0, n_items, int(empty.sum()))]
        offset = np.floor(sizes[topics] * rng.random(want) ** 2.5).astype(np.int64)  # popular items first
        items = starts[topics] + np.minimum(offset, sizes[topics] - 1)
        keys = users.astype(np.int64) * n_items + items
        _, first = np.unique(keys, return_index=True)
        if len(first) >= n_interactions:
            break
        if oversample > 2.0:
            raise ValueError(f"only {len(first)} distinct (user, item) pairs drawn for {n_interactions} wanted: "
                             "use more users or items")
        oversample *= 1.25
    keep = np.sort(rng.choice(first, n_interactions, replace=False))
    users, items, on_topic = users[keep], items[keep], on_topic[keep]
    liked = (prefs[users] == topic_of_item[items][:, None]).any(1)
    quality = rng.normal(0, 0.5, n_items)
    score = 3.0 + np.where(liked, 1.2, -1.0) + quality[items] + rng.normal(0, 0.6, len(users))
    ratings = np.clip(np.round(score), 1, 5).astype(np.int8)
    timestamps = 1_000_000_000 + np.arange(len(users), dtype=np.int64) * 7  # increasing within each user
    inter = pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings, "timestamp": timestamps})

    word = np.asarray(WORDS)
    t_words = word[np.arange(n_topics) % len(WORDS)]
    t_words2 = word[(np.arange(n_topics) // len(WORDS)) % len(WORDS)]
    # own stream: the item texts depend on (seed, items) only, so sizes share one embedding cache
    fillers = word[np.random.default_rng([seed, 1]).integers(0, len(WORDS), (n_items, 2))]
    titles = [f"{a} {b} {t1} {t2}" for (a, b), t1, t2 in
              zip(fillers, t_words[topic_of_item], t_words2[topic_of_item])]
    genres = [f"{t1}|{t2}" for t1, t2 in zip(t_words[topic_of_item], t_words2[topic_of_item])]
    items_frame = pd.DataFrame({"item_id": np.arange(n_items), "title": titles, "genres": genres})
    return inter, items_frame


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    inter, items = generate(args.interactions, args.users, args.items, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(items, args.out / "items.csv")
    write_csv_atomic(inter, args.out / "interactions.csv")
    print(f"{args.out}: {len(inter):,} interactions, {inter.user_id.nunique():,} users, {len(items):,} items")


if __name__ == "__main__":
    main()
