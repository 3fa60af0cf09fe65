"""scripts/bench_fewshot.sh and scripts/bench_kg.sh build their tables from what the sweeps left, without training:
PYTHON / PY is a wrapper whose `-m recsys_fewshot.train` writes job folders as a Hydra multirun would
(.hydra/overrides.yaml + metrics.json, or failure.json for a failed job); every other call (the table step,
`-m recsys_fewshot.report`) runs the real Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_TRAIN = r'''
import json, os, sys
from pathlib import Path

args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a and not a.startswith("-"))
spec = json.loads(os.environ["FAKE_JOBS"])[args.get("experiment") or args["protocol"]]
if spec == "crash":  # the whole sweep fails before any job (e.g. a bad config)
    print("Error: fake crash", file=sys.stderr)
    sys.exit(1)
root = Path(args["hydra.sweep.dir"])
for i, job in enumerate(spec):
    folder = root / str(i)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in job["overrides"]))
    if job["metrics"] is None:
        (folder / "failure.json").write_text(json.dumps({"error": "ValueError: fake failure"}))
    else:
        (folder / "metrics.json").write_text(json.dumps(job["metrics"]))
sys.exit(1 if any(job["metrics"] is None for job in spec) else 0)
'''


def fake_python(tmp_path: Path) -> Path:
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/usr/bin/env bash\nif [ "$1" = -m ] && [ "$2" = recsys_fewshot.train ]; then\n'
                       f'  shift 2; exec {sys.executable} {tmp_path / "fake_train.py"} "$@"\nfi\n'
                       f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def ctr_job(model: str, n: int, seed: int, auc: float | None, *extra: str) -> dict:
    overrides = ["protocol=tallrec_movie", f"model={model}", f"split.n_shots={n}", f"split.seed={seed}",
                 "split.valid=full", "logger=none", *extra]
    metrics = None if auc is None else {"test": {"auc": auc}, "valid": {"auc": auc}, "seconds": {"total": 1.0}}
    return {"overrides": overrides, "metrics": metrics}


def bench_fewshot(tmp_path: Path, jobs: list, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": str(fake_python(tmp_path)), "OUT": str(tmp_path / "sweep"),
           "FAKE_JOBS": json.dumps({"tallrec_movie": jobs})}
    return subprocess.run(["bash", "scripts/bench_fewshot.sh", "movie", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_bench_fewshot_keeps_a_row_per_value_of_another_swept_key(tmp_path):
    jobs = [ctr_job("likerate", 16, seed, auc, f"split.history_len={h}")
            for h, aucs in (("3", (0.60, 0.62)), ("10", (0.70, 0.72))) for seed, auc in enumerate(aucs)]
    proc = bench_fewshot(tmp_path, jobs, "split.history_len=3,10")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "| method | selection | split.history_len | N=16 |" in lines
    assert "| likerate | full | 3 | 0.6100 ± 0.0141 |" in lines  # not overwritten by history_len=10
    assert "| likerate | full | 10 | 0.7100 ± 0.0141 |" in lines
    assert "| TALLRec (published) | valid | - | 0.6724 |" in lines
    table = json.loads((tmp_path / "sweep" / "table.json").read_text())
    assert set(table["auc"]) == {"likerate/full/split.history_len=3", "likerate/full/split.history_len=10"}


def test_bench_fewshot_prints_the_table_of_the_finished_jobs_when_one_fails(tmp_path):
    jobs = [ctr_job("likerate", 16, 0, 0.60), ctr_job("likerate", 16, 1, 0.62),
            ctr_job("fewshot", 16, 0, 0.70), ctr_job("fewshot", 16, 1, None)]
    proc = bench_fewshot(tmp_path, jobs)
    assert proc.returncode != 0  # a failed job: the script fails, after the table
    lines = proc.stdout.splitlines()
    assert "| likerate | full | 0.6100 ± 0.0141 |" in lines and "| fewshot | full | 0.7000 |" in lines, proc.stdout
    assert "4 jobs (1 failed)" in proc.stdout
    assert any(line.startswith("- `3`") and "fake failure" in line for line in lines), proc.stdout  # the failed job
    assert (tmp_path / "sweep" / "table.md").is_file() and (tmp_path / "sweep" / "sweep.log").is_file()
    table = json.loads((tmp_path / "sweep" / "table.json").read_text())
    assert table["jobs"] == 4 and table["failed"] == 1


def test_bench_fewshot_without_any_job_fails_with_the_log(tmp_path):
    proc = bench_fewshot(tmp_path, "crash")
    assert proc.returncode != 0 and "fake crash" in proc.stderr and "sweep failed" in proc.stderr


def test_bench_kg_prints_every_preset_it_can_and_fails_at_the_end(tmp_path):
    def job(seed: int, kg: str, ndcg: float) -> dict:
        return {"overrides": ["experiment=cold_items", f"kg={kg}", f"seed={seed}"],
                "metrics": {"test": {"recall@20": ndcg, "ndcg@10": ndcg, "auc": 0.5}, "valid": {"ndcg@10": ndcg},
                            "best_epoch": 1, "seconds": {"total": 1.0}}}

    jobs = {"warm": "crash", "cold_items": [job(0, "none", 0.2), job(0, "attributes", 0.3)]}
    env = {**os.environ, "PY": str(fake_python(tmp_path)), "OUT": str(tmp_path / "kg"),
           "PRESETS": "warm cold_items", "SEEDS": "0", "FAKE_JOBS": json.dumps(jobs)}
    proc = subprocess.run(["bash", "scripts/bench_kg.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "### warm" in proc.stdout and "### cold_items" in proc.stdout, proc.stdout + proc.stderr
    assert "| attributes |" in proc.stdout and "| none |" in proc.stdout  # cold_items' table after warm failed
    assert "warm" in proc.stderr  # the failed sweep is named
