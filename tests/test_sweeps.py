"""Sweeps through the real CLI: a Hydra multirun with a failing job, an Optuna study resumed from SQLite,
run directories of simultaneous runs, the tracker's group/job type/tags, TensorBoard as the logger."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fakes import write_ml100k
from recsys_fewshot import report as rep
from recsys_fewshot import sweeps, tracking

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "recsys_fewshot.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """Overrides for a fast job: a small planted-signal ML-100K, no text encoder, two epochs."""
    root = tmp_path_factory.mktemp("sweepdata")
    write_ml100k(root / "ml-100k", n_users=60, n_items=30, n_per_user=12, seed=2)
    return [f"dataset.root={root}", "encoder=none", f"cache_dir={root / 'cache'}", "trainer.max_epochs=2",
            "trainer.progress=false", "trainer.batch_size=128"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def overrides(job: Path) -> dict[str, str]:
    return rep.read_overrides(job)


# --- fast: the pieces -----------------------------------------------------------------------------

def test_objective_selects_the_optimized_metric():
    summary = {"valid": {"rmse": 0.9, "auc": 0.71, "undefined": None}, "test": {"rmse": 0.95}}
    assert sweeps.objective(summary, None, 0.9) == 0.9
    assert sweeps.objective(summary, "valid/auc", 0.9) == 0.71
    assert sweeps.objective(summary, "test/rmse", 0.9) == 0.95
    assert np.isnan(sweeps.objective(summary, "valid/undefined", 0.9))
    with pytest.raises(KeyError, match="valid metrics are auc, rmse, undefined"):
        sweeps.objective(summary, "valid/ndcg@10", 0.9)
    with pytest.raises(ValueError, match="optimized_metric='rmse'"):
        sweeps.check_optimized_metric("rmse")


def test_job_context_gives_group_job_type_tags_and_name():
    ctx = sweeps.JobContext(multirun=True, sweep_dir="/x/multirun/2026-01-01_10-00-00-123456", job_num=3,
                            overrides=["head=mlp", "seed=1"], choices={"head": "mlp", "dataset": "ml100k",
                                                                      "experiment": "e1"})
    assert ctx.group == "2026-01-01_10-00-00-123456" and ctx.job_type == "sweep"
    assert ctx.tags == ["dataset=ml100k", "head=mlp", "experiment=e1"]
    assert ctx.run_name("3") == "3: head=mlp,seed=1"
    single = sweeps.JobContext(multirun=False)
    assert single.group is None and single.job_type == "train" and single.run_name("run") == "run"

    wandb = tracking.Wandb(mode="offline")
    kwargs = wandb.init_kwargs(Path("/r"), ctx.run_name("3"), ctx.group, [*ctx.tags, "mine"], ctx.job_type)
    assert wandb.log_with == "wandb" and list(kwargs) == ["wandb"]
    assert kwargs["wandb"]["group"] == ctx.group and kwargs["wandb"]["job_type"] == "sweep"
    assert kwargs["wandb"]["tags"][-1] == "mine" and kwargs["wandb"]["mode"] == "offline"
    assert tracking.TensorBoard().init_kwargs(Path("/r"), "r", None, [], None) == {}
    assert tracking.TensorBoard.log_with == "tensorboard" and tracking.NoTracker.log_with is None
    with pytest.raises(ValueError, match="logger.mode='onlin': expected online, offline or disabled"):
        tracking.Wandb(mode="onlin").init_kwargs(Path("/r"), "r", None, [], None)


def test_logger_target_chooses_the_tracker_and_build_merges_the_jobs_place(tmp_path, monkeypatch):
    from inprocess import compose

    from recsys_fewshot import build

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    ctx = sweeps.JobContext(multirun=True, sweep_dir="/x/multirun/s1", job_num=2, overrides=["seed=1"],
                            choices={"dataset": "ml100k"})
    run = build.tracker(compose("logger=wandb", "logger.tags=[mine]"), tmp_path / "run", ctx)
    assert isinstance(run.tracker, tracking.Wandb) and run.log_with == ["wandb"]
    init = run.init_kwargs["wandb"]
    assert init["mode"] == "offline"  # no API key: offline by default
    assert (init["group"], init["job_type"], init["tags"], init["name"]) == ("s1", "sweep", ["dataset=ml100k", "mine"],
                                                                               "2: seed=1")
    assert build.tracker(compose("logger=wandb", "logger.group=g", "logger.job_type=j"), tmp_path, ctx
                         ).init_kwargs["wandb"]["group"] == "g"
    none = build.tracker(compose("logger=none"), tmp_path, ctx)
    assert isinstance(none.tracker, tracking.NoTracker) and none.log_with == [] and none.init_kwargs == {}
    board = build.tracker(compose("logger=tensorboard"), tmp_path, ctx)
    assert board.log_with == ["tensorboard"] and board.tracker.project == "tensorboard"
    with pytest.raises(ValueError, match=r"logger\.name='none': logger\._target_=recsys_fewshot\.tracking\.Wandb "
                                         r"is logger=wandb; .*choose another with logger=none"):
        build.tracker(compose("logger=wandb", "logger.name=none"), tmp_path, ctx)


def test_tensorboard_config_is_flat_scalars():
    flat = tracking.TensorBoard().config({"a": {"b": 1, "c": [1, 2], "d": None}, "e": "x"})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d": "null", "e": "x"}
    nested = {"a": {"b": 1}}
    assert tracking.Wandb().config(nested) is nested


def test_failure_and_summary_reach_only_a_started_tracker():
    """`RunTracker` hands a failure and the final numbers to its tracker class, through Accelerate's
    `get_tracker`; before the trackers start (a refused setting) there is nothing to mark."""
    class FakeRun:
        def __init__(self):
            self.summary, self.exit_code = {}, None

        def finish(self, exit_code=0):
            self.exit_code = exit_code

    class FakeAccelerator:
        is_main_process = True

        def __init__(self, started):
            self.run = FakeRun()
            self.trackers = [object()] if started else []
            self.logged = []

        def get_tracker(self, name, unwrap=False):
            assert name == "wandb" and unwrap
            return self.run

        def log(self, row, step=None):
            self.logged.append(row)

    run = tracking.RunTracker(tracking.Wandb(), {})
    idle = FakeAccelerator(started=False)
    run.mark_failed(idle, RuntimeError("early"))
    assert idle.run.summary == {} and idle.run.exit_code is None
    acc = FakeAccelerator(started=True)
    run.mark_failed(acc, RuntimeError("boom"))
    assert acc.run.summary == {"error": "RuntimeError: boom"} and acc.run.exit_code == 1
    summary = {"test": {"rmse": 0.9}, "test_se": {"rmse": 0.01}, "valid": {"rmse": 0.95}, "best_epoch": 2}
    run.finish(acc, summary, {"rmse": 0.94})
    assert acc.run.summary["test/rmse"] == 0.9 and acc.run.summary["best_valid/rmse"] == 0.94
    assert acc.logged == [{"test/rmse": 0.9, "best_valid/rmse": 0.94}]
    tracking.RunTracker(tracking.NoTracker(), {}).mark_failed(acc, RuntimeError("x"))  # no tracker: nothing


def test_failure_is_recorded_and_reraised(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with sweeps.record_failure(tmp_path):
            raise RuntimeError("boom")
    failure = json.loads((tmp_path / "failure.json").read_text())
    assert failure["error"] == "RuntimeError: boom" and "Traceback" in failure["traceback"]


def test_run_and_sweep_dirs_carry_microseconds():
    config = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    assert "%f" in config["hydra"]["run"]["dir"] and "%f" in config["hydra"]["sweep"]["dir"]
    assert config["hydra"]["sweep"]["subdir"] == "${hydra.job.num}"


# --- slow: the real CLI -------------------------------------------------------------------------------

@pytest.mark.slow
def test_multirun_runs_every_combination_and_survives_a_failing_job(tiny, tmp_path):
    sweep = tmp_path / "multirun" / "sweep-abc"
    # split.test_ratio=0.0 fails (empty test set) in 4 of the 8 jobs; the others must not notice
    proc = cli("-m", "head=mf,mlp", "seed=0,1", "split.test_ratio=0.2,0.0", *tiny, "logger=wandb",
               f"hydra.sweep.dir={sweep}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a sweep with failed jobs must not exit 0"
    assert "the test set is empty" in out
    assert "job 1 failed" in out and "the sweep goes on" in out  # reported when it happens

    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == [str(i) for i in range(8)]
    done = {(o["head"], o["seed"]) for j in jobs if (j / "metrics.json").exists() for o in [overrides(j)]}
    assert done == {("mf", "0"), ("mf", "1"), ("mlp", "0"), ("mlp", "1")}
    for job in jobs:
        ovr = overrides(job)
        failed = ovr["split.test_ratio"] == "0.0"
        assert (job / "metrics.json").exists() != failed
        assert (job / "failure.json").exists() == failed
        if not failed:
            metrics = json.loads((job / "metrics.json").read_text())
            assert metrics["seed"] == int(ovr["seed"]) and metrics["test"]["rmse"] > 0
        # every job's wandb run was finished (failed ones with exit code 1), one run per job, in the sweep's group
        (wandb_run,) = (job / "wandb").glob("offline-run-*")
        debug = (wandb_run / "logs" / "debug.log").read_text()
        assert "finishing run" in debug
        assert f"got exitcode: {1 if failed else 0}" in debug
        record = next(wandb_run.glob("run-*.wandb")).read_bytes()
        for needle in (sweep.name, "sweep", f"head={ovr['head']}", "dataset=ml100k", "optimized_metric"):
            assert needle.encode() in record, (job.name, needle)

    # the report's numbers are the jobs' metrics.json numbers
    assert rep.main([str(sweep)]) == 0
    table = rep.build_table(*rep.collect(sweep))
    assert table.keys == ["head", "split.test_ratio"] and table.seeds == {"seed": ["0", "1"]}
    assert len(table.failed) == 4
    for row, stats in zip(table.rows, table.stats):
        values = [json.loads((j / "metrics.json").read_text())["test"]["rmse"] for j in jobs
                  if (j / "metrics.json").exists() and overrides(j)["head"] == row["head"]]
        assert len(values) == 2
        assert stats["test/rmse"][0] == pytest.approx(np.mean(values), abs=1e-12)
        assert stats["test/rmse"][1] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    csv = (sweep / "report.csv").read_text()
    assert csv.splitlines()[0].startswith("head,split.test_ratio,n,test/rmse_mean,test/rmse_std")


@pytest.mark.slow
def test_optuna_sweep_writes_best_params_and_resumes_from_sqlite(tiny, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["hparams_search=rmse", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=resume-test",
              *tiny, "logger=none"]
    first, second = tmp_path / "first", tmp_path / "second"
    proc = cli(*common, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={first}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # resuming: same storage and study name, 2 MORE trials (another sampler seed: new proposals)
    proc = cli(*common, "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=7", f"hydra.sweep.dir={second}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    trials = []  # (valid rmse returned by the job, its overrides)
    for sweep in (first, second):
        for job in job_dirs(sweep):
            metrics = json.loads((job / "metrics.json").read_text())
            trials.append((metrics["valid"]["rmse"], overrides(job)))
    assert len(trials) == 4
    import optuna

    study = optuna.load_study(study_name="resume-test", storage=storage)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(v for v, _ in trials))

    best_value, best_overrides = min(trials, key=lambda t: t[0])
    results = yaml.safe_load((second / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best_value)  # best over both calls
    assert set(results["best_params"]) == {"optimizer.lr", "head.l2", "head.dim"}
    for key, value in results["best_params"].items():
        assert float(best_overrides[key]) == pytest.approx(float(value))
    assert 1e-4 <= results["best_params"]["optimizer.lr"] <= 1e-2

    # the report puts the optimised metric first and has one row per trial
    written = rep.report(first)
    assert written["table"].metrics[0] == "valid/rmse" and len(written["table"].rows) == 2
    assert "best_value" in written["markdown"]


def read_scalars(folder: Path) -> set[str]:
    """Scalar tags in TensorBoard event files (TFRecord: u64 length, u32 crc, payload, u32 crc)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            tags |= {v.tag for v in event.summary.value if v.HasField("simple_value")}
    return tags


@pytest.mark.slow
def test_simultaneous_runs_get_their_own_dirs_and_tensorboard_logs(tiny, tmp_path):
    """Two runs started together (same second) from one folder, default run dirs: no collision."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "recsys_fewshot.train", *tiny, f"logger={logger}",
                               "trainer.max_epochs=1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for logger in ("none", "tensorboard")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    runs = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))
    assert len(runs) == 2 and runs[0] != runs[1]
    tb = [r for r in runs if (r / "tensorboard").exists()]
    assert len(tb) == 1
    tags = read_scalars(tb[0] / "tensorboard")
    assert {"train/loss", "valid/rmse", "test/rmse", "test/auc", "best_valid/rmse"} <= tags, tags
    assert list((tb[0] / "tensorboard").rglob("hparams.yml"))
