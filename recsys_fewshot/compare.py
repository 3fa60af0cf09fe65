"""`python -m recsys_fewshot.compare RUN_A RUN_B [--metric ndcg@10 ...] [--resamples N] [--seed S] [--out F]`

Is run A better than run B, or is the gap noise? Both runs must have scored the same test set (the same
data, split and seed); the comparison is then paired, user by user:

* ranking metrics (`ndcg@10`, `recall@20`, ...) from each run's `per_user.parquet`: the difference of the
  means over the users both runs ranked (they must be the same users);
* `rmse` / `mae` from each run's `predictions.parquet` (the test pairs, in the same order in both runs):
  the difference of the pooled errors, with each user's pairs kept together.

For each metric it prints A, B, A - B, its standard error, a 95% bootstrap interval (users resampled with
replacement, `--resamples` times) and a two-sided p-value from a paired permutation test (each user's A and
B values swapped at random: under "no difference" either order is as likely). Seeded, so it prints the
same numbers every time. `--out F` also writes them as JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

PER_USER, PREDICTIONS, METRICS = "per_user.parquet", "predictions.parquet", "metrics.json"
ERROR_METRICS = ("rmse", "mae")
DEFAULT_RANKING = ("ndcg@", "recall@")  # shown by default: these families, at every cut-off the runs have
CHUNK = 256  # resamples drawn at once


class CompareError(ValueError):
    """Runs that cannot be compared; the message names the file, column or setting."""


@dataclass
class Comparison:
    metric: str
    a: float
    b: float
    diff: float  # a - b
    se: float  # standard error of the difference
    ci_low: float
    ci_high: float
    p_value: float
    users: int
    lower_is_better: bool


def _read_parquet(run: Path, name: str):
    import pandas as pd

    path = run / name
    if not path.is_file():
        hint = (" (runs write it for ranking metrics; rerun with the current version)" if name == PER_USER
                else " (save_predictions=true writes it)")
        raise CompareError(f"{path}: not found{hint}")
    return pd.read_parquet(path)


def _split_info(run: Path) -> dict:
    path = run / METRICS
    if not path.is_file():
        raise CompareError(f"{path}: not found (is {run} a finished run directory?)")
    summary = json.loads(path.read_text())
    keep = ("protocol", "seed", "train", "valid", "test", "users", "items")
    return {"dataset": summary.get("dataset"), "task": summary.get("task"),
            **{k: summary.get("split", {}).get(k) for k in keep}}


def check_same_test(a: Path, b: Path) -> dict:
    """The two runs' split descriptions; CompareError naming the first setting that differs."""
    info_a, info_b = _split_info(a), _split_info(b)
    for key in info_a:
        if info_a[key] != info_b[key]:
            raise CompareError(f"{a} and {b} were not scored on the same test set: {key} = {info_a[key]!r} vs "
                               f"{info_b[key]!r} ({METRICS}); a paired comparison needs the same data, split and "
                               "split.seed")
    return info_a


def _stats(values_a: np.ndarray, values_b: np.ndarray, weights: np.ndarray,
           statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], resamples: int, seed: int):
    """Observed A, B and the difference, plus its bootstrap se and 95% interval and the permutation p-value.

    `statistic(values, weights)` maps [R, U] per-user values (and the same-shaped weights) to R numbers."""
    n = len(values_a)
    obs_a = float(statistic(values_a[None], weights[None])[0])
    obs_b = float(statistic(values_b[None], weights[None])[0])
    diff = obs_a - obs_b
    rng = np.random.default_rng(seed)
    boot, perm = [], []
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(r, n))
        w = weights[idx]
        boot.append(statistic(values_a[idx], w) - statistic(values_b[idx], w))
        swap = rng.random((r, n)) < 0.5
        wp = np.broadcast_to(weights, (r, n))
        perm.append(statistic(np.where(swap, values_b, values_a), wp)
                    - statistic(np.where(swap, values_a, values_b), wp))
    boot, perm = np.concatenate(boot), np.concatenate(perm)
    low, high = np.quantile(boot, [0.025, 0.975])
    p = (1 + int(np.sum(np.abs(perm) >= abs(diff) - 1e-12))) / (resamples + 1)
    return obs_a, obs_b, diff, float(boot.std(ddof=1)), float(low), float(high), float(p)


def _mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return values.mean(axis=1)


def _pooled(kind: str):
    def pooled(totals: np.ndarray, counts: np.ndarray) -> np.ndarray:
        m = totals.sum(axis=1) / counts.sum(axis=1)
        return np.sqrt(m) if kind == "rmse" else m
    return pooled


def ranking_values(a: Path, b: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-user values of `metric` in both runs, aligned by user; CompareError if their users differ."""
    ta, tb = _read_parquet(a, PER_USER), _read_parquet(b, PER_USER)
    for run, table in ((a, ta), (b, tb)):
        if metric not in table.columns:
            have = ", ".join(c for c in table.columns if "@" in c)
            raise CompareError(f"{run / PER_USER}: no column {metric!r} (it has: {have})")
    ta, tb = ta.set_index("user_id"), tb.set_index("user_id")
    if len(ta) != len(tb) or not ta.index.isin(tb.index).all():
        only_a, only_b = int((~ta.index.isin(tb.index)).sum()), int((~tb.index.isin(ta.index)).sum())
        raise CompareError(f"{a / PER_USER} and {b / PER_USER} rank different users ({only_a} only in A, {only_b} "
                           "only in B): not the same test set")
    return ta[metric].to_numpy(np.float64), tb.loc[ta.index, metric].to_numpy(np.float64)


def error_totals(a: Path, b: Path, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user totals of squared (rmse) or absolute (mae) errors in both runs, and the users' pair counts."""
    pa, pb = _read_parquet(a, PREDICTIONS), _read_parquet(b, PREDICTIONS)
    same = (len(pa) == len(pb) and (pa["user_id"].to_numpy() == pb["user_id"].to_numpy()).all()
            and (pa["item_id"].to_numpy() == pb["item_id"].to_numpy()).all()
            and np.allclose(pa["target"].to_numpy(), pb["target"].to_numpy()))
    if not same:
        raise CompareError(f"{a / PREDICTIONS} and {b / PREDICTIONS} hold different test pairs: not the same test "
                           "set")
    users = np.unique(pa["user_id"].to_numpy(), return_inverse=True)[1]
    target = pa["target"].to_numpy(np.float64)

    def totals(frame) -> np.ndarray:
        err = frame["score"].to_numpy(np.float64) - target
        return np.bincount(users, err ** 2 if kind == "rmse" else np.abs(err))
    return totals(pa), totals(pb), np.bincount(users).astype(np.float64)


def default_metrics(a: Path, task: Optional[str]) -> list[str]:
    names = list(ERROR_METRICS) if task == "rating" else []
    if (a / PER_USER).is_file():
        import pandas as pd

        columns = pd.read_parquet(a / PER_USER).columns
        names += [c for family in DEFAULT_RANKING for c in columns if c.startswith(family)]
    return names


def compare(a: Path, b: Path, metrics: Optional[Sequence[str]] = None, resamples: int = 10000,
            seed: int = 0) -> tuple[dict, list[Comparison]]:
    """The runs' shared split description and one `Comparison` per metric."""
    if resamples < 100:
        raise CompareError(f"--resamples must be >= 100, got {resamples}")
    info = check_same_test(a, b)
    names = list(metrics) if metrics else default_metrics(a, info.get("task"))
    if not names:
        raise CompareError(f"{a}: nothing to compare (no {PER_USER}, and task {info.get('task')!r} has no "
                           "RMSE / MAE); name metrics with --metric")
    out = []
    for name in names:
        if name in ERROR_METRICS:
            if info.get("task") != "rating":
                raise CompareError(f"--metric {name}: the runs' task is {info.get('task')!r}, not rating")
            va, vb, w = error_totals(a, b, name)
            stats = _stats(va, vb, w, _pooled(name), resamples, seed)
            out.append(Comparison(name, *stats, users=len(w), lower_is_better=True))
        else:
            va, vb = ranking_values(a, b, name)
            stats = _stats(va, vb, np.ones_like(va), _mean, resamples, seed)
            out.append(Comparison(name, *stats, users=len(va), lower_is_better=False))
    return info, out


def format_table(a: Path, b: Path, info: dict, rows: Sequence[Comparison], resamples: int) -> str:
    head = (f"A: {a}\nB: {b}\ntest set: {info['dataset']} / {info['protocol']} / split seed {info['seed']} / "
            f"task {info['task']}; paired over users, {resamples} resamples\n")
    lines = [f"{'metric':<13}{'A':>9}{'B':>9}{'A - B':>10}{'se':>9}{'95% interval':>22}{'p':>9}{'users':>7}  better"]
    for r in rows:
        if r.p_value >= 0.05:
            verdict = "neither (p >= 0.05)"
        else:
            a_wins = (r.diff < 0) if r.lower_is_better else (r.diff > 0)
            verdict = "A" if a_wins else "B"
        interval = f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
        lines.append(f"{r.metric:<13}{r.a:>9.4f}{r.b:>9.4f}{r.diff:>+10.4f}{r.se:>9.4f}{interval:>22}"
                     f"{r.p_value:>9.4f}{r.users:>7}  {verdict}")
    return head + "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_fewshot.compare", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--metric", action="append", default=None,
                        help="a metric to compare (repeatable); default: rmse/mae (rating) and every ndcg@k, recall@k")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison here as JSON")
    args = parser.parse_args(argv)
    try:
        info, rows = compare(args.run_a, args.run_b, args.metric, args.resamples, args.seed)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(args.run_a, args.run_b, info, rows, args.resamples))
    if args.out is not None:
        from recsys_fewshot.tracking import write_json

        write_json(args.out, {"run_a": str(args.run_a), "run_b": str(args.run_b), "test_set": info,
                              "resamples": args.resamples, "seed": args.seed,
                              "metrics": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
