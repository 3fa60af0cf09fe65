"""scripts/bench_coldstart.sh's summary, without training: every run's metrics.json already exists (the script
reuses it), so only the summary step runs. It reads the seeds of SEEDS only, std with ddof=1, n = finite values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_coldstart.sh"


def fake_run(out: Path, preset: str, seed: int, metrics: dict, seconds: float = 10.0, se: dict | None = None) -> None:
    folder = out / preset / f"seed{seed}"
    folder.mkdir(parents=True)
    summary = {"test": metrics, "seconds": {"total": seconds}, **({"test_se": se} if se is not None else {})}
    (folder / "metrics.json").write_text(json.dumps(summary))


def summary(out: Path, seeds: str) -> dict[str, str]:
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "SEEDS": seeds, "PRESETS": "cold_items"}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "reuse" in proc.stdout  # nothing was trained
    rows = [line for line in proc.stdout.splitlines() if line.startswith("cold_items ")]
    return {line.split()[1]: line for line in rows}


def test_summary_reads_only_the_seeds_asked_for(tmp_path):
    fake_run(tmp_path, "cold_items", 0, {"recall@20": 0.40, "ndcg@10": 0.30}, seconds=10)
    # stale runs of other seeds in the same OUT: below the targets (0.34 / 0.29), they would flip the verdict
    fake_run(tmp_path, "cold_items", 1, {"recall@20": 0.10, "ndcg@10": 0.10}, seconds=1000)
    fake_run(tmp_path, "cold_items", 2, {"recall@20": 0.10, "ndcg@10": 0.10}, seconds=1000)
    rows = summary(tmp_path, "0")
    assert "0.4000 (1)" in rows["recall@20"] and " yes " in rows["recall@20"], rows
    assert "0.3000 (1)" in rows["ndcg@10"] and " yes " in rows["ndcg@10"], rows
    assert " 10  " in rows["recall@20"]  # s/run of seed 0 only


def test_summary_std_is_the_sample_std_and_n_counts_finite_values(tmp_path):
    fake_run(tmp_path, "cold_items", 0, {"recall@20": 0.30, "ndcg@10": 0.20})
    fake_run(tmp_path, "cold_items", 1, {"recall@20": 0.40, "ndcg@10": None})  # JSON null: undefined
    fake_run(tmp_path, "cold_items", 2, {"recall@20": 0.50})  # no ndcg@10 at all
    rows = summary(tmp_path, "0 1 2")
    assert "0.4000 ± 0.1000 (3)" in rows["recall@20"], rows  # ddof=1: std of 0.3, 0.4, 0.5 is 0.1
    assert "0.2000 (1)" in rows["ndcg@10"], rows  # one finite value: no std, n=1


def test_summary_shows_the_test_se_and_how_many_of_them_a_miss_is_short(tmp_path):
    fake_run(tmp_path, "cold_items", 0, {"recall@20": 0.30, "ndcg@10": 0.35}, se={"recall@20": 0.02, "ndcg@10": 0.01})
    fake_run(tmp_path, "cold_items", 1, {"recall@20": 0.30, "ndcg@10": 0.35}, se={"recall@20": 0.02, "ndcg@10": 0.03})
    rows = summary(tmp_path, "0 1")
    # recall@20: 0.30 vs the target 0.34, se 0.02: 2.0 se short; ndcg@10 (mean se 0.02) meets 0.29: no distance
    assert " 0.0200 " in rows["recall@20"] and " NO " in rows["recall@20"] and " 2.0 " in rows["recall@20"], rows
    assert " 0.0200 " in rows["ndcg@10"] and " yes " in rows["ndcg@10"] and " 2.0 " not in rows["ndcg@10"], rows
