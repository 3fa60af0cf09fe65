"""A CSV folder's items get their whole text by default (`dataset.text_template=null`: every text column, title
first, numbers left out, the columns logged), an explicit template overrides it, and the knowledge graph of a
CSV folder reads what its files hold (a year or a date as the release decade, "|"-joined genres, no prose)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from recsys_fewshot import build
from recsys_fewshot.data.recdata import DataError
from recsys_fewshot.data.sources import read_csv_dir
from recsys_fewshot.kg.graph import attribute_triples, decade, table_attributes

ITEMS = ("item_id,title,genres,year,description,price,box office,release_date\n"
         'i1,Heat,Crime|Drama,1995,"A heist film about two crews, and the detective who hunts them",9.99,high,'
         "01-Jan-1995\n"
         "i2,Alien,Horror|Sci-Fi,,The crew of a towing ship meets a stowaway,4,low,25-May-1979\n"
         "i3,,Comedy,2003,,12,,\n")
USERS = "user_id,age,city\nu1,23,Paris\nu2,61,Paris\n"
INTERACTIONS = "user_id,item_id,rating\nu1,i1,5\nu1,i2,3\nu2,i2,4\nu2,i3,2\n"
HEAT = ("Heat. Genres: Crime, Drama. Description: A heist film about two crews, and the detective who hunts them. "
        "Release date: 01-Jan-1995.")


def write_folder(folder: Path, items: str = ITEMS, interactions: str = INTERACTIONS) -> Path:
    folder.mkdir(parents=True)
    (folder / "items.csv").write_text(items)
    (folder / "users.csv").write_text(USERS)
    (folder / "interactions.csv").write_text(interactions)
    return folder


def texts_of(folder: Path, *overrides: str) -> list[str]:
    from inprocess import compose

    cfg = compose("dataset=csv", f"dataset.dir={folder}", *overrides)
    return build.item_texts(cfg, read_csv_dir(folder))


def test_the_default_text_holds_every_text_column_and_the_log_names_them(tmp_path, caplog):
    folder = write_folder(tmp_path / "mine")
    with caplog.at_level(logging.INFO, logger="recsys_fewshot.train"):
        texts = texts_of(folder)
    assert texts == [HEAT, "Alien. Genres: Horror, Sci-Fi. Description: The crew of a towing ship meets a stowaway. "
                           "Release date: 25-May-1979.", "Genres: Comedy."]  # empty fields leave nothing, an empty title no leading ". "
    assert not any(word in " ".join(texts) for word in ("9.99", "2003", "Price", "Year"))  # numbers are not text
    line = next(r.getMessage() for r in caplog.records if "every text column" in r.getMessage())
    assert f"{folder / 'items.csv'}: title, genres, description, release_date" in line
    assert "left out (numbers, or names a template cannot hold): year, price, box office" in line


def test_an_explicit_template_overrides_the_default(tmp_path, caplog):
    folder = write_folder(tmp_path / "mine")
    with caplog.at_level(logging.INFO, logger="recsys_fewshot.train"):
        assert texts_of(folder, "dataset.text_template='{title} ({year})'") == ["Heat (1995)", "Alien", "(2003)"]
    assert not [r for r in caplog.records if "every text column" in r.getMessage()]
    with pytest.warns(RuntimeWarning, match="1 of 3 items"):  # the title alone: i3 has none
        assert texts_of(folder, "dataset.text_template='{title}'") == ["Heat", "Alien", ""]


def test_items_without_any_text_column_are_refused_naming_the_file(tmp_path):
    folder = write_folder(tmp_path / "numbers", items="item_id,year,price\ni1,1995,3\ni2,1979,4\ni3,2003,5\n")
    with pytest.raises(DataError, match=r"items\.csv: no text column .*columns: item, item_id, year, price"):
        texts_of(folder)


def test_csv_knowledge_graph_takes_decades_from_a_year_or_a_date_and_splits_lists(tmp_path):
    graph = attribute_triples(read_csv_dir(write_folder(tmp_path / "mine")))
    named = graph.named()
    assert {t for t in named if t[1] == "released_in"} == {
        ("item:i1", "released_in", "decade:1990s"), ("item:i2", "released_in", "decade:1970s"),  # i2: its date
        ("item:i3", "released_in", "decade:2000s")}
    assert {t for t in named if t[1] == "has_genres"} == {
        ("item:i1", "has_genres", "genres:Crime"), ("item:i1", "has_genres", "genres:Drama"),
        ("item:i2", "has_genres", "genres:Horror"), ("item:i2", "has_genres", "genres:Sci-Fi"),
        ("item:i3", "has_genres", "genres:Comedy")}
    assert {t for t in named if t[0] == "user:u1"} == {("user:u1", "in_age_group", "age_bucket:18-24"),
                                                        ("user:u1", "has_city", "city:Paris")}
    # prose, titles, the year and date columns themselves are no attributes
    assert set(graph.relations) == {"has_genres", "has_price", "has_box office", "released_in", "in_age_group",
                                    "has_city"}
    items = pd.DataFrame({"item": [0, 1], "item_id": ["a", "b"], "colour": ["red", "red"],
                          "summary": ["A long account of the plot, in many words", "Short, but still five words"]})
    assert table_attributes(items, "year", "decade", decade, "released_in")[1] == {"colour": "has_colour"}


@pytest.mark.slow
def test_cli_run_logs_the_text_columns_in_train_log_and_builds_the_csv_graph(tmp_path, tiny_bert):
    from test_train_cli import cli

    rows = [f"u{1 + u},i{1 + i},{1 + (u * 7 + i * 3) % 5}" for u in range(40) for i in range(3)]
    folder = write_folder(tmp_path / "mine", interactions="user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    proc = cli("dataset=csv", f"dataset.dir={folder}", "task=ranking", "split=random", "split.test_ratio=0.25",
               "kg=attributes", "logger=none", f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}",
               f"encoder.name_or_path={tiny_bert}", "trainer.progress=false", "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "item text from every text column of" in log and "title, genres, description, release_date" in log
    assert f"item text, e.g.: {HEAT!r}" in log
    per_relation = json.loads((run / "metrics.json").read_text())["kg"]["per_relation"]
    assert per_relation["released_in"] == 3 and per_relation["has_genres"] == 5
