"""MovieLens 1M (dataset=ml1m): the reader on files in the release's exact format, its errors, its download
(a real one, from a server on localhost) and its offline message, and one run through the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fakes_releases import ml1m_expected, write_ml1m

from recsys_fewshot.data import ml1m
from recsys_fewshot.data.download import RemoteFile
from recsys_fewshot.data.recdata import DataError

REPO = Path(__file__).resolve().parents[2]


def test_reads_the_release_format(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    ratings, titles, occupations = ml1m_expected()
    data = ml1m.read_ml1m(folder)
    inter = data.interactions
    assert (len(inter), data.n_users, data.n_items) == (len(ratings), 60, 40) and data.folds == {}
    assert inter.dtypes.to_dict() == {"user": np.int64, "item": np.int64, "rating": np.float32,
                                      "timestamp": np.int64}
    got = set(zip(data.user_raw_ids()[inter["user"]], data.item_raw_ids()[inter["item"]], inter["rating"],
                  inter["timestamp"]))
    assert got == {(str(u), str(i), float(r), t) for u, i, r, t in ratings.itertuples(index=False)}
    assert list(data.items["item_id"]) == [str(k) for k in range(1, 41)]
    assert data.items["title"].iloc[0].startswith("Café ")  # ISO-8859-1 decoded
    assert data.items["title"].iloc[1] == titles[1] and titles[1].endswith(", The")
    assert data.items["title"].iloc[2] == titles[2] and titles[2].startswith("Star Wars: ")
    assert all(len(y) == 4 and y.isdigit() for y in data.items["year"])
    assert 39 not in set(inter["item"])  # the unrated last movie is kept, as ML-100K keeps its own
    users = data.users
    assert list(users.columns) == ["user", "user_id", "age", "gender", "occupation", "zip"]
    assert users["age"].dtype == np.int64 and set(users["age"]) <= {1, 18, 25, 35, 45, 50, 56}
    assert list(users["occupation"]) == [ml1m.ML1M_OCCUPATIONS[c] for c in occupations]
    assert users["zip"].iloc[4] == "10035"


def test_text_and_kg_read_the_tables_as_for_ml100k(tmp_path):
    from recsys_fewshot.data.text import render_texts
    from recsys_fewshot.kg.graph import attribute_triples

    data = ml1m.read_ml1m(write_ml1m(tmp_path / "ml-1m"))
    text = render_texts(data.items, "{title} ({year}). Genres: {genres}.", ["genres"])[1]
    row = data.items.iloc[1]
    assert text == f"{row.title} ({row.year}). Genres: {row.genres.replace('|', ', ')}."
    named = attribute_triples(data).named()
    user = data.users.iloc[0]
    assert ("user:1", "has_occupation", f"occupation:{user.occupation}") in named
    bucket = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}[user.age]
    assert ("user:1", "in_age_group", f"age_bucket:{bucket}") in named


@pytest.mark.parametrize(("file", "edit", "pattern"), [
    ("ratings.dat", lambda t: t.replace("\n", "\n3:17::4::978300760\n", 1),
     r"ratings\.dat line 2: expected 4 whole numbers separated by '::' \(UserID::MovieID::Rating::Timestamp\), "
     r"got '3:17::4::978300760'"),
    ("ratings.dat", lambda t: t.replace("\n", "\n3::17::4.5::978300760\n", 1), r"ratings\.dat line 2: .*'3::17::4\.5"),
    ("ratings.dat", lambda t: t.replace("\n", "\n3::17::6::978300760\n", 1),
     r"ratings\.dat: column 'Rating' line 2: rating 6 is outside the scale \[1, 5\]"),
    ("ratings.dat", lambda t: t.replace("\n", "\n3::999::4::978300760\n", 1),
     r"ratings\.dat line 2: MovieID 999 is not in movies\.dat"),
    ("movies.dat", lambda t: t.replace("\n", "\n99::Lost (1999)\n", 1),
     r"movies\.dat line 2: expected 3 '::'-separated fields \(MovieID::Title::Genres\), got 2"),
    ("users.dat", lambda t: t.replace("\n", "\n61::F::25::21::12345\n", 1),
     r"users\.dat: column 'Occupation' line 2: code 21 is not one of the release's 0\.\.20"),
    ("users.dat", lambda t: t.replace("\n", "\n61::F::x::2::12345\n", 1), r"users\.dat: column 'Age' line 2"),
    ("movies.dat", lambda t: t.replace("\n", "\n1::Again (1990)::Drama\n", 1), r"movies\.dat: .*repeats the id 1"),
])
def test_a_bad_line_is_named(tmp_path, file, edit, pattern):
    folder = write_ml1m(tmp_path / "ml-1m")
    path = folder / file
    path.write_bytes(edit(path.read_bytes().decode("latin-1")).encode("latin-1"))
    with pytest.raises(DataError, match=pattern):
        ml1m.read_ml1m(folder)


def test_missing_file_is_named(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "users.dat").unlink()
    with pytest.raises(DataError, match=r"missing file .*users\.dat"):
        ml1m.read_ml1m(folder)


def a_release_zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("ratings.dat", "movies.dat", "users.dat"):
            archive.write(folder / name, f"ml-1m/{name}")
        archive.writestr("ml-1m/README", "SUMMARY\n")
    return buffer.getvalue()


def test_downloaded_through_the_build_path_when_missing(tmp_path, monkeypatch):
    """The release zip served over HTTP on localhost: fetched, checked, unpacked into <root>/ml-1m, read."""
    import functools
    import http.server
    import threading

    from inprocess import compose

    from recsys_fewshot import build

    payload = a_release_zip(write_ml1m(tmp_path / "src"))
    www = tmp_path / "www"
    www.mkdir()
    (www / "ml-1m.zip").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("RECSYS_FEWSHOT_OFFLINE", raising=False)
        served = RemoteFile(f"http://127.0.0.1:{server.server_address[1]}/ml-1m.zip",
                            "sha256:" + hashlib.sha256(payload).hexdigest(), provides=ml1m.ML1M_FILES[0].provides,
                            archive=True, strip="ml-1m")
        monkeypatch.setattr(ml1m, "ML1M_FILES", (served,))
        root = tmp_path / "root"
        data = build.load_data(compose("dataset=ml1m", f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}"))
    finally:
        server.shutdown()
        server.server_close()
    assert data.n_items == 40 and sorted(p.name for p in (root / "ml-1m").iterdir()) == [
        "movies.dat", "ratings.dat", "users.dat"]


def test_offline_names_the_release_and_where_it_goes(tmp_path, monkeypatch):
    from inprocess import compose

    from recsys_fewshot import build

    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        build.load_data(compose("dataset=ml1m", f"dataset.root={root}"))
    message = str(err.value)
    for part in ("MovieLens 1M", "https://files.grouplens.org/datasets/movielens/ml-1m.zip", str(root),
                 "ratings.dat, movies.dat, users.dat", "its folder ml-1m/ becomes ml-1m/"):
        assert part in message, message


def cli(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSYS_FEWSHOT_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "recsys_fewshot.train", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def cli_options(tmp_path: Path, root: Path, run: str) -> list[str]:
    return ["dataset=ml1m", f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}", "encoder=none", "logger=none",
            "trainer.progress=false", "trainer.max_epochs=1", "trainer.batch_size=256", f"hydra.run.dir={tmp_path / run}"]


@pytest.mark.slow
def test_one_run_through_the_cli(tmp_path):
    root = tmp_path / "data"
    write_ml1m(root / "ml-1m")
    proc = cli(*cli_options(tmp_path, root, "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "ml-1m" and metrics["task"] == "rating"
    assert sum(metrics["split"][p] for p in ("train", "valid", "test")) == len(ml1m_expected()[0])
    assert np.isfinite(metrics["test"]["rmse"])


@pytest.mark.slow
def test_a_bad_line_stops_the_cli_naming_it_without_traceback(tmp_path):
    root = tmp_path / "data"
    folder = write_ml1m(root / "ml-1m")
    with open(folder / "ratings.dat", "a", encoding="ascii") as f:
        f.write("7::12::5\n")
    proc = cli(*cli_options(tmp_path, root, "bad"))
    lines = len((folder / "ratings.dat").read_text().splitlines())
    assert proc.returncode != 0 and f"ratings.dat line {lines}: expected 4 whole numbers" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad" / "metrics.json").exists()
