"""A reused run directory: a refused start leaves the earlier results whole (and re-scorable); a new run
replaces every one of them; bad settings fail before any training, naming their key."""

from __future__ import annotations

import pandas as pd
import pytest

from fakes import write_csv_dataset
from inprocess import compose, run_job

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def common(tmp_path):
    data = write_csv_dataset(tmp_path / "data" / "shop", presplit=False)
    return ["dataset=csv", f"dataset.dir={data}", "encoder=none", "logger=none", f"cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=2", "trainer.progress=false", "trainer.cpu=true", "trainer.batch_size=64"]


def test_a_refused_start_leaves_the_earlier_results_and_they_still_re_score(tmp_path, common):
    from recsys_fewshot.evaluate import evaluate_run

    run = tmp_path / "run"
    first = run_job(run, *common, "trainer.checkpoint_every=2", "save_predictions=true")
    before = {name: (run / name).read_bytes() for name in ("metrics.json", "model.safetensors", "config.yaml",
                                                           "predictions.parquet")}
    # a resume under another configuration, then a rerun with a bad setting: both refused before any work
    with pytest.raises(ValueError, match="another configuration: head.dim: 64 -> 8"):
        run_job(run, *common, "trainer.checkpoint_every=2", "save_predictions=true", "trainer.resume=true",
                "head.dim=8")
    with pytest.raises(ValueError, match=r"eval.ks \(entry -5\)=-5: expected an integer >= 1"):
        run_job(run, *common, "eval.ks=[-5]")
    assert {name: (run / name).read_bytes() for name in before} == before
    # .hydra/config.yaml now holds the refused start's settings; the results are scored with their own
    again = evaluate_run(run)
    for name, value in first["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name


def test_a_new_run_in_the_same_dir_replaces_every_earlier_result(tmp_path, common):
    run = tmp_path / "run"
    run_job(run, *common, "save_predictions=true")
    assert (run / "predictions.parquet").exists()
    second = run_job(run, *common, "save_predictions=false", "head.dim=8", "seed=1")
    assert not (run / "predictions.parquet").exists()  # not left over from the first run
    assert second["seed"] == 1 and "dim: 8" in (run / "config.yaml").read_text()


def test_a_bad_optimized_metric_fails_before_training_and_never_beside_results(tmp_path, common):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"optimized_metric='valid/rmsee': no run reports 'rmsee'"):
        run_job(run, *common, "optimized_metric=valid/rmsee")
    assert not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()
    # a real name that this run does not report (ranking metrics on a rating run without eval.ranking)
    with pytest.raises(KeyError, match="optimized_metric='valid/ndcg@10'"):
        run_job(run, *common, "optimized_metric=valid/ndcg@10", "eval.ranking=false")
    assert not (run / "metrics.json").exists()  # failed, not finished and failed both


@pytest.mark.parametrize("override, message", [
    ("eval.ks=[10,-5]", r"eval.ks \(entry -5\)"),
    ("eval.ks=[]", r"eval.ks=\[\]"),
    ("eval.chunk_size=0", r"eval.chunk_size=0: expected an integer >= 1"),
    ("trainer.batch_size=0", r"trainer.batch_size=0: expected an integer >= 1"),
    ("trainer.max_epochs=-1", r"trainer.max_epochs=-1: expected an integer >= 0"),
    ("trainer.limit_train_batches=-1", r"trainer.limit_train_batches=-1"),
    ("head.dim=-4", r"head.dim=-4: expected an integer >= 1"),
])
def test_out_of_range_settings_name_their_key(override, message):
    from recsys_fewshot.settings import check_settings

    check_settings(compose())  # the defaults pass
    with pytest.raises(ValueError, match=message):
        check_settings(compose(override))


def test_ranking_without_any_relevant_training_row_says_which_threshold(tmp_path):
    folder = tmp_path / "binary"
    write_csv_dataset(folder, presplit=False)
    frame = pd.read_csv(folder / "interactions.csv", dtype=str)
    frame["rating"] = (frame["rating"].astype(float) >= 4).astype(int)  # 0/1 "ratings"
    frame.to_csv(folder / "interactions.csv", index=False)
    with pytest.raises(ValueError, match=r"no training interaction is relevant \(dataset.positive_threshold=4.0; "
                                         r"ratings in the training part run from 0.0 to 1.0\)"):
        run_job(tmp_path / "run", "dataset=csv", f"dataset.dir={folder}", "encoder=none", "logger=none",
                f"cache_dir={tmp_path / 'cache'}", "task=ranking", "trainer.cpu=true")
