"""The end-to-end slice through the real CLI: Hydra composition, data, encoder, MF, metrics, wandb."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fakes import write_csv_dataset, write_ml100k

REPO = Path(__file__).resolve().parents[1]


def cli(*overrides: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "RECSYS_FEWSHOT_OFFLINE": "1",
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "recsys_fewshot.train", *overrides], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_ml100k(root / "ml-100k", n_users=120, n_items=50, n_per_user=25, seed=1)
    return root


def common(data_root: Path, run_dir: Path, cache: Path, encoder: Path | str) -> list[str]:
    return [f"dataset.root={data_root}", f"hydra.run.dir={run_dir}", f"cache_dir={cache}",
            f"encoder.name_or_path={encoder}", "trainer.progress=false", "trainer.max_epochs=4",
            "trainer.batch_size=256"]


@pytest.mark.slow
def test_default_run_writes_everything_and_second_run_hits_the_cache(data_root, tiny_bert, tmp_path):
    cache = tmp_path / "cache"
    run1 = tmp_path / "run1"
    proc = cli(*common(data_root, run1, cache, tiny_bert))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run1 / "metrics.json").read_text())
    assert metrics["task"] == "rating"
    assert metrics["split"]["train"] + metrics["split"]["valid"] + metrics["split"]["test"] == 120 * 25
    for key in ("rmse", "mae", "auc", "recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert isinstance(metrics["test"][key], float), key
    assert "rmse" in metrics["valid"]
    assert set(metrics["seconds"]) >= {"data", "encode", "train", "eval", "total"}
    assert metrics["encoder"]["misses"] == 50 and metrics["encoder"]["hits"] == 0

    preds = pd.read_parquet(run1 / "predictions.parquet")
    assert list(preds.columns) == ["user_id", "item_id", "target", "score"]
    assert len(preds) == metrics["split"]["test"]
    raw = pd.read_csv(data_root / "ml-100k" / "u.data", sep="\t", names=["u", "i", "r", "t"])
    pairs = set(zip(raw.u.astype(str), raw.i.astype(str)))
    assert set(zip(preds.user_id, preds.item_id)) <= pairs  # raw ids, as in the input
    assert preds.score.between(1, 5).all()

    from safetensors.torch import load_file
    weights = load_file(run1 / "model.safetensors")
    assert "items.id_emb.weight" in weights and "global_bias" in weights
    assert (run1 / ".hydra" / "config.yaml").exists()
    offline_runs = list((run1 / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("run-*.wandb")), "wandb wrote no run file"

    # same encoder and texts: the second run does no forward pass at all
    run2 = tmp_path / "run2"
    proc = cli(*common(data_root, run2, cache, tiny_bert), "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads((run2 / "metrics.json").read_text())
    assert second["encoder"]["forward_calls"] == 0 and second["encoder"]["hits"] == 50
    assert not (run2 / "wandb").exists()
    # same seeds, same data: the same numbers
    assert second["test"]["rmse"] == pytest.approx(metrics["test"]["rmse"], abs=1e-6)


@pytest.mark.slow
def test_csv_folder_presplit_ranking(tmp_path, tiny_bert):
    folder = write_csv_dataset(tmp_path / "mycsv", presplit=True)
    run = tmp_path / "run"
    proc = cli("dataset=csv", f"dataset.dir={folder}", "split=given", "task=ranking", "logger=none",
               f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}", f"encoder.name_or_path={tiny_bert}",
               "trainer.progress=false", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "ranking"
    assert set(metrics["test"]) >= {"recall@10", "ndcg@10", "precision@10", "hr@10", "mrr@10"}
    assert "rmse" not in metrics["test"]
    preds = pd.read_parquet(run / "predictions.parquet")
    assert preds.user_id.str.startswith("u").all() and preds.item_id.str.startswith("i").all()


BAD = {
    "missing data folder": (["dataset.root=/nonexistent/data"], "/nonexistent/data"),
    "unknown option": (["encoder=bert-bse"], "bert-bse"),
    "typo in a key": (["head.dimm=8"], "head.dimm"),
    "wrong type": (["trainer.max_epochs=ten"], "trainer.max_epochs"),
    "encoder path missing": (["encoder.name_or_path=/no/such/model"], "/no/such/model"),
    "bert-base offline": (["encoder=bert-base"], "bert-base-uncased"),
    "bad template column": (["dataset.text_template={plot}"], "plot"),
    "empty test split": (["split.test_ratio=0.0"], "test set is empty"),
    "unknown batching": (["trainer.batching=shuffled"], "trainer.batching"),
    "unknown experiment preset": (["experiment=warm_eas"], "Could not find 'experiment/warm_eas'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_clearly_and_writes_nothing(case, data_root, tmp_path):
    overrides, needle = BAD[case]
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    base = [f"dataset.root={data_root}", f"hydra.run.dir={run}", f"cache_dir={cache}", "logger=none",
            "trainer.progress=false", "trainer.max_epochs=1"]
    # the run's own key comes last so it wins over the defaults above
    proc = cli(*base, *overrides, env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert not (run / "metrics.json").exists()
    assert not list(cache.glob("embeddings/*/*.safetensors"))


@pytest.mark.slow
def test_bad_csv_names_file_and_column(tmp_path):
    folder = write_csv_dataset(tmp_path / "bad", presplit=True)
    train = pd.read_csv(folder / "train.csv", dtype=str)
    train.loc[3, "rating"] = "five"
    train.to_csv(folder / "train.csv", index=False)
    run = tmp_path / "run"
    proc = cli("dataset=csv", f"dataset.dir={folder}", "split=given", "encoder=none", "logger=none",
               f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}")
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "train.csv" in out and "rating" in out
    assert not (run / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("scale", [[], ["experiment=scale", "trainer.batch_size=128"]], ids=["defaults", "scale"])
def test_mf_beats_the_global_mean_on_planted_signal(tmp_path, scale):
    """Ratings follow user-genre affinity: an ID-only MF must clearly beat predicting the mean (also with the
    big-data preset: user-grouped batches and sparse ID-table updates)."""
    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=200, n_items=60, n_per_user=30, seed=3)
    run = tmp_path / "run"
    proc = cli(f"dataset.root={root}", "encoder=none", "logger=none", f"hydra.run.dir={run}",
               f"cache_dir={tmp_path / 'cache'}", "trainer.progress=false", "trainer.batch_size=128",
               "trainer.max_epochs=40", "trainer.patience=4", "head.dim=16", *scale)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    mf, mean = metrics["test"]["rmse"], metrics["baseline"]["rmse"]
    assert mf < 0.8 * mean, (mf, mean)
    assert metrics["test"]["auc"] > 0.75


@pytest.mark.realdata
def test_real_movielens_u1(tmp_path):
    root = os.environ.get("RECSYS_FEWSHOT_DATA")
    if not root or not (Path(root) / "ml-100k" / "u.data").exists():
        pytest.skip("RECSYS_FEWSHOT_DATA does not point at a folder with ml-100k/")
    run = tmp_path / "run"
    proc = cli("split=given", "logger=none", f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}",
               "trainer.progress=false", "trainer.max_epochs=3", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"]["test"] == 20_000 and metrics["split"]["train"] + metrics["split"]["valid"] == 80_000
    assert metrics["split"]["unseen_item_rows"] == 0  # text vectors serve u1.test's 32 new items
    assert metrics["test"]["rmse"] < 0.98
    assert metrics["test"]["rmse"] < metrics["baseline"]["rmse"] - 0.1
