"""LogJobFailures in a single (non-multirun) run: the failure is logged without a job number (which only
a multirun has), and Hydra warns about nothing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recsys_fewshot import sweeps

REPO = Path(__file__).resolve().parents[1]


def failed_job(mode, num, output_dir: Path):
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn()
    ret.status = JobStatus.FAILED
    ret._return_value = ValueError("trainer.batch_size=0: expected an integer >= 1")
    # hydra.job.num is '???' (missing) in a single run, as Hydra's own config leaves it
    ret.hydra_cfg = OmegaConf.create({"hydra": {"mode": mode, "job": {"num": num},
                                                "runtime": {"output_dir": str(output_dir)}}})
    return ret


def test_callback_logs_a_single_run_failure_without_job_number(tmp_path, caplog):
    from hydra.types import RunMode

    with warnings.catch_warnings(), caplog.at_level(logging.ERROR, logger="recsys_fewshot.sweeps"):
        warnings.simplefilter("error")
        sweeps.LogJobFailures().on_job_end(None, failed_job(RunMode.RUN, "???", tmp_path))
    (record,) = caplog.records
    assert record.getMessage() == (f"run failed (ValueError: trainer.batch_size=0: expected an integer >= 1). "
                                   f"Details: {tmp_path}/failure.json")


def test_callback_names_the_job_in_a_sweep(tmp_path, caplog):
    from hydra.types import RunMode

    with caplog.at_level(logging.ERROR, logger="recsys_fewshot.sweeps"):
        sweeps.LogJobFailures().on_job_end(None, failed_job(RunMode.MULTIRUN, 3, tmp_path))
    (record,) = caplog.records
    assert record.getMessage().startswith("job 3 failed (ValueError: trainer.batch_size=0")
    assert "the sweep goes on" in record.getMessage()


@pytest.mark.slow
def test_failed_single_run_through_the_cli_warns_about_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "interactions.csv").write_text("user_id,item_id,rating\nu1,i1,4\nu1,i2,3\nu2,i1,5\nu2,i3,2\n")
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_fewshot.train", "dataset=csv", f"dataset.dir={data}", "encoder=none",
         "logger=none", "trainer.batch_size=0", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "trainer.batch_size=0: expected an integer >= 1" in proc.stderr, out
    assert "MissingMandatoryValue" not in proc.stderr and "Callback" not in proc.stderr, proc.stderr
    assert "UserWarning" not in proc.stderr, proc.stderr
    # the failure is logged once, into the run's train.log too, pointing at failure.json
    line = f"run failed (ValueError: trainer.batch_size=0: expected an integer >= 1). Details: {run_dir}/failure.json"
    assert out.count(line) == 1 and line in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "failure.json").read_text())["error"].startswith("ValueError: trainer.batch_size=0")
