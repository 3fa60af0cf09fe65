"""Plain CSV: a (user, item) pair repeated in explicit rating data is refused (ambiguous, or leaks
between parts); implicit data and CTR sample files may repeat a pair."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recsys_fewshot.data import sources, store
from recsys_fewshot.data.recdata import TEST, TRAIN, DataError


def write(folder, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_explicit_repeat_in_one_file_names_both_lines(tmp_path):
    text = "user_id,item_id,rating\nu1,i1,4\nu1,i2,3\nu2,i1,5\n u1 ,i1,2\n"  # ids are compared stripped
    folder = write(tmp_path / "csv", {"interactions.csv": text})
    with pytest.raises(DataError) as err:
        sources.read_csv_dir(folder)
    message = str(err.value)
    assert re.search(r"interactions\.csv line 5: \(user_id 'u1', item_id 'i1'\) pair already listed at line 2;",
                     message), message
    assert "rating" in message


def test_pair_in_train_and_test_is_leakage(tmp_path):
    folder = write(tmp_path / "csv", {
        "train.csv": "user_id,item_id,rating\na,x,4\nb,y,3\nb,x,1\n",
        "valid.csv": "user_id,item_id,rating\nc,x,2\n",
        "test.csv": "user_id,item_id,rating\na,y,5\nb,x,1\n",
    })
    with pytest.raises(DataError) as err:
        sources.read_csv_dir(folder)
    message = str(err.value)
    test_csv, train_csv = re.escape(str(folder / "test.csv")), re.escape(str(folder / "train.csv"))
    assert re.match(rf"{test_csv} line 3: \(user_id 'b', item_id 'x'\) pair already listed at {train_csv} line 4;",
                    message), message


def test_repeat_is_refused_through_the_cache_too(tmp_path):
    folder = write(tmp_path / "csv", {"train.csv": "user_id,item_id,rating\na,x,4\n",
                                      "test.csv": "user_id,item_id,rating\na,x,4\n"})
    for _ in range(2):  # nothing was cached by the first failure
        with pytest.raises(DataError, match=r"test\.csv line 2: .* already listed at .*train\.csv line 2"):
            store.load_cached(sources.Csv(), folder, tmp_path / "cache")


def test_explicit_without_repeats_is_accepted(tmp_path):
    # the same user and the same item recur, never the same pair
    folder = write(tmp_path / "csv", {"train.csv": "user_id,item_id,rating\na,x,4\na,y,3\nb,x,2\n",
                                      "test.csv": "user_id,item_id,rating\nb,y,5\n"})
    data = sources.read_csv_dir(folder)
    assert len(data.interactions) == 4 and not data.implicit


def test_implicit_repeats_are_kept(tmp_path):
    # repeat consumption: the same user buys the same item again, also across parts
    folder = write(tmp_path / "csv", {"train.csv": "user_id,item_id,timestamp\na,x,1\na,x,2\nb,y,3\n",
                                      "test.csv": "user_id,item_id,timestamp\na,x,4\n"})
    data = sources.read_csv_dir(folder)
    assert data.implicit and data.interactions[["user", "item"]].values.tolist() == [[0, 0], [0, 0], [1, 1], [0, 0]]
    np.testing.assert_array_equal(data.folds["given"], [TRAIN, TRAIN, TRAIN, TEST])
    folder = write(tmp_path / "one", {"interactions.csv": "user_id,item_id\na,x\na,x\n"})
    assert len(sources.read_csv_dir(folder).interactions) == 2


@pytest.mark.parametrize("header", ["user_id,item_id,label,history", "user_id,item_id,rating,label,history"])
def test_ctr_samples_may_repeat_a_pair(tmp_path, header):
    # two samples of one user with the same target item but different histories
    row = {"user_id,item_id,label,history": ("A,b1,1,b2:1 b3:0", "A,b1,1,b2:1"),
           "user_id,item_id,rating,label,history": ("A,b1,5,1,b2:4 b3:2", "A,b1,5,1,b2:4")}[header]
    folder = write(tmp_path / "ctr", {"train.csv": f"{header}\n{row[0]}\n{row[1]}\n",
                                      "test.csv": f"{header}\n{row[1]}\n"})
    data = sources.read_csv_dir(folder)
    assert len(data.interactions) == 3 and data.interactions["item"].tolist() == [0, 0, 0]
