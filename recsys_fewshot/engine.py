"""The training loop, on `accelerate.Accelerator`. It knows no concrete model.

`fit` takes a module whose forward returns the loss of a batch (see `models.objectives.TaskLoss`),
trains it epoch by epoch, scores the validation set after each epoch with `evaluate`, stops
early when the monitored metric has not improved for `patience` epochs, and restores the best
weights before returning.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

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
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def fit(loss_module: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
        evaluate: Callable[[nn.Module], dict[str, float]], accelerator, *, max_epochs: int, patience: int,
        monitor: str, grad_clip: float = 0.0, limit_train_batches: int = 0, progress: bool = True,
        log: Optional[Callable[[dict[str, float], int], None]] = None,
        scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
        on_step: Optional[Callable[[int], None]] = None, checkpoint_dir: Optional[Path] = None,
        checkpoint_every: int = 0, resume_from: Optional[Path] = None,
        epoch_extras: Optional[Callable[[], dict[str, float]]] = None,
        config: Optional[dict] = None) -> FitResult:
    """Train `loss_module` (which holds `model`); returns the best epoch's validation metrics.

    `evaluate(model)` must return a dict holding `monitor`; NaN counts as no improvement. A non-finite
    training loss, or `evaluate` raising FloatingPointError (non-finite predictions), means the run diverged:
    it stops with the best epoch's weights (an error when no epoch was good yet).
    `on_step(n)` runs after the n-th optimizer step, before the gradients are cleared. Every
    `checkpoint_every` optimizer steps the full state goes to `checkpoint_dir` (see `checkpoint.py`);
    `resume_from` (a checkpoint folder) continues such a run exactly where it stopped; `config` (a
    ``checkpoint.config_fingerprint``) is saved with each checkpoint and must match on resume.
    `epoch_extras()` adds entries to each epoch's row (e.g. the KG loss of joint training).
    """
    from tqdm.auto import tqdm

    from recsys_fewshot import checkpoint as ckpt

    start = time.perf_counter()
    mode = mode_for(monitor)
    generator = loader_generator(train_loader)
    objects = (loss_module, optimizer, train_loader) + ((scheduler,) if scheduler is not None else ())
    loss_module, optimizer, train_loader, *rest = accelerator.prepare(*objects)
    scheduler = rest[0] if rest else None
    best_value, best_epoch, best_state, best_metrics = None, -1, None, {}
    history: list[dict[str, float]] = []
    stale = step = updates = first_epoch = skip = 0
    totals, rng, samples, train_seconds = None, None, 0, 0.0
    if resume_from is not None:
        loop, tensors = ckpt.load(accelerator, resume_from, config)
        rng = ckpt.rng_state()  # re-applied once the resumed epoch's loader has started (it draws a seed)
        first_epoch, skip, step, updates = loop["epoch"], loop["batches"], loop["step"], loop["updates"]
        best_value, best_epoch, best_metrics = loop["best_value"], loop["best_epoch"], loop["best_metrics"]
        stale, history, samples = loop["stale"], loop["history"], loop["samples"]
        train_seconds = loop.get("train_seconds", 0.0)  # so samples/s stays a rate of this run's samples
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
        best_state = best or None
        totals = tensors["totals"]
        if generator is not None and "generator" in tensors:
            generator.set_state(tensors["generator"])
        accelerator.print(f"resumed from {resume_from}: epoch {first_epoch + 1}, {skip} batches done")
    for epoch in range(first_epoch, max_epochs):
        loss_module.train()
        if generator is not None and not skip:
            epoch_generator = generator.get_state()
        elif generator is not None:
            epoch_generator = tensors["generator"]
        total, batches = torch.zeros((), device=accelerator.device), skip
        if totals is not None:
            total += float(totals[accelerator.process_index])
            totals = None
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        skip = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{max_epochs}", leave=False,
                   disable=None if progress and accelerator.is_main_process else True)  # None: off when not a terminal
        tick = time.perf_counter()
        for batch in bar:
            if rng is not None:
                ckpt.set_rng_state(rng)
                rng = None
            if limit_train_batches and batches >= limit_train_batches:
                break
            with accelerator.accumulate(loss_module):
                loss = loss_module(batch)
                accelerator.backward(loss)
                if grad_clip > 0 and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(loss_module.parameters(), grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if accelerator.sync_gradients:
                    updates += 1
                    if on_step is not None:
                        on_step(updates)
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach()
            batches += 1
            step += 1
            samples += _rows(batch) * accelerator.num_processes
            if checkpoint_every and checkpoint_dir is not None and accelerator.sync_gradients \
                    and updates % checkpoint_every == 0:
                tensors = {"totals": accelerator.gather(total.reshape(1)).cpu(),
                           **({"generator": epoch_generator} if generator is not None else {}),
                           **{f"best/{k}": v for k, v in (best_state or {}).items()}}
                loop = {"epoch": epoch, "batches": batches, "step": step, "updates": updates,
                        "best_value": best_value, "best_epoch": best_epoch, "best_metrics": best_metrics,
                        "stale": stale, "history": history, "samples": samples,
                        "train_seconds": train_seconds + time.perf_counter() - tick,
                        **({"config": config} if config is not None else {})}
                ckpt.save(accelerator, checkpoint_dir, updates, loop, tensors)
        train_seconds += time.perf_counter() - tick
        if rng is not None:  # resumed at the very end of an epoch
            ckpt.set_rng_state(rng)
            rng = None
        train_loss = float(accelerator.reduce(total, reduction="mean")) / max(batches, 1)
        metrics, diverged = {}, None
        if not math.isfinite(train_loss):  # its predictions are not worth scoring
            diverged = f"train loss {train_loss}"
        else:
            model.eval()
            with torch.no_grad():
                try:
                    metrics = evaluate(model)
                except FloatingPointError as err:  # non-finite predictions
                    diverged = str(err)
        if diverged is not None:
            if best_state is None:
                raise FloatingPointError(f"training diverged in epoch {epoch + 1} ({diverged}) with no earlier "
                                         "epoch to fall back on: lower optimizer.lr (or set trainer.grad_clip)")
            accelerator.print(f"epoch {epoch + 1}: training diverged ({diverged}); stopping with the weights of "
                              f"epoch {best_epoch}")
            history.append({"epoch": epoch + 1, "train/loss": train_loss})
            break
        if monitor not in metrics:
            raise KeyError(f"trainer.monitor={monitor!r} is not among the validation metrics {sorted(metrics)}")
        extras = epoch_extras() if epoch_extras is not None else {}
        row = {"epoch": epoch + 1, "train/loss": train_loss, **extras,
               **{f"valid/{k}": v for k, v in metrics.items()}}
        history.append(row)
        if log is not None:
            log(row, step)
        value = metrics[monitor]
        improved = value == value and (
            best_value is None or (value < best_value if mode == "min" else value > best_value))
        accelerator.print(f"epoch {epoch + 1}: train loss {train_loss:.4f}, "
                          + "".join(f"{k.split('/')[-1]} {v:.4f}, " for k, v in extras.items())
                          + f"valid {monitor} {value:.4f}"
                          + (" *" if improved else ""))
        if improved:
            best_value, best_epoch, best_metrics, stale = value, epoch + 1, dict(metrics), 0
            best_state = trainable_state(accelerator.unwrap_model(model))
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        unexpected = accelerator.unwrap_model(model).load_state_dict(best_state, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"best weights hold tensors the model lacks: {unexpected[:3]}")
    return FitResult(best_epoch, best_metrics, history, time.perf_counter() - start, train_seconds, samples,
                     updates)


def stack_gathered(accelerator, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([accelerator.gather_for_metrics(p) for p in parts]) if parts else torch.zeros(0)
