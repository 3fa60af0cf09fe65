"""Knowledge-graph joint training (kg=...): through the real CLI, evaluate reproduces it, TSV unknown ids are
reported, kg=none builds nothing, unsupported heads fail naming `kg=`, cold items get knowledge vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fakes import write_ml100k
from inprocess import run_job, stages

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_ml100k(root / "ml-100k", n_users=80, n_items=40, n_per_user=20, seed=2)
    return root


def common(data_root: Path, cache: Path) -> list[str]:
    return [f"dataset.root={data_root}", f"cache_dir={cache}", "encoder=none", "logger=none",
            "trainer.progress=false", "trainer.batch_size=128", "trainer.cpu=true"]


@pytest.mark.slow
def test_joint_training_through_the_cli_logs_the_graph_and_its_kg_loss_falls(data_root, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_fewshot.train", *common(data_root, tmp_path / "cache"), "kg=attributes",
         "kg.weight=1.0", "optimizer.lr=0.01", "trainer.max_epochs=6", "trainer.patience=10", f"hydra.run.dir={run}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "KG: " in out and "has_genre" in out  # the graph's statistics, logged at start
    assert "kg_loss" in out  # ... and the KG loss of every epoch
    kg = json.loads((run / "metrics.json").read_text())["kg"]
    # 80 users x (occupation, age group, gender) + 40 items x decade + the items' genres
    assert set(kg["per_relation"]) == {"has_genre", "released_in", "has_occupation", "in_age_group", "has_gender"}
    assert kg["per_relation"]["has_occupation"] == kg["per_relation"]["has_gender"] == 80
    assert kg["per_relation"]["released_in"] == 40
    assert kg["triples"] == sum(kg["per_relation"].values()) and kg["unknown"] == {}
    assert len(kg["loss_per_epoch"]) == 6
    assert kg["loss_last"] < 0.8 * kg["loss_first"]  # the KG embedding learns the graph while the recommender trains

    from safetensors.torch import load_file
    assert "kg.embedding.entity.weight" in load_file(run / "model.safetensors")


@pytest.mark.slow
def test_evaluate_rebuilds_the_kg_and_reproduces_the_metrics(data_root, tmp_path):
    from recsys_fewshot.evaluate import evaluate_run

    run = tmp_path / "run"
    saved = run_job(run, *common(data_root, tmp_path / "cache"), "kg=attributes", "trainer.max_epochs=2",
                    "head=mlp", "head.hidden=[16]", "task=ranking")
    assert saved["kg"]["model"] == "transe" and saved["kg"]["loss_first"] > 0
    again = evaluate_run(run)
    for name, value in saved["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-5), name


def test_triples_tsv_with_unknown_ids_reports_the_count(data_root, tmp_path):
    tsv = tmp_path / "kg.tsv"
    tsv.write_text("# my graph\nitem:1\tdirected_by\tperson:Ann\nitem:2\tdirected_by\tperson:Ann\n"
                   "item:999\tdirected_by\tperson:Bob\nuser:3\tlives_in\tcity:Oslo\nuser:12345\tlives_in\tcity:Oslo\n"
                   "user:4\tfriend_of\tuser:777\n")
    saved = run_job(tmp_path / "run", *common(data_root, tmp_path / "cache"), "kg=triples", f"kg.path={tsv}",
                    "trainer=debug", "trainer.progress=false")
    kg = saved["kg"]
    assert kg["unknown"] == {"item": 1, "user": 2}
    assert kg["per_relation"] == {"directed_by": 2, "lives_in": 1}  # friend_of had only an unknown tail


def test_kg_none_builds_no_kg_module(data_root, tmp_path):
    s = stages(*common(data_root, tmp_path / "cache"))
    assert s.cfg.kg.source == "none"
    assert s.model.kg is None and s.model.items.kg_vectors is None and s.model.users.kg_vectors is None
    assert not [n for n, _ in s.model.named_parameters() if "kg" in n]
    # and it costs no import: a fresh interpreter building the default model never loads the KG code
    overrides = ", ".join(repr(o) for o in common(data_root, tmp_path / "cache"))
    code = (f"import sys; sys.path.insert(0, 'tests'); from inprocess import stages; s = stages({overrides});"
            "assert s.model.kg is None;"
            "assert not [m for m in sys.modules if m.startswith('recsys_fewshot.kg')], 'kg imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("head", ["seq", "likerate"])
def test_heads_without_kg_support_fail_naming_kg(head, data_root, tmp_path):
    with pytest.raises(ValueError, match="kg=none"):
        stages(*common(data_root, tmp_path / "cache"), f"head={head}", "kg=attributes", "task=ranking")


def test_cold_items_get_knowledge_vectors_from_their_attributes(data_root, tmp_path):
    s = stages(*common(data_root, tmp_path / "cache"), "kg=attributes", "split=cold_items", "model=inductive",
               "task=ranking", "head.history_weights=none", "head.history_bias=false")
    kg = s.model.kg
    cold = torch.nonzero(s.prep.warm == 0).flatten()
    assert len(cold) > 0
    vectors = kg.item_vectors(cold)
    assert vectors.abs().sum(-1).min() > 0  # every cold item has genre/decade neighbours
    # neighbors aggregation: the mean of the item's attribute entities, computed independently here
    table = kg.embedding.entity.weight
    for item in cold.tolist()[:5]:
        tails = kg.triples[kg.triples[:, 0] == item, 2]
        assert torch.allclose(kg.item_map(table[tails].mean(0)), kg.item_vectors(torch.tensor([item]))[0], atol=1e-6)
    # and the item tower adds them: switching the hook off changes a cold item's vector
    with torch.no_grad():
        s.model.eval()
        with_kg = s.model.items(cold)
        hook, s.model.items.kg_vectors = s.model.items.kg_vectors, None
        without = s.model.items(cold)
        s.model.items.kg_vectors = hook
    assert torch.allclose(with_kg - without, vectors, atol=1e-6)
