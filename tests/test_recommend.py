"""`python -m recsys_fewshot.recommend` and `recsys_fewshot.load_run` on a real run folder trained on tiny data:
recommendations are the evaluation's own ranking, in raw ids, without the known items; unknown ids and bad
files are reported by name; export reproduces the scores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inprocess import run_job

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(small_ml100k, tiny_bert, tmp_path_factory) -> Path:
    """A finished MF run (task=rating, full ranking metrics on test) on 120 users x 50 items."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("recommend") / "run"
    run_job(run, f"dataset.root={small_ml100k}", f"encoder.name_or_path={tiny_bert}",
            f"cache_dir={run.parent / 'cache'}", "logger=none", "trainer.max_epochs=2", "trainer.progress=false",
            "trainer.cpu=true", "head.dim=8")
    torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="module")
def loaded(trained):
    import recsys_fewshot

    return recsys_fewshot.load_run(trained)


def evaluated_test_ranking(loaded, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """(users, their ranked item indices) as the evaluation of the test part ranked them (`Run.evaluate`)."""
    from recsys_fewshot import evaluation

    seen = []
    original = evaluation.top_items

    def recording(model, score, users, *rest):
        out = original(model, score, users, *rest)
        seen.append((users.copy(), out[0]))
        return out

    monkeypatch.setattr(evaluation, "top_items", recording)
    loaded.run.evaluate(loaded.accelerator)  # valid, then test: one chunk each on this data
    monkeypatch.undo()
    assert len(seen) == 2
    return seen[-1]


@pytest.mark.slow
def test_top_k_is_what_the_evaluation_ranked(loaded, trained, monkeypatch):
    """The lists the test metrics were computed on, user by user and in order, and the same metrics as the
    per-user table training wrote."""
    from recsys_fewshot import evaluation, metrics

    users, ranked = evaluated_test_ranking(loaded, monkeypatch)
    raw = loaded.user_ids.to_numpy()[users]
    recs = loaded.recommend(raw, k=ranked.shape[1])
    assert recs["user_id"].nunique() == len(users)
    for user, row in zip(raw, ranked):
        mine = recs[recs["user_id"] == user].sort_values("rank")
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert mine["item_id"].tolist() == loaded.item_ids.to_numpy()[row[row >= 0]].tolist(), user

    saved = pd.read_parquet(trained / "per_user.parquet")  # what training's test ranking gave, from disk
    test = loaded.run.split.test
    liked = test[evaluation.relevant(test, loaded.run.prep.spec)]
    positives = {loaded.user_ids[u]: loaded.item_ids.to_numpy()[g.to_numpy()] for u, g in liked.groupby("user")["item"]}
    lists = recs.groupby("user_id")["item_id"].apply(list)
    index = {item: i for i, item in enumerate(loaded.item_ids)}
    width = ranked.shape[1]
    topk = np.array([[index[i] for i in lists[u]] + [-1] * (width - len(lists[u])) for u in saved["user_id"]])
    again = metrics.ranking_metrics_per_user(topk, [np.array([index[i] for i in positives[u]]) for u in saved["user_id"]],
                                             [10, 20])
    for name in ("ndcg@20", "recall@10", "mrr@20"):
        np.testing.assert_allclose(again[name], saved[name].to_numpy(), atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_raw_ids_known_items_and_k_beyond_the_catalogue(loaded, trained, caplog):
    data, split = loaded.run.data, loaded.run.split
    ids = pd.read_parquet(trained / "ids.parquet")  # written by train: the raw id of every model row
    assert ids[ids["kind"] == "user"]["id"].tolist() == [str(u) for u in data.user_raw_ids()]
    assert ids[ids["kind"] == "item"]["id"].tolist() == [str(i) for i in data.item_raw_ids()]

    user = "7"  # raw ids are 1..n, model rows 0..n-1: an off-by-one would serve user 8 or 6
    row = int(np.flatnonzero(data.user_raw_ids().astype(str) == user)[0])
    assert row == 6
    recs = loaded.recommend([user], k=5)
    assert recs["user_id"].unique().tolist() == ["7"] and len(recs) == 5
    assert recs["score"].is_monotonic_decreasing
    pairs = loaded.score(recs[["user_id", "item_id"]])  # the pair scorer agrees on the raw ids
    np.testing.assert_allclose(pairs["score"], recs["score"], rtol=1e-5)

    seen = pd.concat([split.train, split.valid])
    known = set(data.item_raw_ids().astype(str)[seen[seen["user"] == row]["item"].to_numpy()])
    assert known
    n_items = data.n_items
    with caplog.at_level(logging.WARNING, "recsys_fewshot.recommend"):
        everything = loaded.recommend([user], k=n_items + 10)
    assert f"k={n_items + 10} is more than the run's {n_items} items" in caplog.text
    assert len(everything) == n_items - len(known) and not known & set(everything["item_id"])
    assert everything["item_id"].is_unique
    kept = loaded.recommend([user], k=n_items, exclude_known=False)
    assert len(kept) == n_items and known <= set(kept["item_id"])
    tested = set(data.item_raw_ids().astype(str)[split.test[split.test["user"] == row]["item"].to_numpy()])
    assert not (tested | known) & set(loaded.recommend([user], k=n_items, exclude_known="all")["item_id"])


@pytest.mark.slow
def test_unknown_ids_are_counted_listed_and_skipped_or_refused(loaded, caplog):
    from recsys_fewshot.serving import ServeError

    with caplog.at_level(logging.WARNING, "recsys_fewshot.recommend"):
        recs = loaded.recommend(["3", "nobody", "4", "ghost", "3"], k=2)
    assert sorted(recs["user_id"].unique()) == ["3", "4"]
    assert "2 of 4 user ids are not in the run's data (nobody, ghost): skipped" in caplog.text
    with pytest.raises(ServeError, match=r"1 of 2 user ids .*\(nobody\); unknown=skip"):
        loaded.recommend(["3", "nobody"], unknown="error")
    with pytest.raises(ServeError, match=r"1 of 2 item ids .*\(9999\)"):
        loaded.similar_items(["1", "9999"], unknown="error")
    with pytest.raises(ServeError, match=r"1 of 2 pairs .*\(x, 1\)"):
        loaded.score(pd.DataFrame({"user_id": ["1", "x"], "item_id": ["2", "1"]}), unknown="error")


@pytest.mark.slow
def test_similar_items_are_the_cosine_neighbours(loaded):
    for kind in ("model", "text"):
        vectors = loaded.item_vectors(kind)
        unit = vectors.to_numpy() / np.linalg.norm(vectors.to_numpy(), axis=1, keepdims=True)
        found = loaded.similar_items(["1", "2"], k=4, vectors=kind)
        for item in ("1", "2"):
            mine = found[found["item_id"] == item]
            cosine = unit @ unit[vectors.index.get_loc(item)]
            cosine[vectors.index.get_loc(item)] = -np.inf  # never its own neighbour
            assert mine["similar_id"].tolist() == vectors.index[np.argsort(-cosine)[:4]].tolist()
            np.testing.assert_allclose(mine["score"], np.sort(cosine)[::-1][:4], rtol=1e-5)


@pytest.mark.slow
def test_cli_writes_every_format_and_exports_vectors_that_reproduce_the_scores(trained, tmp_path, capsys):
    from recsys_fewshot.recommend import main

    users = tmp_path / "users.txt"
    users.write_text("3\n\n12\nunknown-user\n")
    frames = {}
    for suffix in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"recs.{suffix}"
        assert main([f"run_dir={trained}", f"users={users}", "k=4", f"out={out}"]) == 0
        frames[suffix] = {"parquet": pd.read_parquet, "csv": lambda p: pd.read_csv(p, dtype={"user_id": str, "item_id": str}),
                          "jsonl": lambda p: pd.read_json(p, lines=True, dtype={"user_id": str, "item_id": str})}[suffix](out)
        assert not list(tmp_path.glob(f".recs.{suffix}*"))  # the temporary file was renamed into place
    err = capsys.readouterr().err
    assert "1 of 3 user ids are not in the run's data (unknown-user): skipped" in err
    assert "8 rows for 2 users written to" in err
    for suffix in ("csv", "jsonl"):
        pd.testing.assert_frame_equal(frames[suffix][["user_id", "rank", "item_id"]],
                                      frames["parquet"][["user_id", "rank", "item_id"]], check_dtype=False)
        np.testing.assert_allclose(frames[suffix]["score"], frames["parquet"]["score"], rtol=1e-6)

    export = tmp_path / "export"
    assert main([f"run_dir={trained}", f"export={export}"]) == 0
    record = json.loads((export / "export.json").read_text())
    assert record["vector"].startswith("score = user_vector . item_vector + user_bias")
    items, people = pd.read_parquet(export / "items.parquet"), pd.read_parquet(export / "users.parquet")
    from safetensors.numpy import load_file

    matrices = load_file(str(export / "vectors.safetensors"))
    assert matrices["item_vector"].shape == (len(items), 8) and matrices["item_text"].shape[0] == len(items)
    np.testing.assert_allclose(np.stack(items["vector"]), matrices["item_vector"])
    recs = frames["parquet"]
    u = people.index[people["user_id"] == "12"][0]
    cols = [items.index[items["item_id"] == i][0] for i in recs[recs["user_id"] == "12"]["item_id"]]
    again = (matrices["item_vector"][cols] @ matrices["user_vector"][u] + matrices["user_bias"][u]
             + matrices["item_bias"][cols] + matrices["global_bias"][0])
    np.testing.assert_allclose(again, recs[recs["user_id"] == "12"]["score"], rtol=1e-5)


@pytest.mark.parametrize("name, text, message", [
    ("users.csv", "id\n1\n", "users.csv: no column 'user_id' (columns: id)"),
    ("users.csv", "user_id,x\n1,a\n,b\n", "users.csv: column 'user_id' is empty on line 3"),
    ("users.jsonl", '{"user_id": 1}\n{"user_id": 2\n', "users.jsonl line 2: not JSON"),
    ("users.jsonl", '{"user_id": 1}\n{"user": 2}\n', "users.jsonl line 2: no 'user_id' value"),
    ("users.txt", "1\n2 3\n", "users.txt line 2: '2 3' is not one id"),
    ("users.xlsx", "", "expected a .txt, .csv, .parquet or .jsonl file"),
])
def test_a_malformed_users_file_is_named_with_its_column_and_line(name, text, message, tmp_path, capsys):
    """Checked before the run is loaded: the run folder is never read."""
    from recsys_fewshot.recommend import main

    (tmp_path / name).write_text(text)
    assert main([f"run_dir={tmp_path / 'never-read'}", f"users={tmp_path / name}"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_damaged_old_and_foreign_run_folders(trained, tmp_path, capsys):
    import shutil

    import yaml

    from recsys_fewshot.recommend import main

    def fails(run: Path, *args: str) -> str:
        assert main([f"run_dir={run}", "users=[1]", *args]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    (old / "ids.parquet").unlink()  # a run folder from before ids.parquet: the build path gives the ids
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["dataset"]["missing_text_limit"]  # saved before the key existed: today's default
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([f"run_dir={old}", "users=[1]", "k=3"]) == 0
    assert "3 rows for 1 users" in capsys.readouterr().err

    ids = pd.read_parquet(trained / "ids.parquet")
    ids.loc[ids["kind"] == "item", "id"] = ids.loc[ids["kind"] == "item", "id"].to_numpy()[::-1]
    ids.to_parquet(old / "ids.parquet")  # the data set no longer gives the ids the run was trained on
    assert "ids.parquet: the run was trained on 50 items" in fails(old)
    (old / "ids.parquet").unlink()

    config = yaml.safe_load((old / "config.yaml").read_text())
    config["dataset"]["reader"] = {"_target_": "os.system", "command": f"touch {tmp_path / 'ran'}"}
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert "os.system" in fails(old) and not (tmp_path / "ran").exists()  # refused, never executed
    (old / "model.safetensors").unlink()
    shutil.copy(trained / "config.yaml", old / "config.yaml")
    assert "no model.safetensors" in fails(old)
    assert "no config.yaml or .hydra/config.yaml" in fails(tmp_path)
    assert "k=0: expected a whole number >= 1" in fails(trained, "k=0")
    assert "similar= and export= are separate" in fails(trained, "similar=[1]", f"export={tmp_path}")
    assert "unknown=maybe: expected skip or error" in fails(tmp_path / "never-read", "unknown=maybe")
    assert "vectors=id: expected model or text" in fails(tmp_path / "never-read", "similar=[1]", "vectors=id")


@pytest.mark.slow
def test_cli_similar_items_from_a_file(trained, tmp_path, capsys):
    from recsys_fewshot.recommend import main

    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": 3}\n{"item_id": "404"}\n{"item_id": 5}\n')
    out = tmp_path / "similar.csv"
    assert main([f"run_dir={trained}", f"similar={items}", "k=3", "vectors=text", f"out={out}"]) == 0
    assert "1 of 3 item ids are not in the run's data (404): skipped" in capsys.readouterr().err
    found = pd.read_csv(out, dtype={"item_id": str, "similar_id": str})
    assert found.columns.tolist() == ["item_id", "rank", "similar_id", "score"]
    assert found["item_id"].tolist() == ["3"] * 3 + ["5"] * 3 and (found["item_id"] != found["similar_id"]).all()


@pytest.mark.slow
def test_a_ranking_run_of_a_head_without_towers(small_ml100k, tiny_bert, tmp_path, monkeypatch):
    """head=ease (task=ranking, closed form): its recommendations are its test ranking too; similar items and
    export fall back to the text vectors, and asking for the head's item vectors names what it lacks."""
    import recsys_fewshot
    from recsys_fewshot.models.capabilities import Capabilities
    from recsys_fewshot.serving import ServeError

    run = tmp_path / "run"
    run_job(run, f"dataset.root={small_ml100k}", f"encoder.name_or_path={tiny_bert}", f"cache_dir={tmp_path / 'cache'}",
            "logger=none", "trainer.progress=false", "trainer.cpu=true", "head=ease", "task=ranking")
    loaded = recsys_fewshot.load_run(run)
    assert loaded.task == "ranking" and loaded.vector_kinds() == ["text"]
    users, ranked = evaluated_test_ranking(loaded, monkeypatch)
    recs = loaded.recommend(loaded.user_ids.to_numpy()[users], k=ranked.shape[1])
    lists = recs.groupby("user_id", sort=False)["item_id"].apply(list)
    for user, row in zip(loaded.user_ids.to_numpy()[users], ranked):
        assert lists[user] == loaded.item_ids.to_numpy()[row[row >= 0]].tolist()

    assert len(loaded.similar_items(["1"], k=3)) == 3  # the text vectors
    with pytest.raises(ServeError, match="vectors=model: head recsys_fewshot.models.ease.EASE has no item tower"):
        loaded.similar_items(["1"], vectors="model")
    record = loaded.export(tmp_path / "export")
    assert list(record["matrices"]) == ["item_text"] and record["vector"] is None
    monkeypatch.setattr(loaded, "capabilities", Capabilities(full_ranking=False))  # a prompt head's declaration
    with pytest.raises(ServeError, match=r"scores \(user, item\) pairs only"):
        loaded.recommend(["1"])
