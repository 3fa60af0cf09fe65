"""Why an item was recommended: the history items that contributed most to its score (`explain=true`).

A score is read as a sum over the user's history items i of input_i x kernel(i, j):

* heads that define `explain_inputs` / `explain_kernel` (models/extend.py) give their own terms: EASE
  x_ui B_ij (the terms of x_u . B[:, j]; with the item's bias they add up to the score), `head=episodic` its
  ridge weights (+ its EASE part), `head=text_pool` each history item's pooled weight x its cosine with j
  (pool=mean: the terms add up to the score; pool=max_sim: the item's share of the soft maximum);
* every other head: the history items the user liked (task=rating: rating >= dataset.positive_threshold; else
  the items the history counts as liked), each weighted by its cosine with j in the vectors the head scores with (its
  item tower where it has one, else the encoder's text vectors).

The `top` largest positive terms of each recommended item are returned, largest first.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from recsys_fewshot.data.recdata import UserHistory

TOP = 3  # history items named per recommendation
CHUNK = 256  # users whose dense input rows are held at once


def _liked_inputs(history: UserHistory, threshold: Optional[float],
                  n_items: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """1 for each liked history item: weight > 0 and, with a `threshold` (task=rating), rating >= it."""
    def inputs(users: torch.Tensor) -> torch.Tensor:
        rows, entry = history.entry_index(users.cpu().numpy())
        liked = history.weights[entry] > 0
        if threshold is not None and history.ratings is not None:
            liked &= history.ratings[entry] >= threshold
        out = torch.zeros(len(users), n_items)
        out[torch.as_tensor(rows[liked]), torch.as_tensor(history.items[entry[liked]])] = 1.0
        return out

    return inputs


def _cosine(vectors: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    return lambda history_items, items: unit[history_items] @ unit[items].T


@torch.no_grad()
def because(trained, history: UserHistory, users: np.ndarray, items: np.ndarray,
            top: int = TOP) -> tuple[list[list[str]], list[list[float]]]:
    """For every entry `items[r, c] >= 0` (row-major order: recommended item c of user `users[r]`, a model index
    or a posted slot, whose history the model reads as `history`), the ids of up to `top` history items with the
    largest positive terms, and the terms. Call inside the run's serving block (the model reads `history`)."""
    model = trained.run.model
    n_items = len(trained.item_ids)
    inputs, kernel = getattr(model, "explain_inputs", None), getattr(model, "explain_kernel", None)
    if inputs is None or kernel is None:
        spec = trained.run.prep.spec
        inputs = _liked_inputs(history, spec.positive_threshold if spec.task == "rating" else None, n_items)
        kernel = _cosine(trained.item_matrix())
    ids = trained.item_ids.to_numpy()
    names: list[list[str]] = []
    weights: list[list[float]] = []
    device = trained.device
    for start in range(0, len(users), CHUNK):
        x = inputs(torch.as_tensor(users[start: start + CHUNK], device=device)).float()
        for row, chosen in zip(x, items[start: start + CHUNK]):
            chosen = chosen[chosen >= 0]
            held = torch.nonzero(row).flatten()
            if len(chosen) == 0:
                continue
            if len(held) == 0:
                names += [[] for _ in chosen]
                weights += [[] for _ in chosen]
                continue
            terms = row[held].unsqueeze(1) * kernel(held, torch.as_tensor(chosen, device=row.device)).float()
            best = torch.topk(terms, min(top, len(held)), dim=0)  # [top, len(chosen)]
            for values, index in zip(best.values.T.cpu().numpy(), best.indices.T.cpu().numpy()):
                keep = values > 0
                names.append(ids[held.cpu().numpy()[index[keep]]].tolist())
                weights.append([float(v) for v in values[keep]])
    return names, weights
