"""`python scripts/ml100k_to_csv.py OUT_DIR [--root DATA_ROOT]`: MovieLens-100K written in the plain CSV format.

Reads ``ml-100k`` under the data root (``--root``, else ``$RECSYS_FEWSHOT_DATA``) with the project's own reader and
writes OUT_DIR/interactions.csv (user_id,item_id,rating,timestamp), items.csv (item_id,title,year,genres; genres
joined by "|", in u.item's order) and users.csv (user_id,age,gender,occupation,zip): the same data as
``dataset=ml100k``, for runs of ``dataset=csv`` (e.g. what its default item text makes of a real catalogue).
Each file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recsys_fewshot.config import resolve_data_root
from recsys_fewshot.data.sources import read_ml100k
from recsys_fewshot.tracking import _atomic  # temp file + rename

ITEM_COLUMNS = ["item_id", "title", "year", "genres"]
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip"]


def export(folder: Path, out: Path) -> dict[str, int]:
    """The CSV files of the ML-100K folder `folder` into `out`; returns the rows written per file."""
    data = read_ml100k(folder)
    inter = data.interactions
    interactions = inter.assign(user_id=data.user_raw_ids()[inter["user"].to_numpy()],
                                item_id=data.item_raw_ids()[inter["item"].to_numpy()],
                                rating=inter["rating"].astype(int))[["user_id", "item_id", "rating", "timestamp"]]
    out.mkdir(parents=True, exist_ok=True)
    tables = {"interactions.csv": interactions, "items.csv": data.items[ITEM_COLUMNS],
              "users.csv": data.users[USER_COLUMNS]}
    for name, table in tables.items():
        _atomic(out / name, lambda tmp, table=table: table.to_csv(tmp, index=False, encoding="utf-8"))
    return {name: len(table) for name, table in tables.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (dataset.dir of dataset=csv)")
    parser.add_argument("--root", default=None, help="the data root holding ml-100k/ (default: $RECSYS_FEWSHOT_DATA)")
    args = parser.parse_args(argv)
    folder = resolve_data_root(args.root or os.environ.get("RECSYS_FEWSHOT_DATA")) / "ml-100k"
    counts = export(folder, args.out)
    print(", ".join(f"{name}: {n} rows" for name, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
