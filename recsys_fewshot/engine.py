"""The training loop, on `accelerate.Accelerator`. It knows no concrete model.

`fit` takes a module whose forward returns the loss of a batch (see `models.objectives.TaskLoss`),
trains it epoch by epoch, scores the validation set after each epoch with `evaluate`, stops
early when the monitored metric has not improved for `patience` epochs, and restores the best
weights before returning.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

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


def batch_loader(*tensors: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    data = TensorBatches(*tensors)
    if shuffle:
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


def fit(loss_module: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
        evaluate: Callable[[nn.Module], dict[str, float]], accelerator, *, max_epochs: int, patience: int,
        monitor: str, grad_clip: float = 0.0, limit_train_batches: int = 0, progress: bool = True,
        log: Optional[Callable[[dict[str, float], int], None]] = None,
        scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None) -> FitResult:
    """Train `loss_module` (which holds `model`); returns the best epoch's validation metrics.

    `evaluate(model)` must return a dict holding `monitor`; NaN counts as no improvement.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    mode = mode_for(monitor)
    loss_module, optimizer, train_loader = accelerator.prepare(loss_module, optimizer, train_loader)
    best_value, best_epoch, best_state, best_metrics = None, -1, None, {}
    history: list[dict[str, float]] = []
    stale = 0
    step = 0
    for epoch in range(max_epochs):
        loss_module.train()
        total, batches = torch.zeros((), device=accelerator.device), 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{max_epochs}", leave=False,
                   disable=not (progress and accelerator.is_main_process))
        for batch in bar:
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
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach()
            batches += 1
            step += 1
        train_loss = float(accelerator.reduce(total, reduction="mean")) / max(batches, 1)
        model.eval()
        with torch.no_grad():
            metrics = evaluate(model)
        if monitor not in metrics:
            raise KeyError(f"trainer.monitor={monitor!r} is not among the validation metrics {sorted(metrics)}")
        row = {"epoch": epoch + 1, "train/loss": train_loss, **{f"valid/{k}": v for k, v in metrics.items()}}
        history.append(row)
        if log is not None:
            log(row, step)
        value = metrics[monitor]
        improved = value == value and (
            best_value is None or (value < best_value if mode == "min" else value > best_value))
        accelerator.print(f"epoch {epoch + 1}: train loss {train_loss:.4f}, valid {monitor} {value:.4f}"
                          + (" *" if improved else ""))
        if improved:
            best_value, best_epoch, best_metrics, stale = value, epoch + 1, dict(metrics), 0
            best_state = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        accelerator.unwrap_model(model).load_state_dict(best_state)
    return FitResult(best_epoch, best_metrics, history, time.perf_counter() - start)


def stack_gathered(accelerator, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([accelerator.gather_for_metrics(p) for p in parts]) if parts else torch.zeros(0)
