"""The training loop, on `accelerate.Accelerator`. It knows no concrete model.

`fit` takes a module whose forward returns the loss of a batch (see `models.objectives.TaskLoss`),
trains it epoch by epoch, scores the validation set after each epoch with `evaluate`, stops
early when the monitored metric has not improved for `patience` epochs, and restores the best
weights before returning. Its settings come in one `FitOptions`; where the loop stands (and what a
checkpoint saves and a resume restores) is one `ResumeState`, which `train_epoch` (one epoch's batches)
and `end_epoch` (validation and the early-stopping decision) advance.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from recsys_fewshot import checkpoint as ckpt

LOWER_IS_BETTER = ("rmse", "mae", "logloss", "loss")


class TensorBatches(Dataset):
    """Rows of equal-length tensors, fetched a whole batch at a time (no per-row collation)."""

    def __init__(self, *tensors: torch.Tensor):
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same length")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors)


def _identity(batch):
    return batch


class GroupedSampler(Sampler[int]):
    """Every row once per epoch, the rows of one group (user) next to each other: groups in a random order,
    rows in a random order within their group. Cut into batches, a batch then holds few distinct users, and
    the work done once per distinct user (pooling a history) is done once per user per epoch."""

    def __init__(self, groups: torch.Tensor, generator: torch.Generator):
        self.groups, self.generator = torch.as_tensor(groups, dtype=torch.int64), generator

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        n_groups = int(self.groups.max()) + 1 if len(self.groups) else 0
        rows = torch.randperm(len(self.groups), generator=self.generator)
        group_rank = torch.randperm(n_groups, generator=self.generator)
        order = torch.sort(group_rank[self.groups[rows]], stable=True).indices
        yield from rows[order].tolist()


BATCHING = ("rows", "users")


def batch_loader(*tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 groups: Optional[torch.Tensor] = None) -> DataLoader:
    """Batches of `tensors`' rows; shuffled with `seed`, and with `groups` (e.g. the user of each row)
    grouped as `GroupedSampler` does."""
    data = TensorBatches(*tensors)
    if shuffle and groups is not None:
        sampler = GroupedSampler(groups, torch.Generator().manual_seed(seed))
    elif shuffle:
        sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(data)
    return DataLoader(data, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      collate_fn=_identity)


def mode_for(metric: str) -> str:
    return "min" if metric.split("@")[0] in LOWER_IS_BETTER else "max"


@dataclass
class FitResult:
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0  # time in the training batches only (no validation), this process
    samples: int = 0  # training rows processed, all processes together
    updates: int = 0  # optimizer steps


def loader_generator(loader: DataLoader) -> Optional[torch.Generator]:
    """The generator that shuffles `loader` (its state at an epoch's start makes that epoch's order)."""
    sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    return getattr(sampler, "generator", None)


def _rows(batch) -> int:
    """Rows in a batch: a tuple/list of tensors, a dict of tensors, or one tensor."""
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0] if isinstance(batch, (tuple, list)) \
        else batch
    return len(first)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of everything in `model`'s state dict that training can change (frozen weights left out)."""
    # remove_duplicate=False: a tied weight (a causal LM's lm_head = its input embedding) is frozen under both names
    frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


@dataclass
class FitOptions:
    """Every setting of `fit` besides the objects it trains (the ``trainer.*`` key each comes from, if any)."""

    max_epochs: int  # trainer.max_epochs
    patience: int  # trainer.patience: epochs without improvement of `monitor` before stopping
    monitor: str  # the validation metric early stopping watches (`mode_for`: lower or higher is better)
    grad_clip: float = 0.0  # trainer.grad_clip: gradient norm clipped at each optimizer step; 0: off
    limit_train_batches: int = 0  # trainer.limit_train_batches: batches per epoch; 0: all
    progress: bool = True  # trainer.progress: a bar per epoch (main process, and only on a terminal)
    log: Optional[Callable[[dict[str, float], int], None]] = None  # log(epoch row, step) after each epoch
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None  # stepped with the optimizer
    on_step: Optional[Callable[[int], None]] = None  # on_step(n) after the n-th optimizer step, before zero_grad
    checkpoint_dir: Optional[Path] = None  # where checkpoints go (none without it)
    checkpoint_every: int = 0  # trainer.checkpoint_every: optimizer steps between checkpoints; 0: none
    resume_from: Optional[Path] = None  # a checkpoint folder to continue from (`checkpoint.resolve`)
    resume_rng: str = "strict"  # trainer.resume_rng: a resume without readable RNG states stops (strict) or warns
    epoch_extras: Optional[Callable[[], dict[str, float]]] = None  # more entries of each epoch's row
    config: Optional[dict] = None  # `checkpoint.config_fingerprint`: saved with checkpoints, checked on resume

    def __post_init__(self) -> None:  # what `settings.check_settings` refuses for the CLI, for direct callers too
        for key in ("max_epochs", "patience", "limit_train_batches", "checkpoint_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"trainer.{key}={value!r}: expected an integer >= 0")
        if not self.grad_clip >= 0:  # NaN too
            raise ValueError(f"trainer.grad_clip={self.grad_clip!r}: expected a number >= 0 (0: no clipping)")

    def checkpoint_due(self, updates: int, synced: bool) -> bool:
        """Whether the batch that made optimizer step `updates` (`synced`: a step was taken) ends with a checkpoint."""
        return bool(self.checkpoint_every and self.checkpoint_dir is not None and synced
                    and updates % self.checkpoint_every == 0)


@dataclass
class ResumeState:
    """Where the loop stands and what it remembers: what a checkpoint holds besides Accelerate's own state, and
    what a resume restores. `save` writes it as ``loop.json`` (numbers) and ``loop.safetensors`` (tensors), the
    files and keys checkpoints have always had, so older checkpoints resume.

    Hand-written where Accelerate does not do the job: ``accelerator.save_state`` keeps the model, optimizer,
    scheduler and RNG states, but a loader's position only for its own seedable sampler or a torchdata
    ``StatefulDataLoader`` (neither is ours), so the shuffling generator's state at the epoch's start is kept
    here and ``accelerator.skip_first_batches`` replays that order past the batches done; the loss totals,
    counters, early-stopping state and best weights are the loop's own. It is not an Accelerate custom object
    (``register_for_checkpointing``, a pickle) because ``loop.json`` marks a checkpoint complete
    (`checkpoint.latest`) and carries the configuration `checkpoint.preflight` reads before any work."""

    epoch: int = 0  # the epoch in progress, from 0
    batches: int = 0  # batches done in it (a resume skips them)
    step: int = 0  # batches done in all
    updates: int = 0  # optimizer steps
    best_value: Optional[float] = None  # of the monitored metric
    best_epoch: int = -1  # from 1; -1: no epoch validated yet
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: Optional[dict[str, torch.Tensor]] = None  # the best epoch's weights (`trainable_state`)
    stale: int = 0  # epochs since the best
    history: list[dict[str, float]] = field(default_factory=list)  # a row per validated epoch
    samples: int = 0  # training rows processed, all processes together
    train_seconds: float = 0.0  # time in the training batches, this process
    # each process's running loss total in the epoch (gathered), until the resumed epoch adds it to its own
    totals: Optional[torch.Tensor] = None
    generator: Optional[torch.Tensor] = None  # the shuffling generator's state at the epoch's start
    # this process's torch RNG states as `load_state` restored them (`checkpoint.rng_state`; saved by Accelerate,
    # not here), re-applied by hand once the resumed epoch's loader has started: starting it draws a seed from them
    rng: Optional[dict] = None

    _TENSORS = ("best_state", "totals", "generator", "rng")  # not in loop.json

    def save(self, accelerator, root: Path, config: Optional[dict] = None) -> Path:
        """This state, with Accelerate's, as the checkpoint of optimizer step `updates` under `root`
        (`checkpoint.save`; every process calls this). `config`: the run's ``config_fingerprint``."""
        loop = {k: getattr(self, k) for k in self._loop_keys()}
        if config is not None:
            loop["config"] = config
        tensors = {**({"totals": self.totals} if self.totals is not None else {}),
                   **({"generator": self.generator} if self.generator is not None else {}),
                   **{f"best/{k}": v for k, v in (self.best_state or {}).items()}}
        return ckpt.save(accelerator, root, self.updates, loop, tensors)

    @classmethod
    def load(cls, accelerator, folder: Path, config: Optional[dict] = None, resume_rng: str = "strict"
             ) -> "ResumeState":
        """The state checkpoint `folder` holds, `rng` included; Accelerate's part goes into the prepared objects on
        the way (`checkpoint.load`, which refuses another configuration than `config`, another process count and,
        unless `resume_rng` is warn, missing RNG states)."""
        loop, tensors = ckpt.load(accelerator, folder, config, resume_rng)
        rng = ckpt.rng_state()
        loop.setdefault("train_seconds", 0.0)  # written since samples/s became a rate of the samples counted
        missing = [k for k in cls._loop_keys() if k not in loop] + [k for k in ("totals",) if k not in tensors]
        if missing:
            raise ValueError(f"trainer.resume: {Path(folder)} lacks {', '.join(missing)} (in {ckpt.LOOP_JSON} / "
                             f"{ckpt.LOOP_TENSORS}): not a checkpoint of this training loop; start a new run "
                             "directory (trainer.resume=null)")
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
        return cls(**{k: loop[k] for k in cls._loop_keys()}, best_state=best or None, totals=tensors["totals"],
                   generator=tensors.get("generator"), rng=rng)

    @classmethod
    def _loop_keys(cls) -> list[str]:  # loop.json's keys, in the order it has always written them
        return [f.name for f in fields(cls) if f.name not in cls._TENSORS]

    def record(self, value: float, metrics: dict[str, float], mode: str, weights: Callable[[], dict]) -> bool:
        """Early-stopping bookkeeping of the epoch just validated (`epoch`), `value` its monitored metric: True
        when it beats the best (NaN never does; `weights()` is then kept as the best), else one more stale epoch."""
        improved = value == value and (self.best_value is None
                                       or (value < self.best_value if mode == "min" else value > self.best_value))
        if improved:
            self.best_value, self.best_epoch, self.best_metrics, self.stale = value, self.epoch + 1, dict(metrics), 0
            self.best_state = weights()
        else:
            self.stale += 1
        return improved

    def restore_best(self, model: nn.Module) -> None:
        """Load the best epoch's weights into `model` (unwrapped), if an epoch was best."""
        if self.best_state is not None:
            unexpected = model.load_state_dict(self.best_state, strict=False).unexpected_keys
            if unexpected:
                raise KeyError(f"best weights hold tensors the model lacks: {unexpected[:3]}")

    def reapply_rng(self) -> None:
        """After a resume: the RNG states as the checkpoint left them, once (see `rng`)."""
        if self.rng is not None:
            ckpt.set_rng_state(self.rng)
            self.rng = None


@dataclass
class TrainObjects:
    """What `fit` trains with, once Accelerate has prepared it."""

    loss_module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    generator: Optional[torch.Generator]  # the loader's shuffling generator (`loader_generator`)


def fit(loss_module: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
        evaluate: Callable[[nn.Module], dict[str, float]], accelerator, options: FitOptions) -> FitResult:
    """Train `loss_module` (which holds `model`); returns the best epoch's validation metrics.

    `evaluate(model)` must return a dict holding `options.monitor`; NaN counts as no improvement. A non-finite
    training loss, or `evaluate` raising FloatingPointError (non-finite predictions), means the run diverged:
    it stops with the best epoch's weights (an error when no epoch was good yet).
    `options.on_step(n)` runs after the n-th optimizer step, before the gradients are cleared. Every
    `options.checkpoint_every` optimizer steps the full state goes to `options.checkpoint_dir` (see
    `checkpoint.py`, `ResumeState`); `options.resume_from` (a checkpoint folder) continues such a run exactly where
    it stopped; `options.config` (a ``checkpoint.config_fingerprint``) is saved with each checkpoint and must match
    on resume. `options.epoch_extras()` adds entries to each epoch's row (e.g. the KG loss of joint training).
    """
    start = time.perf_counter()
    generator = loader_generator(train_loader)  # of the loader as given: `prepare` wraps it
    scheduler = options.scheduler
    loss_module, optimizer, train_loader, *rest = accelerator.prepare(
        loss_module, optimizer, train_loader, *((scheduler,) if scheduler is not None else ()))
    run = TrainObjects(loss_module, optimizer, train_loader, rest[0] if rest else None, generator)
    state = ResumeState()
    if options.resume_from is not None:
        state = ResumeState.load(accelerator, options.resume_from, options.config, options.resume_rng)
        if generator is not None and state.generator is not None:
            generator.set_state(state.generator)  # the resumed epoch's order; `skip_first_batches` skips its start
        accelerator.print(f"resumed from {options.resume_from}: epoch {state.epoch + 1}, {state.batches} batches done")
    while state.epoch < options.max_epochs:
        train_loss = train_epoch(state, run, accelerator, options)
        if not end_epoch(state, train_loss, model, evaluate, accelerator, options):
            break
        state.epoch, state.batches = state.epoch + 1, 0
    state.restore_best(accelerator.unwrap_model(model))
    return FitResult(state.best_epoch, state.best_metrics, state.history, time.perf_counter() - start,
                     state.train_seconds, state.samples, state.updates)


def train_epoch(state: ResumeState, run: TrainObjects, accelerator, options: FitOptions) -> float:
    """Epoch `state.epoch` from batch `state.batches` on (a resume skips those), advancing `state` and saving the
    checkpoints that fall in it; returns the epoch's mean training loss (over its batches and the processes)."""
    from tqdm.auto import tqdm

    run.loss_module.train()
    if run.generator is not None and not state.batches:  # a fresh epoch: its order is drawn from this state
        state.generator = run.generator.get_state()
    total = torch.zeros((), device=accelerator.device)
    if state.totals is not None:  # resumed: this process's loss over the batches done before the checkpoint
        total += float(state.totals[accelerator.process_index])
        state.totals = None
    loader = accelerator.skip_first_batches(run.loader, state.batches) if state.batches else run.loader
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{options.max_epochs}", leave=False,  # disable=None: off
               disable=None if options.progress and accelerator.is_main_process else True)  # when not a terminal
    tick = time.perf_counter()
    for batch in bar:
        state.reapply_rng()
        if options.limit_train_batches and state.batches >= options.limit_train_batches:
            break
        total += train_step(batch, state, run, accelerator, options).detach()
        state.batches += 1
        state.step += 1
        state.samples += _rows(batch) * accelerator.num_processes
        if options.checkpoint_due(state.updates, accelerator.sync_gradients):
            # as of now: the loss so far of every process (the running total is this process's, on its device)
            # and the seconds so far (`state.train_seconds` counts whole epochs)
            replace(state, totals=accelerator.gather(total.reshape(1)).cpu(),
                    train_seconds=state.train_seconds + time.perf_counter() - tick
                    ).save(accelerator, options.checkpoint_dir, options.config)
    state.train_seconds += time.perf_counter() - tick
    state.reapply_rng()  # resumed at the very end of an epoch
    return float(accelerator.reduce(total, reduction="mean")) / max(state.batches, 1)


def train_step(batch, state: ResumeState, run: TrainObjects, accelerator, options: FitOptions) -> torch.Tensor:
    """Forward and backward of one batch, and the optimizer step when it ends an accumulation group; its loss."""
    with accelerator.accumulate(run.loss_module):
        loss = run.loss_module(batch)
        accelerator.backward(loss)
        if options.grad_clip > 0 and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(run.loss_module.parameters(), options.grad_clip)
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        if accelerator.sync_gradients:
            state.updates += 1
            if options.on_step is not None:
                options.on_step(state.updates)
        run.optimizer.zero_grad(set_to_none=True)
    return loss


def end_epoch(state: ResumeState, train_loss: float, model: nn.Module, evaluate: Callable[[nn.Module], dict],
              accelerator, options: FitOptions) -> bool:
    """Validation after epoch `state.epoch`, its row in the history (and the log), the early-stopping
    bookkeeping; False when training stops here (diverged, or `patience` epochs without improvement)."""
    epoch = state.epoch + 1
    metrics, diverged = validate(model, evaluate, train_loss)
    if diverged is not None:
        if state.best_state is None:
            raise FloatingPointError(f"training diverged in epoch {epoch} ({diverged}) with no earlier "
                                     "epoch to fall back on: lower optimizer.lr (or set trainer.grad_clip)")
        accelerator.print(f"epoch {epoch}: training diverged ({diverged}); stopping with the weights of "
                          f"epoch {state.best_epoch}")
        state.history.append({"epoch": epoch, "train/loss": train_loss})
        return False
    monitor = options.monitor
    if monitor not in metrics:
        raise KeyError(f"trainer.monitor={monitor!r} is not among the validation metrics {sorted(metrics)}")
    extras = options.epoch_extras() if options.epoch_extras is not None else {}
    row = {"epoch": epoch, "train/loss": train_loss, **extras, **{f"valid/{k}": v for k, v in metrics.items()}}
    state.history.append(row)
    if options.log is not None:
        options.log(row, state.step)
    value = metrics[monitor]
    improved = state.record(value, metrics, mode_for(monitor), lambda: trainable_state(accelerator.unwrap_model(model)))
    accelerator.print(f"epoch {epoch}: train loss {train_loss:.4f}, "
                      + "".join(f"{k.split('/')[-1]} {v:.4f}, " for k, v in extras.items())
                      + f"valid {monitor} {value:.4f}"
                      + (" *" if improved else ""))
    return improved or state.stale < options.patience


def validate(model: nn.Module, evaluate: Callable[[nn.Module], dict], train_loss: float
             ) -> tuple[dict[str, float], Optional[str]]:
    """(`evaluate(model)`'s metrics, None), or ({}, why) when the run diverged: a non-finite training loss (its
    predictions are not worth scoring) or `evaluate` raising FloatingPointError (non-finite predictions)."""
    if not math.isfinite(train_loss):
        return {}, f"train loss {train_loss}"
    model.eval()
    with torch.no_grad():
        try:
            return evaluate(model), None
        except FloatingPointError as err:
            return {}, str(err)


def stack_gathered(accelerator, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([accelerator.gather_for_metrics(p) for p in parts]) if parts else torch.zeros(0)
