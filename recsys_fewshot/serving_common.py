"""What the modules serving a loaded run share: the error they raise, id resolution, the request checks."""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import pandas as pd

log = logging.getLogger("recsys_fewshot.recommend")

UNKNOWN_CHOICES = ("skip", "error")
VECTOR_KINDS = ("model", "text")
SHOWN = 5  # unknown ids listed in a message


class ServeError(ValueError):
    """A request a loaded run cannot answer: unknown ids, a malformed ids file, a run folder it cannot serve."""


def listed(ids: list[str]) -> str:
    """The first few of `ids`, for a message."""
    return ", ".join(ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")


def resolve_ids(raw: Iterable[Any], index: pd.Index, kind: str, unknown: str = "skip") -> tuple[np.ndarray, list[str]]:
    """(model indices of the known raw ids, in input order without repeats; the unknown raw ids). Unknown ids
    are counted, the first few listed, then skipped with a warning (`unknown="skip"`) or refused ("error")."""
    if unknown not in UNKNOWN_CHOICES:
        raise ServeError(f"unknown={unknown!r}: expected skip or error")
    raw = list(dict.fromkeys(str(x) for x in raw))
    codes = index.get_indexer(raw)
    missing = [r for r, c in zip(raw, codes) if c < 0]
    if missing:
        message = f"{len(missing)} of {len(raw)} {kind} ids are not in the run's data ({listed(missing)})"
        if unknown == "error":
            raise ServeError(f"{message}; unknown=skip leaves them out")
        log.warning("%s: skipped", message)
    return codes[codes >= 0].astype(np.int64), missing


def no_grad(fn):
    """`fn` run under torch.no_grad()."""
    def wrapped(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


def check_k(k: Any) -> int:
    try:
        value = int(k)
    except (TypeError, ValueError):
        value = 0
    if value < 1 or str(value) != str(k).strip():
        raise ServeError(f"k={k}: expected a whole number >= 1")
    return value
