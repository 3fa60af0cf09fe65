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


LASTFM_ODD_NAMES = ('"Weird Al" Yankovic', "Röyksopp", "Hopsin, Ak'sent")  # quotes, UTF-8, a comma


def lastfm_catalogue(n_users: int = 60, n_items: int = 40, n_per_user: int = 15,
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(plays, artists, tag assignments, tag values) as `write_lastfm` writes them. Users listen to the artists
    they rated 3 or more in the planted catalogue, more plays the higher the rating; each artist's name holds
    its genre (the first three replaced by odd names), and users tag artists with their genre, lower-cased.
    Ids as in the release: users from 2, artists from 51 (sparse), tags from 1. The last artist is unplayed."""
    ratings, items, _ = planted_catalogue(n_users, n_items, n_per_user, seed)
    rng = np.random.default_rng(seed + 5)
    heard = ratings[(ratings["rating"] >= 3) & (ratings["item_id"] != n_items)]
    plays = pd.DataFrame({"userID": heard["user_id"] + 1, "artistID": heard["item_id"] * 2 + 49,
                          "weight": (10 ** heard["rating"] * rng.uniform(0.5, 1.5, len(heard))).astype(np.int64)})
    plays = plays.sort_values(["userID", "artistID"]).reset_index(drop=True)
    names = list(items["title"])
    names[: len(LASTFM_ODD_NAMES)] = LASTFM_ODD_NAMES
    artists = pd.DataFrame({"id": items["item_id"] * 2 + 49, "name": names})
    values = ["rock", "fußball", "hip|hop"] + [g.lower() for g in ("Action", "Comedy", "Drama", "Horror", "Romance",
                                                                   "Sci-Fi")]
    genre = items["title"].str.split().str[-1].str.lower()
    given = []
    for k, (artist, g) in enumerate(zip(artists["id"], genre)):
        for user in range(2, 2 + 1 + k % 3):  # 1 to 3 users give the genre tag, one user gives "rock"
            given.append((user, artist, values.index(g) + 1))
        given.append((9, artist, 1))
    given.append((5, artists["id"].iloc[0], 2))
    given.append((6, artists["id"].iloc[0], 3))
    tagged = pd.DataFrame(given, columns=["userID", "artistID", "tagID"])
    return plays, artists, tagged, values


def write_lastfm(folder: Path, n_users: int = 60, n_items: int = 40, n_per_user: int = 15, seed: int = 0,
                 tag_file: str | None = "user_taggedartists.dat") -> Path:
    """The hetrec2011-lastfm-2k files as GroupLens ships them: tab-separated with a header, no quoting;
    artists.dat UTF-8 with LF line ends (an empty pictureURL), tags.dat ISO-8859-1, the others ASCII, CRLF.
    `tag_file`: user_taggedartists.dat, user_taggedartists-timestamps.dat, or None (no assignments)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plays, artists, tagged, values = lastfm_catalogue(n_users, n_items, n_per_user, seed)

    def crlf(lines: list[str], encoding: str = "ascii") -> bytes:
        return "".join(line + "\r\n" for line in lines).encode(encoding)

    artist_lines = [f"{a}\t{n}\thttp://www.last.fm/music/{n.replace(' ', '+')}\t"
                    + ("" if k == 1 else f"http://userserve-ak.last.fm/serve/252/{7 * a}.jpg")
                    for k, (a, n) in enumerate(zip(artists["id"], artists["name"]))]
    (folder / "artists.dat").write_bytes(("id\tname\turl\tpictureURL\n" + "\n".join(artist_lines) + "\n").encode())
    (folder / "user_artists.dat").write_bytes(crlf(["userID\tartistID\tweight"] + [
        f"{u}\t{a}\t{w}" for u, a, w in plays.itertuples(index=False)]))
    (folder / "tags.dat").write_bytes(crlf(["tagID\ttagValue"] + [f"{k}\t{v}" for k, v in enumerate(values, 1)],
                                           "latin-1"))
    if tag_file == "user_taggedartists.dat":
        (folder / tag_file).write_bytes(crlf(["userID\tartistID\ttagID\tday\tmonth\tyear"] + [
            f"{u}\t{a}\t{t}\t1\t4\t2009" for u, a, t in tagged.itertuples(index=False)]))
    elif tag_file is not None:
        (folder / tag_file).write_bytes(crlf(["userID\tartistID\ttagID\ttimestamp"] + [
            f"{u}\t{a}\t{t}\t1238536800000" for u, a, t in tagged.itertuples(index=False)]))
    (folder / "user_friends.dat").write_bytes(crlf(["userID\tfriendID", "2\t3", "3\t2"]))
    return folder
