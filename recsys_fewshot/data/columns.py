"""What the columns of an items or users table hold, for readers that keep every column as written (CSV).

Used by the default item text (`data.text.default_template`: the text columns) and by the knowledge graph of a
data set without a known layout (`kg.graph.derived_attributes`: years as decades, free text left out).
"""

from __future__ import annotations

import re

import pandas as pd

ID_COLUMNS = ("item", "item_id", "user", "user_id")  # the index and the raw id: never text or attributes
FREE_TEXT_WORDS = 4  # a column whose non-empty values average more words than this is prose, not a category
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")  # a four-digit number standing alone: "1995", "01-Jan-1995"


def filled(values: pd.Series) -> pd.Series:
    """The non-empty cells, as stripped strings."""
    text = values.fillna("").astype(str).str.strip()
    return text[text != ""]


def is_number_column(values: pd.Series) -> bool:
    """True when the column holds numbers: a numeric dtype, or some non-empty cells and every one of them
    reads as a number ("1995", "4.5", "-3", "1e3")."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return True
    text = filled(values)
    return len(text) > 0 and bool(pd.to_numeric(text, errors="coerce").notna().all())


def text_columns(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(text columns, number columns) of `table`, in its column order, the id columns left out. A text column
    has some non-empty cell that is not a number; a column with no non-empty cell is neither."""
    text, numbers = [], []
    for name in table.columns:
        if name in ID_COLUMNS:
            continue
        if is_number_column(table[name]):
            numbers.append(name)
        elif len(filled(table[name])):
            text.append(name)
    return text, numbers


def is_free_text(values: pd.Series) -> bool:
    """Prose (a description, a plot) rather than a category: the non-empty cells average more than
    FREE_TEXT_WORDS words."""
    text = filled(values)
    return len(text) > 0 and float(text.str.split().str.len().mean()) > FREE_TEXT_WORDS


def year_of(value) -> str:
    """The year a cell names: a four-digit number in it ("1995", "1995-03-01", "01-Jan-1995"), else ""."""
    match = _YEAR.search(str(value)) if value is not None else None
    return match.group(1) if match else ""


def find_column(table: pd.DataFrame, name: str) -> str | None:
    """The column called `name` in any case ("year", "Year"), else None."""
    return next((c for c in table.columns if str(c).lower() == name), None)
