"""Few-shot CTR through the real entry points: the strict few-shot rule (data outside the N shots, poisoned,
changes nothing the model learns), TALLRec JSON files with a test file read only to score it, CSV CTR
samples, the like-rate's AUC computed by hand, and the benchmark script's one multirun and table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakes import planted_ctr_samples, write_ctr_csv, write_ml100k, write_tallrec_json
from inprocess import run_job
from recsys_fewshot import metrics as M

REPO = Path(__file__).resolve().parents[1]


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def common(tmp_path: Path, tiny_bert: Path) -> list[str]:
    return ["logger=none", f"cache_dir={tmp_path / 'cache'}", f"encoder.name_or_path={tiny_bert}",
            "trainer.max_epochs=12", "trainer.patience=12"]


def _poison(src: Path, dst: Path, keep: set[tuple[str, str]]) -> int:
    """Copy an ml-100k folder, turning every rating r of a (user, item) pair not in `keep` into 6 - r."""
    shutil.copytree(src, dst)
    raw = pd.read_csv(src / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"], dtype=str)
    hit = ~pd.Series([(u, i) in keep for u, i in zip(raw["u"], raw["i"])])
    raw.loc[hit, "r"] = (6 - raw.loc[hit, "r"].astype(int)).astype(str)
    raw.to_csv(dst / "u.data", sep="\t", header=False, index=False)
    return int(hit.sum())


@pytest.mark.slow
def test_nothing_outside_the_n_shots_is_read_in_training(tmp_path, tiny_bert):
    from recsys_fewshot.data.sources import read_ml100k
    from recsys_fewshot.data.tallrec import tallrec

    clean = write_ml100k(tmp_path / "clean" / "ml-100k", n_users=40, n_items=30, n_per_user=20, seed=5)
    proto = dict(n_shots=12, seed=3, n_samples=300, history_len=5, valid="none")
    args = ["experiment=tallrec_movie", *[f"split.{k}={v}" for k, v in proto.items()], *common(tmp_path, tiny_bert)]
    data = read_ml100k(clean)
    shots = tallrec(data, **proto).train
    users, items = data.user_raw_ids(), data.item_raw_ids()
    used = {(users[u], items[i]) for u, t, h in zip(shots["user"], shots["item"], shots["history"])
            for i in [t, *(i for i, _ in h)]}
    assert len(used) == 12 * 6  # the 12 shots' targets and 5-item histories: all this training may read

    run = {name: tmp_path / f"run-{name}" for name in ("clean", "poisoned", "control")}
    base = run_job(run["clean"], *args, f"dataset.root={clean.parent}")
    n_poisoned = _poison(clean, tmp_path / "poisoned" / "ml-100k", used)
    assert n_poisoned > 500  # every other rating of the data set, the valid and test samples' included
    poisoned = run_job(run["poisoned"], *args, f"dataset.root={tmp_path / 'poisoned'}")
    assert same_weights(run["clean"], run["poisoned"])
    assert poisoned["valid"] == base["valid"]
    assert poisoned["test"]["auc"] != base["test"]["auc"]  # the poison did reach the test samples' histories

    # the control: flipping ratings the shots are made of does change what is learnt
    _poison(clean, tmp_path / "control" / "ml-100k", keep=set())
    run_job(run["control"], *args, f"dataset.root={tmp_path / 'control'}")
    assert not same_weights(run["clean"], run["control"])


def _json_rows(samples, titles) -> list:
    return [([titles[i] for i, v in zip(h, lab) if v], [titles[i] for i, v in zip(h, lab) if not v], titles[t], y)
            for h, lab, t, y in samples]


@pytest.mark.slow
def test_tallrec_json_test_file_is_only_scored_and_the_like_rate_auc_is_known(tmp_path, tiny_bert):
    samples, titles = planted_ctr_samples(60, seed=2)
    folder = tmp_path / "json"
    write_tallrec_json(folder / "train.json", _json_rows(samples, titles), noun="book")
    # test samples with like-rates 2/4, 3/4, 1/4 and an empty history (0.5); labels 1, 1, 0, 0
    a, b, c, d = titles[:4]
    test = [([a, b], [c, d], titles[5], 1), ([a, b, c], [d], titles[6], 1), ([a], [b, c, d], titles[7], 0),
            ([], [], titles[8], 0)]
    write_tallrec_json(folder / "test.json", test, noun="book")
    poisoned = [(dis, lik, t, 1 - y) for lik, dis, t, y in test]  # every label of the test file flipped
    write_tallrec_json(folder / "poisoned" / "test.json", poisoned, noun="book")
    args = ["experiment=tallrec_book", f"dataset.dir={folder}", "dataset.train_file=train.json",
            "split.n_shots=16", *common(tmp_path, tiny_bert)]

    rate = run_job(tmp_path / "rate", *args, "model=likerate", "dataset.test_file=test.json")
    assert rate["split"]["test"] == 4 and rate["split"]["valid"] == 12  # valid: split.valid_ratio (20%) of train
    assert rate["test"]["auc"] == pytest.approx(3.5 / 4)  # positives 0.5, 0.75 vs negatives 0.25, 0.5

    clean = run_job(tmp_path / "clean", *args, "head=fewshot", "dataset.test_file=test.json")
    run_job(tmp_path / "poisoned", *args, "head=fewshot", f"dataset.test_file={folder / 'poisoned' / 'test.json'}")
    assert same_weights(tmp_path / "clean", tmp_path / "poisoned")
    preds = pd.read_parquet(tmp_path / "clean" / "predictions.parquet")
    assert preds["user_id"].tolist() == ["test-0", "test-1", "test-2", "test-3"]  # the file's samples, in order
    assert preds["target"].tolist() == [1, 1, 0, 0] and clean["split"]["n_shots"] == 16


@pytest.mark.slow
def test_csv_ctr_samples_take_the_same_path(tmp_path, tiny_bert):
    folder = write_ctr_csv(tmp_path / "ctr", n_samples=80)
    out = run_job(tmp_path / "run", "dataset=csv", f"dataset.dir={folder}", "split=given", "task=ctr",
                  "head=likerate", *common(tmp_path, tiny_bert))
    test = pd.read_csv(folder / "test.csv", dtype=str)
    rate = [np.mean([float(tok.rsplit(":", 1)[1]) for tok in h.split()]) for h in test["history"]]
    assert out["split"]["test"] == len(test) and out["task"] == "ctr"
    assert out["test"]["auc"] == pytest.approx(M.auc(test["label"].astype(int), rate))
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet")  # each sample names the user it came from
    assert preds["source_user"].tolist() == test["user_id"].tolist()


@pytest.mark.slow
def test_bench_script_runs_one_multirun_and_prints_the_table(tmp_path, tiny_bert):
    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=40, n_items=30, n_per_user=20, seed=5)
    env = {**os.environ, "RECSYS_FEWSHOT_DATA": str(root), "SHOTS": "8", "SEEDS": "0,1",
           "METHODS": "likerate,fewshot", "VALID": "full", "OUT": str(tmp_path / "sweep"), "HF_HUB_OFFLINE": "1",
           "PYTHON": sys.executable}  # this test's Python, not the script's fallback (./.venv or python3)
    proc = subprocess.run(["bash", "scripts/bench_fewshot.sh", "movie", f"encoder.name_or_path={tiny_bert}",
                           f"cache_dir={tmp_path / 'cache'}", "split.n_samples=300", "split.history_len=5",
                           "trainer.max_epochs=5"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "| TALLRec (published) | valid | - |" in lines  # N=8 is not in TALLRec's table
    rows = [line for line in lines if line.startswith(("| likerate | full |", "| fewshot | full |"))]
    assert len(rows) == 2 and all(" ± " in r for r in rows)
    table = json.loads((tmp_path / "sweep" / "table.json").read_text())
    assert table["jobs"] == 4 and table["failed"] == 0 and table["seconds"] > 0
