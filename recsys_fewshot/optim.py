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


def scheduler_steps(n_rows: int, batch_size: int, max_epochs: int, accumulation: int, limit_batches: int = 0,
                    processes: int = 1, split_batches: bool = True) -> int:
    """Steps the LR schedule takes in a whole run under Accelerate. With split batches each process takes 1/N
    of every batch and the prepared scheduler steps once per optimizer step. Without, each process walks its
    own 1/N of the batches (or `limit_batches` of them) and the prepared scheduler steps N times per optimizer
    step."""
    per_step = batch_size * (1 if split_batches else processes)
    steps = optimizer_steps(n_rows, per_step, max_epochs, accumulation, limit_batches)
    return steps * (1 if split_batches else processes)


def sparse_embeddings(target: str) -> bool:
    """Whether the optimizer class `target` (a `_target_` path) declares `sparse_embeddings = True`: it wants
    the head's ID tables built with sparse gradients (and its gradients cannot be norm-clipped)."""
    from hydra.utils import get_class

    return bool(getattr(get_class(target), "sparse_embeddings", False))


class LazyAdamW(torch.optim.Optimizer):
    """AdamW for recommenders with big ID tables: a parameter with a sparse gradient (an embedding built with
    ``sparse=True``) updates only the rows its batch touched, moments included ("lazy" Adam, as
    ``torch.optim.SparseAdam``, with decoupled weight decay on those rows); a dense gradient gets the plain
    AdamW step. On 100k users x 50k items a step then costs the batch's rows, not the whole tables
    (`optimizer=lazy_adamw`, which also builds the head's embeddings sparse)."""

    sparse_embeddings = True  # declared: the build path makes the head's ID tables sparse (see sparse_embeddings)

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"LazyAdamW: bad hyper-parameters lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                step_size = lr / (1 - b1 ** t)
                root_correction = math.sqrt(1 - b2 ** t)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if p.grad.is_sparse:
                    grad = p.grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    if wd:
                        p[rows] = p[rows] * (1 - lr * wd)
                    m_rows = m[rows].lerp_(values, 1 - b1)
                    v_rows = v[rows].mul_(b2).addcmul_(values, values, value=1 - b2)
                    m[rows], v[rows] = m_rows, v_rows
                    p[rows] = p[rows] - step_size * m_rows / (v_rows.sqrt() / root_correction + eps)
                else:
                    if wd:
                        p.mul_(1 - lr * wd)
                    m.lerp_(p.grad, 1 - b1)
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    p.addcdiv_(m, v.sqrt().div_(root_correction).add_(eps), value=-step_size)
        return loss


def make_embeddings_sparse(model: nn.Module, skip: Iterable[int] = ()) -> list[str]:
    """Switch the trainable embedding tables of `model` to sparse gradients (for `LazyAdamW`), except those whose
    weight's id() is in `skip` (a trainable text encoder's); returns their names."""
    names, skip = [], set(skip)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.weight.requires_grad \
                and id(module.weight) not in skip:
            if isinstance(module, nn.EmbeddingBag) and module.mode == "max":
                continue  # max bags have no sparse gradient
            module.sparse = True
            names.append(name)
    return names
