"""scripts/ml100k_to_csv.py: MovieLens-100K files written as a CSV folder that `dataset=csv` reads back as the
same data (interactions, titles, genres, user attributes)."""

import importlib.util
from pathlib import Path

import numpy as np

from fakes import write_ml100k
from recsys_fewshot.data.sources import read_csv_dir, read_ml100k
from recsys_fewshot.data.text import default_template

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ml100k_to_csv.py"
spec = importlib.util.spec_from_file_location("ml100k_to_csv", SCRIPT)
ml100k_to_csv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ml100k_to_csv)


def test_the_csv_folder_reads_back_as_the_same_data(tmp_path, capsys):
    write_ml100k(tmp_path / "data" / "ml-100k", n_users=30, n_items=20, n_per_user=8)
    assert ml100k_to_csv.main([str(tmp_path / "csv"), "--root", str(tmp_path / "data")]) == 0
    assert "interactions.csv: 240 rows, items.csv: 20 rows, users.csv: 30 rows" in capsys.readouterr().out
    ml, csv = read_ml100k(tmp_path / "data" / "ml-100k"), read_csv_dir(tmp_path / "csv")
    assert (csv.n_users, csv.n_items) == (ml.n_users, ml.n_items)
    assert list(csv.item_raw_ids()) == list(ml.item_raw_ids())  # items.csv first: the same item indices
    key = ["user", "item"]
    a, b = (d.interactions.sort_values(key).reset_index(drop=True) for d in (ml, csv))
    users_a, users_b = ml.user_raw_ids()[a["user"]], csv.user_raw_ids()[b["user"]]
    assert np.array_equal(users_a, users_b) and np.array_equal(a["item"], b["item"])
    assert np.array_equal(a["rating"], b["rating"]) and np.array_equal(a["timestamp"], b["timestamp"])
    assert list(csv.items["title"]) == list(ml.items["title"]) and csv.items["title"][0].startswith("Café")
    assert list(csv.items["genres"]) == list(ml.items["genres"])
    assert list(csv.users["occupation"]) == list(ml.users["occupation"])
    # the default text of dataset=csv: title and genres; the year is a number column
    assert default_template(csv.items)[0] == "{title}. Genres: {genres}."
