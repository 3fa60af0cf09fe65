"""`python -m recsys_fewshot.compare RUN_A RUN_B [--metric ndcg@10 ...] [--resamples N] [--seed S] [--out F]`
or `python -m recsys_fewshot.compare A_SEED0 A_SEED1 ... --vs B_SEED0 B_SEED1 ...` (seeds averaged per user)

Is run A better than run B, or is the gap noise? Both runs must have scored the same test set (the same
data, split and seed); the comparison is then paired, user by user:

* ranking metrics (`ndcg@10`, `recall@20`, ...) from each run's `per_user.parquet`: the difference of the
  means over the users both runs ranked (they must be the same users);
* `rmse` / `mae` from each run's `predictions.parquet` (the test pairs, in the same order in both runs):
  the difference of the pooled errors, with each user's pairs kept together;
* `auc` (CTR runs, and ranking runs on explicit ratings) from the same files: liked vs not-liked test pairs,
  ties counted half, each user's pairs again kept together.

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

from recsys_fewshot.results import METRICS, PER_USER, PREDICTIONS  # what a run writes

ERROR_METRICS = ("rmse", "mae")
DEFAULT_RANKING = ("ndcg@", "recall@")  # shown by default: these families, at every cut-off the runs have
CHUNK = 256  # resamples drawn at once
# metrics.json split keys that describe training only, not which pairs are tested
TRAINING_ONLY = ("n_shots", "valid_mode", "augment", "pool", "train", "valid", "users", "adapt_steps", "adapt_lr",
                 "unseen_user_rows", "unseen_item_rows", "fallback_rows", "valid_cold_users", "valid_cold_items",
                 "test_positive_rate")
CLUSTER_COLUMNS = ("source_user", "user_id")  # pairs are grouped by the first present (TALLRec: the sample's user)


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
    users: int  # the independent units: users, or the source users of TALLRec-style samples
    lower_is_better: bool
    grouped_by: str = "user_id"


def _read_parquet(run: Path, name: str):
    import pandas as pd

    path = run / name
    if not path.is_file():
        hint = (" (a run writes it when it ranks: ranking runs, and rating runs unless eval.ranking=false, once "
                "some test user has a relevant item; runs from before it existed lack it)" if name == PER_USER
                else " (save_predictions=true writes it)")
        raise CompareError(f"{path}: not found{hint}")
    frame = pd.read_parquet(path)
    needed = ("user_id",) if name == PER_USER else ("user_id", "item_id", "target", "score")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise CompareError(f"{path}: no column {missing[0]!r} (a run writes {', '.join(needed)})")
    return frame


def _split_info(run: Path) -> dict:
    """What defines a run's test set: dataset, task, the relevance threshold (config.yaml) and every
    `split` key of metrics.json but those that only describe training (TRAINING_ONLY)."""
    path = run / METRICS
    if not path.is_file():
        raise CompareError(f"{path}: not found (is {run} a finished run directory?)")
    summary = json.loads(path.read_text())
    split = summary.get("split") or {}
    info = {"dataset": summary.get("dataset"), "task": summary.get("task"), "candidates": summary.get("candidates"),
            **{k: v for k, v in split.items() if k not in TRAINING_ONLY}}
    config = run / "config.yaml"
    if config.is_file():
        import yaml

        dataset = (yaml.safe_load(config.read_text()) or {}).get("dataset") or {}
        info["positive_threshold"] = dataset.get("positive_threshold")
    return info


def check_same_test(a: Path, b: Path) -> dict:
    """The runs' shared test-set description; CompareError naming the first setting that differs.

    With both runs' `predictions.parquet` the test pairs themselves must match (user, item, target and the
    source user, in order), and of the settings only dataset, task, protocol and sizes: runs that differ
    in what was trained (TALLRec shot counts and seeds, model seeds) compare. Without them, every setting
    that can pick the test set must match."""
    info_a, info_b = _split_info(a), _split_info(b)
    ranked = (info_a["candidates"], info_b["candidates"])
    # runs from before metrics.json named its candidates ranked all items or the split's set, never sampled ones
    if ranked[0] != ranked[1] and (all(ranked) or any(str(c).startswith("sampled") for c in ranked if c)):
        raise CompareError(f"{a} and {b} ranked different candidates: {ranked[0] or 'unrecorded'} vs "
                           f"{ranked[1] or 'unrecorded'} ({METRICS} 'candidates', set by eval.candidates and "
                           "eval.num_negatives / negatives / candidates_seed): their ranking metrics do not compare")
    pairs = (a / PREDICTIONS).is_file() and (b / PREDICTIONS).is_file()
    keys = ("dataset", "task", "protocol", "test", "items") if pairs else sorted(info_a.keys() | info_b.keys())
    for key in (k for k in keys if k != "candidates"):
        if info_a.get(key) != info_b.get(key):
            raise CompareError(f"{a} and {b} were not scored on the same test set: {key} = {info_a.get(key)!r} vs "
                               f"{info_b.get(key)!r} ({METRICS} / config.yaml); a paired comparison needs the same "
                               "data, split and split seed")
    if pairs:
        paired_predictions(a, b)
    return info_a


def _chunk(width: int) -> int:
    return max(1, min(CHUNK, 2 ** 22 // max(width, 1)))  # resamples x width stays a few MB


def _stats(n_users: int, statistic: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
           resamples: int, seed: int, width: int):
    """Observed A, B and the difference, plus its bootstrap se and 95% interval and the permutation p-value.

    `statistic(mult, swap)` gives the R values of A and of B when user u counts mult[r, u] times ([R, U]
    floats) and, where swap[r, u], user u's A and B data trade places. `width`: the data per resample row
    (users or pairs), to size the chunks."""
    ones = np.ones((1, n_users))
    a, b = (float(v[0]) for v in statistic(ones, np.zeros((1, n_users), bool)))
    diff = a - b
    rng = np.random.default_rng(seed)
    boot, perm = [], []
    step = _chunk(width)
    for start in range(0, resamples, step):
        r = min(step, resamples - start)
        drawn = rng.integers(0, n_users, size=(r, n_users)) + n_users * np.arange(r)[:, None]
        mult = np.bincount(drawn.ravel(), minlength=r * n_users).reshape(r, n_users).astype(np.float64)
        va, vb = statistic(mult, np.zeros((r, n_users), bool))
        boot.append(va - vb)
        va, vb = statistic(np.broadcast_to(ones, (r, n_users)), rng.random((r, n_users)) < 0.5)
        perm.append(va - vb)
    boot, perm = np.concatenate(boot), np.concatenate(perm)
    boot = boot[np.isfinite(boot)]  # an AUC resample without liked (or without not-liked) pairs is undefined
    if len(boot) < 2:
        raise CompareError("the bootstrap resamples left no defined value: too few users or pairs to compare")
    low, high = np.quantile(boot, [0.025, 0.975])
    p = (1 + int(np.sum(np.abs(perm) >= abs(diff) - 1e-12))) / (resamples + 1)
    return a, b, diff, float(boot.std(ddof=1)), float(low), float(high), float(p)


def _swapped(a: np.ndarray, b: np.ndarray, swap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.where(swap, b, a), np.where(swap, a, b)


def mean_statistic(a: np.ndarray, b: np.ndarray):
    """Per-user values (ranking metrics): the mean over users."""
    def statistic(mult, swap):
        xa, xb = _swapped(a, b, swap)
        total = mult.sum(axis=1)
        return (mult * xa).sum(axis=1) / total, (mult * xb).sum(axis=1) / total
    return statistic


def pooled_statistic(kind: str, a: np.ndarray, b: np.ndarray, counts: np.ndarray):
    """Per-user error totals (squared for rmse, absolute for mae) and pair counts: the pooled error."""
    def statistic(mult, swap):
        xa, xb = _swapped(a, b, swap)
        n = (mult * counts).sum(axis=1)
        ma, mb = (mult * xa).sum(axis=1) / n, (mult * xb).sum(axis=1) / n
        return (np.sqrt(ma), np.sqrt(mb)) if kind == "rmse" else (ma, mb)
    return statistic


class _Ranked:
    """Scores sorted once, with each tie group's first and last position: AUCs under many weightings."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray):
        n = len(scores)
        self.order = np.argsort(scores, kind="stable")
        s = scores[self.order]
        self.labels = labels[self.order].astype(np.float32)
        starts = np.r_[True, s[1:] != s[:-1]]
        ends = np.r_[starts[1:], True]
        self.first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        self.last = np.minimum.accumulate(np.where(ends, np.arange(n), n - 1)[::-1])[::-1]

    def auc(self, w: np.ndarray) -> np.ndarray:
        """AUC per row of pair weights [R, n], given in sorted order (0: the pair is absent)."""
        neg = w * (1 - self.labels)
        pos = w * self.labels
        below_incl = np.cumsum(neg, axis=1, dtype=np.float64)
        below = below_incl[:, self.first] - neg[:, self.first]  # not-liked weight strictly below the tie group
        tied = below_incl[:, self.last] - below  # not-liked weight in the group itself
        return (pos * (below + 0.5 * tied)).sum(axis=1) / (pos.sum(axis=1, dtype=np.float64)
                                                           * neg.sum(axis=1, dtype=np.float64))


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC under each row of pair weights ([R, n]; 0: the pair is absent) for fixed scores and 0/1 labels
    ([n]): the weighted share of (liked, not-liked) pairs the scores order right, ties counted half."""
    ranked = _Ranked(np.asarray(scores, np.float64), np.asarray(labels, np.float64))
    return ranked.auc(np.asarray(weights, np.float32)[:, ranked.order])


def mid_ranks(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among all of them, in (0, 1], ties sharing their mean rank: a monotone map, so any
    AUC of these scores alone is unchanged."""
    ranked = _Ranked(scores, np.zeros(len(scores)))
    out = np.empty(len(scores))
    out[ranked.order] = (ranked.first + ranked.last + 2) / (2 * len(scores))
    return out


PAIR_COUNT_LIMIT = 2 * 10 ** 7  # cells (pairs x users) of the count tables the fast AUC path may build
PAIR_COUNT_USERS = 2000  # ... and its most users (four users x users tables)


def pair_counts(users: np.ndarray, labels: np.ndarray, pos_scores: np.ndarray, neg_scores: np.ndarray,
                n_users: int) -> np.ndarray:
    """C[u, v] = sum over u's liked pairs p and v's not-liked pairs n of [s_p > s_n] + 0.5 [s_p == s_n],
    with the liked pairs scored by `pos_scores` and the not-liked ones by `neg_scores`."""
    liked = labels == 1
    order = np.argsort(neg_scores[~liked], kind="stable")
    sorted_neg, neg_users = neg_scores[~liked][order], users[~liked][order]
    below = np.zeros((len(sorted_neg) + 1, n_users), np.int32)  # [k, v]: v's not-liked among the k lowest
    below[np.arange(1, len(sorted_neg) + 1), neg_users] = 1
    np.cumsum(below, axis=0, out=below)
    s = pos_scores[liked]
    twice = below[np.searchsorted(sorted_neg, s, "left")] + below[np.searchsorted(sorted_neg, s, "right")]
    pos_users = users[liked]
    by_user = np.argsort(pos_users, kind="stable")
    present, starts = np.unique(pos_users[by_user], return_index=True)
    counts = np.zeros((n_users, n_users))
    counts[present] = np.add.reduceat(twice[by_user], starts, axis=0, dtype=np.int64) / 2  # exact integers
    return counts


def auc_statistic(users: np.ndarray, labels: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Both runs' pair scores, the pairs' users (0..U-1) and labels: the AUC, each user's pairs together, as
    (statistic, the width of one resample's arrays).

    AUC compares pairs across users, so a user swapped in the permutation test puts one run's scores beside
    the other run's: each run's scores are first replaced by their mid-ranks within that run (the same
    AUC, one scale for both). Then, where the tables fit (PAIR_COUNT_LIMIT, PAIR_COUNT_USERS), the ordered
    (liked, not-liked) pairs are counted once per pair of users and per pair of runs, and each resample's
    AUC is a quadratic form in the users' weights (matrix products); otherwise both runs' ranks are sorted
    together once and each resample weights them (cumulative sums over all pairs)."""
    ra, rb = mid_ranks(a), mid_ranks(b)
    n_users = int(users.max()) + 1
    liked = labels == 1
    if n_users <= PAIR_COUNT_USERS and max(int(liked.sum()), int((~liked).sum()) + 1) * n_users <= PAIR_COUNT_LIMIT:
        c = {(x, y): pair_counts(users, labels, sx, sy, n_users)
             for x, sx in (("a", ra), ("b", rb)) for y, sy in (("a", ra), ("b", rb))}
        n_pos = np.bincount(users[liked], minlength=n_users).astype(np.float64)
        n_neg = np.bincount(users[~liked], minlength=n_users).astype(np.float64)

        def quadratic(own, other):  # own: each user's weight where scored by A, other: ... by B
            return (np.einsum("ru,ru->r", own @ c["a", "a"], own) + np.einsum("ru,ru->r", own @ c["a", "b"], other)
                    + np.einsum("ru,ru->r", other @ c["b", "a"], own)
                    + np.einsum("ru,ru->r", other @ c["b", "b"], other))

        def statistic(mult, swap):
            kept, moved = np.where(swap, 0.0, mult), np.where(swap, mult, 0.0)
            den = (mult @ n_pos) * (mult @ n_neg)
            return quadratic(kept, moved) / den, quadratic(moved, kept) / den
        return statistic, n_users

    ranked = _Ranked(np.concatenate([ra, rb]), np.concatenate([labels, labels]))
    owner = np.concatenate([users, users])[ranked.order]  # each sorted score's user
    from_b = ranked.order >= len(a)  # ... and run

    def statistic(mult, swap):
        w = mult[:, owner].astype(np.float32)
        in_a = swap[:, owner] == from_b  # A's scores: its own, or B's where the user is swapped
        return ranked.auc(np.where(in_a, w, 0)), ranked.auc(np.where(in_a, 0, w))
    return statistic, len(owner)


def ranking_values(a: Path, b: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-user values of `metric` in both runs, aligned by user; CompareError if their users differ."""
    ta, tb = _read_parquet(a, PER_USER), _read_parquet(b, PER_USER)
    for run, table in ((a, ta), (b, tb)):
        if metric not in table.columns:
            have = ", ".join(c for c in table.columns if "@" in c)
            raise CompareError(f"{run / PER_USER}: no column {metric!r} (it has: {have})")
        repeated = table["user_id"][table["user_id"].duplicated()]
        if len(repeated):
            raise CompareError(f"{run / PER_USER}: user_id {repeated.iloc[0]!r} repeats; a run writes each ranked "
                               "user once")
        if table[metric].isna().any():
            raise CompareError(f"{run / PER_USER}: {int(table[metric].isna().sum())} users have no {metric} "
                               "(a run writes only users with a relevant test item)")
    if ta.empty:
        raise CompareError(f"{a / PER_USER}: no ranked users to compare")
    ta, tb = ta.set_index("user_id"), tb.set_index("user_id")
    if len(ta) != len(tb) or not ta.index.isin(tb.index).all():
        only_a, only_b = int((~ta.index.isin(tb.index)).sum()), int((~tb.index.isin(ta.index)).sum())
        raise CompareError(f"{a / PER_USER} and {b / PER_USER} rank different users ({only_a} only in A, {only_b} "
                           "only in B): not the same test set")
    return ta[metric].to_numpy(np.float64), tb.loc[ta.index, metric].to_numpy(np.float64)


def paired_predictions(a: Path, b: Path):
    """Both runs' test pairs, checked to be the same pairs in the same order: (A's frame, B's scores, each
    pair's group 0..G-1). Pairs are grouped by user, or by `source_user` where the run has one (TALLRec
    samples are users of their own, but several come from one real user and are not independent)."""
    pa, pb = _read_parquet(a, PREDICTIONS), _read_parquet(b, PREDICTIONS)
    sourced = ["source_user" in f.columns for f in (pa, pb)]
    if sourced[0] != sourced[1]:
        run = a if sourced[0] else b
        raise CompareError(f"only {run / PREDICTIONS} has a source_user column: the runs would be grouped "
                           "differently; rerun the other with this version")
    columns = ("user_id", "item_id", "source_user") if sourced[0] else ("user_id", "item_id")
    same = (len(pa) == len(pb) and all((pa[c].to_numpy() == pb[c].to_numpy()).all() for c in columns)
            and np.allclose(pa["target"].to_numpy(), pb["target"].to_numpy(), equal_nan=True))
    if not same:
        raise CompareError(f"{a / PREDICTIONS} and {b / PREDICTIONS} hold different test pairs: not the same test "
                           "set")
    if pa.empty:
        raise CompareError(f"{a / PREDICTIONS}: no test pairs to compare")
    for run, frame in ((a, pa), (b, pb)):
        for c in ("target", "score"):
            bad = int((~np.isfinite(frame[c].to_numpy(np.float64))).sum())
            if bad:
                raise CompareError(f"{run / PREDICTIONS}: {bad} test pairs have a NaN or infinite {c}")
    column = next(c for c in CLUSTER_COLUMNS if c in pa.columns)
    groups = np.unique(pa[column].to_numpy(), return_inverse=True)[1].ravel()
    return pa, pb["score"].to_numpy(np.float64), groups, column


def error_totals(a: Path, b: Path, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Per-user totals of squared (rmse) or absolute (mae) errors in both runs, the users' pair counts, and
    the column the pairs were grouped by."""
    pa, score_b, users, column = paired_predictions(a, b)
    target = pa["target"].to_numpy(np.float64)

    def totals(score: np.ndarray) -> np.ndarray:
        err = score - target
        return np.bincount(users, err ** 2 if kind == "rmse" else np.abs(err))
    return (totals(pa["score"].to_numpy(np.float64)), totals(score_b), np.bincount(users).astype(np.float64),
            column)


def default_metrics(a: Path, task: Optional[str]) -> list[str]:
    names = list(ERROR_METRICS) if task == "rating" else ["auc"] if task == "ctr" else []
    if (a / PER_USER).is_file():
        import pandas as pd

        columns = pd.read_parquet(a / PER_USER).columns
        names += [c for family in DEFAULT_RANKING for c in columns if c.startswith(family)]
    return names


def _runs(side: Path | Sequence[Path]) -> list[Path]:
    return [Path(side)] if isinstance(side, (str, Path)) else [Path(r) for r in side]


def compare(a: Path | Sequence[Path], b: Path | Sequence[Path], metrics: Optional[Sequence[str]] = None,
            resamples: int = 10000, seed: int = 0) -> tuple[dict, list[Comparison]]:
    """The runs' shared split description and one `Comparison` per metric.

    `a` and `b` may each be several runs (e.g. model seeds 0-2 of two configurations), all on one test set:
    each user's values (ranking metrics) or error totals (RMSE, MAE) are then averaged over a side's runs
    before the paired comparison, so the interval is about the test users, with the seeds' noise averaged."""
    if resamples < 100:
        raise CompareError(f"--resamples must be >= 100, got {resamples}")
    runs_a, runs_b = _runs(a), _runs(b)
    if not runs_a or len(runs_a) != len(runs_b):
        raise CompareError(f"A has {len(runs_a)} runs and B {len(runs_b)}: give each side the same number (one "
                           "per seed)")
    base = runs_a[0]
    info = check_same_test(base, runs_b[0])
    for other in [*runs_a[1:], *runs_b[1:]]:
        check_same_test(base, other)  # every run of both sides on the one test set
    names = list(metrics) if metrics else default_metrics(base, info.get("task"))
    unknown = [n for n in names if n not in (*ERROR_METRICS, "auc") and "@" not in n]
    if unknown:
        raise CompareError(f"--metric {unknown[0]!r}: compare takes rmse, mae, auc or a ranking metric such as "
                           "ndcg@10 / recall@20 (per user)")
    if not names:
        raise CompareError(f"{base}: nothing to compare (no {PER_USER}, and task {info.get('task')!r} has no "
                           "RMSE / MAE); name metrics with --metric")

    def averaged(values, runs):  # one side's per-user arrays, each aligned to the base run's users
        return np.mean([values(base, r)[1] for r in runs], axis=0)

    out = []
    for name in names:
        if name in ERROR_METRICS:
            if info.get("task") != "rating":
                raise CompareError(f"--metric {name}: the runs' task is {info.get('task')!r}, not rating")
            _, _, counts, column = error_totals(base, base, name)
            va, vb = (averaged(lambda x, y: error_totals(x, y, name), runs) for runs in (runs_a, runs_b))
            stats = _stats(len(counts), pooled_statistic(name, va, vb, counts), resamples, seed, len(counts))
            out.append(Comparison(name, *stats, users=len(counts), lower_is_better=True, grouped_by=column))
        elif name == "auc":
            if info.get("task") not in ("ctr", "ranking"):
                raise CompareError(f"--metric auc: the runs' task is {info.get('task')!r}; their pairs' targets are "
                                   "0/1 labels only on ctr and ranking runs")
            if len(runs_a) > 1:
                raise CompareError("--metric auc compares one run per side (an AUC is not a mean over users); "
                                   "compare the seeds one pair at a time")
            pa, score_b, users, column = paired_predictions(base, runs_b[0])
            labels = pa["target"].to_numpy(np.float64)
            if labels.min() == labels.max():
                raise CompareError(f"--metric auc: every test pair in {base / PREDICTIONS} has target {labels[0]:g}; "
                                   "AUC needs liked and not-liked pairs")
            n_users = int(users.max()) + 1
            statistic, width = auc_statistic(users, labels, pa["score"].to_numpy(np.float64), score_b)
            stats = _stats(n_users, statistic, resamples, seed, width)
            out.append(Comparison(name, *stats, users=n_users, lower_is_better=False, grouped_by=column))
        else:
            va, vb = (averaged(lambda x, y: ranking_values(x, y, name), runs) for runs in (runs_a, runs_b))
            stats = _stats(len(va), mean_statistic(va, vb), resamples, seed, len(va))
            out.append(Comparison(name, *stats, users=len(va), lower_is_better=False))
    return info, out


def _side(runs: Path | Sequence[Path]) -> str:
    runs = _runs(runs)
    return str(runs[0]) if len(runs) == 1 else f"{len(runs)} runs, averaged per user: {', '.join(map(str, runs))}"


def format_table(a: Path | Sequence[Path], b: Path | Sequence[Path], info: dict, rows: Sequence[Comparison],
                 resamples: int) -> str:
    units = sorted({r.grouped_by for r in rows})
    ranked = f" / candidates {info['candidates']}" if info.get("candidates") else ""
    head = (f"A: {_side(a)}\nB: {_side(b)}\ntest set: {info.get('dataset')} / {info.get('protocol')} / "
            f"{info.get('test')} test rows / task {info.get('task')}{ranked}; paired over {' and '.join(units)}, "
            f"{resamples} resamples\n")
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
    parser.add_argument("runs", type=Path, nargs="+", help="RUN_A RUN_B, or with --vs: A's runs (one per seed)")
    parser.add_argument("--vs", type=Path, nargs="+", default=None,
                        help="B's runs, as many as A's: each side's values are averaged per user over its runs")
    parser.add_argument("--metric", action="append", default=None,
                        help="a metric to compare (repeatable): rmse, mae, auc or a ranking metric; default: "
                             "rmse/mae (rating), auc (ctr), and every ndcg@k, recall@k")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison here as JSON")
    args = parser.parse_args(argv)
    if args.vs is None and len(args.runs) != 2:
        parser.error(f"give two runs (RUN_A RUN_B), or A's runs then --vs B's runs; got {len(args.runs)} runs")
    run_a, run_b = (args.runs, args.vs) if args.vs is not None else ([args.runs[0]], [args.runs[1]])
    try:
        info, rows = compare(run_a, run_b, args.metric, args.resamples, args.seed)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(run_a, run_b, info, rows, args.resamples))
    if args.out is not None:
        from recsys_fewshot.tracking import write_json

        write_json(args.out, {"run_a": [str(r) for r in run_a], "run_b": [str(r) for r in run_b], "test_set": info,
                              "resamples": args.resamples, "seed": args.seed,
                              "metrics": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
