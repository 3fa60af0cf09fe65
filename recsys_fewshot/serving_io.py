"""The files of `python -m recsys_fewshot.recommend`: request tables read with every error naming the file, the
column and the line, and result tables written atomically (a temporary file renamed into place).

A request table is .csv (header line 1), .jsonl (one JSON object a line) or .parquet (rows counted from 1); a list
of ids may also be .txt (one id a line). Values are read as strings, stripped; blank lines are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from recsys_fewshot.serving_common import ServeError

FORMATS = (".parquet", ".csv", ".jsonl")
LIST_SEPARATOR = ";"  # list columns (explanations) in CSV output: their values joined by it


def read_rows(path: Path, key: str, required: Sequence[str],
              optional: Sequence[str] = ()) -> tuple[pd.DataFrame, np.ndarray]:
    """(the `required` and present `optional` columns of a .csv, .jsonl or .parquet file as stripped strings,
    each row's line in the file: the number errors name). A missing column, or an empty value in a required
    one, stops with the file, the column and the line; a present optional column must be filled on every line."""
    if not path.is_file():
        raise ServeError(f"{key}={path}: no such file")
    suffix = path.suffix.lower()
    where = "row" if suffix == ".parquet" else "line"
    if suffix == ".jsonl":
        frame, lines = _jsonl(path, required)
    elif suffix == ".csv":
        frame, lines = read_csv_lines(path)
    elif suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow's errors have no common base worth naming
            raise ServeError(f"{path}: not a readable parquet file ({err})") from None
        lines = np.arange(len(frame)) + 1
    else:
        raise ServeError(f"{key}={path}: expected a .csv, .parquet or .jsonl file")
    for column in required:
        if column not in frame.columns:
            raise ServeError(f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    out = {}
    for column in [*required, *(c for c in optional if c in frame.columns)]:
        values = frame[column]
        empty = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            raise ServeError(f"{path}: column {column!r} is empty on {where} {int(lines[int(empty.argmax())])}")
        out[column] = values.astype(str).str.strip().to_numpy(dtype=object)
    return pd.DataFrame(out), lines


def read_csv_lines(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """A CSV file with a header line as strings (columns stripped, blank lines dropped), and each row's line."""
    try:  # blank lines kept (then dropped below), so a row's index gives its line
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ServeError(f"{path}: not a readable CSV file ({str(err).strip()})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    lines = np.arange(len(frame)) + 2  # the header is line 1
    blank = (frame.fillna("").astype(str).apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    return frame[~blank].reset_index(drop=True), lines[~blank]


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; one that is not UTF-8 is named with the line of its first bad byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ServeError(f"{path} line {line}: not UTF-8 text ({err.reason})") from None


def _jsonl(path: Path, required: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    rows, lines = [], []
    for number, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ServeError(f"{path} line {number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ServeError(f"{path} line {number}: expected a JSON object, e.g. "
                             + json.dumps({c: "..." for c in required}))
        for column in required:
            if row.get(column) in (None, ""):
                raise ServeError(f"{path} line {number}: no {column!r} value")
        rows.append(row)
        lines.append(number)
    return pd.DataFrame(rows, columns=list(dict.fromkeys(c for r in rows for c in r)) or list(required)), \
        np.asarray(lines, np.int64)


def read_ids(path: Path, key: str, column: str) -> list[str]:
    """The ids of a .txt (one a line), .csv, .parquet or .jsonl file (column `column`); errors name the file,
    the column and the line."""
    if not path.is_file():
        raise ServeError(f"{key}={path}: no such file (a list of ids is written {key}=[id,id])")
    if path.suffix.lower() in (".txt", ""):
        ids = []
        for number, line in enumerate(text_lines(path), 1):
            text = line.strip()
            if len(text.split()) > 1 or "," in text:
                raise ServeError(f"{path} line {number}: {text!r} is not one id (a .txt file holds one id a line)")
            if text:
                ids.append(text)
        return ids
    if path.suffix.lower() not in FORMATS:
        raise ServeError(f"{key}={path}: expected a .txt, .csv, .parquet or .jsonl file")
    return read_rows(path, key, [column])[0][column].tolist()


def check_out(out: Optional[str]) -> Optional[Path]:
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ServeError(f"out={out}: expected a file ending in {', '.join(FORMATS)}")
    return path


def _arrow_type(kind: str):
    import pyarrow as pa

    if kind.startswith("list<"):
        return pa.list_(_arrow_type(kind[5:-1]))
    return getattr(pa, kind)()


def _flat(frame: pd.DataFrame, schema: dict[str, str]) -> pd.DataFrame:
    """List columns as `LIST_SEPARATOR`-joined strings (CSV has no lists)."""
    lists = [name for name, kind in schema.items() if kind.startswith("list<")]
    if not lists:
        return frame
    frame = frame.copy()
    for name in lists:
        frame[name] = [LIST_SEPARATOR.join(f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v) for v in row)
                       for row in frame[name]]
    return frame


def write_rows(path: Optional[Path], frames: Iterable[pd.DataFrame], schema: dict[str, str]) -> int:
    """Stream `frames` (chunks of one table) into `path` (.parquet, .csv or .jsonl; written beside it, then renamed
    into place) or, for None, to stdout as CSV. `schema`: column -> string | int64 | float32 | list<string> |
    list<float32> (lists: parquet and JSONL keep them, CSV joins them with ";"). Returns the rows."""
    import pyarrow as pa

    from recsys_fewshot import tracking

    arrow = pa.schema([(name, _arrow_type(kind)) for name, kind in schema.items()])
    count = 0

    def chunks():
        nonlocal count
        for frame in frames:
            count += len(frame)
            yield frame[list(schema)]

    if path is None:
        header = True
        for frame in chunks():
            _flat(frame, schema).to_csv(sys.stdout, index=False, header=header)
            header = False
        if header:
            print(",".join(schema))
        return count
    suffix = path.suffix.lower()

    def write(tmp: str) -> None:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, arrow) as writer:
                for frame in chunks():
                    writer.write_table(pa.Table.from_pandas(frame, schema=arrow, preserve_index=False))
            return
        with open(tmp, "w") as f:
            header = True
            for frame in chunks():
                if suffix == ".csv":
                    _flat(frame, schema).to_csv(f, index=False, header=header)
                elif len(frame):
                    f.write(frame.to_json(orient="records", lines=True, force_ascii=False).rstrip("\n") + "\n")
                header = False
            if header and suffix == ".csv":
                f.write(",".join(schema) + "\n")

    path.parent.mkdir(parents=True, exist_ok=True)
    tracking.write_file(path, write)
    return count


def command_args(argv: Optional[list[str]], doc: str, own_keys: Sequence[str]) -> "tuple[dict[str, str], list[str]] | int":
    """A `recommend` / `serve` command line split into its own `key=value` options and the config overrides,
    with the process set up as both commands run (no hub progress bars, warnings on stderr); an exit status
    instead where the command ends here: 0 after `--help`, 2 (the usage line printed) without `run_dir=`."""
    import logging
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(doc.strip())
        return 0
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0] in own_keys}
    overrides = [a for a in args if a.split("=", 1)[0] not in own_keys]
    if "run_dir" not in own:
        print(doc.strip().splitlines()[0], file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return own, overrides
