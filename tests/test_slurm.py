"""A real SLURM cluster (one node, set up by scripts/slurm/setup_local_slurm.sh, which .ci/run calls):
a sweep through the submitit launcher and jobs through scripts/slurm/*.sbatch, each writing metrics.json.
Skips, with the reason, where no SLURM is running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fakes import write_ml100k

REPO = Path(__file__).resolve().parents[1]
USABLE = ("idle", "mixed", "allocated", "completing")


def slurm_problem() -> str | None:
    """Why SLURM cannot run jobs here, or None."""
    for tool in ("sbatch", "sinfo", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run: sudo bash scripts/slurm/setup_local_slurm.sh)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s (slurmctld not running?)"
    states = {s.strip("*~#") for s in proc.stdout.split()}
    if proc.returncode != 0 or not states & set(USABLE):
        return f"no usable SLURM node (sinfo: {(proc.stdout + proc.stderr).strip() or 'nothing'})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = slurm_problem()
    if problem:
        print(f"SKIP SLURM tests: {problem}", file=sys.stderr)
        pytest.skip(f"SLURM not available: {problem}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("slurmdata")
    write_ml100k(root / "ml-100k", n_users=60, n_items=30, n_per_user=12, seed=4)
    return root, [f"dataset.root={root}", "encoder=none", f"cache_dir={root / 'cache'}", "trainer.max_epochs=2",
                  "trainer.progress=false", "trainer.batch_size=128"]


def job_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **extra}


def submit(script: str, out: Path, run_dir: Path, overrides: list[str], *sbatch_opts: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", "--time=10", f"--output={out}",
                           *sbatch_opts, f"scripts/slurm/{script}", *overrides], cwd=REPO,
                          env=job_env(RUN_DIR=str(run_dir)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def wait_for(job_id: str, timeout: float = 240) -> str:
    """The job's final state (scontrol keeps finished jobs for MinJobAge seconds)."""
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
        fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
        state = fields.get("JobState", "?")
        if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "?"):
            return state
        time.sleep(1)
    subprocess.run(["scancel", job_id], timeout=30)
    raise AssertionError(f"SLURM job {job_id} still {state} after {timeout} s")


@pytest.mark.slow
def test_sweep_through_submitit_and_jobs_through_sbatch_scripts(slurm, tiny, tmp_path):
    root, overrides = tiny
    # the sbatch jobs first (they queue), then the launcher's sweep (it waits for its jobs)
    single_dir, multi_dir = tmp_path / "sbatch-run", tmp_path / "multinode-run"
    single = submit("train.sbatch", tmp_path / "single.out", single_dir,
                    [*overrides, "head=mlp", "logger.tags=[slurm, sbatch]"])
    multi = submit("train_multinode.sbatch", tmp_path / "multi.out", multi_dir, [*overrides, "logger=none"],
                   "--nodes=1")

    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_fewshot.train", "-m", "hydra/launcher=slurm", "head=mf,mlp", *overrides,
         "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null",
         "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [j.name for j in jobs] == ["0", "1"]  # one sweep dir for all jobs, one subdir each
    heads = {yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())[0] for j in jobs}
    assert heads == {"head=mf", "head=mlp"}
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2, "the jobs did not run through SLURM (no submitit logs)"
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["test"]["rmse"] > 0

    assert wait_for(single) == "COMPLETED", (tmp_path / "single.out").read_text()[-3000:]
    metrics = json.loads((single_dir / "metrics.json").read_text())
    assert metrics["test"]["rmse"] > 0
    passed = yaml.safe_load((single_dir / ".hydra" / "overrides.yaml").read_text())
    assert "head=mlp" in passed and "logger.tags=[slurm, sbatch]" in passed  # passed through unchanged
    assert f"train.sbatch: job {single} on" in (tmp_path / "single.out").read_text()

    assert wait_for(multi) == "COMPLETED", (tmp_path / "multi.out").read_text()[-3000:]
    assert json.loads((multi_dir / "metrics.json").read_text())["test"]["rmse"] > 0


def test_the_skip_reason_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "sbatch" else f"/usr/bin/{tool}")
    assert "sbatch not found" in slurm_problem() and "setup_local_slurm.sh" in slurm_problem()
