"""Item text from a template over the items table (``"{title} ({year}). Genres: {genres}."``)."""

from __future__ import annotations

import re
import string
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
