"""Optimizer parameter groups (head vs encoder learning rates) and warmup + linear/cosine decay.

The schedule is a ``LambdaLR`` over optimizer steps: a linear ramp from 0 over the first ``warmup``
fraction, then constant (``none``), linear decay to 0 (``linear``) or half a cosine to 0 (``cosine``).
Accelerate steps a prepared scheduler once per optimizer step, whatever the number of processes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

SCHEDULES = ("none", "linear", "cosine")


def param_groups(params: Iterable[nn.Parameter], is_encoder: Callable[[nn.Parameter], bool], lr: float,
                 head_lr: Optional[float], encoder_lr: Optional[float]) -> list[dict[str, Any]]:
    """Trainable parameters split into a head group and an encoder group (empty groups left out)."""
    head, encoder = [], []
    for param in params:
        if param.requires_grad:
            (encoder if is_encoder(param) else head).append(param)
    groups = [{"params": head, "lr": lr if head_lr is None else head_lr, "name": "head"}]
    if encoder:
        groups.append({"params": encoder, "lr": lr if encoder_lr is None else encoder_lr, "name": "encoder"})
    return [g for g in groups if g["params"]]


def schedule_factor(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each optimizer step."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optimizer.scheduler={schedule!r}: expected one of {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "none":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup: float,
                    total_steps: int) -> Optional[torch.optim.lr_scheduler.LambdaLR]:
    """None when the learning rate stays constant (no schedule, no warmup)."""
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"optimizer.warmup={warmup!r}: expected a fraction of the optimizer steps in [0, 1)")
    factor = schedule_factor(schedule, int(round(warmup * total_steps)), total_steps)
    if schedule == "none" and warmup == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_steps(n_rows: int, batch_size: int, max_epochs: int, accumulation: int, limit_batches: int = 0) -> int:
    """Optimizer steps of a whole run (one process's view: the loader before it is sharded)."""
    batches = math.ceil(n_rows / batch_size)
    if limit_batches:
        batches = min(batches, limit_batches)
    return max(1, max_epochs * math.ceil(batches / max(1, accumulation)))
