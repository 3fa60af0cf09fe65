"""Data checks of the readers: ids written two ways across files, items without text, ratings that do not fit
float32 or the declared scale. Each error names the file, the line and the column."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from fakes import write_amazon_unisrec, write_ml100k

from recsys_fewshot.data import sources
from recsys_fewshot.data.recdata import DataError
from recsys_fewshot.data.text import check_text_coverage


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_csv", ".csv")).write_text(text)
    return folder


TRAIN = "user_id,item_id,rating\nu1,1,4\nu1,2,3\nu2,1,5\n"
TEST = "user_id,item_id,rating\nu2,2,2\n"
ITEMS = "item_id,title\n1,Alpha\n2,Beta\n"


# ---------------------------------------------------------------- ids written two ways
# (files of a CSV folder) -> (file, line, spelling) of both sides of the clash
RESPELLED = {
    "items.csv 1 / train.csv 1.0": (dict(train_csv=TRAIN.replace("u1,1,4", "u1,1.0,4"), test_csv=TEST, items_csv=ITEMS),
                                    ("train.csv", 2, "1.0"), ("items.csv", 2, "1")),
    "users.csv u / train.csv": (dict(train_csv="user_id,item_id,rating\n7,1,4\n8,2,3\n", test_csv="user_id,item_id,rating\n07,2,2\n",
                                     users_csv="user_id,age\n7,20\n8,30\n"), ("test.csv", 2, "07"), ("users.csv", 2, "7")),
    "train.csv 2 / test.csv 2.00": (dict(train_csv=TRAIN, test_csv=TEST.replace("u2,2,", "u2,2.00,")),
                                    ("test.csv", 2, "2.00"), ("train.csv", 3, "2")),
    "one file: 1 and 1e0": (dict(interactions_csv=TRAIN + "u3,1e0,4\n"), ("interactions.csv", 5, "1e0"),
                            ("interactions.csv", 2, "1")),
    "history 1.0 / items.csv 1": (dict(interactions_csv="user_id,item_id,label,history\nu1,2,1,1.0:1 2:0\n",
                                       items_csv=ITEMS), ("interactions.csv", 2, "1.0"), ("items.csv", 2, "1")),
}


@pytest.mark.parametrize("case", list(RESPELLED))
def test_ids_written_two_ways_are_refused_naming_both_files(tmp_path, case):
    files, (file_b, line_b, id_b), (file_a, line_a, id_a) = RESPELLED[case]
    folder = write(tmp_path / "csv", **files)
    with pytest.raises(DataError) as err:
        sources.read_csv_dir(folder)
    message = str(err.value)
    column = "user_id" if "users" in case else "item_id"
    assert message.startswith(f"{folder / file_b} line {line_b}: {column} {id_b!r} and {folder / file_a} line {line_a}: "
                              f"{column} {id_a!r} are the same number"), message


def test_ids_spelled_alike_everywhere_still_read(tmp_path):
    folder = write(tmp_path / "csv", train_csv=TRAIN.replace(",1,", ",1.0,"), test_csv=TEST,
                   items_csv=ITEMS.replace("\n1,", "\n1.0,"))
    data = sources.read_csv_dir(folder)
    assert data.n_items == 2 and data.items["title"].tolist() == ["Alpha", "Beta"]
    # ids that merely look alike are not numbers: kept apart
    assert sources.read_csv_dir(write(tmp_path / "b", interactions_csv="user_id,item_id\nu,a1\nu,A1\n")).n_items == 2


def test_unisrec_text_ids_written_two_ways_are_refused(tmp_path):
    folder = write_amazon_unisrec(tmp_path / "am")
    index = (folder / "Scientific.item2index").read_text().splitlines()
    asin, k = index[0].split("\t")
    index[0] = f"1\t{k}"
    (folder / "Scientific.item2index").write_text("\n".join(index) + "\n")
    text = (folder / "Scientific.text").read_text().replace(f"\n{asin}\t", "\n1.0\t")
    (folder / "Scientific.text").write_text(text)
    with pytest.raises(DataError, match=r"Scientific\.text line \d+: item id '1\.0' and .*Scientific\.item2index "
                                        r"line 1: item id '1'"):
        sources.read_amazon_unisrec(folder)


# ---------------------------------------------------------------- ratings
@pytest.mark.parametrize("value, scale, problem", [
    ("1e39", None, r"1e\+39 is not a finite float32"),
    ("-4e38", None, r"-4e\+38 is not a finite float32"),
    ("1000", (1, 5), r"rating 1000 is outside the scale \[1, 5\] \(dataset\.reader\.rating_scale\)"),
    ("0.5", (1, 5), r"rating 0\.5 is outside the scale"),
    ("inf", None, "expected a number, got 'inf'"),
    ("nan", (1, 5), "expected a number, got 'nan'"),
])
def test_csv_rating_errors_name_file_line_and_column(tmp_path, value, scale, problem):
    folder = write(tmp_path / "csv", train_csv=TRAIN.replace("u1,2,3", f"u1,2,{value}"), test_csv=TEST)
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder / 'train.csv'))}: column 'rating' line 3: {problem}"):
        sources.read_csv_dir(folder, scale)


def test_csv_ratings_in_the_scale_or_undeclared_are_read(tmp_path):
    folder = write(tmp_path / "csv", train_csv=TRAIN.replace("u1,2,3", "u1,2,1000"), test_csv=TEST)
    assert sources.read_csv_dir(folder).interactions["rating"].max() == 1000  # no scale declared: finite is enough
    assert sources.read_csv_dir(folder, (0, 1000)).n_items == 2
    reader = sources.Csv(rating_scale=[1, 5])
    with pytest.raises(DataError, match=r"train\.csv: column 'rating' line 3: rating 1000 is outside the scale \[1, 5\]"):
        reader.read(folder)
    for bad in ([5, 1], [1], ["a", 2]):
        with pytest.raises(DataError, match=r"dataset\.reader\.rating_scale=.*expected"):
            sources.Csv(rating_scale=bad).read(folder)


def test_history_rating_that_overflows_float32_is_refused(tmp_path):
    folder = write(tmp_path / "ctr", interactions_csv="user_id,item_id,rating,label,history\nA,b1,4,1,b2:4\nB,b2,2,0,b1:1e39\n")
    with pytest.raises(DataError, match=r"interactions\.csv: column 'history' line 3: malformed token 'b1:1e39'"):
        sources.read_csv_dir(folder)


@pytest.mark.parametrize("value", ["6", "0", "1e39"])
def test_ml100k_ratings_outside_whole_stars_are_refused(tmp_path, value):
    folder = write_ml100k(tmp_path / "ml")
    lines = (folder / "u.data").read_text().splitlines()
    user, item, _, ts = lines[4].split("\t")
    lines[4] = "\t".join([user, item, value, ts])
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"u\.data: column 'rating' line 5: .*{'finite float32' if 'e' in value else 'outside the scale'}"):
        sources.read_ml100k(folder)


# ---------------------------------------------------------------- items without text
def catalogue(n_items: int, with_text: int) -> pd.DataFrame:
    titles = [f"Title {k}" if k < with_text else "" for k in range(n_items)]
    return pd.DataFrame({"item": range(n_items), "item_id": [str(k + 1) for k in range(n_items)], "title": titles,
                         "year": [""] * n_items})


@pytest.mark.parametrize("n_text, limit, outcome", [
    (150, 0.5, None), (140, 0.5, "warn"), (75, 0.5, "warn"), (74, 0.5, "error"), (10, 0.5, "error"),
    (10, 1.0, "warn"), (149, 0.0, "error"),
])
def test_items_without_text_are_counted(n_text, limit, outcome):
    items, missing = catalogue(150, n_text), 150 - n_text
    counts = rf"items\.csv: {missing} of 150 items \(\d+%\) have no text"
    if outcome is None:
        assert check_text_coverage(items, "{title} ({year})", limit, "items.csv") == 0
    elif outcome == "warn":
        with pytest.warns(RuntimeWarning, match=counts + rf".*e\.g\. item_id '{n_text + 1}'"):
            assert check_text_coverage(items, "{title} ({year})", limit, "items.csv") == missing
    else:
        with pytest.raises(DataError, match=counts + r".*more than dataset\.missing_text_limit"):
            check_text_coverage(items, "{title} ({year})", limit, "items.csv")
    with pytest.raises(DataError, match=r"dataset\.missing_text_limit=1\.5"):
        check_text_coverage(items, "{title}", 1.5, "items.csv")


def test_partial_items_csv_is_an_error_of_the_run(tmp_path):
    from inprocess import compose

    from recsys_fewshot import build

    rows = "".join(f"u{k % 7},{k},{1 + k % 5}\n" for k in range(1, 151))
    folder = write(tmp_path / "csv", interactions_csv="user_id,item_id,rating\n" + rows,
                   items_csv="item_id,title\n" + "".join(f"{k},Film {k}\n" for k in range(1, 11)))
    cfg = compose("dataset=csv", f"dataset.dir={folder}", f"cache_dir={tmp_path / 'cache'}")
    data = build.load_data(cfg)
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder / 'items.csv'))}: 140 of 150 items \(93%\) have no text"):
        build.item_texts(cfg, data)
    allowed = compose("dataset=csv", f"dataset.dir={folder}", "dataset.missing_text_limit=1.0")
    with pytest.warns(RuntimeWarning, match="140 of 150 items"):
        texts = build.item_texts(allowed, data)
    assert texts[:2] == ["Film 1", "Film 2"] and texts[-1] == ""
