"""Time and peak memory of reading a MovieLens CSV release (dataset=ml25m) on a synthetic copy.

Writes ``ratings.csv`` (N lines, sorted by user, half stars, 10-digit timestamps) and ``movies.csv`` (62,423
movies, quoted titles with commas) in the release's format into a temporary folder, then reads it in a fresh
process: the reader alone, and the reader plus the processed-table cache's first write (what a first run does).

    python scripts/bench_ml25m_read.py --rows 2000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_MOVIES = 62_423  # movies.csv of ML-25M
RATINGS_PER_USER = 154  # 25,000,095 ratings / 162,541 users


def write_release(folder: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    movie_ids = np.sort(rng.choice(210_000, N_MOVIES, replace=False) + 1)
    titles = [f"Movie {k}, The ({1900 + k % 120})" if k % 7 == 0 else f"Movie {k} ({1900 + k % 120})"
              for k in range(N_MOVIES)]
    pd.DataFrame({"movieId": movie_ids, "title": titles, "genres": "Comedy|Drama"}).to_csv(
        folder / "movies.csv", index=False, lineterminator="\n")
    users = np.sort(rng.integers(1, max(2, rows // RATINGS_PER_USER) + 1, rows))
    frame = pd.DataFrame({"userId": users, "movieId": movie_ids[rng.integers(0, N_MOVIES, rows)],
                          "rating": rng.integers(1, 11, rows) / 2, "timestamp": rng.integers(789_652_009, 1_574_327_703, rows)})
    frame.to_csv(folder / "ratings.csv", index=False, float_format="%.1f", lineterminator="\n")


def child(folder: str, cache: str) -> None:
    """Runs in a fresh process: the numbers of one read (with the cache write when `cache` is given)."""
    from recsys_fewshot.data import ml25m, store

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    data = (store.load_cached(ml25m.MovieLens25M(), Path(folder), Path(cache)) if cache
            else ml25m.read_ml25m(Path(folder)))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": len(data.interactions), "seconds": round(seconds, 2), "peak_rss_mib": round(peak / 1024),
                      "rss_before_mib": round(base / 1024)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ml25m-") as tmp:
        folder = Path(tmp) / "ml-25m"
        folder.mkdir()
        write_release(folder, args.rows)
        size = (folder / "ratings.csv").stat().st_size
        print(f"ratings.csv: {args.rows:,} lines, {size / 2**20:.0f} MiB")
        for label, cache in (("read", ""), ("read + cache write", str(Path(tmp) / "cache"))):
            out = subprocess.run([sys.executable, __file__, "--child", str(folder), cache], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            print(f"{label}: {out}")


if __name__ == "__main__":
    main()
