"""Checks on the values a reader parses: numbers with the line of the first bad one, ratings that must fit
float32 and a declared scale, and ids written two ways that name one number (each a `DataError` naming the
file, column and line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_fewshot.data.recdata import DataError


def _line(first_line: int | np.ndarray, i: int) -> int:
    """The file line of value `i`: `first_line` + i, or `first_line[i]` when each value's line is given (files
    whose blank lines were skipped)."""
    return int(first_line[i]) if isinstance(first_line, np.ndarray) else first_line + i


def parse_numbers(values: pd.Series, path: Path, column: str, first_line: int | np.ndarray, integer: bool = False,
             allow_empty: bool = False) -> np.ndarray:
    """Parse a string column as numbers; raise DataError at the first bad line."""
    text = values.astype(str).str.strip()
    out = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(out)
    if allow_empty:
        bad &= (text != "").to_numpy()
    if integer:
        bad |= np.isfinite(out) & (out != np.round(out))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column {column!r} line {_line(first_line, i)}: "
                        f"expected a{'n integer' if integer else ' number'}, got {values.iloc[i]!r}")
    return out


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_ratings(values: np.ndarray, path: Path, column: str, first_line: int | np.ndarray,
                  scale: tuple[float, float] | None = None, where: str = "") -> None:
    """Parsed ratings (float64, finite) must fit in float32 and, when the data declares a scale, lie in it:
    else DataError at the first bad line (`where` names what declares the scale)."""
    values = np.asarray(values, dtype=np.float64)
    huge = np.abs(values) > FLOAT32_MAX
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise DataError(f"{path}: column {column!r} line {_line(first_line, i)}: {values[i]:g} is not a finite "
                        f"float32 (largest magnitude {FLOAT32_MAX:.4g}); ratings are stored as float32")
    if scale is not None:
        low, high = scale
        outside = (values < low) | (values > high)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(f"{path}: column {column!r} line {_line(first_line, i)}: rating {values[i]:g} is "
                            f"outside the scale [{low:g}, {high:g}]{where}")


def rating_scale(value: Any, key: str) -> tuple[float, float] | None:
    """A declared scale ``[low, high]`` (None: undeclared); DataError naming `key` when malformed."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{key}={value!r}: expected [low, high], e.g. [1, 5]") from err
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise DataError(f"{key}={value!r}: expected finite low <= high, e.g. [1, 5]")
    return low, high


def canonical_ids(raw: pd.Series) -> pd.Series:
    """Each id as a number prints, for ids that parse as one (``1.0``, ``01``, ``1e0`` -> ``1``), else itself."""
    text = raw.astype(str).str.strip()
    number = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    whole = np.isfinite(number) & (number == np.round(number)) & (np.abs(number) < 2.0**53)
    out = text.to_numpy(dtype=object).copy()
    out[whole] = [str(int(v)) for v in number[whole]]
    fractional = np.isfinite(number) & ~whole
    out[fractional] = [repr(float(v)) for v in number[fractional]]
    return pd.Series(out, index=raw.index, dtype=object)


def refuse_respelled_ids(column: str, sources: list[tuple[Path, pd.Series, np.ndarray]]) -> None:
    """Ids compare as written, so ``1`` in items.csv and ``1.0`` in train.csv would be two items: DataError
    naming both files, lines and spellings when two distinct ids are the same number.

    `sources`: (file, its raw ids, each id's line number)."""
    if not sources:
        return
    table = pd.concat([pd.DataFrame({"raw": ids.astype(str).to_numpy(), "file": k, "line": np.asarray(lines)})
                       for k, (_, ids, lines) in enumerate(sources)], ignore_index=True)
    table = table.drop_duplicates("raw")  # each spelling where it first occurs
    table["canon"] = canonical_ids(table["raw"]).to_numpy()
    clash = table["canon"].duplicated(keep=False).to_numpy()
    if not clash.any():
        return
    first = table[clash]
    first = first[first["canon"] == first["canon"].iloc[0]].iloc[:2]
    (a, b) = [(sources[int(r.file)][0], int(r.line), r.raw) for r in first.itertuples()]
    raise DataError(f"{b[0]} line {b[1]}: {column} {b[2]!r} and {a[0]} line {a[1]}: {column} {a[2]!r} are the same "
                    f"number written two ways; ids are compared as written, so they would be two different ids. "
                    f"Write each id the same way in every file (e.g. {a[2]!r} in both)")
