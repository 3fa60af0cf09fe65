"""MovieLens 25M (dataset=ml25m): the reader on files in the release's exact CSV format, its errors, its
offline message, and one run through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes_releases import ml25m_catalogue, write_ml25m

from recsys_fewshot.data import ml25m
from recsys_fewshot.data.recdata import DataError

REPO = Path(__file__).resolve().parents[2]


def test_reads_the_release_format(tmp_path):
    folder = write_ml25m(tmp_path / "ml-25m")
    ratings, movies, _ = ml25m_catalogue()
    data = ml25m.read_ml25m(folder)
    inter = data.interactions
    assert (len(inter), data.n_users, data.n_items, data.name) == (len(ratings), 60, 40, "ml-25m")
    assert inter.dtypes.to_dict() == {"user": np.int64, "item": np.int64, "rating": np.float32,
                                      "timestamp": np.int64}
    got = set(zip(data.user_raw_ids()[inter["user"]], data.item_raw_ids()[inter["item"]], inter["rating"],
                  inter["timestamp"]))
    assert got == {(str(u), str(i), float(r), t) for u, i, r, t in ratings.itertuples(index=False)}
    assert 3.5 in set(inter["rating"]) and list(data.user_raw_ids()) == [str(u) for u in range(1, 61)]
    items = data.items
    assert list(items["item_id"]) == [str(10 * k) for k in range(1, 41)] and 39 not in set(inter["item"])
    assert items["title"].iloc[0].startswith("Café ")  # UTF-8
    assert items["title"].iloc[1].endswith(", The") and items["title"].iloc[2].startswith('"')  # quoted commas, quotes
    assert items["year"].iloc[1] == movies["title"].iloc[1][-5:-1]
    assert items["genres"].iloc[3] == ""  # "(no genres listed)"
    assert list(items["tags"].iloc[:4]) == ["pixar|funny|fun, but long", "dark|slow", "a/b", ""]


def test_top_tags_and_no_tags(tmp_path):
    folder = write_ml25m(tmp_path / "ml-25m")
    assert list(ml25m.read_ml25m(folder, top=1).items["tags"].iloc[:3]) == ["pixar", "dark", "a/b"]
    assert set(ml25m.read_ml25m(folder, top=0).items["tags"]) == {""}
    (folder / "tags.csv").unlink()  # optional
    assert set(ml25m.read_ml25m(folder).items["tags"]) == {""}


def test_text_template_with_tags(tmp_path):
    from recsys_fewshot.data.text import render_texts

    data = ml25m.read_ml25m(write_ml25m(tmp_path / "ml-25m"))
    texts = render_texts(data.items, "{title} ({year}). Genres: {genres}. Tags: {tags}.", ["genres", "tags"])
    row = data.items.iloc[0]
    assert texts[0] == f"{row.title} ({row.year}). Genres: {row.genres.replace('|', ', ')}. Tags: pixar, funny, fun, but long."
    assert texts[3] == f"{data.items.title.iloc[3]} ({data.items.year.iloc[3]})."  # no genres, no tags: no debris


def edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize(("file", "line", "text", "pattern"), [
    ("ratings.csv", 5, "1,20,x,880521192", r"ratings\.csv: column 'rating' line 5: expected a number, got 'x'"),
    ("ratings.csv", 7, "1,20,3.0", r"ratings\.csv: column 'timestamp' line 7: expected an integer"),
    ("ratings.csv", 6, "1,20,3.0,880521192,9",
     r"ratings\.csv line 6: expected 4 comma-separated fields \(userId,movieId,rating,timestamp\), got 5"),
    ("ratings.csv", 4, "1,20,5.5,880521192", r"ratings\.csv: column 'rating' line 4: rating 5\.5 is outside the scale"),
    ("ratings.csv", 4, "1,20,3.2,880521192", r"ratings\.csv: column 'rating' line 4: 3\.2 is not a half star"),
    ("ratings.csv", 3, "1,25,3.0,880521192", r"ratings\.csv line 3: movieId 25 is not in movies\.csv"),
    ("ratings.csv", 1, "user,movie,rating,timestamp", r"ratings\.csv line 1: the header should read userId,movieId"),
    ("tags.csv", 3, "2,15,funny,1500000001", r"tags\.csv line 3: movieId 15 is not in movies\.csv"),
    ("movies.csv", 3, "10,Again (1990),Drama", r"movies\.csv: column 'movieId' repeats the id 10"),
])
def test_a_bad_line_is_named(tmp_path, file, line, text, pattern):
    folder = write_ml25m(tmp_path / "ml-25m")
    edit_line(folder / file, line, text)
    with pytest.raises(DataError, match=pattern):
        ml25m.read_ml25m(folder)


def test_offline_names_the_release_and_where_it_goes(tmp_path, monkeypatch):
    from inprocess import compose

    from recsys_fewshot import build

    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        build.load_data(compose("dataset=ml25m", f"dataset.root={root}"))
    message = str(err.value)
    for part in ("MovieLens 25M", "https://files.grouplens.org/datasets/movielens/ml-25m.zip", str(root),
                 "ratings.csv, movies.csv, tags.csv", "its folder ml-25m/ becomes ml-25m/"):
        assert part in message, message


def test_another_csv_release_is_read_from_its_folder_without_download(tmp_path, monkeypatch):
    """dataset.dir=<root>/ml-32m: the same reader, named after the folder, and no download tried."""
    from inprocess import compose

    from recsys_fewshot import build

    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    write_ml25m(tmp_path / "ml-32m")
    data = build.load_data(compose("dataset=ml25m", f"dataset.root={tmp_path}", "dataset.dir=ml-32m",
                                   f"cache_dir={tmp_path / 'cache'}"))
    assert data.name == "ml-32m" and data.n_items == 40


@pytest.mark.slow
def test_one_run_through_the_cli(tmp_path):
    root = tmp_path / "data"
    write_ml25m(root / "ml-25m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSYS_FEWSHOT_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", "dataset=ml25m", f"dataset.root={root}",
                           f"cache_dir={tmp_path / 'cache'}", "encoder=none", "logger=none", "split=temporal",
                           "trainer.progress=false", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "ml-25m" and metrics["split"]["protocol"] == "temporal"
    assert sum(metrics["split"][p] for p in ("train", "valid", "test")) == len(ml25m_catalogue()[0])
    assert np.isfinite(metrics["test"]["rmse"])


def test_tags_are_kg_triples_beside_the_genres(tmp_path):
    from recsys_fewshot.kg.graph import attribute_triples

    named = attribute_triples(ml25m.read_ml25m(write_ml25m(tmp_path / "ml-25m"))).named()
    # the generic attribute path: a relation per column (has_<column>), the year as the release decade
    assert {("item:10", "has_tags", "tags:pixar"), ("item:10", "has_tags", "tags:fun, but long"),
            ("item:20", "has_tags", "tags:dark"), ("item:10", "has_genres", "genres:Sci-Fi"),
            ("item:10", "released_in", "decade:1950s")} <= named
    assert not any(h == "item:40" and r == "has_genres" for h, r, _ in named)  # "(no genres listed)"
