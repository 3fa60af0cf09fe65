"""`python -m recsys_fewshot.report <sweep dir> [--metrics ...] [--plot x=KEY y=METRIC [by=KEY,...]]`
`[--versus KEY=VALUE ...]`

Turns a sweep (any folder of runs) into a results table: every `metrics.json` below the folder is one run,
its `.hydra/overrides.yaml` says which configuration it is. Runs that differ only in the seed keys
(`seed`, `split.seed`) are one configuration: the table shows mean ± std over them (std: the sample
standard deviation, ddof=1; blank for a single run). The swept keys (overrides whose value differs across
runs) are the columns; overrides shared by every run are listed once above the table. Jobs with a
`.hydra/` folder but no `metrics.json` are listed as failed (with the error of their `failure.json`).

Writes `report.md` and `report.csv` in the sweep folder (or `--out`), prints the Markdown, and with
`--plot` a PNG: y against x, one line per method (the other swept keys), error bars = std over seeds.
`--versus KEY=VALUE ...` names a baseline configuration: every other one is compared with it user by user on
the test set (`recsys_fewshot.compare`: runs paired by their seed values, each side's seeds averaged per
user), with the difference, its 95% interval and a p-value per metric (a sweep over split seeds: one test
set at a time, so those cells say so).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

SEED_KEYS = ("seed", "split.seed")
DEFAULT_METRICS = ("rmse", "mae", "auc", "recall@", "ndcg@")  # test/<these>, in this order, when present
PARTS = ("valid", "test", "test_se", "baseline", "best_valid")  # test_se/<metric>: the run's test standard error


class ReportError(ValueError):
    """A sweep folder or option the report cannot use; the message names it."""


@dataclass
class Run:
    """One job: where it is, its overrides (key -> value as typed) and its flat metrics (`test/rmse` -> 0.91)."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None  # set for a failed job (no metrics.json)
    candidates: Optional[str] = None  # what its ranking metrics ranked (metrics.json `candidates`)


@dataclass
class Table:
    """One row per configuration; `stats[row][metric] = (mean, std, n)`."""

    keys: list[str]  # swept keys (the columns)
    rows: list[dict[str, str]]  # key -> value per configuration
    metrics: list[str]
    stats: list[dict[str, tuple[float, float, int]]]
    runs: list[list[Run]]  # the runs behind each row
    fixed: dict[str, str]  # overrides shared by every run
    seeds: dict[str, list[str]]  # averaged seed key -> the values seen
    failed: list[Run]


def parse_override(text: str) -> tuple[str, str]:
    """`head=mf` / `+trainer.x=1` / `++a.b=c` -> (key, value); a deletion `~key` -> (key, "<deleted>")."""
    text = str(text).strip()
    if text.startswith("~"):
        return text.lstrip("~").split("=", 1)[0], "<deleted>"
    key, sep, value = text.lstrip("+").partition("=")
    if not sep:
        raise ReportError(f"override {text!r} is not key=value")
    return key, value


def read_overrides(run_dir: Path) -> dict[str, str]:
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ReportError(f"{path}: expected a list of key=value overrides")
    return dict(parse_override(o) for o in items)


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """`{"test": {"rmse": .9}, "best_epoch": 3, "seconds": {"total": 5}}` -> `{"test/rmse": .9, "best_epoch": 3, ...}`."""
    out: dict[str, float] = {}
    for part in PARTS:
        for k, v in (summary.get(part) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{part}/{k}"] = float(v)
            elif v is None:
                out[f"{part}/{k}"] = math.nan  # JSON null: undefined (e.g. AUC with one class)
    for k in ("best_epoch", "epochs"):
        if isinstance(summary.get(k), (int, float)):
            out[k] = float(summary[k])
    if isinstance((summary.get("seconds") or {}).get("total"), (int, float)):
        out["seconds/total"] = float(summary["seconds"]["total"])
    return out


def _job_order(path: Path, root: Path) -> tuple:
    """Sort job folders naturally (2 before 10)."""
    return tuple(int(p) if p.isdigit() else p for p in path.relative_to(root).parts)


def collect(root: Path) -> tuple[list[Run], list[Run]]:
    """(finished runs, failed jobs) below `root`."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    runs = []
    for path in sorted(root.rglob("metrics.json"), key=lambda p: _job_order(p.parent, root)):
        if (path.parent / "failure.json").exists():
            # a later start in this folder was refused (it left the earlier results, and .hydra/ now shows
            # the refused start's overrides): the job's latest attempt failed; listed below as such
            continue
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON ({exc})") from exc
        runs.append(Run(path.parent, read_overrides(path.parent), flat_metrics(summary),
                        candidates=summary.get("candidates")))
    done = {r.path for r in runs}
    failed = []
    for hydra_dir in sorted(root.rglob(".hydra"), key=lambda p: _job_order(p.parent, root)):
        job = hydra_dir.parent
        if job in done or not (hydra_dir / "overrides.yaml").exists():
            continue
        error = "no metrics.json (still running, killed, or crashed before writing it)"
        if (job / "failure.json").exists():
            error = json.loads((job / "failure.json").read_text()).get("error", error)
        failed.append(Run(job, read_overrides(job), error=error))
    return runs, failed


def default_metrics(runs: Sequence[Run]) -> list[str]:
    present = list(dict.fromkeys(k for r in runs for k in r.metrics))
    out = []
    for prefix in DEFAULT_METRICS:
        out += [k for k in present if k.startswith("test/") and k[len("test/"):].startswith(prefix)
                and (prefix.endswith("@") or k == f"test/{prefix}")]
    return out


def _sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def build_table(runs: Sequence[Run], failed: Sequence[Run] = (), metrics: Optional[Sequence[str]] = None,
                seed_keys: Sequence[str] = SEED_KEYS) -> Table:
    """Group `runs` by their non-seed overrides and average `metrics` (default: test rmse/mae/auc/recall@k/ndcg@k)."""
    if not runs:
        raise ReportError("no finished run (no metrics.json) to report")
    metrics = list(metrics) if metrics else default_metrics(runs)
    known = set(k for r in runs for k in r.metrics)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ReportError(f"metric(s) {', '.join(unknown)} in no run's metrics.json; available: "
                          f"{', '.join(sorted(known))}")
    jobs = list(runs) + list(failed)
    all_keys = list(dict.fromkeys(k for r in jobs for k in r.overrides))
    values = {k: [r.overrides.get(k, "") for r in jobs] for k in all_keys}
    swept = [k for k in all_keys if k not in seed_keys and len(set(values[k])) > 1]
    fixed = {k: values[k][0] for k in all_keys if k not in seed_keys and k not in swept}
    seeds = {k: sorted(set(values[k]), key=_sort_key) for k in seed_keys if k in values}

    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(k, "") for k in swept), []).append(r)
    order = sorted(groups, key=lambda t: tuple(_sort_key(v) for v in t))
    stats = []
    for key in order:
        row = {}
        for m in metrics:
            vals = [r.metrics[m] for r in groups[key] if m in r.metrics and not math.isnan(r.metrics[m])]
            mean = sum(vals) / len(vals) if vals else math.nan
            std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan)
            row[m] = (mean, std, len(vals))
        stats.append(row)
    return Table(keys=swept, rows=[dict(zip(swept, k)) for k in order], metrics=metrics, stats=stats,
                 runs=[groups[k] for k in order], fixed=fixed, seeds=seeds, failed=list(failed))


@dataclass
class Versus:
    """Each configuration against one baseline configuration, paired user by user on the test set
    (`recsys_fewshot.compare`, each side's seeds averaged per user). `cells[row][metric]` holds the
    `Comparison`, or a short reason why there is none."""

    baseline: dict[str, str]
    metrics: list[str]
    cells: list[dict[str, Any]]
    resamples: int


def parse_versus(items: Sequence[str], table: Table) -> int:
    """The row of `table` that `KEY=VALUE ...` names (every given key must be swept; one row must match)."""
    wanted = dict(parse_override(item) for item in items)
    stray = [k for k in wanted if k not in table.keys]
    if stray:
        raise ReportError(f"--versus {stray[0]}=...: not a swept key (swept: {', '.join(table.keys) or 'none'})")
    rows = [i for i, row in enumerate(table.rows) if all(row[k] == v for k, v in wanted.items())]
    if len(rows) != 1:
        shown = "; ".join(" ".join(f"{k}={v}" for k, v in row.items()) for row in table.rows)
        raise ReportError(f"--versus {' '.join(items)}: {len(rows)} configurations match, expected one "
                          f"(configurations: {shown})")
    return rows[0]


def versus(table: Table, baseline: int, resamples: int = 2000, seed: int = 0) -> Versus:
    """Pair each row's runs with the baseline's of the same seed values and compare every test metric that
    `compare` handles (rmse, mae, auc with one seed, ranking metrics)."""
    from recsys_fewshot.compare import CompareError, compare

    metrics = [m for m in table.metrics if m.startswith("test/")
               and (m[5:] in ("rmse", "mae", "auc") or "@" in m[5:])]
    seed_keys = list(table.seeds)

    def by_seeds(runs: Sequence[Run]) -> dict[tuple, Path]:
        return {tuple(r.overrides.get(k, "") for k in seed_keys): r.path for r in runs}

    base = by_seeds(table.runs[baseline])
    split_at = seed_keys.index("split.seed") if "split.seed" in seed_keys else None
    cells = []
    for i, runs in enumerate(table.runs):
        row: dict[str, Any] = {}
        if i != baseline:
            mine = by_seeds(runs)
            shared = sorted(set(mine) & set(base))
            for m in metrics:
                if not shared:
                    row[m] = "no seed shared with the baseline"
                elif split_at is not None and len({k[split_at] for k in shared}) > 1:
                    row[m] = "several split seeds: one test set at a time"
                else:
                    try:
                        row[m] = compare([mine[k] for k in shared], [base[k] for k in shared], [m[5:]], resamples,
                                         seed)[1][0]
                    except CompareError as err:
                        row[m] = str(err)[:100]
        cells.append(row)
    return Versus(table.rows[baseline], metrics, cells, resamples)


def versus_markdown(table: Table, vs: Versus, digits: int = 4) -> str:
    name = " ".join(f"{k}={v}" for k, v in vs.baseline.items())
    lines = ["", f"Paired against `{name}` (A − baseline, 95% bootstrap interval over test users, permutation "
                 f"p; each side's seeds averaged per user; {vs.resamples} resamples):", ""]
    lines.append("| " + " | ".join([*table.keys, *vs.metrics]) + " |")
    lines.append("|" + "|".join(["---"] * len(table.keys) + ["--:"] * len(vs.metrics)) + "|")
    for row, cells in zip(table.rows, vs.cells):
        out = [_show(row[k]) for k in table.keys]
        for m in vs.metrics:
            c = cells.get(m)
            if c is None:
                out.append("baseline")
            elif isinstance(c, str):
                out.append(f"– ({c})")
            else:
                out.append(f"{c.diff:+.{digits}f} [{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}] p={c.p_value:.3g}")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def _show(value: str) -> str:
    """An override value for the Markdown table: long floats (Optuna's proposals) to 4 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.isdigit() else value


def _cell(mean: float, std: float, digits: int, count: Optional[int] = None, runs: Optional[int] = None) -> str:
    """mean ± std; `(count/runs)` added when the metric is missing or undefined (NaN) in some of the runs."""
    if math.isnan(mean):
        return "–"
    out = f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return out if count is None or runs is None or count == runs else f"{out} ({count}/{runs})"


def to_markdown(table: Table, title: str = "", digits: int = 4) -> str:
    lines = [f"# {title}", ""] if title else []
    n_runs = sum(len(r) for r in table.runs)
    seeds = ", ".join(f"{k} in {{{','.join(v)}}}" for k, v in table.seeds.items())
    lines.append(f"{n_runs} runs, {len(table.rows)} configurations"
                 + (f", {len(table.failed)} failed" if table.failed else "")
                 + (f"; mean ± std (ddof=1) over {seeds}" if seeds else "") + ".")
    if table.fixed:
        lines.append("Shared overrides: " + " ".join(f"`{k}={v}`" for k, v in table.fixed.items()))
    ranked = sorted({r.candidates for rows in table.runs for r in rows if r.candidates})
    if ranked:  # rankings over different candidates do not compare: said above the table
        lines.append("Ranked candidates: " + ", ".join(f"`{c}`" for c in ranked))
    lines.append("")
    header = [*table.keys, "n", *table.metrics]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(table.keys) + ["--:"] * (1 + len(table.metrics))) + "|")
    for row, stats, runs in zip(table.rows, table.stats, table.runs):
        cells = [_show(row[k]) for k in table.keys] + [str(len(runs))]
        cells += [_cell(stats[m][0], stats[m][1], digits, stats[m][2], len(runs)) for m in table.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if table.failed:
        lines += ["", "Failed jobs:", ""]
        for r in table.failed:
            what = " ".join(f"{k}={r.overrides[k]}" for k in table.keys + list(table.seeds) if k in r.overrides)
            lines.append(f"- `{r.path.name}` ({what}): {r.error}")
    return "\n".join(lines) + "\n"


def to_frame(table: Table, vs: Optional[Versus] = None):
    """The table as a pandas DataFrame: swept keys, n, then `<metric>_mean` / `<metric>_std` / `<metric>_n`
    (the runs that define the metric) columns; with `vs`, also `<metric>_vs_diff` / `_vs_low` / `_vs_high` /
    `_vs_p` (empty for the baseline and where no comparison could be made)."""
    import pandas as pd

    records = []
    extra = [f"{m}_vs_{part}" for m in (vs.metrics if vs else []) for part in ("diff", "low", "high", "p")]
    for i, (row, stats, runs) in enumerate(zip(table.rows, table.stats, table.runs)):
        rec: dict[str, Any] = {**row, "n": len(runs)}
        for m in table.metrics:
            rec[f"{m}_mean"], rec[f"{m}_std"], rec[f"{m}_n"] = stats[m]
        for m in (vs.metrics if vs else []):
            c = vs.cells[i].get(m)
            if c is not None and not isinstance(c, str):
                rec.update({f"{m}_vs_diff": c.diff, f"{m}_vs_low": c.ci_low, f"{m}_vs_high": c.ci_high,
                            f"{m}_vs_p": c.p_value})
        records.append(rec)
    columns = [*table.keys, "n", *(f"{m}_{s}" for m in table.metrics for s in ("mean", "std", "n")), *extra]
    return pd.DataFrame.from_records(records, columns=columns)


def plot(table: Table, x: str, y: str, path: Path, by: Optional[Sequence[str]] = None) -> dict[str, dict]:
    """PNG of `y` (a table metric) against swept key `x`, one line per value of the `by` keys (default: the
    other swept keys), error bars = std over seeds. Returns what was drawn: label -> {x, y, std} read back
    from the figure's lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsys_fewshot.tracking import _atomic

    if x not in table.keys:
        raise ReportError(f"--plot x={x}: not a swept key; swept keys: {', '.join(table.keys) or 'none'}")
    if y not in table.metrics:
        raise ReportError(f"--plot y={y}: not a metric of the table; metrics: {', '.join(table.metrics)} "
                          "(add it with --metrics)")
    by = [k for k in table.keys if k != x] if by is None else list(by)
    bad = [k for k in by if k not in table.keys or k == x]
    if bad:
        raise ReportError(f"--plot by={','.join(bad)}: not a swept key other than x; swept: {', '.join(table.keys)}")
    rest = [k for k in table.keys if k != x and k not in by]
    if rest:
        raise ReportError(f"--plot: rows also differ in {', '.join(rest)}: add them to by=... or fix them in the sweep")

    xs_all = sorted({row[x] for row in table.rows}, key=_sort_key)
    numeric = all(_sort_key(v)[0] == 0 for v in xs_all)
    series: dict[str, list[tuple[str, float, float]]] = {}
    for row, stats in zip(table.rows, table.stats):
        label = ", ".join(f"{k}={row[k]}" for k in by) or y
        series.setdefault(label, []).append((row[x], *stats[y][:2]))

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, points in series.items():
        points.sort(key=lambda p: _sort_key(p[0]))
        px = [float(p[0]) if numeric else xs_all.index(p[0]) for p in points]
        py = [p[1] for p in points]
        err = [0.0 if math.isnan(p[2]) else p[2] for p in points]
        ax.errorbar(px, py, yerr=err if any(err) else None, marker="o", capsize=3, label=label)
    if not numeric:
        ax.set_xticks(range(len(xs_all)), xs_all)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{y} vs {x} (mean ± std over seeds)" if table.seeds else f"{y} vs {x}")
    fig.tight_layout()
    drawn = {}
    for container in ax.containers:  # one ErrorbarContainer per series: (data line, caps, bars)
        label, line = container.get_label(), container.lines[0]
        drawn[label] = {"x": [float(v) for v in line.get_xdata()], "y": [float(v) for v in line.get_ydata()],
                        "std": [p[2] for p in series[label]]}
    _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return drawn


def report(root: Path, metrics: Optional[Sequence[str]] = None, out: Optional[Path] = None,
           plot_spec: Optional[dict[str, str]] = None, seed_keys: Sequence[str] = SEED_KEYS,
           versus_spec: Optional[Sequence[str]] = None, resamples: int = 2000) -> dict[str, Any]:
    """Build the table of the sweep at `root`, write report.md / report.csv (and the plot). Returns what it wrote.
    `versus_spec` (`KEY=VALUE ...`, one configuration) adds paired comparisons of every row against it."""
    from recsys_fewshot.tracking import _atomic

    root = Path(root)
    runs, failed = collect(root)
    if not metrics and runs:  # an Optuna sweep: its optimised metric comes first
        target = config_value(runs[0].path, "optimized_metric")
        if target and any(target in r.metrics for r in runs):
            metrics = [target, *[m for m in default_metrics(runs) if m != target]]
    table = build_table(runs, failed, metrics, seed_keys)
    vs = versus(table, parse_versus(versus_spec, table), resamples) if versus_spec else None
    out = Path(out) if out else root
    markdown = to_markdown(table, title=f"Report: {root}")
    if vs is not None:
        markdown += versus_markdown(table, vs)
    results = root / "optimization_results.yaml"
    if results.exists():
        markdown += f"\nOptuna ({results.name}):\n\n```yaml\n{results.read_text().strip()}\n```\n"
    md_path, csv_path = out / "report.md", out / "report.csv"
    _atomic(md_path, lambda tmp: Path(tmp).write_text(markdown))
    frame = to_frame(table, vs)
    _atomic(csv_path, lambda tmp: frame.to_csv(tmp, index=False))
    written: dict[str, Any] = {"table": table, "markdown": markdown, "md": md_path, "csv": csv_path, "versus": vs}
    if plot_spec:
        x, y = plot_spec["x"], plot_spec["y"]
        by = [k for k in plot_spec["by"].split(",") if k] if "by" in plot_spec else None
        name = re.sub(r"[^A-Za-z0-9@._-]+", "-", f"{y}_vs_{x}")
        png = Path(plot_spec["path"]) if plot_spec.get("path") else out / f"plot_{name}.png"
        written["png"] = png
        written["series"] = plot(table, x, y, png, by)
    return written


def config_value(run_dir: Path, key: str) -> Optional[str]:
    """A top-level key of the run's config (`config.yaml` beside its results, else `.hydra/config.yaml`), if any."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    try:
        value = (yaml.safe_load(path.read_text()) or {}).get(key)
    except yaml.YAMLError:
        return None
    return str(value) if value is not None else None


def parse_plot(items: Sequence[str]) -> dict[str, str]:
    spec = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("x", "y", "by", "path"):
            raise ReportError(f"--plot {item!r}: expected x=KEY y=METRIC [by=KEY,...] [path=FILE.png]")
        spec[key] = value
    if "x" not in spec or "y" not in spec:
        raise ReportError("--plot needs both x=KEY and y=METRIC, e.g. --plot x=split.k y=test/auc")
    return spec


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_fewshot.report", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (or any folder holding run dirs)")
    parser.add_argument("--metrics", nargs="+", help="columns, e.g. test/rmse valid/auc test/ndcg@10 "
                        "(default: test rmse, mae, auc, recall@k, ndcg@k present)")
    parser.add_argument("--seed-keys", nargs="+", default=list(SEED_KEYS),
                        help="overrides averaged over (default: seed split.seed)")
    parser.add_argument("--out", type=Path, help="folder for report.md/report.csv/plot (default: the sweep dir)")
    parser.add_argument("--plot", nargs="+", metavar="KEY=VALUE",
                        help="x=SWEPT_KEY y=METRIC [by=KEY,...] [path=FILE.png]: a PNG, one line per method")
    parser.add_argument("--versus", nargs="+", metavar="KEY=VALUE",
                        help="a baseline configuration (swept KEY=VALUE ...): every other one is compared with it "
                             "user by user on the test set (python -m recsys_fewshot.compare)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap / permutation resamples for --versus")
    args = parser.parse_args(argv)
    try:
        written = report(args.sweep_dir, args.metrics, args.out, parse_plot(args.plot) if args.plot else None,
                         args.seed_keys, args.versus, args.resamples)
    except ReportError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    print(written["markdown"])
    print(f"wrote {written['md']} and {written['csv']}" + (f" and {written['png']}" if "png" in written else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
