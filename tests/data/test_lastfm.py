"""Last.fm HetRec 2011 (dataset=lastfm): the reader on files in the release's exact format (with and without the
tag assignments), its errors, its offline message, the KG it feeds, one CLI run, and the real shared files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes_releases import LASTFM_ODD_NAMES, lastfm_catalogue, write_lastfm

from recsys_fewshot.data import lastfm
from recsys_fewshot.data.recdata import DataError

REPO = Path(__file__).resolve().parents[2]


def test_reads_the_release_format(tmp_path):
    folder = write_lastfm(tmp_path / "lastfm")
    plays, artists, _, _ = lastfm_catalogue()
    data = lastfm.read_lastfm(folder)
    inter = data.interactions
    assert (len(inter), data.n_users, data.n_items, data.implicit) == (len(plays), 60, 40, True)
    assert inter.dtypes.to_dict() == {"user": np.int64, "item": np.int64, "rating": np.float32,
                                      "timestamp": np.int64, "plays": np.int64}
    assert inter["rating"].isna().all() and (inter["timestamp"] == -1).all()
    got = set(zip(data.user_raw_ids()[inter["user"]], data.item_raw_ids()[inter["item"]], inter["plays"]))
    assert got == {(str(u), str(a), w) for u, a, w in plays.itertuples(index=False)}
    assert list(data.user_raw_ids()) == [str(u) for u in range(2, 62)]
    assert list(data.items["item_id"]) == [str(a) for a in artists["id"]] and 39 not in set(inter["item"])
    assert list(data.items["name"].iloc[:3]) == list(LASTFM_ODD_NAMES)  # quotes kept, UTF-8 decoded
    assert list(data.items["tags"].iloc[:4]) == [f"{_genre(0)}|rock|fußball|hip/hop", f"{_genre(1)}|rock",
                                                 f"{_genre(2)}|rock", f"{_genre(3)}|rock"]  # by users, then order


def _genre(k: int) -> str:
    """The planted genre of artist k: the last word of its catalogue title, as users tag it."""
    from fakes import planted_catalogue

    return planted_catalogue()[1]["title"].iloc[k].split()[-1].lower()


def test_tags_from_the_timestamps_file_or_none(tmp_path):
    with_ts = lastfm.read_lastfm(write_lastfm(tmp_path / "a", tag_file="user_taggedartists-timestamps.dat"))
    plain = lastfm.read_lastfm(write_lastfm(tmp_path / "b"))
    assert list(with_ts.items["tags"]) == list(plain.items["tags"])
    bare = lastfm.read_lastfm(write_lastfm(tmp_path / "c", tag_file=None))  # the shared copy lacks the file
    assert set(bare.items["tags"]) == {""} and len(bare.interactions) == len(plain.interactions)
    assert list(lastfm.read_lastfm(tmp_path / "b", top=1).items["tags"].iloc[1:3]) == [
        plain.items["tags"].iloc[1].split("|")[0], plain.items["tags"].iloc[2].split("|")[0]]


def test_item_text_and_kg(tmp_path):
    from recsys_fewshot.data.text import render_texts
    from recsys_fewshot.kg.graph import attribute_triples

    data = lastfm.read_lastfm(write_lastfm(tmp_path / "lastfm"))
    texts = render_texts(data.items, "{name}. Tags: {tags}.", ["tags"])
    assert texts[1] == f"Röyksopp. Tags: {data.items['tags'].iloc[1].replace('|', ', ')}."
    graph = attribute_triples(data)
    assert graph.relations == ["has_tag"]
    assert {("item:51", "has_tag", "tags:rock"), ("item:51", "has_tag", "tags:fußball"),
            ("item:51", "has_tag", "tags:hip/hop")} <= graph.named()
    bare = lastfm.read_lastfm(write_lastfm(tmp_path / "bare", tag_file=None))
    assert render_texts(bare.items, "{name}. Tags: {tags}.", ["tags"])[0] == '"Weird Al" Yankovic.'
    assert len(attribute_triples(bare).triples) == 0


def replace_line(path: Path, number: int, text: str, encoding: str = "ascii") -> None:
    lines = path.read_bytes().decode(encoding).splitlines()
    lines[number - 1] = text
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))


@pytest.mark.parametrize(("file", "line", "text", "pattern"), [
    ("user_artists.dat", 4, "2\t61", r"user_artists\.dat line 4: expected 3 tab-separated fields "
                                     r"\(userID, artistID, weight\), got 2"),
    ("user_artists.dat", 5, "2\t61\tmany", r"user_artists\.dat: column 'weight' line 5: expected an integer"),
    ("user_artists.dat", 6, "2\t62\t10", r"user_artists\.dat line 6: artistID 62 is not in artists\.dat"),
    ("user_artists.dat", 3, "2\t53\t10", r"user_artists\.dat line 3: user 2 and artist 53 are listed again "
                                         r"\(first on line 2\)"),
    ("user_artists.dat", 7, "2\t61\t-4", r"user_artists\.dat: column 'weight' line 7: a play count cannot be negative"),
    ("user_artists.dat", 1, "user\tartist\tweight", r"user_artists\.dat line 1: the header should read userID TAB"),
    ("artists.dat", 3, "53\tRöyksopp", r"artists\.dat line 3: expected 4 tab-separated fields"),
    ("artists.dat", 4, "51\tTwice\turl\tpic", r"artists\.dat: column 'id' repeats the id 51"),
    ("user_taggedartists.dat", 2, "2\t51\tx\t1\t4\t2009", r"user_taggedartists\.dat: column 'tagID' line 2"),
    ("tags.dat", 2, "1", r"tags\.dat line 2: expected 2 tab-separated fields"),
])
def test_a_bad_line_is_named(tmp_path, file, line, text, pattern):
    folder = write_lastfm(tmp_path / "lastfm")
    encoding = {"artists.dat": "utf-8", "tags.dat": "latin-1"}.get(file, "ascii")
    replace_line(folder / file, line, text, encoding)
    with pytest.raises(DataError, match=pattern):
        lastfm.read_lastfm(folder)


def test_tag_assignments_of_unknown_artists_are_skipped_and_counted(tmp_path, caplog):
    folder = write_lastfm(tmp_path / "lastfm")
    with open(folder / "user_taggedartists.dat", "ab") as f:
        f.write(b"2\t9999\t1\t1\t4\t2009\r\n2\t51\t77\t1\t4\t2009\r\n")
    with caplog.at_level("WARNING", logger="recsys_fewshot.data"):
        data = lastfm.read_lastfm(folder)
    assert "2 of 123 tag assignments name an artist not in artists.dat or a tag not in tags.dat" in caplog.text
    assert list(data.items["tags"]) == list(lastfm.read_lastfm(write_lastfm(tmp_path / "clean")).items["tags"])


def test_offline_names_the_release_and_where_it_goes(tmp_path, monkeypatch):
    from inprocess import compose

    from recsys_fewshot import build

    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        build.load_data(compose("dataset=lastfm", f"dataset.root={root}"))
    message = str(err.value)
    for part in ("Last.fm HetRec 2011", "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
                 f"unpack into {root / 'lastfm-hetrec2011-2k'}", "user_artists.dat, artists.dat, tags.dat"):
        assert part in message, message


@pytest.mark.slow
def test_one_run_through_the_cli(tmp_path):
    root = tmp_path / "data"
    write_lastfm(root / "lastfm-hetrec2011-2k")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSYS_FEWSHOT_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", "dataset=lastfm", f"dataset.root={root}",
                           f"cache_dir={tmp_path / 'cache'}", "encoder=none", "logger=none", "split=cold_items",
                           "head=ease", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "ranking" and metrics["dataset"] == "lastfm-hetrec2011-2k"
    assert sum(metrics["split"][p] for p in ("train", "valid", "test")) == len(lastfm_catalogue()[0])
    assert 0 <= metrics["test"]["ndcg@10"] <= 1


@pytest.mark.realdata
def test_the_shared_copy_reads_with_the_releases_counts():
    root = os.environ.get("RECSYS_FEWSHOT_DATA")
    folder = Path(root or "") / "lastfm-hetrec2011-2k"
    if not root or not folder.is_dir():
        pytest.skip("set RECSYS_FEWSHOT_DATA to a folder holding lastfm-hetrec2011-2k/")
    data = lastfm.read_lastfm(folder)
    assert (data.n_users, data.n_items, len(data.interactions)) == (1_892, 17_632, 92_834)  # the readme's counts
    names = dict(zip(data.items["item_id"], data.items["name"]))
    assert names["1"] == "MALICE MIZER" and names["1686"] == '"Weird Al" Yankovic' and names["707"] == "Metallica"
    user, item, plays = (int(data.interactions[c].iloc[0]) for c in ("user", "item", "plays"))
    assert (data.user_raw_ids()[user], data.item_raw_ids()[item], plays) == ("2", "51", 13_883)
    if not (folder / "user_taggedartists.dat").is_file():
        assert set(data.items["tags"]) == {""}
