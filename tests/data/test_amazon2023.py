"""Amazon Reviews 2023 (dataset=amazon2023) on gzipped JSON lines written with every field of the release:
known answers (repeats, k-core, file order, item text), streaming over many blocks, bad lines named, the category
list, the message for missing files, one CLI run."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raw_formats import amazon_meta, amazon_review, planted_amazon2023, write_jsonl_gz
from recsys_fewshot.data import amazon2023
from recsys_fewshot.data.amazon2023 import Amazon2023, k_core, read_amazon2023
from recsys_fewshot.data.recdata import DataError
from recsys_fewshot.data.text import render_texts

REPO = Path(__file__).resolve().parents[2]
U1, U2, U3 = "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ", "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "AHWWLSPCJMALVHDDVSUGICL6RKCA"
REVIEWS = [amazon_review(U1, "B00P1", 5, 100), amazon_review(U1, "B00P2", 4, 200),
           amazon_review(U2, "B00P1", 3, 150), amazon_review(U2, "B00P2", 2, 300),
           amazon_review(U1, "B00P1", 1, 50),  # U1 rates P1 again, earlier: this one is kept
           amazon_review(U3, "B00P3", 5, 10), amazon_review(U2, "B00P4", 5, 20)]
META = [amazon_meta("B00P1", "Gentle Soap", ["Beauty", "Skin Care"], ["Mild.", "Vegan."], []),
        amazon_meta("B00P2", "Hair Oil", [], [], ["Smooth hair.", "  "], store=None),
        amazon_meta("B00P3", "Lip Balm", ["Beauty"], ["x" * 3000], [])]


@pytest.fixture()
def folder(tmp_path) -> Path:
    write_jsonl_gz(tmp_path / "All_Beauty.jsonl.gz", REVIEWS)
    write_jsonl_gz(tmp_path / "meta_All_Beauty.jsonl.gz", META)
    return tmp_path


def test_k_core_drops_until_stable_known_answer():
    # a chain that unravels completely at k=2, beside a 2x2 block that stays
    users = np.array([0, 0, 1, 1, 2, 3, 3, 4, 4])
    items = np.array([0, 1, 1, 2, 2, 5, 6, 5, 6])
    # round 1 drops (2, 2) and (0, 0); round 2 (0, 1) and (1, 2); round 3 (1, 1)
    assert k_core(users, items, 2).tolist() == [False] * 5 + [True] * 4
    assert k_core(users, items, 1).all() and k_core(users, items, 0).all()
    assert not k_core(users, items, 3).any()


def test_reviews_read_repeats_core_and_text_known_answers(folder):
    data = read_amazon2023(folder, "All_Beauty", k=2)
    inter = data.interactions
    rows = list(zip(data.user_raw_ids()[inter["user"]], data.item_raw_ids()[inter["item"]], inter["rating"],
                    inter["timestamp"]))
    # the repeat keeps U1's earlier P1 rating (t=50); U3, P3 and P4 fall below 2 ratings; file order kept
    assert rows == [(U1, "B00P2", 4.0, 200), (U2, "B00P1", 3.0, 150), (U2, "B00P2", 2.0, 300), (U1, "B00P1", 1.0, 50)]
    items = data.items.set_index("item_id")
    assert items.loc["B00P1", "categories"] == "Beauty|Skin Care" and items.loc["B00P2", "store"] == ""
    texts = render_texts(data.items, "{title}. Categories: {categories}. Features: {features}. "
                         "Description: {description}.", ["categories"])
    assert texts == ["Hair Oil. Description: Smooth hair.",
                     "Gentle Soap. Categories: Beauty, Skin Care. Features: Mild. Vegan."]
    every = read_amazon2023(folder, "All_Beauty", k=0)
    assert len(every.interactions) == 6 and every.n_items == 4
    by_id = every.items.set_index("item_id")
    assert len(by_id.loc["B00P3", "features"]) == amazon2023.TEXT_CHARS  # cut
    assert by_id.loc["B00P4", "title"] == ""  # no metadata line: no text


def test_many_blocks_read_the_same_as_one(tmp_path, monkeypatch):
    planted_amazon2023(tmp_path, n_users=30, n_items=25, n_per_user=10)
    whole = read_amazon2023(tmp_path, "All_Beauty", k=3)
    monkeypatch.setattr(amazon2023, "BLOCK", 4096)  # about ten lines per block
    blocks = read_amazon2023(tmp_path, "All_Beauty", k=3)
    assert blocks.interactions.equals(whole.interactions) and blocks.items.equals(whole.items)
    assert len(whole.interactions) == 300 and whole.users["user_id"].str.len().eq(28).all()


def test_ctr_samples_from_a_category_cut_by_time(tmp_path):
    from recsys_fewshot.data.tallrec import tallrec

    planted_amazon2023(tmp_path, n_users=30, n_items=25, n_per_user=10)
    data = read_amazon2023(tmp_path, "All_Beauty", k=3)
    split = tallrec(data, n_shots=0, n_samples=0, history_len=5, min_history=3, recipe="time")
    assert sum(split.sizes().values()) == 30 * (10 - 3)  # every position with 3 earlier ratings
    assert split.train["timestamp"].max() <= split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() <= split.test["timestamp"].min()
    assert all(3 <= len(h) <= 5 for h in split.test["history"])


def test_unpacked_jsonl_files_are_read_too(folder):
    for name in ("All_Beauty.jsonl.gz", "meta_All_Beauty.jsonl.gz"):
        (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((folder / name).read_bytes()))
        (folder / name).unlink()
    assert len(read_amazon2023(folder, "All_Beauty", k=2).interactions) == 4


@pytest.mark.parametrize("name,line,message", [
    ("All_Beauty.jsonl.gz", '{"user_id": "A", "parent_asin": "B", "rating": 5.0, ', r"line 8: not JSON"),
    ("All_Beauty.jsonl.gz", json.dumps(amazon_review(U1, "B00P9", 6, 1)), r"line 8: field 'rating' should be a number"),
    ("All_Beauty.jsonl.gz", json.dumps({**amazon_review(U1, "B00P9", 5, 1), "user_id": None}),
     r"line 8: field 'user_id' should be a string, got None"),
    ("All_Beauty.jsonl.gz", json.dumps({**amazon_review(U1, "B00P9", 5, 1), "timestamp": "2020-01-01"}),
     r"line 8: field 'timestamp' should be an integer"),
    ("meta_All_Beauty.jsonl.gz", json.dumps({**amazon_meta("B00P9", "T"), "categories": "Beauty"}),
     r"line 4: field 'categories' should be a list of strings"),
])
def test_bad_lines_named_with_file_and_line(tmp_path, name, line, message):
    write_jsonl_gz(tmp_path / "All_Beauty.jsonl.gz", REVIEWS, [line] if name.startswith("All") else [])
    write_jsonl_gz(tmp_path / "meta_All_Beauty.jsonl.gz", META, [line] if name.startswith("meta") else [])
    with pytest.raises(DataError, match=message) as err:
        read_amazon2023(tmp_path, "All_Beauty", k=0)
    assert str(tmp_path / name) in str(err.value)


def test_truncated_gzip_named(folder):
    path = folder / "All_Beauty.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"All_Beauty.jsonl.gz"):
        read_amazon2023(folder, "All_Beauty", k=0)


def test_unknown_category_lists_the_valid_ones(folder):
    with pytest.raises(DataError, match=r"category='Book' is not a category .*All_Beauty, .*Books, .*Video_Games"):
        Amazon2023(category="Book").check(folder)


def test_missing_files_named_with_their_address_and_place(tmp_path):
    write_jsonl_gz(tmp_path / "meta_Books.jsonl.gz", META)
    with pytest.raises(DataError) as err:
        Amazon2023(category="Books").check(tmp_path)
    text = str(err.value)
    assert "1 file(s) missing" in text and "no checksums" in text
    assert ("https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw/review_categories/Books.jsonl.gz: "
            f"save as {tmp_path / 'Books.jsonl.gz'}") in text
    assert "meta_categories" not in text


@pytest.mark.slow
def test_cli_trains_on_a_category(tmp_path):
    planted_amazon2023(tmp_path / "data" / "amazon-2023", category="Video_Games")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "RECSYS_FEWSHOT_OFFLINE": "1"}
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", "dataset=amazon2023",
                           "dataset.category=Video_Games", "dataset.k_core=5", f"dataset.root={tmp_path / 'data'}",
                           "encoder=none", "trainer.max_epochs=1", "logger=none", "trainer.progress=false",
                           f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "amazon2023-Video_Games" and metrics["task"] == "rating"
    assert sum(metrics["split"][p] for p in ("train", "valid", "test")) == 40 * 12
    assert np.isfinite(metrics["test"]["rmse"])
