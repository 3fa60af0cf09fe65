"""`python -m recsys_fewshot.recommend run_dir=PATH [users=all|[id,id]|FILE] [k=20] [out=recs.parquet] ...`

Recommendations from a trained run, in the data set's raw ids (docs/usage/recommend.md):

  users=all|[id,id]|FILE k=20 out=recs.parquet   top-k per user: user_id, rank, item_id, score
  similar=[id,id]|FILE k=10 out=similar.csv      most similar items: item_id, rank, similar_id, score
  export=DIR                                     item and user vectors with their raw ids

out= ends in .parquet, .csv or .jsonl (written in user chunks, then renamed into place); without out= the
rows are printed as CSV. exclude_known=true (the items the run's test ranking excluded: its training, valid
and support rows), false, or all (every interaction of the data set). unknown=skip (unknown ids are counted,
listed and left out) or error. vectors=model|text: the item vectors similar= compares (default: the head's
item tower where it has one, else the encoder's text vectors). A users or similar FILE is .txt (one id a
line), .csv, .parquet or .jsonl (column user_id, or item_id for similar=). Other key=value arguments
override the saved config, as for evaluate (dataset.root=..., trainer.cpu=true, eval.chunk_size=...).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from recsys_fewshot.serving import UNKNOWN_CHOICES, VECTOR_KINDS, ServeError, check_k

OWN_KEYS = ("run_dir", "users", "k", "out", "exclude_known", "unknown", "similar", "vectors", "export")
FORMATS = (".parquet", ".csv", ".jsonl")
log = logging.getLogger("recsys_fewshot.recommend")


def parse_ids(value: str, key: str, column: str) -> Optional[list[str]]:
    """`all` (None), `[id,id]` (a list; ids are kept as written) or a FILE of ids."""
    value = value.strip()
    if value == "all":
        return None
    if value.startswith("["):
        if not value.endswith("]"):
            raise ServeError(f"{key}={value}: a list is written {key}=[id,id]")
        parts = [p.strip().strip("'\"") for p in value[1:-1].split(",")]
        return [p for p in parts if p]
    return read_ids(Path(value).expanduser(), key, column)


def read_ids(path: Path, key: str, column: str) -> list[str]:
    """The ids of a .txt (one a line), .csv, .parquet or .jsonl file (column `column`); errors name the file,
    the column and the line."""
    if not path.is_file():
        raise ServeError(f"{key}={path}: no such file (a list of ids is written {key}=[id,id])")
    suffix = path.suffix.lower()
    if suffix in (".txt", ""):
        ids = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if len(text.split()) > 1 or "," in text:
                raise ServeError(f"{path} line {number}: {text!r} is not one id (a .txt file holds one id a line)")
            if text:
                ids.append(text)
        return ids
    if suffix == ".jsonl":
        ids = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ServeError(f"{path} line {number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or row.get(column) in (None, ""):
                raise ServeError(f"{path} line {number}: no {column!r} value")
            ids.append(str(row[column]))
        return ids
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ServeError(f"{path}: not a readable CSV file ({str(err).strip()})") from None
        first_line = 2  # the header is line 1
    elif suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow's errors have no common base worth naming
            raise ServeError(f"{path}: not a readable parquet file ({err})") from None
        first_line = 1  # rows, counted from 1
    else:
        raise ServeError(f"{key}={path}: expected a .txt, .csv, .parquet or .jsonl file")
    if column not in frame.columns:
        raise ServeError(f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    values = frame[column]
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        where = "line" if suffix == ".csv" else "row"
        raise ServeError(f"{path}: column {column!r} is empty on {where} {int(empty.to_numpy().argmax()) + first_line}")
    return [str(v).strip() for v in values]


def check_out(out: Optional[str]) -> Optional[Path]:
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ServeError(f"out={out}: expected a file ending in {', '.join(FORMATS)}")
    return path


def write_rows(path: Optional[Path], frames: Iterable[pd.DataFrame], schema: dict[str, str]) -> int:
    """Stream `frames` (chunks of one table) into `path` (.parquet, .csv or .jsonl; written beside it, then renamed
    into place) or, for None, to stdout as CSV. `schema`: column -> string | int64 | float32. Returns the rows."""
    import pyarrow as pa

    from recsys_fewshot import tracking

    arrow = pa.schema([(name, getattr(pa, "string" if kind == "string" else kind)()) for name, kind in schema.items()])
    count = 0

    def chunks():
        nonlocal count
        for frame in frames:
            count += len(frame)
            yield frame[list(schema)]

    if path is None:
        header = True
        for frame in chunks():
            frame.to_csv(sys.stdout, index=False, header=header)
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
                    frame.to_csv(f, index=False, header=header)
                elif len(frame):
                    f.write(frame.to_json(orient="records", lines=True, force_ascii=False).rstrip("\n") + "\n")
                header = False
            if header and suffix == ".csv":
                f.write(",".join(schema) + "\n")

    path.parent.mkdir(parents=True, exist_ok=True)
    tracking.write_file(path, write)
    return count


RECOMMENDATIONS = {"user_id": "string", "rank": "int64", "item_id": "string", "score": "float32"}
SIMILAR = {"item_id": "string", "rank": "int64", "similar_id": "string", "score": "float32"}


def flag(value: str, key: str):
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    if key == "exclude_known" and lowered == "all":
        return "all"
    raise ServeError(f"{key}={value}: expected true or false" + (" or all" if key == "exclude_known" else ""))


def run(own: dict[str, str], overrides: list[str]) -> int:
    from recsys_fewshot.serving import load_run

    modes = [m for m in ("similar", "export") if m in own]
    if len(modes) > 1:
        raise ServeError("similar= and export= are separate commands: give one of them")
    # everything about the request is checked before the (slow) load
    out = check_out(own.get("out"))
    k = check_k(own.get("k", "10" if "similar" in own else "20"))
    unknown = own.get("unknown", "skip")
    if unknown not in UNKNOWN_CHOICES:
        raise ServeError(f"unknown={unknown}: expected skip or error")
    if own.get("vectors", "model") not in VECTOR_KINDS:
        raise ServeError(f"vectors={own['vectors']}: expected model or text")
    exclude = flag(own.get("exclude_known", "true"), "exclude_known")
    users = parse_ids(own.get("users", "all"), "users", "user_id")
    similar = parse_ids(own["similar"], "similar", "item_id") if "similar" in own else None
    if "similar" in own and similar is None:
        raise ServeError("similar=all is not offered: name the items, similar=[id,id] or a FILE")

    started = time.perf_counter()
    trained = load_run(Path(own["run_dir"]), overrides)
    loaded = time.perf_counter()
    if "export" in own:
        record = trained.export(Path(own["export"]))
        print(f"exported {', '.join(record['matrices'])} for {record['items']} items and {record['users']} users "
              f"to {own['export']}", file=sys.stderr)
        return 0
    if similar is not None:
        frame = trained.similar_items(similar, k, own.get("vectors"), unknown)
        rows = write_rows(out, [frame], SIMILAR)
        what = f"{frame['item_id'].nunique()} items"
    else:
        chosen = trained.users(users, unknown)
        rows = write_rows(out, trained.iter_recommendations(chosen, k, exclude), RECOMMENDATIONS)
        what = f"{len(chosen)} users"
    done = time.perf_counter()
    print(f"{rows} rows for {what}{f' written to {out}' if out else ''} (loaded in {loaded - started:.1f}s, "
          f"ranked in {done - loaded:.2f}s)", file=sys.stderr)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(__doc__.strip())
        return 0
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0] in OWN_KEYS}
    overrides = [a for a in args if a.split("=", 1)[0] not in OWN_KEYS]
    if "run_dir" not in own:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # this command's own warnings (unknown ids skipped, k beyond the catalogue) always reach stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("recommend: %(message)s"))
    log.addHandler(handler)
    propagate, log.propagate = log.propagate, False
    try:
        return run(own, overrides)
    except (ServeError, OSError, ValueError, KeyError) as err:  # errors name the file, key or id: no traceback
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"recommend: {message}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


if __name__ == "__main__":
    sys.exit(main())
