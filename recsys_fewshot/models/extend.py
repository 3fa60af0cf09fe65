"""Serving a trained head beyond what it was built for, without retraining: users given by a history at request
time and items added after training (`serving.TrainedRun`).

Heads take part through optional methods, each a context manager that changes the head only inside its block:

* `with_user_slots(owners)`: the user indices scored inside the block are *slots* of a posted history
  (`owners[slot]`: the trained user a slot stands for, or -1 for a user the run never saw); per-user tables
  (ID embeddings, user biases, KG vectors) read the owner's row, or zeros for -1;
* `with_new_items(features)`: item indices `n_items ..` are new items with these frozen text vectors (rows as
  the encoder gives them); their ID parts (embeddings, biases, KG vectors) are zeros;
* `explain_inputs(users)` / `explain_kernel(history_items, items)`: a score as a sum over the user's history
  items of input x kernel (explanations, `serving_explain.py`).

This module holds the pieces they share: `swapped` (attributes replaced for a block, then put back) and
`Remapped` (a per-row table read through an index map, zeros where the map says -1).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def swapped(owner: nn.Module, **values) -> Iterator[None]:
    """Set attributes of `owner` (buffers, parameters, submodules or plain attributes) for the block, then put
    the original objects back (the trained weights themselves are never written)."""
    before = {name: getattr(owner, name) for name in values}
    try:
        for name, value in values.items():
            setattr(owner, name, value)
        yield
    finally:
        for name, value in before.items():
            setattr(owner, name, value)


class Remapped(nn.Module):
    """`lookup` (an embedding, or any rows -> vectors function) read through `index_map`: row r gives
    `lookup(index_map[r])`, or zeros where `index_map[r]` is -1 (a user or item that has no trained row)."""

    def __init__(self, lookup: Callable[[torch.Tensor], torch.Tensor], index_map: torch.Tensor):
        super().__init__()
        self.lookup = lookup  # an nn.Module lookup is registered as a submodule (it moves with this one)
        self.register_buffer("index_map", index_map.long(), persistent=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        mapped = self.index_map[rows]
        out = self.lookup(mapped.clamp(min=0))
        keep = (mapped >= 0).to(out.dtype)
        return out * keep.reshape(keep.shape + (1,) * (out.dim() - keep.dim()))


def items_map(n_items: int, n_new: int, device) -> torch.Tensor:
    """Index map of a catalogue grown by `n_new` items: the trained ones map to themselves, the new ones to -1."""
    return torch.cat([torch.arange(n_items, device=device), torch.full((n_new,), -1, device=device)])


def grown(table: torch.Tensor, n_new: int) -> torch.Tensor:
    """`table` (rows per item) with `n_new` zero rows added: the weights of items without a trained row."""
    return torch.cat([table.detach(), table.new_zeros((n_new, *table.shape[1:]))])
