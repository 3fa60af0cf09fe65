"""The training loop's pieces on their own: `FitOptions` (checked like `trainer.*`), `ResumeState` through a real
checkpoint (every field back as it was, in the files and keys checkpoints have always had), the early-stopping
bookkeeping, and an in-process resume of `fit` from a mid-epoch checkpoint ending bit for bit like the run that
wrote it (the CLI's kill-and-resume is `test_resume.py`)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recsys_fewshot import checkpoint
from recsys_fewshot.engine import FitOptions, ResumeState, batch_loader, end_epoch, fit

pytestmark = pytest.mark.usefixtures("one_thread")

# loop.json's keys, in the order checkpoints have always written them (older checkpoints must still resume)
LOOP_KEYS = ["epoch", "batches", "step", "updates", "best_value", "best_epoch", "best_metrics", "stale", "history",
             "samples", "train_seconds", "config", "num_processes"]


def fresh_accelerator(**options):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=True, **options)


def same(a, b) -> bool:
    """Equal, tensors (also inside dicts and lists) included, bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_fit_options_check_the_counts_and_name_their_trainer_keys():
    assert {f.name for f in fields(FitOptions)} == {  # every setting `fit` took as a keyword
        "max_epochs", "patience", "monitor", "grad_clip", "limit_train_batches", "progress", "log", "scheduler",
        "on_step", "checkpoint_dir", "checkpoint_every", "resume_from", "resume_rng", "epoch_extras", "config"}
    FitOptions(max_epochs=0, patience=0, monitor="rmse")  # a closed-form head trains no epoch; 0 patience is legal
    FitOptions(max_epochs=3, patience=1, monitor="auc", checkpoint_every=5)  # no checkpoint_dir: no checkpoints
    for key, value in (("patience", -1), ("max_epochs", -2), ("limit_train_batches", 1.5), ("checkpoint_every", -1)):
        with pytest.raises(ValueError, match=rf"trainer\.{key}={value}: expected an integer >= 0"):
            FitOptions(**{"max_epochs": 3, "patience": 2, "monitor": "rmse", key: value})
    for clip in (-1.0, math.nan):
        with pytest.raises(ValueError, match=r"trainer\.grad_clip=.*: expected a number >= 0"):
            FitOptions(max_epochs=3, patience=2, monitor="rmse", grad_clip=clip)
    options = FitOptions(max_epochs=3, patience=2, monitor="rmse", checkpoint_dir=Path("x"), checkpoint_every=3)
    assert [options.checkpoint_due(n, True) for n in (1, 3, 6)] == [False, True, True]
    assert not options.checkpoint_due(3, False)  # inside an accumulation group: no optimizer step was taken


def full_state() -> ResumeState:
    """A state with no field at its default."""
    state = ResumeState(
        epoch=2, batches=5, step=23, updates=12, best_value=0.8125, best_epoch=2,
        best_metrics={"rmse": 0.8125, "mae": 0.625}, best_state={"w": torch.randn(3, 2), "b": torch.arange(3.0)},
        stale=1, history=[{"epoch": 1, "train/loss": 1.5, "valid/rmse": 0.9},
                          {"epoch": 2, "train/loss": 1.25, "valid/rmse": 0.8125}],
        samples=1234, train_seconds=3.5, totals=torch.tensor([7.25]),
        generator=torch.Generator().manual_seed(3).get_state(), rng=checkpoint.rng_state())
    defaults = ResumeState()
    assert all(not same(getattr(state, f.name), getattr(defaults, f.name)) for f in fields(ResumeState))
    return state


def test_a_resume_state_comes_back_from_its_checkpoint_field_for_field(tmp_path):
    acc = fresh_accelerator()
    layer = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer, optimizer = acc.prepare(layer, optimizer)
    weights = {k: v.clone() for k, v in layer.state_dict().items()}
    state = full_state()  # rng: the RNG states now, which the checkpoint (Accelerate's part) keeps
    folder = state.save(acc, tmp_path, config={"optimizer.lr": 0.1})
    assert folder == tmp_path / checkpoint.name(12)

    loop = json.loads((folder / checkpoint.LOOP_JSON).read_text())
    assert list(loop) == LOOP_KEYS and loop["config"] == {"optimizer.lr": 0.1}
    from safetensors.torch import load_file

    assert sorted(load_file(str(folder / checkpoint.LOOP_TENSORS))) == ["best/b", "best/w", "generator", "totals"]

    torch.rand(10)  # another RNG state, other weights: the load must bring both back
    with torch.no_grad():
        layer.weight.add_(1.0)
    back = ResumeState.load(acc, folder, {"optimizer.lr": 0.1})
    for f in fields(ResumeState):
        assert same(getattr(back, f.name), getattr(state, f.name)), f.name
    assert same(checkpoint.rng_state(), state.rng)
    assert same({k: v for k, v in layer.state_dict().items()}, weights)

    with pytest.raises(ValueError, match=r"another configuration: optimizer.lr: 0.1 -> 0.5"):
        ResumeState.load(acc, folder, {"optimizer.lr": 0.5})


def test_older_checkpoints_resume_and_foreign_ones_are_refused_naming_the_folder(tmp_path):
    acc = fresh_accelerator()
    acc.prepare(nn.Linear(2, 2))
    folder = ResumeState(totals=torch.zeros(1), epoch=1, batches=3, train_seconds=2.0).save(acc, tmp_path)
    loop = json.loads((folder / checkpoint.LOOP_JSON).read_text())
    del loop["train_seconds"]  # checkpoints written before it was kept
    (folder / checkpoint.LOOP_JSON).write_text(json.dumps(loop))
    back = ResumeState.load(acc, folder)
    assert (back.epoch, back.batches, back.train_seconds, back.best_state, back.generator) == (1, 3, 0.0, None, None)
    del loop["history"]
    (folder / checkpoint.LOOP_JSON).write_text(json.dumps(loop))
    with pytest.raises(ValueError, match=rf"trainer.resume: {folder} lacks history .*not a checkpoint of this"):
        ResumeState.load(acc, folder)


def test_early_stopping_bookkeeping():
    state = ResumeState()
    kept = []

    def weights():
        kept.append(state.epoch)
        return {"w": torch.tensor([float(state.epoch)])}

    for epoch, value in enumerate([0.9, 0.8, math.nan, 0.85, 0.8, 0.7]):
        state.epoch = epoch
        state.record(value, {"rmse": value}, "min", weights)
    assert (state.best_value, state.best_epoch, state.best_metrics, state.stale) == (0.7, 6, {"rmse": 0.7}, 0)
    assert kept == [0, 1, 5]  # NaN and a tie are no improvement
    assert not state.record(0.75, {"rmse": 0.75}, "min", weights) and state.stale == 1
    assert state.record(0.9, {"auc": 0.9}, "max", weights)  # higher is better for auc

    model = nn.Linear(1, 1)
    ResumeState(best_state={"weight": torch.full((1, 1), 3.0)}).restore_best(model)  # frozen ones left out
    assert model.weight.item() == 3.0
    with pytest.raises(KeyError, match="best weights hold tensors the model lacks"):
        ResumeState(best_state={"other": torch.zeros(1)}).restore_best(model)


def test_end_of_epoch_decides_on_patience_and_divergence():
    printed = []
    acc = SimpleNamespace(print=printed.append, unwrap_model=lambda m: m)
    model = nn.Linear(1, 1)

    def run(values, patience, loss=1.0):
        state, options = ResumeState(), FitOptions(max_epochs=10, patience=patience, monitor="rmse")
        goes_on = []
        for epoch, value in enumerate(values):
            state.epoch = epoch
            goes_on.append(end_epoch(state, loss, model, lambda m: {"rmse": value}, acc, options))
        return goes_on, state

    assert run([1.0, 0.9, 0.95, 0.97], patience=2)[0] == [True, True, True, False]
    assert run([1.0, 0.9, 0.95], patience=0)[0] == [True, True, False]  # stops at the first epoch not better
    assert printed[:2] == ["epoch 1: train loss 1.0000, valid rmse 1.0000 *",
                           "epoch 2: train loss 1.0000, valid rmse 0.9000 *"]
    _, state = run([1.0, 0.9], patience=3)
    with pytest.raises(FloatingPointError, match=r"training diverged in epoch 1 \(train loss nan\) with no earlier"):
        end_epoch(ResumeState(), math.nan, model, lambda m: {"rmse": 1.0}, acc,
                  FitOptions(max_epochs=3, patience=1, monitor="rmse"))
    state.epoch = 2
    assert not end_epoch(state, math.inf, model, lambda m: {"rmse": 1.0}, acc, FitOptions(3, 1, "rmse"))
    assert printed[-1] == "epoch 3: training diverged (train loss inf); stopping with the weights of epoch 2"
    assert state.history[-1] == {"epoch": 3, "train/loss": math.inf} and state.best_epoch == 2
    with pytest.raises(KeyError, match=r"trainer.monitor='auc' is not among the validation metrics \['rmse'\]"):
        end_epoch(ResumeState(), 1.0, model, lambda m: {"rmse": 1.0}, acc, FitOptions(3, 1, "auc"))


class NoisyRegression(nn.Module):
    """A loss module with dropout: a resume must restore the RNG as well as the weights and the batch order."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))

    def forward(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.model(x).squeeze(-1), y)


def fit_once(tmp_path: Path, name: str, resume_from=None, on_step=None):
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randn(40)
    valid_x, valid_y = torch.randn(16, 4), torch.randn(16)
    acc = fresh_accelerator(gradient_accumulation_steps=2)
    loss_module = NoisyRegression()
    optimizer = torch.optim.AdamW(loss_module.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))

    def evaluate(model):
        return {"rmse": float(((model(valid_x).squeeze(-1) - valid_y) ** 2).mean().sqrt())}

    # 5 batches an epoch, an optimizer step every 2 and at the epoch's end: 3 steps an epoch
    options = FitOptions(max_epochs=3, patience=5, monitor="rmse", progress=False, scheduler=scheduler,
                         checkpoint_dir=tmp_path / name, checkpoint_every=2, resume_from=resume_from,
                         on_step=on_step, config={"seed": 0})
    result = fit(loss_module, loss_module.model, optimizer, batch_loader(x, y, batch_size=8, shuffle=True, seed=0),
                 evaluate, acc, options)
    return result, {k: v.clone() for k, v in loss_module.model.state_dict().items()}


def test_fit_resumed_from_a_mid_epoch_checkpoint_ends_bit_for_bit_like_the_run_that_wrote_it(tmp_path):
    kept = tmp_path / "kept"

    def keep_step_4(updates: int) -> None:  # step 4's checkpoint (epoch 2, batch 2) is the newest until step 6
        if updates == 5:
            shutil.copytree(checkpoint.latest(tmp_path / "whole"), kept)

    whole, weights = fit_once(tmp_path, "whole", on_step=keep_step_4)
    loop = json.loads((kept / checkpoint.LOOP_JSON).read_text())
    assert (loop["epoch"], loop["batches"], loop["updates"], loop["best_epoch"]) == (1, 2, 4, 1)

    resumed, resumed_weights = fit_once(tmp_path, "resumed", resume_from=kept)
    assert (resumed.best_epoch, resumed.best, resumed.history, resumed.samples, resumed.updates) == \
        (whole.best_epoch, whole.best, whole.history, whole.samples, whole.updates)
    assert same(resumed_weights, weights)
    last_whole, last_resumed = checkpoint.latest(tmp_path / "whole"), checkpoint.latest(tmp_path / "resumed")
    assert last_whole.name == last_resumed.name == checkpoint.name(8)
    from safetensors.torch import load_file

    for folder in (last_whole, last_resumed):  # the same files, the same loop state (but for the seconds)
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in last_whole.iterdir())
    a, b = (json.loads((f / checkpoint.LOOP_JSON).read_text()) for f in (last_whole, last_resumed))
    assert {**a, "train_seconds": 0} == {**b, "train_seconds": 0}
    assert same(*(load_file(str(f / checkpoint.LOOP_TENSORS)) for f in (last_whole, last_resumed)))
