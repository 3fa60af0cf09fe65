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
