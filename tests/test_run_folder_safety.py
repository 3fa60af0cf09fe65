"""Run folders are safe: an earlier run's results survive a rerun that fails late or is interrupted, one run
holds a folder at a time, a folder of other files is refused, a resume needs readable RNG states and names a
damaged checkpoint file, and a known error prints as its message alone (exit 1; Ctrl-C: 130)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import write_csv_dataset
from inprocess import run_job
from recsys_fewshot import rundir

REPO = Path(__file__).resolve().parents[1]
RESULTS = ("metrics.json", "model.safetensors", "config.yaml", "predictions.parquet", "encoder/adapter.bin")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_csv_dataset(tmp_path_factory.mktemp("data") / "shop", presplit=False)


@pytest.fixture
def common(tmp_path, data):
    return ["dataset=csv", f"dataset.dir={data}", "encoder=none", "logger=none", f"cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=2", "trainer.progress=false", "trainer.cpu=true", "trainer.batch_size=64",
            "save_predictions=true"]


@pytest.fixture
def finished(tmp_path, common) -> Path:
    """A finished run folder (with a checkpoint, and an encoder/ folder as joint training leaves one)."""
    run = tmp_path / "run"
    run_job(run, *common, "trainer.checkpoint_every=2")
    (run / "encoder").mkdir()
    (run / "encoder" / "adapter.bin").write_bytes(b"earlier adapter")
    return run


def snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in RESULTS}


def assert_untouched(run: Path, before: dict[str, bytes]) -> None:
    assert snapshot(run) == before
    assert not (run / rundir.ASIDE).exists() and not (run / rundir.LOCK).exists()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "recsys_fewshot.train", *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=300)


# --- earlier results: set aside, restored when the new run fails ----------------------------------------------

def _crash_while_writing(monkeypatch):
    from recsys_fewshot import results, tracking

    def write_some(run_dir, *args, **kwargs):  # the new config.yaml is written, then the disk fills up
        tracking.write_text(run_dir / results.RUN_CONFIG, "half of another run\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "write_results", write_some)
    return OSError, "No space left"


@pytest.mark.parametrize("late_failure", ["monitor not reported", "crash while writing results"])
def test_a_rerun_that_fails_late_gives_the_earlier_results_back(finished, common, monkeypatch, late_failure):
    before = snapshot(finished)
    checkpoints = sorted(p.name for p in (finished / "checkpoints").iterdir())
    if late_failure == "monitor not reported":  # found out after the first epoch
        with pytest.raises(KeyError, match="trainer.monitor='bogus' is not among the validation metrics"):
            run_job(finished, *common, "trainer.monitor=bogus", "head.dim=8")
    else:
        error, message = _crash_while_writing(monkeypatch)
        with pytest.raises(error, match=message):
            run_job(finished, *common, "head.dim=8")
    assert_untouched(finished, before)
    assert sorted(p.name for p in (finished / "checkpoints").iterdir()) == checkpoints


def test_a_rerun_that_finishes_replaces_the_results_and_keeps_nothing_aside(finished, common):
    run_job(finished, *common, "save_predictions=false", "head.dim=8")
    assert "dim: 8" in (finished / "config.yaml").read_text()
    assert not (finished / "predictions.parquet").exists() and not (finished / "encoder").exists()
    assert not (finished / rundir.ASIDE).exists() and not (finished / rundir.LOCK).exists()


@pytest.mark.parametrize("new_run_finished", [False, True])
def test_results_set_aside_by_a_killed_run_come_back_unless_it_finished(tmp_path, new_run_finished):
    run = tmp_path / "run"
    (run / rundir.ASIDE).mkdir(parents=True)
    (run / rundir.ASIDE / "metrics.json").write_text("earlier")
    (run / rundir.ASIDE / "config.yaml").write_text("earlier config")
    (run / "config.yaml").write_text("the killed run's")  # written before it was killed
    if new_run_finished:
        (run / "metrics.json").write_text("newer")  # metrics.json last: the killed run had finished writing
    rundir.recover(run)
    assert not (run / rundir.ASIDE).exists()
    expected = ("newer", "the killed run's") if new_run_finished else ("earlier", "earlier config")
    assert ((run / "metrics.json").read_text(), (run / "config.yaml").read_text()) == expected


# --- one run per folder -------------------------------------------------------------------------------------

def lock_of(run: Path, **record) -> None:
    (run / rundir.LOCK).write_text(json.dumps({"host": socket.gethostname(), "started": "2026-01-01T00:00:00",
                                               **record}))


def test_a_folder_held_by_a_live_run_is_refused_naming_it(finished, common):
    before = snapshot(finished)
    for holder in ({"pid": os.getppid()}, {"pid": 1234, "host": "gpu-node-7"}):  # alive here; another host
        lock_of(finished, **holder)
        held = (finished / rundir.LOCK).read_bytes()
        with pytest.raises(rundir.RunDirError, match=rf"in use by another run \(pid {holder['pid']} on "
                                                     rf"{holder.get('host', socket.gethostname())}, started 2026"):
            run_job(finished, *common, "head.dim=8")
        assert (finished / rundir.LOCK).read_bytes() == held  # still theirs
        (finished / rundir.LOCK).unlink()
        assert_untouched(finished, before)


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(finished, common, caplog):
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock_of(finished, pid=gone.pid)
    with caplog.at_level(logging.WARNING, logger="recsys_fewshot.rundir"):
        run_job(finished, *common, "head.dim=8")
    assert f"taking over the lock of a run that is gone (pid {gone.pid}" in caplog.text
    assert "dim: 8" in (finished / "config.yaml").read_text() and not (finished / rundir.LOCK).exists()


def test_a_requeued_slurm_job_takes_over_its_own_lock_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    lock_of(tmp_path, pid=999, host="gpu-node-3", slurm_job="4243")  # another job, on another node
    with pytest.raises(rundir.RunDirError, match="pid 999 on gpu-node-3, started .*, SLURM job 4243"):
        rundir.acquire(tmp_path)
    lock_of(tmp_path, pid=999, host="gpu-node-3", slurm_job="4242")  # this job before its requeue
    rundir.acquire(tmp_path)
    assert rundir.holder(tmp_path)["pid"] == os.getpid() and rundir.holder(tmp_path)["slurm_job"] == "4242"


def test_the_lock_is_exclusive_and_released_by_its_holder_only(tmp_path):
    rundir.acquire(tmp_path)
    record = json.loads((tmp_path / rundir.LOCK).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["started"]
    with pytest.raises(rundir.RunDirError, match=f"pid {os.getpid()}"):  # a second claim, even from here
        rundir.acquire(tmp_path)
    rundir.release(tmp_path)
    assert not (tmp_path / rundir.LOCK).exists()
    lock_of(tmp_path, pid=os.getppid())
    rundir.release(tmp_path)  # not ours: kept
    assert (tmp_path / rundir.LOCK).exists()
    assert [p.name for p in tmp_path.iterdir()] == [rundir.LOCK]  # no temporary files left


def test_an_unwritable_folder_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests may run as root, who writes anywhere
    with pytest.raises(rundir.RunDirError, match=f"hydra.run.dir={tmp_path} is not writable"):
        rundir.precheck(tmp_path)
    with pytest.raises(rundir.RunDirError, match=f"cannot create it, {tmp_path} is not writable"):
        rundir.precheck(tmp_path / "new")
    monkeypatch.undo()

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)  # creating the lock
    from types import SimpleNamespace

    with pytest.raises(rundir.RunDirError, match=f"run folder {tmp_path} is not writable"):
        with rundir.claim(tmp_path, SimpleNamespace(is_main_process=True, num_processes=1)):
            pass


# --- before Hydra: a folder that is not a run folder, a file, a held folder ----------------------------------

def _foreign(tmp_path: Path) -> Path:
    folder = tmp_path / "my-model"
    (folder / "encoder").mkdir(parents=True)
    for name, text in (("config.yaml", "mine"), ("metrics.json", "{}"), ("encoder/weights.bin", "w"),
                       ("notes.txt", "n")):
        (folder / name).write_text(text)
    return folder


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "out.txt").write_text("not a folder")
    return tmp_path / "out.txt"


def _held(tmp_path: Path) -> Path:
    folder = tmp_path / "held"
    (folder / ".hydra").mkdir(parents=True)
    lock_of(folder, pid=os.getpid())
    return folder


@pytest.mark.parametrize("make, message", [
    (_foreign, r"hydra.run.dir=\S*my-model holds files \(config.yaml, encoder, metrics.json, notes.txt\) but is "
               "not a run folder"),
    (_a_file, r"hydra.run.dir=\S*out.txt is a file, not a folder"),
    (_held, rf"run folder \S*held is in use by another run \(pid {os.getpid()} on"),
], ids=["other files", "a file", "held"])
def test_the_cli_refuses_a_folder_before_hydra_writes_into_it(tmp_path, make, message):
    import re

    target = make(tmp_path)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    proc = cli(f"hydra.run.dir={target}", "logger=none")
    assert proc.returncode == 1 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before  # nothing added


# --- resume: RNG states and damaged checkpoint files -----------------------------------------------------------

def checkpoint_of(run: Path) -> Path:
    (folder,) = (run / "checkpoints").iterdir()
    return folder


@pytest.mark.parametrize("damage", ["missing", "unreadable"])
def test_resume_refuses_missing_or_unreadable_rng_states_unless_told_to_go_on(finished, common, damage, caplog):
    rng = checkpoint_of(finished) / "random_states_0.pkl"
    rng.unlink() if damage == "missing" else rng.write_bytes(b"\x80\x04 not a pickle")
    before = snapshot(finished)
    resume = [*common, "trainer.checkpoint_every=2", "trainer.resume=true"]
    with pytest.raises(ValueError, match=r"random number generator states of \S+ cannot be restored: "
                                         r"\S+random_states_0.pkl .*trainer.resume_rng=warn"):
        run_job(finished, *resume)
    assert_untouched(finished, before)
    with caplog.at_level(logging.WARNING, logger="recsys_fewshot.checkpoint"):
        run_job(finished, *resume, "trainer.resume_rng=warn")
    assert "random_states_0.pkl" in caplog.text and "trainer.resume_rng=warn" in caplog.text


@pytest.mark.parametrize("name, damage", [
    ("loop.json", lambda p: p.write_text('{"epoch": 1, "batc')),
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:40])),
    ("loop.safetensors", lambda p: p.write_bytes(b"")),
])
def test_a_damaged_checkpoint_file_is_named(finished, common, name, damage):
    damage(checkpoint_of(finished) / name)
    before = snapshot(finished)
    with pytest.raises(ValueError, match=rf"trainer.resume: .*{checkpoint_of(finished) / name}"):
        run_job(finished, *common, "trainer.checkpoint_every=2", "trainer.resume=true")
    assert_untouched(finished, before)


def test_a_damaged_model_in_a_run_folder_is_named(finished, common, tmp_path):
    from recsys_fewshot.evaluate import evaluate_run

    weights = finished / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=rf"run_dir={finished}: cannot read {weights} \(SafetensorError"):
        evaluate_run(finished)
    with pytest.raises(ValueError, match=rf"init_from={finished}: cannot read {weights}"):
        run_job(tmp_path / "other", *common, f"init_from={finished}")


def test_settings_a_run_needs_only_after_training_are_checked_before_it(finished, common):
    before = snapshot(finished)
    for override, message in (("eval.candidates=bogus", "eval.candidates='bogus': expected all, test_items"),
                              ("trainer.resume_rng=maybe", "trainer.resume_rng='maybe': expected strict")):
        with pytest.raises(ValueError, match=message):
            run_job(finished, *common, override)
        assert_untouched(finished, before)


# --- what the command line prints ---------------------------------------------------------------------------

def test_known_errors_are_the_projects_own_and_survive_pickling():
    import pickle

    from recsys_fewshot import failures, settings

    with pytest.raises(ValueError) as ours:
        settings._at_least("trainer.batch_size", 0, 1)
    with pytest.raises(ValueError) as library:
        int("ten")
    assert failures.is_known(ours.value) and not failures.is_known(library.value)
    assert failures.is_known(rundir.RunDirError("held")) and not failures.is_known(RuntimeError("a bug"))
    known = failures.KnownError(KeyError("trainer.monitor='bogus' is not among the validation metrics"))
    assert str(known) == "KeyError: trainer.monitor='bogus' is not among the validation metrics"
    assert str(pickle.loads(pickle.dumps(known))) == str(known)  # a launcher's job sends it back pickled
    assert rundir.run_dir_argument(["seed=1", "hydra.run.dir=/runs/a"]) == Path("/runs/a")
    for argv in (["-m", "hydra.run.dir=/runs/a"], ["hydra.run.dir=outputs/${now:%H}"], ["seed=1"]):
        assert rundir.run_dir_argument(argv) is None, argv


def test_a_known_error_prints_its_message_alone_unless_hydra_full_error(tmp_path):
    run = tmp_path / "run"
    proc = cli(f"hydra.run.dir={run}", "logger=none", "trainer.batch_size=0")
    assert proc.returncode == 1
    assert "ValueError: trainer.batch_size=0: expected an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and len(proc.stderr.splitlines()) <= 6, proc.stderr
    failure = json.loads((run / "failure.json").read_text())
    assert failure["status"] == "failed" and "settings.py" in failure["traceback"]  # kept for whoever debugs
    full = cli(f"hydra.run.dir={run}", "logger=none", "trainer.batch_size=0", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr and 'settings.py", line' in full.stderr


def test_ctrl_c_keeps_the_earlier_results_records_the_checkpoint_and_exits_130(finished, common):
    before = snapshot(finished)
    proc = cli(*common, "trainer.checkpoint_every=1", "head.dim=8", f"hydra.run.dir={finished}",
               env={"RECSYS_FEWSHOT_KILL_AFTER_CHECKPOINT": "2", "RECSYS_FEWSHOT_KILL_SIGNAL": "INT"})
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3, proc.stderr
    failure = json.loads((finished / "failure.json").read_text())
    assert failure["status"] == "interrupted" and failure["error"].startswith("KeyboardInterrupt")
    assert failure["checkpoint"] == str(checkpoint_of(finished)) and checkpoint_of(finished).name == "step-000000002"
    assert {n: b for n, b in snapshot(finished).items()} == before  # the interrupted run's results never count
    assert not (finished / rundir.ASIDE).exists() and not (finished / rundir.LOCK).exists()
