"""Small copies of public releases in their exact file formats (separators, encodings, quoting, headers), with
the planted signal of `fakes.planted_catalogue`, for the readers' tests and tiny end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fakes import planted_catalogue

ML1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)  # users.dat's age groups (lower bounds)


def ml1m_age_code(age: int) -> int:
    return max(c for c in ML1M_AGE_CODES if c <= max(age, 1))


def write_ml1m(folder: Path, n_users: int = 60, n_items: int = 40, n_per_user: int = 15, seed: int = 0) -> Path:
    """ratings.dat / movies.dat / users.dat as GroupLens ships ML-1M: ``::``-separated, no header, LF line ends,
    ISO-8859-1 (the first title starts with "Café"); the second title holds a comma ("..., The"), the third a
    colon, and the last movie is never rated. Ratings are sorted by user, as in the release."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ratings, items, users = planted_catalogue(n_users, n_items, n_per_user, seed)
    ratings = ratings[ratings["item_id"] != n_items]
    titles = list(items["title"])
    titles[1] = f"{titles[1]}, The"
    titles[2] = f"Star Wars: {titles[2]}"
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in
                                                ratings.itertuples(index=False)), encoding="ascii")
    (folder / "movies.dat").write_bytes("".join(f"{i}::{t} ({y})::{g}\n" for i, t, y, g in
                                                zip(items["item_id"], titles, items["year"], items["genres"]))
                                        .encode("latin-1"))
    occupations = np.random.default_rng(seed + 3).integers(0, 21, len(users))
    (folder / "users.dat").write_text("".join(f"{r.user_id}::{r.gender}::{ml1m_age_code(r.age)}::{o}::{10_000 + 7 * r.user_id}\n"
                                              for r, o in zip(users.itertuples(index=False), occupations)),
                                      encoding="ascii")
    return folder


def ml1m_expected(n_users: int = 60, n_items: int = 40, n_per_user: int = 15,
                  seed: int = 0) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """What `write_ml1m` wrote: (ratings, titles, occupation codes)."""
    ratings, items, _ = planted_catalogue(n_users, n_items, n_per_user, seed)
    titles = list(items["title"])
    titles[1] = f"{titles[1]}, The"
    titles[2] = f"Star Wars: {titles[2]}"
    return ratings[ratings["item_id"] != n_items], titles, np.random.default_rng(seed + 3).integers(0, 21, n_users)


def ml25m_catalogue(n_users: int = 60, n_items: int = 40, n_per_user: int = 15,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, movies, tags) as `write_ml25m` writes them: half-star ratings sorted by user, the last movie
    unrated; titles with "Café" (UTF-8), a comma, and double quotes; the fourth movie without genres."""
    ratings, items, _ = planted_catalogue(n_users, n_items, n_per_user, seed)
    ratings = ratings[ratings["item_id"] != n_items].reset_index(drop=True)
    halves = np.random.default_rng(seed + 4).random(len(ratings)) < 0.3
    ratings = ratings.assign(rating=ratings["rating"] - np.where(halves & (ratings["rating"] > 1), 0.5, 0.0))
    titles = list(items["title"])
    titles[1] = f"{titles[1]}, The"
    titles[2] = f'"{titles[2]}" Live'
    movies = pd.DataFrame({"movieId": items["item_id"] * 10,  # sparse ids, as in the release
                           "title": [f"{t} ({y})" for t, y in zip(titles, items["year"])],
                           "genres": list(items["genres"])})
    movies.loc[3, "genres"] = "(no genres listed)"
    ratings = ratings.assign(item_id=ratings["item_id"] * 10)
    tags = pd.DataFrame({"userId": [1, 2, 3, 4, 1, 2, 5, 3],
                         "movieId": [10, 10, 10, 10, 20, 20, 20, 30],
                         "tag": ["Pixar", "funny", "pixar", "fun, but long", "dark", "dark", "slow", "A|B"],
                         "timestamp": 1_500_000_000 + np.arange(8)})
    return ratings, movies, tags


def write_ml25m(folder: Path, n_users: int = 60, n_items: int = 40, n_per_user: int = 15, seed: int = 0) -> Path:
    """ratings.csv / movies.csv / tags.csv as GroupLens ships ML-25M (ML-20M, ML-32M): a header line,
    commas, fields holding a comma or a quote quoted (quotes doubled), UTF-8, LF line ends."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ratings, movies, tags = ml25m_catalogue(n_users, n_items, n_per_user, seed)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in ratings.itertuples(index=False)), encoding="ascii")
    movies.to_csv(folder / "movies.csv", index=False, encoding="utf-8", lineterminator="\n")
    tags.to_csv(folder / "tags.csv", index=False, encoding="utf-8", lineterminator="\n")
    return folder
