"""Kill-and-resume: a run killed (SIGKILL) right after its first checkpoint and resumed with
`trainer.resume=true` ends with exactly the metrics of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fakes import write_ml100k
from inprocess import compose, run_job

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, tiny_bert):
    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=120, n_items=50, n_per_user=25, seed=1)
    # LoRA and ID dropout (the RNG must be restored), a warmup + cosine schedule and gradient accumulation
    # (their state must be restored), 9 batches = 5 optimizer steps per epoch: the first checkpoint
    # (step 3) falls in the middle of epoch 1
    common = [f"dataset.root={root}", f"encoder.name_or_path={tiny_bert}", f"cache_dir={tmp_path / 'cache'}",
              "peft=lora", "trainer.max_epochs=2", "trainer.progress=false", "trainer.cpu=true", "logger=none",
              "trainer.gradient_accumulation_steps=2", "optimizer.scheduler=cosine", "optimizer.warmup=0.2",
              "trainer.checkpoint_every=3", "trainer.patience=3", "head.id_dropout=0.3", "trainer.batch_size=256"]
    whole = run_job(tmp_path / "whole", *common)

    run = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RECSYS_FEWSHOT_KILL_AFTER_CHECKPOINT": "1"}
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", *common, f"hydra.run.dir={run}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (run / "metrics.json").exists()
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000000003"]  # complete, nothing half-written
    loop = json.loads((checkpoints[0] / "loop.json").read_text())
    assert loop["epoch"] == 0 and 0 < loop["batches"] < 9  # stopped in the middle of an epoch
    assert loop["num_processes"] == 1 and loop["train_seconds"] > 0  # samples/s stays a rate after resuming

    # another experiment's settings must not silently continue this one's weights, optimizer and batch order
    with pytest.raises(ValueError, match=r"another configuration: optimizer.lr: 0.003 -> 0.5; seed: 0 -> 1"):
        run_job(run, *common, "trainer.resume=true", "optimizer.lr=0.5", "seed=1")
    assert [c.name for c in (run / "checkpoints").iterdir()] == ["step-000000003"] and not (run / "metrics.json").exists()

    resumed = run_job(run, *common, "trainer.resume=true", "trainer.progress=true", "logger=none")  # may change
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["epochs"] == whole["epochs"]
    assert resumed["training"]["updates"] == whole["training"]["updates"]
    for part in ("valid", "test"):
        for name, value in whole[part].items():
            assert resumed[part][name] == pytest.approx(value, abs=1e-6), (part, name)
    assert [c.name for c in (run / "checkpoints").iterdir()] == ["step-000000009"]  # only the newest is kept


def test_resume_targets(tmp_path):
    from recsys_fewshot import checkpoint

    assert checkpoint.resolve(None, tmp_path) is None and checkpoint.resolve("false", tmp_path) is None
    with pytest.warns(RuntimeWarning, match="starting fresh"):
        assert checkpoint.resolve("true", tmp_path) is None  # first launch of a requeued job
    for step in (3, 12):
        (tmp_path / "checkpoints" / checkpoint.name(step)).mkdir(parents=True)
        (tmp_path / "checkpoints" / checkpoint.name(step) / checkpoint.LOOP_JSON).write_text("{}")
    (tmp_path / "checkpoints" / checkpoint.name(20)).mkdir()  # incomplete: no loop.json
    newest = tmp_path / "checkpoints" / checkpoint.name(12)
    assert checkpoint.resolve("true", tmp_path) == newest
    assert checkpoint.resolve(str(tmp_path), tmp_path / "elsewhere") == newest  # another run's directory
    assert checkpoint.resolve(str(newest), tmp_path / "elsewhere") == newest
    with pytest.raises(FileNotFoundError, match="trainer.resume"):
        checkpoint.resolve(str(tmp_path / "nothing"), tmp_path)
    assert compose("trainer.resume=true").trainer.resume in ("true", "True")


def test_resume_refuses_another_process_count_and_stale_partials_are_swept(tmp_path, caplog):
    from types import SimpleNamespace

    from recsys_fewshot import checkpoint

    import logging

    saved: list[str] = []
    chatty = logging.getLogger("accelerate.checkpointing")  # accelerate's own INFO line per saved file

    def save_state(folder):
        chatty.info("Saving current state to %s", folder)
        saved.append(folder)

    acc = SimpleNamespace(is_main_process=True, num_processes=2, wait_for_everyone=lambda: None,
                          save_state=save_state, load_state=lambda folder: None)
    stale = tmp_path / ".step-000000001.partial"  # a kill during an earlier save
    stale.mkdir()
    with caplog.at_level(logging.INFO):
        folder = checkpoint.save(acc, tmp_path, 5, {"epoch": 0}, {"x": torch.zeros(1)})
    assert saved and not [r for r in caplog.records if r.name.startswith("accelerate")]  # kept out of train.log
    assert not stale.exists() and [p.name for p in tmp_path.iterdir()] == ["step-000000005"]
    one = SimpleNamespace(**{**vars(acc), "num_processes": 1})
    with pytest.raises(ValueError, match="saved by 2 processes, this run has 1"):
        checkpoint.load(one, folder)
    with pytest.raises(ValueError, match=r"random_states_0.pkl \(missing\)"):  # the fake saved no RNG states
        checkpoint.load(acc, folder)
    loop, tensors = checkpoint.load(acc, folder, resume_rng="warn")
    assert loop["epoch"] == 0 and tensors["x"].shape == (1,)


def test_config_fingerprint_ignores_what_a_resume_may_change_and_names_what_differs(tmp_path):
    from recsys_fewshot import checkpoint

    base = checkpoint.config_fingerprint(compose("head=mf"))
    assert "head.dim" in base or any(k.startswith("head.") for k in base)
    assert not any(k.startswith(("logger", "eval", "trainer.max_epochs", "trainer.resume")) for k in base)
    same = checkpoint.config_fingerprint(compose("head=mf", "trainer.max_epochs=99", "logger=none",
                                                 "trainer.resume=true", f"cache_dir={tmp_path}"))
    checkpoint.check_config(base, same, tmp_path)  # nothing that defines the experiment changed
    checkpoint.check_config(None, same, tmp_path)  # a checkpoint written before fingerprints
    with pytest.raises(ValueError, match=r"head._target_: .*MF.* -> .*NCF"):
        checkpoint.check_config(base, checkpoint.config_fingerprint(compose("head=mlp")), tmp_path)
    with pytest.raises(ValueError, match=r"split.seed: 0 -> 3"):
        checkpoint.check_config(base, checkpoint.config_fingerprint(compose("head=mf", "split.seed=3")), tmp_path)
