"""Item text from a template over the items table (``"{title} ({year}). Genres: {genres}."``)."""

from __future__ import annotations

import re
import string
import warnings
from typing import Sequence

import pandas as pd

from recsys_fewshot.data.recdata import DataError

_EMPTY_PARENS = re.compile(r"\s*(?:\(\s*\)|\[\s*\])")
_SPACES = re.compile(r"\s{2,}")
# "Genres: ." with nothing after (labels in any script, with digits, hyphens or spaces: "Sub-genre", "Género")
_EMPTY_CLAUSE = re.compile(r"(^|[.!?])\s*[^\W\d_][\w -]*:\s*(?:\.|$)")


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_texts(items: pd.DataFrame, template: str, list_columns: Sequence[str] = (),
                 where: str = "dataset.text_template") -> list[str]:
    """One string per item row. Columns in `list_columns` hold "|"-joined values, rendered "a, b".

    Empty fields leave no debris: "Title ()" / "Title []" become "Title", "Genres: ." disappears (also
    several in a row, and labels like "Sub-genre:" or "Género:").
    """
    try:
        fields = template_fields(template)
    except ValueError as err:
        raise DataError(f"{where}={template!r} is not a valid template ({err})") from err
    if any(not f.isidentifier() for f in fields) or "{}" in template:
        raise DataError(f"{where}={template!r}: name each field after a column, e.g. {{title}}")
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise DataError(
            f"{where}={template!r} uses column(s) {missing} that the items table lacks "
            f"(it has: {', '.join(map(str, items.columns))})"
        )
    values = {}
    for name in fields:
        col = items[name].fillna("").astype(str)
        if name in list_columns:
            col = col.str.replace("|", ", ", regex=False)
        values[name] = col.tolist()
    texts = []
    for i in range(len(items)):
        text = template.format_map({name: values[name][i] for name in fields})
        text = _EMPTY_PARENS.sub("", text)
        while True:  # one pass leaves the second of two empty clauses in a row
            cleaned = _EMPTY_CLAUSE.sub(r"\1", text)
            if cleaned == text:
                break
            text = cleaned
        text = _SPACES.sub(" ", text).strip()
        texts.append(text)
    return texts


def check_text_coverage(items: pd.DataFrame, template: str, limit: float, source: str) -> int:
    """Count the items whose every `template` field is empty (each would be encoded from the empty string):
    DataError when they are more than `limit` (a share of the catalogue), a warning when there are some.
    `source` names where the items' text comes from (a file). Returns the count."""
    if not 0.0 <= limit <= 1.0:
        raise DataError(f"dataset.missing_text_limit={limit}: expected a share of the items, in [0, 1]")
    fields = [f for f in template_fields(template) if f in items.columns]
    if not len(items) or not fields:
        return 0
    empty = pd.Series(True, index=items.index)
    for name in fields:
        empty &= items[name].fillna("").astype(str).str.strip().eq("")
    missing = int(empty.sum())
    if not missing:
        return 0
    examples = ", ".join(repr(str(i)) for i in items.loc[empty, "item_id"].head(3)) if "item_id" in items else ""
    message = (f"{source}: {missing} of {len(items)} items ({missing / len(items):.0%}) have no text (every field "
               f"of dataset.text_template={template!r} is empty{', e.g. item_id ' + examples if examples else ''}); "
               "each is encoded from the empty string, so the encoder cannot tell them apart")
    if missing > limit * len(items):
        raise DataError(f"{message}. That is more than dataset.missing_text_limit={limit:g} of the catalogue: give "
                        "those items their text, or raise dataset.missing_text_limit (1.0 allows any)")
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return missing
