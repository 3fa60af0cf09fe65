"""Training-loop settings that used to fail late or silently: accumulation cut by limit_train_batches, the LR
schedule's length without split batches, clipping sparse gradients, and a run that diverges."""

from __future__ import annotations

import math

import pytest

from fakes import write_ml100k
from inprocess import compose, run_job

pytestmark = pytest.mark.usefixtures("one_thread")


def test_settings_that_cannot_train_as_asked_are_refused_before_training():
    from recsys_fewshot.settings import check_settings

    check_settings(compose("trainer.limit_train_batches=4", "trainer.gradient_accumulation_steps=2"))
    with pytest.raises(ValueError, match="trainer.limit_train_batches=3 must be a multiple of "
                                         "trainer.gradient_accumulation_steps=2"):
        check_settings(compose("trainer.limit_train_batches=3", "trainer.gradient_accumulation_steps=2"))
    with pytest.raises(ValueError, match="trainer.limit_train_batches=1 must be a multiple"):
        check_settings(compose("trainer=debug", "trainer.gradient_accumulation_steps=2"))  # no update at all
    with pytest.raises(ValueError, match=r"trainer.grad_clip=1.0 with optimizer=.*LazyAdamW.*trainer.grad_clip=0"):
        check_settings(compose("optimizer=lazy_adamw", "trainer.grad_clip=1.0"))


def test_the_schedule_is_as_long_as_the_steps_the_prepared_scheduler_takes():
    from recsys_fewshot.optim import optimizer_steps, scheduler_steps

    # split batches: one scheduler step per optimizer step, whatever the number of processes
    assert scheduler_steps(1000, 50, 2, 1, 0, processes=2) == optimizer_steps(1000, 50, 2, 1) == 40
    # without: each process walks its own 10 of the 20 batches (or the 3 of limit_train_batches), and the
    # prepared scheduler steps twice per optimizer step
    assert scheduler_steps(1000, 50, 2, 1, 0, processes=2, split_batches=False) == 2 * 10 * 2
    assert scheduler_steps(1000, 50, 2, 1, 3, processes=2, split_batches=False) == 2 * 3 * 2  # was 6: LR 0 at half
    assert scheduler_steps(1000, 50, 2, 1, 3, processes=1, split_batches=False) == 2 * 3


def test_a_run_that_diverges_stops_with_its_best_weights(tmp_path):
    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=60, n_items=40, seed=0)
    common = [f"dataset.root={root}", "encoder=none", "logger=none", "trainer.progress=false", "trainer.cpu=true",
              f"cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=4"]
    out = run_job(tmp_path / "run", *common, "optimizer.lr=1e18")
    assert out["best_epoch"] == 1 and out["epochs"] == 2  # epoch 2's loss is not finite: stopped there
    assert all(math.isfinite(v) for v in out["test"].values() if v is not None)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch 1 \(.*NaN or inf\) .* lower optimizer.lr"):
        run_job(tmp_path / "run2", *common, "optimizer.lr=1e30")


def test_a_one_class_valid_set_monitors_logloss_and_kg_settings_are_checked(tmp_path):
    import pandas as pd

    from fakes import write_ctr_csv
    from recsys_fewshot.settings import check_settings

    folder = write_ctr_csv(tmp_path / "ctr")
    valid = pd.read_csv(folder / "valid.csv", dtype=str, keep_default_na=False)
    valid.assign(label="1").to_csv(folder / "valid.csv", index=False)  # AUC undefined on valid
    common = ["dataset=csv", f"dataset.dir={folder}", "split=given", "task=ctr", "head=fewshot", "head.text_probe=false", "encoder=none",
              "logger=none", "trainer.progress=false", "trainer.cpu=true", f"cache_dir={tmp_path / 'cache'}",
              "trainer.max_epochs=30", "trainer.patience=3", "eval.ranking=false"]
    out = run_job(tmp_path / "run", *common)
    assert out["monitor"] == "logloss" and out["best_epoch"] >= 1  # early stopping had something to compare
    with pytest.raises(ValueError, match="trainer.monitor=auc: the .* valid rows are all of one class"):
        run_job(tmp_path / "run2", *common, "trainer.monitor=auc")
    for override, key in (("kg.num_negatives=0", "kg.num_negatives"), ("kg.batch_size=0", "kg.batch_size"),
                          ("kg.weight=-1", "kg.weight")):
        with pytest.raises(ValueError, match=key):
            check_settings(compose("kg=attributes", override))
