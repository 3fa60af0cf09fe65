"""Cold-start protocols through the real CLI, on planted-signal data in the real formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from fakes import write_amazon_unisrec, write_ml100k
from test_train_cli import cli


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_ml100k(root / "ml-100k", n_users=120, n_items=60, n_per_user=25, seed=4)
    write_amazon_unisrec(root / "amazon-scientific-unisrec", n_users=60, n_items=30, seed=2)
    return root


def base(data_root: Path, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [f"dataset.root={data_root}", f"hydra.run.dir={run_dir}", f"cache_dir={cache}", "logger=none",
            "trainer.progress=false", *extra]


@pytest.mark.slow
def test_cold_items_text_tower_ranks_unseen_items_far_above_chance(data_root, tmp_path):
    """MiniLM item vectors: cold items are scored from text alone, and liked ones outrank disliked
    ones by more than 4 standard deviations of the AUC of random scores. (Users are their rated items
    weighted by centred rating: the fake users rate random items, so only the ratings say what they like.)"""
    run = tmp_path / "run"
    proc = cli(*base(data_root, run, tmp_path / "cache", "split=cold_items", "split.cold_ratio=0.25",
                     "model=inductive", "head.id_dropout=0.5", "trainer.max_epochs=8", "trainer.patience=8",
                     "optimizer.lr=0.01"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"]["protocol"] == "cold_items" and m["split"]["cold_items"] == 15
    preds = pd.read_parquet(run / "predictions.parquet")
    liked = preds.target >= 4
    n1, n0 = int(liked.sum()), int((~liked).sum())
    null_sd = math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))  # sd of the AUC of random scores
    assert m["test"]["auc"] > 0.5 + 4 * null_sd, (m["test"]["auc"], null_sd)
    # the ranking is over the 15 cold items only: recall@10 of a random order is about 10/15
    assert m["test"]["recall@10"] <= 1.0 and m["test"]["hr@10"] > 0.5


@pytest.mark.slow
def test_cold_users_are_served_from_their_support_without_retraining(data_root, tiny_bert, tmp_path):
    run = tmp_path / "run"
    proc = cli(*base(data_root, run, tmp_path / "cache", "split=cold_users", "split.k=5", "model=inductive",
                     f"encoder.name_or_path={tiny_bert}", "trainer.max_epochs=3", "split.adapt_steps=30"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"]["k"] == 5 and m["split"]["cold_users"] == 24
    assert m["split"]["unseen_user_rows"] == m["split"]["test"]  # every test user is cold
    for key in ("rmse", "auc", "ndcg@10", "recall@10"):
        assert math.isfinite(m["test"][key]), key
    # cold users' vectors come from their support: a model that ignores it does worse than the baseline
    assert m["test"]["rmse"] < m["baseline"]["rmse"] + 0.05
    # per-user fine-tuning on the support is reported apart, and moves the scores without wrecking them
    adapted = m["test_adapted"]
    assert adapted["steps"] == 30 and adapted["rmse"] != m["test"]["rmse"]
    assert abs(adapted["rmse"] - m["test"]["rmse"]) < 0.1


@pytest.mark.slow
def test_sequential_head_trains_then_transfers_zero_shot(data_root, tiny_bert, tmp_path):
    """head=seq on UniSRec-format files; then a zero-shot run (no training) loads its text tower and
    transformer through init_from= and ranks all items."""
    cache = tmp_path / "cache"
    trained = tmp_path / "trained"
    common = ["dataset=amazon_unisrec", "split=given", "head=seq", "head.item_id=false", "head.dim=32",
              f"encoder.name_or_path={tiny_bert}", "eval.ks=[5,10]", "eval.history_with_valid=true"]
    proc = cli(*base(data_root, trained, cache, *common, "trainer.max_epochs=2", "trainer.num_negatives=16"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((trained / "metrics.json").read_text())
    assert first["task"] == "ranking" and 0 <= first["test"]["recall@10"] <= 1
    zero = tmp_path / "zero"
    proc = cli(*base(data_root, zero, cache, *common, "trainer.max_epochs=0", f"init_from={trained}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads((zero / "metrics.json").read_text())
    assert second["epochs"] == 0 and second["init_from"]["loaded"] > 0
    assert second["test"]["recall@10"] == pytest.approx(first["test"]["recall@10"], abs=1e-9)


@pytest.mark.slow
def test_ease_head_fits_in_closed_form_through_the_cli(data_root, tiny_bert, tmp_path):
    """head=ease (+ text prior, dislikes, refit on train + valid) on the fake ML-100K: no epochs, liked test
    items ranked above chance; on Amazon files it runs with recency-weighted inputs; task=rating is refused."""
    cache = tmp_path / "cache"
    run = tmp_path / "warm"
    proc = cli(*base(data_root, run, cache, "experiment=warm_ease", f"encoder.name_or_path={tiny_bert}",
                     "eval.ks=[5,10]"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs"] == 0 and m["best_epoch"] == -1
    assert m["test"]["auc"] > 0.5 and 0 < m["test"]["ndcg@10"] <= 1
    amazon = tmp_path / "amazon"
    proc = cli(*base(data_root, amazon, cache, "experiment=amazon_ease", f"encoder.name_or_path={tiny_bert}",
                     "eval.ks=[5,10]", "head.refit=true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((amazon / "metrics.json").read_text())
    assert m["epochs"] == 0 and 0 <= m["test"]["recall@10"] <= 1
    bad = tmp_path / "bad"
    proc = cli(*base(data_root, bad, cache, "head=ease", "task=rating", "encoder=none"))
    assert proc.returncode != 0 and "head=ease" in proc.stderr and "task=ranking" in proc.stderr
    assert not (bad / "metrics.json").exists()


@pytest.mark.slow
def test_episodic_head_serves_cold_users_from_their_support_through_the_cli(data_root, tmp_path):
    """experiment=cold_users_k5_episodic on the fake ML-100K: fitted in closed form (no epochs, no encoder),
    every test user cold, metrics defined; task=rating refused with nothing written; without split.k (another
    split) head.k must be given, and the error says so."""
    cache = tmp_path / "cache"
    run = tmp_path / "episodic"
    proc = cli(*base(data_root, run, cache, "experiment=cold_users_k5_episodic", "eval.ks=[5,10]"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs"] == 0 and m["split"]["k"] == 5 and m["split"]["unseen_user_rows"] == m["split"]["test"]
    assert 0 < m["test"]["ndcg@10"] <= 1 and math.isfinite(m["test"]["auc"])
    bad = tmp_path / "bad"
    proc = cli(*base(data_root, bad, cache, "split=cold_users", "head=episodic", "task=rating", "encoder=none"))
    assert proc.returncode != 0 and "head=episodic" in proc.stderr and "task=ranking" in proc.stderr
    assert not (bad / "metrics.json").exists()
    proc = cli(*base(data_root, bad, cache, "head=episodic", "task=ranking", "encoder=none"))  # split=random
    assert proc.returncode != 0 and "head.k (the window size) is not set" in proc.stderr
    proc = cli(*base(data_root, bad, cache, "head=episodic", "head.k=3", "task=ranking", "encoder=none"))
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_cold_items_ease_mpnet_finds_its_encoder_under_the_models_root(data_root, tmp_path):
    """experiment=cold_items_ease_mpnet names the hub id; offline, the copy at <models root>/sentence-transformers/
    all-mpnet-base-v2 (here a tiny random MPNet) is what it loads, and metrics.json says which folder that was;
    without a copy the run stops before writing anything, naming the fix."""
    from conftest import build_tiny_mpnet

    models = tmp_path / "models"
    folder = build_tiny_mpnet(models / "sentence-transformers" / "all-mpnet-base-v2")
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = cli(*base(data_root, run, cache, "experiment=cold_items_ease_mpnet"), env={"RECSYS_FEWSHOT_MODELS": str(models)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["encoder"]["encoder"] == "sentence-transformers/all-mpnet-base-v2" and m["encoder"]["path"] == str(folder)
    assert m["split"]["protocol"] == "cold_items" and m["epochs"] == 0 and 0 <= m["test"]["ndcg@10"] <= 1
    bad = tmp_path / "bad"
    proc = cli(*base(data_root, bad, cache, "experiment=cold_items_ease_mpnet"),
               env={"RECSYS_FEWSHOT_MODELS": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode != 0 and "scripts/fetch_mpnet.py" in proc.stderr
    assert not (bad / "metrics.json").exists()


PRESETS = {  # experiment -> (split protocol function, head target, task)
    "cold_items": ("cold_items", "MF", "ranking"),
    "cold_users_k5": ("cold_users", "MF", "rating"),
    "cold_users_k10": ("cold_users", "MF", "rating"),
    "cold_users_k20": ("cold_users", "MF", "rating"),
    "cold_users_k5_ranking": ("cold_users", "MF", "ranking"),
    "cold_users_k20_ranking": ("cold_users", "MF", "ranking"),
    "cold_users_k5_episodic": ("cold_users", "EpisodicRidge", "ranking"),
    "cold_users_k20_episodic": ("cold_users", "EpisodicRidge", "ranking"),
    "warm": ("per_user", "MF", "ranking"),
    "warm_ease": ("per_user", "EASE", "ranking"),
    "cold_items_ease": ("cold_items", "EASE", "ranking"),
    "cold_items_ease_mpnet": ("cold_items", "EASE", "ranking"),
    "cold_items_mpnet": ("cold_items", "MF", "ranking"),
    "amazon_ease": ("given", "EASE", None),
    "amazon_trained": ("given", "SeqRec", None),
    "amazon_zeroshot": ("given", "TextPool", None),
    "amazon_transfer": ("given", "SeqRec", None),
    "ml100k_seq": ("leave_one_out", "SeqRec", "ranking"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_coldstart_preset_composes_against_the_schemas(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recsys_fewshot.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={name}"])
    OmegaConf.resolve(cfg)
    protocol, head, task = PRESETS[name]
    assert cfg.split._target_.endswith("." + protocol) and cfg.head._target_.endswith("." + head)
    assert cfg.task == task
    if name.startswith("cold_users"):
        window = cfg.head.k if head == "EpisodicRidge" else cfg.head.history_sample_k
        assert window == cfg.split.k == int(name.split("_k")[1].split("_")[0])
    if name.startswith("amazon"):
        assert list(cfg.eval.ks) == [10, 50] and cfg.eval.history_with_valid
