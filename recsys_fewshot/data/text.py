"""Item text from a template over the items table (``"{title} ({year}). Genres: {genres}."``).

Without a template (``dataset.text_template=null``, the default of ``dataset=csv``) the template is built from
every text column of the items table (`default_template`): the title first, then the other text columns in the
file's order, each as ``"Column: value."``, as the MovieLens template writes its fields."""

from __future__ import annotations

import re
import string
import warnings
from typing import Optional, Sequence

import pandas as pd

from recsys_fewshot.data.columns import text_columns
from recsys_fewshot.data.recdata import DataError

_EMPTY_PARENS = re.compile(r"\s*(?:\(\s*\)|\[\s*\])")
_SPACES = re.compile(r"\s{2,}")
# "Genres: ." with nothing after (labels in any script, with digits, hyphens or spaces: "Sub-genre", "Género")
_EMPTY_CLAUSE = re.compile(r"(^|[.!?])\s*[^\W\d_][\w -]*:\s*(?:\.|$)")
_LEADING_PUNCT = re.compile(r"^\s*[.,;:](?:\s+|$)")  # an empty first field leaves its ". " behind


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
        text = _LEADING_PUNCT.sub("", _SPACES.sub(" ", text)).strip()
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


def _label(column: str) -> str:
    """How the default template names a column: ``release_date`` -> ``Release date``."""
    words = column.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def default_template(items: pd.DataFrame, source: str = "the items table") -> tuple[str, list[str], list[str]]:
    """(template, the columns in it, the columns left out) of every text column of `items`: a column named
    ``title`` (any case) first and bare, then the other text columns in the table's order, each as
    ``"Column: {column}."`` (``"{title}. Genres: {genres}."``; a title alone: ``"{title}"``). Number columns
    (every non-empty cell a number: a year, a price) are left out, as are columns whose name a template cannot
    hold (not a Python identifier). DataError without a text column."""
    text, numbers = text_columns(items)
    unnamed = [c for c in text if not str(c).isidentifier()]
    text = [c for c in text if str(c).isidentifier()]
    if not text:
        raise DataError(f"{source}: no text column to build the item text from (dataset.text_template=null uses "
                        f"every column but the id whose cells are not all numbers; columns: "
                        f"{', '.join(map(str, items.columns))}): add a column such as title, set "
                        "dataset.text_template, or use encoder=none")
    title = next((c for c in text if c.lower() == "title"), None)
    rest = [c for c in text if c != title]
    parts = ([f"{{{title}}}"] if title else []) + [f"{_label(c)}: {{{c}}}" for c in rest]
    template = ". ".join(parts) + ("." if rest else "")  # a title alone stays "{title}", as it was before
    return template, ([title] if title else []) + rest, numbers + unnamed


def item_template(items: pd.DataFrame, template: Optional[str], source: str = "the items table",
                  log=None) -> str:
    """`template` (``dataset.text_template``), or, when it is None, `default_template` of `items`, with an
    INFO line on `log` naming the columns that went in and those left out."""
    if template is not None:
        return template
    built, used, left_out = default_template(items, source)
    if log is not None:
        log.info("item text from every text column of %s: %s (template %r)%s", source, ", ".join(used), built,
                 f"; left out (numbers, or names a template cannot hold): {', '.join(map(str, left_out))}"
                 if left_out else "")
    return built
