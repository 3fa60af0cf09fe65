"""Last.fm HetRec 2011 (``dataset=lastfm``): the ``hetrec2011-lastfm-2k`` release of GroupLens.

Tab-separated files with a header line, no quoting (a name may hold ``"``: ``"Weird Al" Yankovic``):

* ``user_artists.dat``: ``userID  artistID  weight``, the user's play count of the artist (their 50 most played);
* ``artists.dat``: ``id  name  url  pictureURL`` (UTF-8; ISO-8859-1 is read too);
* ``tags.dat``: ``tagID  tagValue`` (ISO-8859-1) and, optional, ``user_taggedartists.dat``
  (``userID  artistID  tagID  day  month  year``) or ``user_taggedartists-timestamps.dat``
  (``userID  artistID  tagID  timestamp``): who gave an artist which tag.

Plays are implicit feedback: every (user, artist) row is a positive (``rating`` is NaN, the task ranking), and
the play count is kept in the interactions' ``plays`` column, which no model reads. The listening data has no
timestamps (``timestamp`` is -1). Items are the artists: ``name`` and ``tags``, the artist's `top_tags` most given
tags (``|``-joined; empty without a tag-assignment file), which `kg=attributes` turns into item -> tag triples.
``user_friends.dat`` is not read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from recsys_fewshot.config import LastFmReaderConfig
from recsys_fewshot.data.checks import parse_numbers
from recsys_fewshot.data.download import RemoteFile, fetch
from recsys_fewshot.data.ml25m import item_codes
from recsys_fewshot.data.recdata import DataError, RecData
from recsys_fewshot.data.sources import Download, Reader, _int_ids, _require

log = logging.getLogger("recsys_fewshot.data")

# sha256 from ISG-Siegen/OmniRec's registry (src/omnirec/data_loaders/hetrec_lastfm.py, commit 79cb11648d10);
# sisinflab/DataRec pins its md5, 296d61afe4e8632b173fc2dd3be20ce2 (datarec/datasets/lastfm/lastfm_2011.py).
LASTFM_FILES = (RemoteFile("https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
                           "sha256:6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
                           provides=("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat",
                                     "user_friends.dat"), archive=True),)
LASTFM_DIR = "lastfm-hetrec2011-2k"
TAG_FILES = {"user_taggedartists.dat": ("userID", "artistID", "tagID", "day", "month", "year"),
             "user_taggedartists-timestamps.dat": ("userID", "artistID", "tagID", "timestamp")}


def decode(raw: bytes) -> str:
    """UTF-8 (the release's artists.dat), else ISO-8859-1 (its tags.dat): a text in ISO-8859-1 with accents is
    almost never valid UTF-8, and the reverse never happens, so the first that decodes is the file's."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_tsv(path: Path, header: Sequence[str]) -> dict[str, pd.Series]:
    """A tab-separated file with the header `header`: its columns as strings, rows in file order (row k is
    line k + 2). Hand-split rather than read by pandas: fields hold quotes that are not quoting, and the
    message of a bad line must name it (a missing field would read as NaN)."""
    lines = decode(_require(path).read_bytes()).replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():  # the final line end
        lines.pop()
    if not lines or lines[0].lstrip("\ufeff").split("\t") != list(header):
        found = lines[0][:120] if lines else ""
        raise DataError(f"{path} line 1: the header should read {' TAB '.join(header)}, got {found!r}")
    rows = [line.split("\t") for line in lines[1:]]
    for number, fields in enumerate(rows, 2):
        if len(fields) != len(header):
            raise DataError(f"{path} line {number}: expected {len(header)} tab-separated fields "
                            f"({', '.join(header)}), got {len(fields)}")
    return {name: pd.Series([r[k] for r in rows], dtype=object) for k, name in enumerate(header)}


def _ints(column: pd.Series, path: Path, name: str) -> np.ndarray:
    return parse_numbers(column, path, name, 2, integer=True).astype(np.int64)


def _lookup_table(ids: np.ndarray) -> np.ndarray:
    table = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
    table[ids] = np.arange(len(ids))
    return table


def _tag_file(folder: Path) -> Optional[Path]:
    return next((folder / name for name in TAG_FILES if (folder / name).is_file()), None)


def top_tags(folder: Path, artist_lookup: np.ndarray, n_items: int, top: int) -> list[str]:
    """Each artist's `top` tags by the number of users who gave it (ties: the tag given first), ``|``-joined;
    all empty without a tag-assignment file. Assignments naming an artist or a tag the other files lack are
    skipped, and counted in a warning."""
    path = _tag_file(folder)
    if path is None or top <= 0:
        return [""] * n_items
    tags_path = folder / "tags.dat"
    tags = read_tsv(tags_path, ("tagID", "tagValue"))
    tag_ids = _int_ids(tags["tagID"], tags_path, "tagID").to_numpy()
    values = tags["tagValue"].str.strip().str.replace("|", "/", regex=False).to_numpy()  # "|" separates the list
    given = read_tsv(path, TAG_FILES[path.name])
    artists, tag_of = _ints(given["artistID"], path, "artistID"), _ints(given["tagID"], path, "tagID")
    _ints(given["userID"], path, "userID")
    tag_lookup = _lookup_table(tag_ids)
    items = np.where((artists >= 0) & (artists < len(artist_lookup)),
                     artist_lookup[np.clip(artists, 0, max(len(artist_lookup) - 1, 0))], -1)
    tag_rows = np.where((tag_of >= 0) & (tag_of < len(tag_lookup)),
                        tag_lookup[np.clip(tag_of, 0, max(len(tag_lookup) - 1, 0))], -1)
    known = (items >= 0) & (tag_rows >= 0)
    if not known.all():
        log.warning("%s: %d of %d tag assignments name an artist not in artists.dat or a tag not in tags.dat; "
                    "skipped", path, int((~known).sum()), len(known))
    counts = (pd.DataFrame({"item": items[known], "tag": tag_rows[known]})
              .groupby(["item", "tag"], sort=False).size().reset_index(name="n")
              .sort_values(["item", "n"], ascending=[True, False], kind="stable").groupby("item").head(top))
    counts["value"] = values[counts["tag"].to_numpy()]
    out = [""] * n_items
    for item, joined in counts[counts["value"] != ""].groupby("item", sort=False)["value"].agg("|".join).items():
        out[int(item)] = joined
    return out


def read_lastfm(folder: Path, top: int = 10) -> RecData:
    """Last.fm HetRec 2011: users' most played artists as implicit positives, artists' names and top tags."""
    folder = Path(folder)
    artists_path, plays_path = folder / "artists.dat", folder / "user_artists.dat"
    artists = read_tsv(artists_path, ("id", "name", "url", "pictureURL"))
    artist_ids = _int_ids(artists["id"], artists_path, "id").to_numpy()
    if len(artist_ids) and artist_ids.min() < 0:
        raise DataError(f"{artists_path}: column 'id': negative id {int(artist_ids.min())}")
    lookup = _lookup_table(artist_ids)
    items = pd.DataFrame({
        "item": np.arange(len(artist_ids), dtype=np.int64),
        "item_id": pd.Series(artist_ids.astype(str), dtype=str),
        "name": pd.Series(artists["name"].str.strip().to_numpy(), dtype=str),
        "tags": pd.Series(top_tags(folder, lookup, len(artist_ids), top), dtype=str),
    })

    plays = read_tsv(plays_path, ("userID", "artistID", "weight"))
    user_raw = _ints(plays["userID"], plays_path, "userID")
    count = _ints(plays["weight"], plays_path, "weight")
    if (count < 0).any():
        i = int(np.flatnonzero(count < 0)[0])
        raise DataError(f"{plays_path}: column 'weight' line {i + 2}: a play count cannot be negative, got {count[i]}")
    item = item_codes(lookup, _ints(plays["artistID"], plays_path, "artistID"), plays_path, "artistID",
                      "artists.dat", 2)
    user_ids, user = np.unique(user_raw, return_inverse=True)
    pairs = pd.Series(user * len(artist_ids) + item)
    repeated = pairs.duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        first = int(np.flatnonzero((pairs == pairs.iloc[i]).to_numpy())[0])
        raise DataError(f"{plays_path} line {i + 2}: user {user_raw[i]} and artist {plays['artistID'].iloc[i]} "
                        f"are listed again (first on line {first + 2}); each pair holds one play count")
    interactions = pd.DataFrame({
        "user": user.astype(np.int64),
        "item": item,
        "rating": np.full(len(item), np.nan, dtype=np.float32),  # implicit: every row is a positive
        "timestamp": np.full(len(item), -1, dtype=np.int64),  # the listening data has no time
        "plays": count,
    })
    users = pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int64),
                          "user_id": pd.Series(user_ids.astype(str), dtype=str)})
    return RecData("lastfm-hetrec2011-2k", interactions, items, users, implicit=True).validate()


def ensure_lastfm(root: Path) -> Path:
    return fetch("Last.fm HetRec 2011", LASTFM_DIR, LASTFM_FILES, root)


class LastFm(Reader, LastFmReaderConfig):
    download = Download(LASTFM_DIR, ensure_lastfm)

    def read(self, folder: Path) -> RecData:
        return read_lastfm(folder, self.top_tags)

    def items_file(self) -> str:
        return "artists.dat"
