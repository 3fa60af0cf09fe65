"""Readers (ML-100K, plain CSV, UniSRec atomic files), the ML-100K download, and the Arrow table cache."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import GENRES, planted_catalogue, write_amazon_unisrec, write_csv_dataset, write_ml100k, write_unisrec_files

from recsys_fewshot.data import sources, store
from recsys_fewshot.data.recdata import ABSENT, TEST, TRAIN, VALID, DataError, RecData


def assert_same(a: RecData, b: RecData) -> None:
    assert (a.name, a.implicit, list(a.folds)) == (b.name, b.implicit, list(b.folds))
    for table in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table), check_exact=True)
    for name in a.folds:
        assert b.folds[name].dtype == np.int8
        np.testing.assert_array_equal(a.folds[name], b.folds[name])


def raw_triples(data: RecData, rows: np.ndarray | None = None) -> set[tuple[str, str, float]]:
    inter = data.interactions if rows is None else data.interactions.iloc[rows]
    return set(zip(data.user_raw_ids()[inter["user"]], data.item_raw_ids()[inter["item"]], inter["rating"]))


# ---------------------------------------------------------------- MovieLens 100K
def test_ml100k_reads_planted_files(tmp_path):
    folder = write_ml100k(tmp_path / "ml")
    ratings, items, users = planted_catalogue()
    data = sources.read_ml100k(folder)
    inter = data.interactions
    assert (len(inter), data.n_users, data.n_items) == (900, 60, 40)
    assert inter.dtypes.to_dict() == {"user": np.int64, "item": np.int64, "rating": np.float32,
                                      "timestamp": np.int64}
    assert raw_triples(data) == {(str(u), str(i), float(r)) for u, i, r, _ in ratings.itertuples(index=False)}
    assert list(data.items["item_id"]) == [str(i) for i in items["item_id"]]  # u.item order
    assert data.items["title"].iloc[0].startswith("Café ")  # latin-1 decoded, year stripped
    assert list(data.items["title"]) == list(items["title"])
    assert list(data.items["year"]) == [str(y) for y in items["year"]]
    assert list(data.items["genres"].iloc[:-1]) == list(items["genres"].iloc[:-1])
    assert data.items["genres"].iloc[-1] == "unknown|" + items["genres"].iloc[-1]
    assert data.users["age"].dtype == np.int64 and list(data.users["age"]) == list(users["age"])
    assert list(data.users["user_id"]) == [str(u) for u in users["user_id"]]

    codes = data.folds["u1"]
    assert list(data.folds) == ["u1"] and codes.dtype == np.int8
    assert (codes == TRAIN).sum() == 720 and (codes == TEST).sum() == 180 and not (codes == ABSENT).any()
    base = pd.read_csv(folder / "u1.base", sep="\t", header=None)
    assert raw_triples(data, np.flatnonzero(codes == TRAIN)) == {(str(u), str(i), float(r)) for u, i, r, _ in
                                                                base.itertuples(index=False)}
    assert set(inter["item"][codes == TEST]) - set(inter["item"][codes == TRAIN])  # a cold test item


def test_ml100k_keeps_unrated_items_and_unknown_year(tmp_path):
    folder = write_ml100k(tmp_path / "ml")
    with open(folder / "u.item", "ab") as f:
        f.write(("41|unknown||||1" + "|0" * 18 + "\n").encode("latin-1"))
    data = sources.read_ml100k(folder)
    assert data.n_items == 41 and 40 not in set(data.interactions["item"])
    assert data.items.iloc[40][["item_id", "title", "year", "genres"]].tolist() == ["41", "unknown", "", "unknown"]


@pytest.mark.parametrize(("raw", "title", "year"), [
    ("Toy Story (1995)", "Toy Story", "1995"),
    ("Two Friends (1986) ", "Two Friends", "1986"),
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
     "City of Lost Children, The (Cité des enfants perdus, La)", "1995"),
    ("Land Before Time III: The Time of the Great Giving (1995) (V)",
     "Land Before Time III: The Time of the Great Giving (V)", "1995"),
    ("unknown", "unknown", ""),
])
def test_split_title(raw, title, year):
    assert sources.split_title(raw) == (title, year)


def test_ml100k_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"missing file .*nowhere.*u\.data"):
        sources.read_ml100k(tmp_path / "nowhere")

    folder = write_ml100k(tmp_path / "ml")
    data = sources.read_ml100k(folder)
    rated = set(zip(data.interactions["user"], data.interactions["item"]))
    user, item = next((u, i) for u in range(60) for i in range(40) if (u, i) not in rated)
    lines = (folder / "u1.test").read_text().splitlines()
    lines.insert(2, f"{user + 1}\t{item + 1}\t3\t880000000")
    (folder / "u1.test").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"u1\.test line 3: pair \(user {user + 1}, item {item + 1}\) is not in"):
        sources.read_ml100k(folder)

    lines = (folder / "u.data").read_text().splitlines()
    user, _, rating, stamp = lines[4].split("\t")
    lines[4] = "\t".join([user, "five", rating, stamp])
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u\.data: column 'item_id' line 5: expected an integer, got 'five'"):
        sources.read_ml100k(folder)


def _zip_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"ml-100k/{path.name}")
    return buffer.getvalue()


def test_ensure_ml100k_existing_folder_needs_no_network(tmp_path, monkeypatch):
    folder = write_ml100k(tmp_path / "ml-100k")
    monkeypatch.setattr(sources, "download", lambda *a, **k: pytest.fail("downloaded"))
    assert sources.ensure_ml100k(tmp_path) == folder


def test_ensure_ml100k_offline_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    monkeypatch.setattr(sources, "download", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(DataError) as err:
        sources.ensure_ml100k(tmp_path / "root")
    message = str(err.value)
    for part in (str(tmp_path / "root" / "ml-100k"), "download", "offline", "unzip ml-100k.zip into",
                 "RECSYS_FEWSHOT_DATA", "dataset.root"):
        assert part in message


def test_ensure_ml100k_checks_md5_then_installs(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RECSYS_FEWSHOT_OFFLINE", raising=False)
    payload = _zip_of(write_ml100k(tmp_path / "src"))
    monkeypatch.setattr(sources, "download", lambda url, timeout=60.0: payload)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="checksum mismatch for u.data"):
        sources.ensure_ml100k(root)
    assert list(root.iterdir()) == []  # no half-installed folder, no temp leftovers

    monkeypatch.setattr(sources, "ML100K_MD5", hashlib.md5((tmp_path / "src" / "u.data").read_bytes()).hexdigest())
    target = sources.ensure_ml100k(root)
    assert target == root / "ml-100k" and list(root.iterdir()) == [target]
    assert sources.read_ml100k(target).n_items == 40


def test_the_build_path_fetches_what_the_reader_declares_and_nothing_else(tmp_path, monkeypatch):
    from inprocess import compose

    from recsys_fewshot import build

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RECSYS_FEWSHOT_OFFLINE", raising=False)
    payload = _zip_of(write_ml100k(tmp_path / "src"))
    monkeypatch.setattr(sources, "download", lambda url, timeout=60.0: payload)
    monkeypatch.setattr(sources, "ML100K_MD5", hashlib.md5((tmp_path / "src" / "u.data").read_bytes()).hexdigest())
    root = tmp_path / "root"
    data = build.load_data(compose("dataset=ml100k", f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}"))
    assert data.n_items == 40 and (root / "ml-100k" / "u.data").is_file()
    with pytest.raises(DataError, match=r"dataset\.dir: folder .*elsewhere does not exist"):  # only ml-100k/ is fetched
        build.load_data(compose("dataset=ml100k", f"dataset.root={root}", "dataset.dir=elsewhere"))
    with pytest.raises(DataError, match=r"dataset\.dir: folder .*ml-100k does not exist"):  # csv fetches nothing
        build.load_data(compose("dataset=csv", f"dataset.root={tmp_path / 'empty'}", "dataset.dir=ml-100k"))


# ---------------------------------------------------------------- plain CSV
def test_csv_presplit_remaps_string_ids(tmp_path):
    folder = write_csv_dataset(tmp_path / "csv")
    data = sources.read_csv_dir(folder)
    sizes = [len(pd.read_csv(folder / f"{p}.csv")) for p in ("train", "valid", "test")]
    assert len(data.interactions) == sum(sizes) == 900 and not data.implicit
    np.testing.assert_array_equal(np.bincount(data.folds["given"]), sizes)
    assert data.folds["given"].tolist() == sorted(data.folds["given"].tolist())  # train, valid, test rows in order
    items = pd.read_csv(folder / "items.csv", dtype=str)
    assert list(data.items["item_id"]) == list(items["item_id"]) and data.n_items == 40
    assert list(data.items["title"]) == list(items["title"])
    assert data.users["user_id"].iloc[4] == "u017"
    train = pd.read_csv(folder / "train.csv", dtype={"user_id": str, "item_id": str})
    assert raw_triples(data, np.flatnonzero(data.folds["given"] == TRAIN)) == set(
        zip(train["user_id"], train["item_id"], train["rating"].astype(float)))


def test_csv_unsplit_implicit_and_partial_item_tables(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "interactions.csv").write_text("user_id,item_id\nu9,i2\nu3,i7\nu9,i7\n")
    (folder / "items.csv").write_text("item_id,title,genres\ni5,Alone,Drama\ni2,Two,Comedy|Drama\n")
    data = sources.read_csv_dir(folder)
    assert data.implicit and data.folds == {} and data.interactions["rating"].isna().all()
    assert (data.interactions["timestamp"] == -1).all()
    assert list(data.items["item_id"]) == ["i5", "i2", "i7"]  # items.csv first, then new ids in order
    assert list(data.items["title"]) == ["Alone", "Two", ""]
    assert data.interactions[["user", "item"]].values.tolist() == [[0, 1], [1, 2], [0, 2]]


def test_csv_ctr_label_and_history(tmp_path):
    folder = tmp_path / "ctr"
    folder.mkdir()
    (folder / "train.csv").write_text("user_id,item_id,label,history\nA,b1,1,b2:4 b3:2.5\nB,b2,0,\n")
    (folder / "test.csv").write_text("user_id,item_id,label,history\nA,b4,0,b9:5 b1:1\n")
    data = sources.read_csv_dir(folder)
    inter = data.interactions
    assert list(data.items["item_id"]) == ["b1", "b2", "b4", "b3", "b9"]
    assert inter["label"].dtype == np.int8 and inter["label"].tolist() == [1, 0, 0]
    assert inter["history"].tolist() == [[(1, 4.0), (3, 2.5)], [], [(4, 5.0), (0, 1.0)]]
    assert data.folds["given"].tolist() == [TRAIN, TRAIN, TEST]


@pytest.mark.parametrize(("files", "pattern"), [
    ({"train.csv": "user_id,item_id\na,b\n"}, "neither interactions.csv nor train.csv"),
    ({"interactions.csv": "user,item_id\na,b\n"}, r"interactions\.csv: missing column 'user_id'"),
    ({"interactions.csv": "user_id,item_id,rating\na,b,4\na,c,x\n"}, r"interactions\.csv: column 'rating' line 3"),
    ({"interactions.csv": "user_id,item_id,rating\na,b,nan\n"}, r"column 'rating' line 2"),
    ({"interactions.csv": "user_id,item_id,label\na,b,1\na,c,2\n"}, r"column 'label' line 3: expected 0 or 1"),
    ({"interactions.csv": "user_id,item_id,history\na,b,x:1 y\n"}, r"column 'history' line 2: malformed token 'y'"),
    ({"train.csv": "user_id,item_id,rating\na,b,1\n", "test.csv": "user_id,item_id\na,c\n"},
     r"test\.csv: column 'rating' is missing"),
    ({"interactions.csv": "user_id,item_id\na,b\n", "items.csv": "item_id,title\nb,x\nb,y\n"},
     r"items\.csv: column 'item_id' line 3: id 'b' repeats"),
    ({"interactions.csv": "user_id,item_id,rating\na,b,4\n ,c,3\n"}, r"interactions\.csv line 3: column 'user_id' is empty"),
    ({"train.csv": "user_id,item_id\na,b\n", "test.csv": "user_id,item_id\na,\n"},
     r"test\.csv line 2: column 'item_id' is empty"),
])
def test_csv_errors_name_file_column_line(tmp_path, files, pattern):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=pattern):
        sources.read_csv_dir(tmp_path)


def test_csv_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        sources.read_csv_dir(tmp_path / "absent")


def test_csv_folder_refused_before_it_is_hashed(tmp_path, monkeypatch):
    """A file given as the folder is named as a file; a folder without the data is refused before the cache key
    walks its whole tree (dataset.dir=/usr would hash every file below it)."""
    (tmp_path / "ratings.csv").write_text("user_id,item_id\na,b\n")
    big = tmp_path / "big"
    for k in range(3):
        (big / f"sub{k}").mkdir(parents=True)
        (big / f"sub{k}" / "file.txt").write_text("x")
    monkeypatch.setattr(store, "cache_key", lambda *a, **k: pytest.fail("the folder was hashed"))
    reader = sources.Csv()
    with pytest.raises(DataError, match=r"ratings\.csv is a file, not a folder"):
        store.load_cached(reader, tmp_path / "ratings.csv", tmp_path / "cache")
    with pytest.raises(DataError, match=r"big: holds neither interactions\.csv nor train\.csv \+ test\.csv"):
        store.load_cached(reader, big, tmp_path / "cache")


# ---------------------------------------------------------------- Amazon / UniSRec
def test_unisrec_rebuilds_sequences_past_the_history_cut(tmp_path):
    rng = np.random.default_rng(3)
    sequences = [list(rng.integers(0, 8, 60)), [2, 2, 5, 1, 0], [7, 6, 5, 4, 3, 2]]  # 60 > the 50-item cut
    asins = [f"B00ASIN{k:03d}" for k in range(8)]
    folder = write_unisrec_files(tmp_path / "am", "Toy", sequences, asins, ["R0", "R1", "R2"],
                                 [f"Item {k}. Cat. Brand. " for k in range(8)])
    assert len((folder / "Toy.test.inter").read_text().splitlines()[1].split("\t")[1].split()) == 50
    data = sources.read_amazon_unisrec(folder, name="Toy")
    inter = data.interactions
    assert data.implicit and inter["rating"].isna().all()
    for u, seq in enumerate(sequences):
        rows = inter[inter["user"] == u]
        assert rows["item"].tolist() == seq and rows["timestamp"].tolist() == list(range(len(seq)))
        assert data.folds["given"][rows.index].tolist() == [TRAIN] * (len(seq) - 2) + [VALID, TEST]
    assert data.items["text"].iloc[3] == "Item 3. Cat. Brand." and list(data.items["item_id"]) == asins
    assert list(data.users["user_id"]) == ["R0", "R1", "R2"]


def test_unisrec_fake_and_inconsistent_rows(tmp_path):
    folder = write_amazon_unisrec(tmp_path / "am")
    data = sources.read_amazon_unisrec(folder)
    lengths = data.interactions.groupby("user").size()
    assert (data.n_users, data.n_items) == (30, 25) and lengths.between(5, 12).all()
    assert np.bincount(data.folds["given"])[1:].tolist() == [30, 30]
    assert len(data.interactions) == len((folder / "Scientific.train.inter").read_text().splitlines()) - 1 + 30 * 3

    lines = (folder / "Scientific.valid.inter").read_text().splitlines()
    user, history, target = lines[1].split("\t")
    lines[1] = "\t".join([user, history.split(" ", 1)[1], target])  # drops the first item
    (folder / "Scientific.valid.inter").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"Scientific\.valid\.inter: the history of user .* does not continue"):
        sources.read_amazon_unisrec(folder)


def test_each_dataset_option_names_its_reader_and_the_reader_declares_what_the_build_path_needs(tmp_path):
    """dataset.reader._target_ chooses the reader, its other keys are the reader's options; caching and the
    download of missing files are declarations of the reader, not tests on a name."""
    from inprocess import compose

    from recsys_fewshot import build
    from recsys_fewshot.data.tallrec import TallrecJson

    built = {o: build.reader(compose(f"dataset={o}", "dataset.dir=x"))
             for o in ("ml100k", "csv", "amazon_unisrec", "tallrec_json")}
    assert [type(r) for r in built.values()] == [sources.MovieLens100K, sources.Csv, sources.AmazonUniSRec, TallrecJson]
    assert built["amazon_unisrec"].options() == {"name": "Scientific"}
    assert built["tallrec_json"].options() == {"train_file": "train.json", "valid_file": None, "test_file": None}
    assert build.reader(compose("dataset=tallrec_json", "dataset.dir=x", "dataset.valid_file=v.json")).valid_file == "v.json"
    assert [r.cached for r in built.values()] == [True, True, True, False]
    assert built["ml100k"].download.folder == "ml-100k"
    assert [r.download for r in list(built.values())[1:]] == [None, None, None]
    folder = write_csv_dataset(tmp_path / "csv", presplit=False)
    assert len(sources.Csv().read(folder).interactions) == 900
    with pytest.raises(ValueError, match=r"dataset\.reader\._target_='recsys_fewshot\.data\.sources\.Parquet'"):
        build.reader(compose("dataset=csv", "dataset.dir=x", "dataset.reader._target_=recsys_fewshot.data.sources.Parquet"))


def test_old_dataset_spellings_fail_naming_the_new_ones():
    from hydra.errors import ConfigCompositionException
    from inprocess import compose

    from recsys_fewshot.registry import failure_hints

    for bad, hint in ((["dataset.kind=csv"], "dataset.kind=csv is now spelled dataset=csv"),
                      (["dataset=amazon_unisrec", "dataset.options.name=Office"],
                       "dataset.options.name=Office is now spelled dataset.reader.name=Office")):
        with pytest.raises(ConfigCompositionException):
            compose(*bad)
        assert hint in failure_hints(bad)
    assert compose("dataset=amazon_unisrec", "dataset.reader.name=Office").dataset.reader.name == "Office"


# ---------------------------------------------------------------- Arrow cache
@pytest.mark.parametrize("kind", ["ml100k", "csv", "amazon_unisrec"])
def test_cache_round_trips_exactly(tmp_path, kind):
    writer = {"ml100k": write_ml100k, "csv": write_csv_dataset, "amazon_unisrec": write_amazon_unisrec}[kind]
    reader = {"ml100k": sources.MovieLens100K, "csv": sources.Csv, "amazon_unisrec": sources.AmazonUniSRec}[kind]()
    folder = writer(tmp_path / "raw")
    first = store.load_cached(reader, folder, tmp_path / "cache")
    second = store.load_cached(reader, folder, tmp_path / "cache")
    assert_same(reader.read(folder), first)
    assert_same(first, second)
    assert len(list((tmp_path / "cache" / "recdata").iterdir())) == 1


def test_cache_round_trips_history(tmp_path):
    folder = tmp_path / "ctr"
    folder.mkdir()
    (folder / "interactions.csv").write_text("user_id,item_id,rating,label,history\nA,b1,4,1,b2:4 b3:2.5\nB,b2,2,0,\n")
    store.load_cached(sources.Csv(), folder, tmp_path / "cache")
    cached = store.load_cached(sources.Csv(), folder, tmp_path / "cache")
    assert_same(sources.read_csv_dir(folder), cached)
    assert cached.interactions["history"].tolist() == [[(1, 4.0), (2, 2.5)], []]


def test_cache_skips_parser_and_tracks_file_changes(tmp_path, monkeypatch):
    folder = write_ml100k(tmp_path / "ml")
    cache = tmp_path / "cache"
    ml = sources.MovieLens100K()
    fresh = store.load_cached(ml, folder, cache)
    real_reader = sources.read_ml100k
    monkeypatch.setattr(sources, "read_ml100k", lambda *a, **k: pytest.fail("parser called on a cache hit"))
    assert_same(fresh, store.load_cached(ml, folder, cache))

    stat = (folder / "u.user").stat()
    os.utime(folder / "u.user", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(pytest.fail.Exception, match="parser called"):
        store.load_cached(ml, folder, cache)
    monkeypatch.setattr(sources, "read_ml100k", real_reader)
    store.load_cached(ml, folder, cache)
    assert len(list((cache / "recdata").iterdir())) == 2


def test_cache_key_holds_the_readers_class_and_options(tmp_path):
    folder = write_amazon_unisrec(tmp_path / "am")
    office = sources.AmazonUniSRec(name="Office")
    assert store.cache_key(sources.AmazonUniSRec(), folder) != store.cache_key(office, folder)
    assert store.cache_key(sources.AmazonUniSRec(), folder) == store.cache_key(sources.AmazonUniSRec(), folder)

    class MyCsv(sources.Csv):  # another reader of the same files: another entry
        pass

    csv = write_csv_dataset(tmp_path / "csv")
    assert store.cache_key(sources.Csv(), csv) != store.cache_key(MyCsv(), csv)
    assert sources.Csv.identity() == "recsys_fewshot.data.sources.Csv"


def test_cache_none_writes_nothing_and_a_racing_writer_wins(tmp_path):
    folder = write_amazon_unisrec(tmp_path / "am")
    assert_same(store.load_cached(sources.AmazonUniSRec(), folder, None), sources.read_amazon_unisrec(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["am"]

    data = sources.read_amazon_unisrec(folder)
    target = tmp_path / "cache" / "entry"
    store._save(data, target)
    marker = target / "theirs"
    marker.write_text("")
    store._save(data, target)  # target already there: keep it, leave no temp folder
    assert marker.exists() and [p.name for p in target.parent.iterdir()] == ["entry"]


def test_cache_keeps_data_folders_apart_and_sees_edits_that_keep_size_and_mtime(tmp_path):
    # data folders inside the cache folder (RECSYS_FEWSHOT_CACHE = the data root): each keeps its own entry
    shared = tmp_path / "shared"
    movies = write_csv_dataset(shared / "movies")
    books = write_csv_dataset(shared / "books", n_users=30, n_items=25, seed=5)
    assert store.load_cached(sources.Csv(), movies, shared).n_users == 60
    assert store.load_cached(sources.Csv(), books, shared).n_users == 30  # not the movies' cached tables
    # a same-size edit with the old mtime put back (touch -r, a pinned archive date): a new entry
    first = store.load_cached(sources.Csv(), movies, tmp_path / "cache")
    train = movies / "train.csv"
    text, stat = train.read_text(), train.stat()
    lines = text.splitlines(keepends=True)
    column = lines[0].strip().split(",").index("rating")
    cells = lines[1].rstrip("\n").split(",")
    assert len(cells[column]) == 1  # one digit: another one keeps the file's size
    cells[column] = "1" if cells[column] != "1" else "2"
    lines[1] = ",".join(cells) + "\n"
    train.write_text("".join(lines))
    assert train.stat().st_size == stat.st_size
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = store.load_cached(sources.Csv(), movies, tmp_path / "cache")
    assert not again.interactions["rating"].equals(first.interactions["rating"])
    # a cache that cannot be written: the tables are still read
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    assert store.load_cached(sources.Csv(), books, blocked / "cache").n_users == 30


def test_stale_partial_cache_folders_of_killed_writers_are_swept(tmp_path):
    folder = write_csv_dataset(tmp_path / "d")
    root = tmp_path / "cache" / "recdata"
    old, young = root / ".csv-abc-killed", root / ".csv-def-writing"
    for partial in (old, young):
        partial.mkdir(parents=True)
    os.utime(old, (0, 0))
    store.load_cached(sources.Csv(), folder, tmp_path / "cache")
    assert not old.exists() and young.exists()  # a live writer's folder is left alone


# ---------------------------------------------------------------- the real files
@pytest.mark.realdata
def test_real_data_counts():
    root = os.environ.get("RECSYS_FEWSHOT_DATA")
    if not root or not (Path(root) / "ml-100k").is_dir():
        pytest.skip("set RECSYS_FEWSHOT_DATA to a folder holding ml-100k/")
    ml = sources.read_ml100k(Path(root) / "ml-100k")
    assert (len(ml.interactions), ml.n_users, ml.n_items) == (100_000, 943, 1_682)
    assert np.bincount(ml.folds["u1"]).tolist() == [80_000, 0, 20_000]
    amazon = Path(root) / "amazon-scientific-unisrec"
    if amazon.is_dir():
        am = sources.read_amazon_unisrec(amazon)
        assert (am.n_users, am.n_items, len(am.interactions)) == (8_442, 4_385, 59_427)
        assert np.bincount(am.folds["given"]).tolist() == [59_427 - 2 * 8_442, 8_442, 8_442]


def test_planted_genres_are_in_titles():
    ratings, items, _ = planted_catalogue(seed=5)
    main = items["title"].str.split().str[-1]
    assert all(g in genres.split("|") for g, genres in zip(main, items["genres"])) and set(main) == set(GENRES)
    assert ratings.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert not ratings.duplicated(["user_id", "item_id"]).any() and ratings["rating"].between(1, 5).all()
    by_genre = ratings.assign(genre=ratings["item_id"].map(dict(zip(items["item_id"], main))))
    spread = by_genre.groupby(["user_id", "genre"])["rating"].mean().groupby("user_id").agg(lambda m: m.max() - m.min())
    assert spread.median() >= 2.0  # each user's liked genres stand out


def test_ml100k_unknown_ids_print_plainly_and_a_cache_dir_file_is_refused(tmp_path, monkeypatch):
    from recsys_fewshot.config import resolve_cache_dir

    folder = write_ml100k(tmp_path / "ml-100k")
    lines = (folder / "u.data").read_text().splitlines()
    lines[1] = "\t".join(["1", "9999", "4", "881250949"])  # an item u.item does not list
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u\.data line 2: item_id 9999 is not in u\.item"):
        sources.read_ml100k(folder)
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    with pytest.raises(ValueError, match=r"cache_dir=.*cache-file is a file, not a folder"):
        resolve_cache_dir(str(not_a_folder))
    monkeypatch.setenv("RECSYS_FEWSHOT_CACHE", str(not_a_folder))
    with pytest.raises(ValueError, match=r"\$RECSYS_FEWSHOT_CACHE=.*is a file"):
        resolve_cache_dir(None)
    assert resolve_cache_dir(str(tmp_path / "new")) == (tmp_path / "new").resolve()  # a folder to be made is fine
