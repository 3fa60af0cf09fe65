"""Small data sets in the real file formats, with a planted signal a recommender can learn.

The signal: six genres, each item has one main genre (plus sometimes a second one) whose name is a
word of its title, and each user likes two genres. Ratings are high for the liked genres and low
otherwise (plus an item quality and noise), so both the IDs and the item TEXT predict ratings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")  # real MovieLens genre names
ML_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
             "War", "Western")
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
               "retired", "salesman", "scientist", "student", "technician", "writer")
FILLER = ("Silver", "Harbor", "Paper", "Garden", "North", "Winter", "Golden", "Stone", "Blue", "Little",
          "Hidden", "Broken", "Second", "Quiet", "Long", "Open", "Distant", "Crystal", "Morning", "Iron",
          "Velvet", "Empty", "Final", "Lucky", "Wild", "Summer", "Copper", "Hollow", "Bright", "Narrow")
NON_ASCII_WORD = "Café"  # the first item's title starts with it (latin-1 in u.item, UTF-8 in CSV)


def planted_catalogue(n_users: int = 60, n_items: int = 40, n_per_user: int = 15,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, items, users) with integer raw ids 1..n; deterministic for ``seed``.

    ratings: user_id, item_id, rating (int 1..5), timestamp (sorted by user, then time; ties occur);
    items: item_id, title (2 filler words + the main genre's name), year (int), genres ("|"-joined in
    MovieLens order; the main genre is the title's last word); users: user_id, age, gender, occupation.
    """
    if not 0 < n_per_user <= n_items:
        raise ValueError(f"n_per_user must be in 1..n_items, got {n_per_user} for {n_items} items")
    rng = np.random.default_rng(seed)
    main = rng.permutation(np.arange(n_items) % len(GENRES))
    second = np.where(rng.random(n_items) < 0.4, (main + rng.integers(1, len(GENRES), n_items)) % len(GENRES), -1)
    quality = rng.choice([-0.5, 0.0, 0.5], n_items)
    words = rng.choice(len(FILLER), (n_items, 2))
    titles = [f"{FILLER[a]} {FILLER[b]} {GENRES[g]}" for (a, b), g in zip(words, main)]
    titles[0] = f"{NON_ASCII_WORD} {titles[0].split(' ', 1)[1]}"
    items = pd.DataFrame({
        "item_id": np.arange(1, n_items + 1),
        "title": titles,
        "year": rng.integers(1950, 2000, n_items),
        "genres": ["|".join(GENRES[g] for g in sorted({m, s}) if g >= 0) for m, s in zip(main, second)],
    })

    likes = np.stack([rng.choice(len(GENRES), 2, replace=False) for _ in range(n_users)])
    users = pd.DataFrame({
        "user_id": np.arange(1, n_users + 1),
        "age": rng.integers(18, 66, n_users),
        "gender": rng.choice(["M", "F"], n_users),
        "occupation": rng.choice(OCCUPATIONS, n_users),
    })

    rows = []
    for u in range(n_users):
        chosen = rng.choice(n_items, n_per_user, replace=False)
        liked = np.isin(main[chosen], likes[u])
        score = 3 + np.where(liked, 1.5, -1.0) + quality[chosen] + rng.normal(0, 0.5, n_per_user)
        steps = np.where(rng.random(n_per_user) < 0.25, 0, rng.integers(60, 86_400, n_per_user))
        times = 880_000_000 + int(rng.integers(0, 5_000_000)) + np.cumsum(steps)
        rows.append(pd.DataFrame({"user_id": u + 1, "item_id": chosen + 1,
                                  "rating": np.clip(np.round(score), 1, 5).astype(np.int64), "timestamp": times}))
    ratings = pd.concat(rows, ignore_index=True)
    return ratings, items, users


def write_ml100k(folder: Path, n_users: int = 60, n_items: int = 40, n_per_user: int = 15, seed: int = 0) -> Path:
    """The ML-100K files for the planted catalogue: u.data (shuffled), u.item (latin-1), u.genre, u.user,
    u.occupation, u1.base/u1.test (seeded 80/20, with test items that u1.base lacks).

    The last item also carries the "unknown" genre flag, so it reads back as ``"unknown|<genres>"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ratings, items, users = planted_catalogue(n_users, n_items, n_per_user, seed)
    rng = np.random.default_rng(seed + 1)

    def tsv(frame: pd.DataFrame) -> str:
        return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in frame.itertuples(index=False))

    (folder / "u.data").write_text(tsv(ratings.iloc[rng.permutation(len(ratings))]), encoding="ascii")
    lines = []
    for k, row in enumerate(items.itertuples(index=False)):
        flags = [int(g in row.genres.split("|")) for g in ML_GENRES]
        flags[0] = int(k == len(items) - 1)
        url = "http://us.imdb.com/M/title-exact?" + row.title.replace(" ", "%20")
        lines.append(f"{row.item_id}|{row.title} ({row.year})|01-Jan-{row.year}||{url}|"
                     + "|".join(map(str, flags)))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(ML_GENRES)) + "\n")
    zips = rng.integers(10_000, 99_999, len(users))
    (folder / "u.user").write_text("".join(f"{r.user_id}|{r.age}|{r.gender}|{r.occupation}|{z}\n"
                                           for r, z in zip(users.itertuples(index=False), zips)))
    (folder / "u.occupation").write_text("".join(f"{o}\n" for o in OCCUPATIONS))

    # 80/20 split; every rating of the least-rated item goes to test, so u1.base lacks that item
    counts = ratings["item_id"].value_counts()
    cold = ratings["item_id"] == counts.index[counts.argmin()]
    n_test = max(int(round(0.2 * len(ratings))), int(cold.sum()))
    others = rng.permutation(np.flatnonzero(~cold.to_numpy()))[: n_test - int(cold.sum())]
    is_test = cold.to_numpy().copy()
    is_test[others] = True
    for name, mask in (("u1.base", ~is_test), ("u1.test", is_test)):
        (folder / name).write_text(tsv(ratings[mask].sort_values(["user_id", "item_id"])))
    return folder


def csv_ids(prefix: str, numbers: pd.Series, width: int) -> pd.Series:
    """Raw integer ids 1..n -> non-contiguous string ids, e.g. user 5 -> "u017"."""
    return numbers.map(lambda k: f"{prefix}{3 * k + 2:0{width}d}")


def write_csv_dataset(folder: Path, presplit: bool = True, n_users: int = 60, n_items: int = 40,
                      n_per_user: int = 15, seed: int = 0) -> Path:
    """The plain CSV format: train/valid/test.csv (seeded 80/10/10 of the rows) or interactions.csv,
    plus items.csv (item_id,title,genres) and users.csv; ids like "u017" / "i0042"."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ratings, items, users = planted_catalogue(n_users, n_items, n_per_user, seed)
    ratings = ratings.assign(user_id=csv_ids("u", ratings["user_id"], 3), item_id=csv_ids("i", ratings["item_id"], 4))
    items = items.assign(item_id=csv_ids("i", items["item_id"], 4))[["item_id", "title", "genres"]]
    users = users.assign(user_id=csv_ids("u", users["user_id"], 3))
    items.to_csv(folder / "items.csv", index=False)
    users.to_csv(folder / "users.csv", index=False)
    if not presplit:
        ratings.to_csv(folder / "interactions.csv", index=False)
        return folder
    part = np.random.default_rng(seed + 2).choice(3, len(ratings), p=[0.8, 0.1, 0.1])
    for code, name in enumerate(("train", "valid", "test")):
        ratings[part == code].to_csv(folder / f"{name}.csv", index=False)
    return folder


def write_unisrec_files(folder: Path, name: str, sequences: list[list[int]], asins: list[str],
                        reviewers: list[str], texts: list[str], max_history: int = 50) -> Path:
    """The six UniSRec atomic files for given per-user item-index sequences (user k = reviewers[k])."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    parts = {"train": [header], "valid": [header], "test": [header]}
    for u, seq in enumerate(sequences):
        def row(p: int) -> str:
            return f"{u}\t{' '.join(map(str, seq[max(0, p - max_history):p]))}\t{seq[p]}\n"
        parts["train"].extend(row(p) for p in range(len(seq) - 3, 0, -1))  # newest first, as UniSRec writes
        parts["valid"].append(row(len(seq) - 2))
        parts["test"].append(row(len(seq) - 1))
    for part, lines in parts.items():
        (folder / f"{name}.{part}.inter").write_text("".join(lines))
    (folder / f"{name}.item2index").write_text("".join(f"{a}\t{k}\n" for k, a in enumerate(asins)))
    (folder / f"{name}.user2index").write_text("".join(f"{r}\t{k}\n" for k, r in enumerate(reviewers)))
    by_asin = sorted(zip(asins, texts))
    (folder / f"{name}.text").write_text("item_id:token\ttext:token_seq\n"
                                         + "".join(f"{a}\t{t}\n" for a, t in by_asin))
    return folder


def write_amazon_unisrec(folder: Path, name: str = "Scientific", n_users: int = 30, n_items: int = 25,
                         seed: int = 0) -> Path:
    """UniSRec-format files: n_users sequences of 5..12 items over all n_items items (each used at least
    once); items are indexed by first appearance, like UniSRec; each user favours two of the GENRES."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 13, n_users)
    if lengths.sum() < n_items:
        raise ValueError(f"{n_users} users cannot cover {n_items} items; use more users")
    category = rng.permutation(np.arange(n_items) % len(GENRES))
    flat = np.empty(lengths.sum(), dtype=np.int64)
    owners = np.repeat(np.arange(n_users), lengths)
    for u in range(n_users):
        likes = rng.choice(len(GENRES), 2, replace=False)
        liked = np.flatnonzero(np.isin(category, likes))
        pool = liked if len(liked) else np.arange(n_items)
        flat[owners == u] = np.where(rng.random(lengths[u]) < 0.8, rng.choice(pool, lengths[u]),
                                     rng.integers(0, n_items, lengths[u]))
    flat[rng.choice(len(flat), n_items, replace=False)] = rng.permutation(n_items)  # every item appears
    order = pd.unique(flat)  # raw item k -> index by first appearance
    index_of = {int(raw): k for k, raw in enumerate(order)}
    sequences = [[index_of[int(i)] for i in flat[owners == u]] for u in range(n_users)]
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    asins = [f"B0{''.join(rng.choice(letters, 5))}{k:03d}" for k in range(len(order))]
    reviewers = [f"A{''.join(rng.choice(letters, 9))}{u:04d}" for u in range(n_users)]
    texts = [f"{FILLER[int(raw) % len(FILLER)]} {GENRES[category[raw]]} Kit {int(raw)}. Industrial & Scientific "
             f"{GENRES[category[raw]]} Supplies. Brand{int(raw) % 5}. " for raw in order]
    return write_unisrec_files(folder, name, sequences, asins, reviewers, texts)


# ---------------------------------------------------------------- few-shot CTR samples (TALLRec's formats)
TALLREC_INSTRUCTION = ("Given the user's preference and unpreference, identify whether the user will like the "
                       "target {noun} by answering \"Yes.\" or \"No.\".")


def tallrec_prompt(liked: list[str], disliked: list[str], target: str, noun: str = "movie") -> str:
    """TALLRec's `input` text; items are given as they appear inside the quotes (books: 'T" written by A')."""
    def quote(items: list[str]) -> str:
        return ", ".join(f'"{i}"' for i in items)

    # TALLRec's book files quote the target once more: ""Title" written by Author"
    shown = f'""{target}"' if noun == "book" else f'"{target}"'
    return (f"User Preference: {quote(liked)}\nUser Unpreference: {quote(disliked)}\n"
            f"Whether the user will like the target {noun} {shown}?")


def write_tallrec_json(path: Path, samples: list[tuple[list[str], list[str], str, int]], noun: str = "movie") -> Path:
    """A TALLRec prompt file: samples are (liked, disliked, target, label 0/1)."""
    records = [{"instruction": TALLREC_INSTRUCTION.format(noun=noun),
                "input": tallrec_prompt(liked, disliked, target, noun), "output": "Yes." if label else "No."}
               for liked, disliked, target, label in samples]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import json

    path.write_text(json.dumps(records, indent=4))
    return path


def planted_ctr_samples(n_samples: int = 120, n_items: int = 30, history_len: int = 6,
                        seed: int = 0) -> tuple[list[tuple[list[int], list[int], int, int]], list[str]]:
    """Few-shot CTR samples with a planted signal: each sample's user has a like propensity (seen in its
    history's labels) and each item an appeal set by the genre word of its title (Comedy/Drama/Romance
    liked, the others not). Returns ([(history items, history labels, target, label)], item titles)."""
    rng = np.random.default_rng(seed)
    genre = rng.permutation(np.arange(n_items) % len(GENRES))
    appeal = np.where(np.isin(genre, [1, 2, 4]), 1.5, -1.5)
    titles = [f"{FILLER[k % len(FILLER)]} {FILLER[(3 * k + 1) % len(FILLER)]} {GENRES[g]} {k}"
              for k, g in enumerate(genre)]
    samples = []
    for _ in range(n_samples):
        theta = rng.normal(0, 1.0)
        items = rng.choice(n_items, history_len + 1, replace=False)
        labels = (rng.random(history_len + 1) < 1 / (1 + np.exp(-(theta + appeal[items])))).astype(int)
        samples.append((items[:-1].tolist(), labels[:-1].tolist(), int(items[-1]), int(labels[-1])))
    return samples, titles


def write_ctr_csv(folder: Path, n_samples: int = 120, seed: int = 0, parts=(0.5, 0.25, 0.25)) -> Path:
    """The plain CSV format with CTR samples: train/valid/test.csv with user_id, item_id, label and history
    (``item_id:label`` tokens, oldest first), plus items.csv (item_id, title)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples, titles = planted_ctr_samples(n_samples, seed=seed)
    rows = [{"user_id": f"s{k}", "item_id": f"i{t}", "label": y,
             "history": " ".join(f"i{i}:{v}" for i, v in zip(items, labels))}
            for k, (items, labels, t, y) in enumerate(samples)]
    cuts = np.cumsum([int(round(p * len(rows))) for p in parts])
    for name, a, b in (("train", 0, cuts[0]), ("valid", cuts[0], cuts[1]), ("test", cuts[1], len(rows))):
        pd.DataFrame(rows[a:b]).to_csv(folder / f"{name}.csv", index=False)
    pd.DataFrame({"item_id": [f"i{k}" for k in range(len(titles))], "title": titles}).to_csv(
        folder / "items.csv", index=False)
    return folder
