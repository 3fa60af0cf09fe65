"""Serving a trained run beyond its training data, on real run folders trained on tiny data: users given by a
history at request time, items added after training, scores of chosen pairs, explanations, and bad request
files refused by name (docs/usage/recommend.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inprocess import run_job

pytestmark = pytest.mark.usefixtures("one_thread")


def train(run: Path, *overrides: str) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_job(run, f"cache_dir={run.parent / 'cache'}", "logger=none", "trainer.progress=false", "trainer.cpu=true",
                *overrides)
    finally:
        torch.set_num_threads(threads)
    return run


def load(run: Path):
    import recsys_fewshot

    return recsys_fewshot.load_run(run)


def read_history(trained, user: str) -> pd.DataFrame:
    """The history the run reads for its user `user` (the test ranking's), as rows user_id, item_id, rating."""
    prep = trained.run.prep
    held = prep.eval_histories.test if prep.eval_histories.test is not None else prep.history
    u = trained.user_ids.get_loc(user)
    lo, hi = held.indptr[u], held.indptr[u + 1]
    frame = pd.DataFrame({"user_id": user, "item_id": trained.item_ids.to_numpy()[held.items[lo:hi]]})
    if held.ratings is not None:
        frame["rating"] = held.ratings[lo:hi]
    elif (held.weights[lo:hi] <= 0).any():  # a history of every rated row, weight 0 where not liked
        frame["rating"] = np.where(held.weights[lo:hi] > 0, 5.0, 1.0)
    return frame


@pytest.fixture(scope="module")
def text_mf(small_ml100k, tiny_bert, tmp_path_factory) -> Path:
    """model=inductive with neither ID embeddings nor biases (task=rating): users are their rated items and
    items their text, so a user's scores follow from their history and an item's from its text."""
    return train(tmp_path_factory.mktemp("text_mf") / "run", "model=inductive", f"dataset.root={small_ml100k}",
                 f"encoder.name_or_path={tiny_bert}", "trainer.max_epochs=2", "head.dim=8", "head.item_id=false",
                 "head.biases=false", "head.history_bias=false")


@pytest.fixture(scope="module")
def text_mf_run(text_mf):
    return load(text_mf)


@pytest.mark.slow
def test_a_posted_history_equal_to_a_users_gets_that_users_scores(text_mf_run):
    """A new user posting user 7's history (with its ratings) is user 7 to a head without user IDs: the same
    items, scores and order; and user 7 posting their own history changes nothing."""
    trained = text_mf_run
    mine = read_history(trained, "7")
    n_items = len(trained.item_ids)
    theirs = trained.recommend(["7"], k=n_items, exclude_known=False)
    new = trained.recommend(history=mine.assign(user_id="newcomer"), k=n_items, exclude_known=False)
    assert new["user_id"].unique().tolist() == ["newcomer"]
    assert new["item_id"].tolist() == theirs["item_id"].tolist()
    np.testing.assert_allclose(new["score"], theirs["score"], rtol=1e-5, atol=1e-6)
    again = trained.recommend(["7"], history=mine, k=n_items, exclude_known=False)
    np.testing.assert_allclose(again["score"], theirs["score"], rtol=1e-5, atol=1e-6)

    # by default a posted user's own items are left out, and nothing else is
    top = trained.recommend(history=mine.assign(user_id="newcomer"), k=n_items)
    assert len(top) == n_items - mine["item_id"].nunique() and not set(top["item_id"]) & set(mine["item_id"])
    scored = trained.score(top[["user_id", "item_id"]], history=mine.assign(user_id="newcomer"))
    np.testing.assert_allclose(scored["score"], top["score"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_posted_users_mix_with_the_runs_users_and_are_checked(text_mf_run, caplog):
    from recsys_fewshot.serving import ServeError

    trained = text_mf_run
    posted = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["1", "2", "3", "404"],
                           "rating": [5, 4, 1, 5]})
    with caplog.at_level(logging.WARNING, "recsys_fewshot.recommend"):
        recs = trained.recommend(["b", "7", "a"], history=posted, k=2)
    assert recs["user_id"].tolist() == ["b", "b", "7", "7", "a", "a"]  # the order asked
    assert "history: 1 of 4 rows name 1 items not in the run's catalogue (404): skipped" in caplog.text
    with pytest.raises(ServeError, match=r"history: 1 of 4 rows .*\(404\); unknown=skip leaves them out"):
        trained.recommend(history=posted, unknown="error")
    with pytest.raises(ServeError, match="no column 'rating': a task=rating run reads each history item's rating"):
        trained.recommend(history=posted.drop(columns="rating"))
    with pytest.raises(ServeError, match="history: column 'rating' line 2: expected a number, got 'five'"):
        trained.recommend(history=posted.assign(rating=["5", "five", "1", "1"]))
    with pytest.raises(ServeError, match="history: no column 'item_id'"):
        trained.recommend(history=posted.rename(columns={"item_id": "item"}))


def new_items_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def ml_item(trained, item: str, **changes) -> dict:
    """An items.csv row (item_id, title, year, genres) with the text fields of the run's item `item`."""
    row = trained.run.data.items.set_index("item_id").loc[item]
    return {"item_id": item, "title": row["title"], "year": row["year"], "genres": row["genres"], **changes}


@pytest.fixture(scope="module")
def id_mf(small_ml100k, tiny_bert, tmp_path_factory) -> Path:
    """head=mf with ID embeddings and biases and no history pooling (head.user_history=false)."""
    return train(tmp_path_factory.mktemp("id_mf") / "run", f"dataset.root={small_ml100k}",
                 f"encoder.name_or_path={tiny_bert}", "trainer.max_epochs=1", "head.dim=8", "head.user_history=false")


@pytest.mark.slow
def test_a_head_without_history_pooling_refuses_posted_users_and_scores_new_items_from_text(id_mf, tmp_path):
    """No posted history for a head that knows users only by ID; a new item gets the text projection of its text
    alone (no ID embedding, bias 0), and the exported vectors still reproduce its scores."""
    from recsys_fewshot.serving import ServeError

    trained = load(id_mf)
    with pytest.raises(ServeError, match=r"head=mf was trained with head.user_history=false: .*heads that serve "
                                         r"new users: .*ease.*text_pool"):
        trained.recommend(history=pd.DataFrame({"user_id": ["x"], "item_id": ["1"], "rating": [5.0]}))

    file = new_items_csv(tmp_path / "items.csv", [ml_item(trained, "3", item_id="new-3"),
                                                  ml_item(trained, "4")])  # "4": already there, kept as it is
    added = trained.add_items(file)
    assert added["item_id"].tolist() == ["new-3"] and trained.item_ids[-1] == "new-3"
    model = trained.run.model
    text = trained.item_vectors("text")
    np.testing.assert_array_equal(text.loc["new-3"], text.loc["3"])  # the same text, the same encoder vector
    import torch

    with torch.no_grad():
        projected = model.items.proj(torch.tensor(text.loc["3"].to_numpy(), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(trained.item_vectors("model").loc["new-3"], projected, rtol=1e-5, atol=1e-6)

    record = trained.export(tmp_path / "export")
    assert record["items"] == 51 and record["matrices"]["item_vector"] == [51, 8]
    from safetensors.numpy import load_file

    m = load_file(str(tmp_path / "export" / "vectors.safetensors"))
    assert m["item_bias"][-1] == 0.0
    scored = trained.score(pd.DataFrame({"user_id": ["5", "5"], "item_id": ["new-3", "3"]}))
    u = trained.user_ids.get_loc("5")
    again = m["item_vector"][[50, 2]] @ m["user_vector"][u] + m["user_bias"][u] + m["item_bias"][[50, 2]] + \
        m["global_bias"][0]
    np.testing.assert_allclose(scored["score"], again, rtol=1e-5)
    recs = trained.recommend(["5"], k=51, exclude_known=False)
    assert "new-3" in set(recs["item_id"]) and len(recs) == 51
    near = trained.similar_items(["new-3"], k=1, vectors="text")
    assert near["similar_id"].tolist() == ["3"] and near["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def pooled(small_ml100k, tiny_bert, tmp_path_factory) -> Path:
    """head=text_pool (no trained parameters; centred, half-whitened text vectors), task=ranking."""
    return train(tmp_path_factory.mktemp("pooled") / "run", f"dataset.root={small_ml100k}",
                 f"encoder.name_or_path={tiny_bert}", "head=text_pool", "task=ranking", "head.center=true",
                 "head.whiten=0.5")


@pytest.mark.slow
def test_a_new_item_with_an_items_text_scores_as_that_item_and_is_explained_by_it(pooled, tmp_path):
    """For a text head, an item added with item 3's text is item 3 to every user (the catalogue's centring and
    whitening applied to it); a posted user whose newest item is 3 is recommended the twin because of 3."""
    trained = load(pooled)
    trained.add_items(new_items_csv(tmp_path / "items.csv", [ml_item(trained, "3", item_id="twin")]))
    scores = trained.score(pd.DataFrame({"user_id": ["5", "5", "9", "9"], "item_id": ["3", "twin", "3", "twin"]}))
    np.testing.assert_allclose(scores["score"].iloc[[1, 3]], scores["score"].iloc[[0, 2]], rtol=1e-5, atol=1e-6)
    near = trained.similar_items(["twin"], k=1)  # this head's vectors are the text ones
    assert near["similar_id"].tolist() == ["3"] and near["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)

    posted = pd.DataFrame({"user_id": "fan", "item_id": ["10", "20", "3"]})  # oldest first: "3" is the newest
    recs = trained.recommend(history=posted, k=3, explain=True)
    assert recs["item_id"].iloc[0] == "twin" and "3" not in set(recs["item_id"])
    assert recs["because"].iloc[0][0] == "3"
    # pool=mean: a history item's term is its share of the cosine; a history of one item: the whole score
    solo = trained.recommend(history=pd.DataFrame({"user_id": ["solo"], "item_id": ["3"]}), k=10, explain=True,
                             exclude_known=False)
    assert solo["item_id"].iloc[0] in ("3", "twin") and solo["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    positive = solo["score"] > 0
    assert positive.sum() >= 3 and (solo["because"][positive].map(list) == pd.Series([["3"]] * 10)[positive]).all()
    np.testing.assert_allclose(solo["because_weight"][positive].map(lambda w: w[0]), solo["score"][positive],
                               rtol=1e-4, atol=1e-5)
    assert (solo["because"][~positive].map(len) == 0).all()


def planted_pairs(folder: Path, n_users: int = 100, n_fillers: int = 40, seed: int = 0) -> Path:
    """A CSV folder (implicit data) where half the users take both "anchor" and "echo" (plus 4 random fillers) and
    the others 5 fillers: for EASE, "anchor" alone predicts "echo"."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = [f"f{i}" for i in rng.choice(n_fillers, 4 if u % 2 == 0 else 5, replace=False)]
        if u % 2 == 0:
            items += ["anchor", "echo"]
        rows += [{"user_id": f"u{u}", "item_id": i, "timestamp": t} for t, i in enumerate(rng.permutation(items))]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "interactions.csv", index=False)
    titles = {"anchor": "anchor", "echo": "echo", **{f"f{i}": f"filler {i}" for i in range(n_fillers)}}
    pd.DataFrame({"item_id": list(titles), "title": list(titles.values())}).to_csv(folder / "items.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def ease(tmp_path_factory) -> Path:
    """head=ease (task=ranking, closed form) on `planted_pairs`."""
    folder = planted_pairs(tmp_path_factory.mktemp("planted") / "data")
    return train(folder.parent / "run", "dataset=csv", f"dataset.dir={folder}", "dataset.task=ranking", "encoder=none",
                 "head=ease", "head.reg=10")


@pytest.fixture(scope="module")
def ease_run(ease):
    return load(ease)


@pytest.mark.slow
def test_ease_explains_a_recommendation_by_the_planted_history_item(ease_run):
    """A new user with "anchor" among fillers gets "echo" first, because of "anchor": the term x_anchor .
    B[anchor, echo] of the weights the run fitted; the same user posting their own history gets their scores."""
    trained = ease_run
    posted = pd.DataFrame({"user_id": "new", "item_id": ["f1", "anchor", "f2"]})
    recs = trained.recommend(history=posted, k=3, explain=True)
    assert recs["item_id"].iloc[0] == "echo" and recs["because"].iloc[0][0] == "anchor"
    weights = trained.run.model.weights.numpy()
    index = {i: n for n, i in enumerate(trained.item_ids)}
    terms = {h: weights[index[h], index["echo"]] for h in ("f1", "anchor", "f2")}
    assert recs["because_weight"].iloc[0][0] == pytest.approx(terms["anchor"], rel=1e-5)
    assert recs["because"].iloc[0] == sorted((h for h in terms if terms[h] > 0), key=lambda h: -terms[h])
    assert sum(recs["because_weight"].iloc[0]) <= recs["score"].iloc[0] + 1e-5  # bias 0: the positive terms

    user = trained.user_ids[0]
    mine = read_history(trained, user)
    n_items = len(trained.item_ids)
    theirs = trained.recommend([user], k=n_items, exclude_known=False)
    again = trained.recommend(history=mine.assign(user_id="copy"), k=n_items, exclude_known=False)
    assert again["item_id"].tolist() == theirs["item_id"].tolist()
    np.testing.assert_allclose(again["score"], theirs["score"], rtol=1e-6, atol=1e-6)
    scored = trained.score(pd.DataFrame({"user_id": ["new"], "item_id": ["echo"]}), history=posted, explain=True)
    assert scored["because"].iloc[0] == recs["because"].iloc[0]


@pytest.mark.slow
def test_a_head_fitted_per_item_refuses_new_items_naming_the_heads_that_score_them(ease_run, tmp_path):
    from recsys_fewshot.serving import ServeError

    with pytest.raises(ServeError, match=r"head=ease cannot score items added after training .*: .*mf.*seq.*"
                                         r"text_pool"):
        ease_run.add_items(new_items_csv(tmp_path / "items.csv", [{"item_id": "late", "title": "late"}]))
    assert "late" not in ease_run.item_ids


@pytest.fixture(scope="module")
def ctr(tiny_bert, tmp_path_factory) -> Path:
    """head=fewshot on few-shot CTR samples (CSV with a history column; every sample a user of its own)."""
    from fakes import write_ctr_csv

    folder = write_ctr_csv(tmp_path_factory.mktemp("ctr") / "data", n_samples=80)
    return train(folder.parent / "run", "dataset=csv", f"dataset.dir={folder}", "split=given", "task=ctr",
                 "head=fewshot", f"encoder.name_or_path={tiny_bert}", "trainer.max_epochs=2")


@pytest.mark.slow
def test_cli_pairs_of_a_ctr_run_with_a_posted_sample_history(ctr, tmp_path, capsys):
    """pairs= scores each pair with its click probability; a sample posted with test-3's history (items and 0/1
    labels) scores as test-3."""
    from recsys_fewshot.recommend import main

    trained = load(ctr)
    mine = read_history(trained, "test-3")
    assert set(mine["rating"]) <= {0.0, 1.0} and len(mine) > 1
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps({"user_id": "visitor", "item_id": i, "rating": int(r)}) + "\n"
                               for i, r in zip(mine["item_id"], mine["rating"])))
    targets = ["i1", "i2", "i404"]
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"user_id": ["test-3"] * 3 + ["visitor"] * 3, "item_id": targets * 2}).to_csv(pairs, index=False)
    out = tmp_path / "scores.parquet"
    assert main([f"run_dir={ctr}", f"pairs={pairs}", f"history={history}", f"out={out}"]) == 0
    assert "2 of 6 pairs name a user or item not in the run's data ((test-3, i404), (visitor, i404)): skipped" \
        in capsys.readouterr().err
    scores = pd.read_parquet(out)
    assert scores.columns.tolist() == ["user_id", "item_id", "score", "probability"]
    np.testing.assert_allclose(scores["probability"], 1 / (1 + np.exp(-scores["score"].astype(np.float64))),
                               rtol=1e-6)
    np.testing.assert_allclose(scores["score"].iloc[2:], scores["score"].iloc[:2], rtol=1e-5, atol=1e-6)
    direct = trained.score(pd.DataFrame({"user_id": ["test-3"], "item_id": ["i1"]}))
    assert direct["score"].iloc[0] == pytest.approx(scores["score"].iloc[0], rel=1e-5)


@pytest.mark.slow
def test_cli_history_and_items_files_in_every_format_with_explanations(pooled, tmp_path, capsys):
    """history=FILE (+ items=FILE): the posted users' top-k in parquet, CSV and JSONL, the explanations a list in
    parquet and JSONL and a ";"-joined string in CSV; the same rows as the Python API."""
    from recsys_fewshot.recommend import main

    trained = load(pooled)
    items = new_items_csv(tmp_path / "items.csv", [ml_item(trained, "3", item_id="twin")])
    history = tmp_path / "history.csv"
    history.write_text("user_id,item_id\nfan,10\n\nfan,20\nfan,3\nother,7\nother,twin\n")
    frames = {}
    for suffix in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"recs.{suffix}"
        assert main([f"run_dir={pooled}", f"history={history}", f"items={items}", "k=4", "explain=true",
                     f"out={out}"]) == 0
        frames[suffix] = {"parquet": pd.read_parquet,
                          "csv": lambda p: pd.read_csv(p, dtype={"user_id": str, "item_id": str, "because": str}),
                          "jsonl": lambda p: pd.read_json(p, lines=True, dtype={"user_id": str, "item_id": str})
                          }[suffix](out)
    err = capsys.readouterr().err
    assert "added 1 items from" in err and "8 rows for 2 users written to" in err
    trained.add_items(items)
    posted = pd.DataFrame({"user_id": ["fan", "fan", "fan", "other", "other"],
                           "item_id": ["10", "20", "3", "7", "twin"]})
    expected = trained.recommend(history=posted, k=4, explain=True)
    for suffix, frame in frames.items():
        assert frame["user_id"].tolist() == ["fan"] * 4 + ["other"] * 4, suffix
        assert frame["item_id"].tolist() == expected["item_id"].tolist(), suffix
        np.testing.assert_allclose(frame["score"], expected["score"], rtol=1e-5)
        because = frame["because"].map(lambda v: v.split(";")) if suffix == "csv" else frame["because"].map(list)
        assert because.tolist() == expected["because"].map(list).tolist(), suffix
    assert frames["csv"]["because_weight"].iloc[0].count(";") == len(expected["because"].iloc[0]) - 1
    assert "twin" in set(frames["parquet"]["item_id"]) and frames["parquet"]["because"].iloc[0][0] == "3"


@pytest.mark.parametrize("name, text, message", [
    ("h.csv", "user_id,item\n1,2\n", "h.csv: no column 'item_id' (columns: user_id, item)"),
    ("h.csv", "user_id,item_id,rating\n1,2,5\n\n,3,4\n", "h.csv: column 'user_id' is empty on line 4"),
    ("h.csv", "user_id,item_id,rating\n1,2,5\n\n1,3,x\n", "h.csv: column 'rating' line 4: expected a number, got 'x'"),
    ("h.csv", "user_id,item_id,rating\n1,2,5\n1,3,\n", "h.csv: column 'rating' is empty on line 3"),
    ("h.csv", "user_id,item_id,rating\n1,2,1e50\n", "h.csv: column 'rating' line 2: 1e+50 is not a finite float32"),
    ("h.jsonl", '{"user_id": 1, "item_id": 2}\n\n{"user_id": 1, "item_id": \n', "h.jsonl line 3: not JSON"),
    ("h.jsonl", '{"user_id": 1, "item_id": 2}\n{"user_id": 1}\n', "h.jsonl line 2: no 'item_id' value"),
    ("h.txt", "1 2\n", "history=", ),
])
def test_a_malformed_history_file_is_named_with_its_column_and_line(name, text, message, tmp_path, capsys):
    """Checked before the run is loaded: the run folder is never read, and no output file appears."""
    from recsys_fewshot.recommend import main

    (tmp_path / name).write_text(text)
    out = tmp_path / "recs.csv"
    assert main([f"run_dir={tmp_path / 'never-read'}", f"history={tmp_path / name}", f"out={out}"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("text, message", [
    ("id,title\nx,y\n", "items.csv: missing column 'item_id'"),
    ("item_id,title\nx,y\nx,z\n", "items.csv: column 'item_id' line 3: id 'x' repeats"),
    ("item_id,title\nx,y\n\nx,z\n", "items.csv: column 'item_id' line 4: id 'x' repeats"),
    ("item_id,title\nx,y\n\n,z\n", "items.csv: column 'item_id' line 4: empty"),
])
def test_a_malformed_items_file_is_refused_before_loading(text, message, tmp_path, capsys):
    from recsys_fewshot.recommend import main

    (tmp_path / "items.csv").write_text(text)
    assert main([f"run_dir={tmp_path / 'never-read'}", f"items={tmp_path / 'items.csv'}"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_a_request_refused_after_loading_leaves_the_out_file_as_it_was(ease, tmp_path, capsys):
    from recsys_fewshot.recommend import main

    out = tmp_path / "recs.parquet"
    out.write_bytes(b"earlier results")
    history = tmp_path / "history.csv"
    history.write_text("user_id,item_id\nnew,anchor\nnew,gone\n")
    assert main([f"run_dir={ease}", f"history={history}", "unknown=error", f"out={out}"]) == 1
    err = capsys.readouterr().err
    assert "history.csv: 1 of 2 rows name 1 items not in the run's catalogue (gone); unknown=skip" in err
    assert out.read_bytes() == b"earlier results" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["history.csv", "recs.parquet"]
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\nlate,late\n")
    assert main([f"run_dir={ease}", f"items={items}", f"out={out}"]) == 1
    assert "head=ease cannot score items added after training" in capsys.readouterr().err
    assert main([f"run_dir={ease}", f"history={history}", "explain=true", "similar=[anchor]"]) == 1
    assert "explain=true names the history items" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier results"


@pytest.mark.slow
def test_requests_take_turns_on_the_shared_model(text_mf_run):
    """Each request swaps its histories into the one model: a second request in the same thread while a generator
    is unfinished is refused (it would read the other's histories), and another thread's request waits for the
    first to end, then gets the answer it gets alone."""
    import threading
    import time

    from recsys_fewshot.serving import ServeError

    trained = text_mf_run
    posted = trained.post_history(pd.DataFrame({"user_id": "new", "item_id": ["1", "2", "3"], "rating": 5.0}))
    users = trained.users(list(trained.user_ids[:6]))
    alone = pd.concat(trained.iter_recommendations(users, k=3, chunk_size=2), ignore_index=True)
    posted_alone = trained.recommend(history=pd.DataFrame({"user_id": "new", "item_id": ["1", "2", "3"],
                                                           "rating": 5.0}), k=3)

    first = trained.iter_recommendations(users, k=3, chunk_size=2)
    frames = [next(first)]
    with pytest.raises(ServeError, match="already answering a request in this thread"):
        next(trained.iter_recommendations(np.arange(1), k=3, posted=posted))
    with pytest.raises(ServeError, match="add_items during a request"):
        trained.add_items(pd.DataFrame({"item_id": ["late"], "title": ["late"]}))
    other: dict = {}
    waiter = threading.Thread(target=lambda: other.update(recs=trained.recommend(history=pd.DataFrame(
        {"user_id": "new", "item_id": ["1", "2", "3"], "rating": 5.0}), k=3)))
    waiter.start()
    try:
        time.sleep(0.3)
        assert "recs" not in other  # waiting for the unfinished request
        frames += list(first)
    finally:
        first.close()  # never leave the other thread waiting
        waiter.join(timeout=30)
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), alone)
    pd.testing.assert_frame_equal(other["recs"], posted_alone)


@pytest.mark.slow
def test_cli_pairs_with_a_history_file_reads_the_history_once(text_mf, tmp_path, capsys):
    """The skipped items of a history= file are reported once, naming the file (pairs= scores through the
    histories already read)."""
    from recsys_fewshot.recommend import main

    history = tmp_path / "history.csv"
    history.write_text("user_id,item_id,rating\nnew,1,5\nnew,gone,4\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id\nnew,2\n")
    assert main([f"run_dir={text_mf}", f"history={history}", f"pairs={pairs}", f"out={tmp_path / 'scores.csv'}"]) == 0
    err = capsys.readouterr().err
    assert err.count("not in the run's catalogue (gone): skipped") == 1
    assert f"{history}: 1 of 2 rows name 1 items not in the run's catalogue (gone): skipped" in err
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 1


@pytest.mark.slow
def test_an_added_item_without_text_is_refused_with_its_line(text_mf_run, tmp_path):
    """Every text column empty (the template would render its bare punctuation) is no text: refused, naming the
    file's own line (blank lines counted) or the row of a DataFrame (missing values are empty, not "None")."""
    from recsys_fewshot.serving import ServeError

    trained = text_mf_run
    file = tmp_path / "items.csv"
    file.write_text("item_id,title,year,genres\nfresh,A film,1999,Drama\n\nbare,,,\n")
    with pytest.raises(ServeError, match=r"items.csv: line 4: item 'bare' has no text"):
        trained.add_items(file)
    with pytest.raises(ServeError, match=r"items: line 2: item 'bare' has no text"):
        trained.add_items(pd.DataFrame({"item_id": ["fresh", "bare"], "title": ["A film", None],
                                        "year": ["1999", None], "genres": ["Drama", None]}))
    assert "fresh" not in trained.item_ids


@pytest.mark.parametrize("key, name", [("history", "h.jsonl"), ("users", "u.txt")])
def test_a_request_file_that_is_not_utf8_is_named_with_its_line(key, name, tmp_path, capsys):
    from recsys_fewshot.recommend import main

    content = b'{"user_id": "a", "item_id": "1"}\n{"user_id": "\xe9", "item_id": "2"}\n' if key == "history" \
        else b"a\n\xe9\n"
    (tmp_path / name).write_bytes(content)
    assert main([f"run_dir={tmp_path / 'never-read'}", f"{key}={tmp_path / name}"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / name} line 2: not UTF-8 text" in err and err.count("\n") == 1
