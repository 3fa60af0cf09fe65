"""The results report: known-answer tables from hand-written run folders, the CSV, the plot's data, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recsys_fewshot import report as rep


def make_job(root: Path, num: int, overrides: list[str], test: dict | None = None, valid: dict | None = None,
             error: str | None = None) -> Path:
    """A Hydra job folder as train.py leaves it: .hydra/overrides.yaml + metrics.json (or failure.json)."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if error is not None:
        (job / "failure.json").write_text(json.dumps({"error": error, "traceback": "..."}))
    elif test is not None:
        (job / "metrics.json").write_text(json.dumps({"task": "rating", "test": test, "valid": valid or {},
                                                      "best_epoch": 2, "seconds": {"total": 1.5}}))
    return job


@pytest.fixture
def sweep(tmp_path) -> Path:
    """head x head.dim x seed, RMSE = known numbers; one failed job, one that never wrote anything."""
    root = tmp_path / "multirun" / "2026-01-01_00-00-00-000001"
    rmse = {("mf", "64"): [0.90, 1.00, 1.10], ("mf", "8"): [0.95, 0.97, 0.99],
            ("mlp", "64"): [0.80, 0.84, 0.88], ("mlp", "8"): [0.93, 0.93, 0.93]}
    num = 0
    for (head, dim), values in rmse.items():
        for seed, v in enumerate(values):
            ovr = [f"head={head}", f"head.dim={dim}", f"seed={seed}", "dataset.root=/data", "encoder=none"]
            make_job(root, num, ovr, test={"rmse": v, "mae": v - 0.2, "auc": 0.7 + seed / 100, "recall@10": 0.1,
                                           "ndcg@10": 0.05, "precision@10": 0.01}, valid={"rmse": v + 0.01})
            num += 1
    make_job(root, num, ["head=mf", "head.dim=16", "seed=0", "dataset.root=/data", "encoder=none"],
             error="DataError: split=random: the test set is empty")
    make_job(root, num + 1, ["head=mlp", "head.dim=16", "seed=0", "dataset.root=/data", "encoder=none"])
    return root


def test_table_is_mean_and_sample_std_over_seeds(sweep):
    runs, failed = rep.collect(sweep)
    assert len(runs) == 12 and len(failed) == 2
    table = rep.build_table(runs, failed)
    assert table.keys == ["head", "head.dim"]  # swept; seed averaged; shared overrides are not columns
    assert table.fixed == {"dataset.root": "/data", "encoder": "none"}
    assert table.seeds == {"seed": ["0", "1", "2"]}
    # default metrics: test rmse, mae, auc, recall@k, ndcg@k (not precision)
    assert table.metrics == ["test/rmse", "test/mae", "test/auc", "test/recall@10", "test/ndcg@10"]
    # rows sorted naturally: 8 before 64
    assert [tuple(r.values()) for r in table.rows] == [("mf", "8"), ("mf", "64"), ("mlp", "8"), ("mlp", "64")]
    by_row = {tuple(r.values()): s for r, s in zip(table.rows, table.stats)}
    mean, std, n = by_row[("mf", "64")]["test/rmse"]
    assert (mean, std, n) == (pytest.approx(1.0), pytest.approx(0.1), 3)  # ddof=1: sqrt(0.02/2)
    assert by_row[("mlp", "64")]["test/rmse"][:2] == (pytest.approx(0.84), pytest.approx(0.04))
    assert by_row[("mlp", "8")]["test/rmse"][1] == pytest.approx(0.0)
    assert by_row[("mf", "8")]["test/auc"][0] == pytest.approx(0.71)


def test_markdown_csv_and_failures_written_next_to_the_sweep(sweep, capsys):
    assert rep.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    md = (sweep / "report.md").read_text()
    assert md in printed
    assert "| mf | 64 | 3 | 1.0000 ± 0.1000 |" in md
    assert "12 runs, 4 configurations, 2 failed" in md
    assert "DataError: split=random: the test set is empty" in md
    assert "no metrics.json" in md  # the job that never finished
    frame = pd.read_csv(sweep / "report.csv")
    assert list(frame.columns[:3]) == ["head", "head.dim", "n"]
    row = frame[(frame["head"] == "mlp") & (frame["head.dim"] == 64)].iloc[0]
    assert row["test/rmse_mean"] == pytest.approx(0.84) and row["test/rmse_std"] == pytest.approx(0.04)
    assert row["n"] == 3


def test_split_seed_is_averaged_and_single_runs_have_no_std(tmp_path):
    for i, (ss, v) in enumerate([(0, 0.5), (1, 0.7)]):
        make_job(tmp_path, i, ["head=mf", f"split.seed={ss}"], test={"auc": v})
    make_job(tmp_path, 2, ["head=mlp", "split.seed=0"], test={"auc": 0.9})
    make_job(tmp_path, 3, ["head=seq", "split.seed=0"], test={"auc": None})  # JSON null: undefined
    table = rep.build_table(*rep.collect(tmp_path))
    assert table.keys == ["head"] and table.seeds == {"split.seed": ["0", "1"]}
    stats = {r["head"]: s["test/auc"] for r, s in zip(table.rows, table.stats)}
    assert stats["mf"][0] == pytest.approx(0.6) and stats["mf"][2] == 2
    assert stats["mlp"][0] == pytest.approx(0.9) and math.isnan(stats["mlp"][1])
    assert math.isnan(stats["seq"][0]) and stats["seq"][2] == 0
    md = rep.to_markdown(table)
    assert "| mlp | 1 | 0.9000 |" in md and "| seq | 1 | – |" in md


def test_plot_draws_one_line_per_method_with_the_table_values(sweep):
    from PIL import Image

    written = rep.report(sweep, plot_spec={"x": "head.dim", "y": "test/rmse"})
    png = written["png"]
    assert png == sweep / "plot_test-rmse_vs_head.dim.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    series = written["series"]
    assert set(series) == {"head=mf", "head=mlp"}
    assert series["head=mf"]["x"] == [8.0, 64.0]  # numeric x, sorted
    assert series["head=mf"]["y"] == pytest.approx([0.97, 1.0])
    assert series["head=mlp"]["y"] == pytest.approx([0.93, 0.84])
    assert series["head=mlp"]["std"] == pytest.approx([0.0, 0.04])


def test_plot_categorical_x_and_explicit_series(sweep, tmp_path):
    written = rep.report(sweep, metrics=["valid/rmse"], out=tmp_path,
                         plot_spec={"x": "head", "y": "valid/rmse", "by": "head.dim", "path": str(tmp_path / "p.png")})
    assert (tmp_path / "p.png").exists() and (tmp_path / "report.csv").exists()
    assert set(written["series"]) == {"head.dim=8", "head.dim=64"}
    assert written["series"]["head.dim=64"]["x"] == [0.0, 1.0]  # mf, mlp at category positions
    assert written["series"]["head.dim=64"]["y"] == pytest.approx([1.01, 0.85])


@pytest.mark.parametrize("argv, needle", [
    (["--metrics", "test/rmsee"], "test/rmsee"),
    (["--plot", "x=optimizer.lr", "y=test/rmse"], "optimizer.lr"),
    (["--plot", "x=head", "y=test/rmse", "by="], "head.dim"),  # rows also differ in head.dim
    (["--plot", "x=head"], "y=METRIC"),
    (["--plot", "x=head", "y=test/precision@10"], "--metrics"),
])
def test_bad_options_fail_naming_the_problem(sweep, argv, needle, capsys):
    assert rep.main([str(sweep), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_empty_or_missing_folder(tmp_path, capsys):
    assert rep.main([str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert rep.main([str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_parse_override_forms():
    assert rep.parse_override("head=mf") == ("head", "mf")
    assert rep.parse_override("+trainer.x=1") == ("trainer.x", "1")
    assert rep.parse_override("++a.b=c=d") == ("a.b", "c=d")
    assert rep.parse_override("~logger") == ("logger", "<deleted>")


def test_a_refused_later_start_makes_the_job_failed_and_partial_metrics_show_their_count(tmp_path):
    root = tmp_path / "sweep"
    make_job(root, 0, ["head.dim=8", "seed=0"], test={"rmse": 0.9, "auc": 0.70})
    make_job(root, 1, ["head.dim=8", "seed=1"], test={"rmse": 1.0, "auc": None})  # AUC undefined (one class)
    refused = make_job(root, 2, ["head.dim=16", "seed=0"], test={"rmse": 0.5, "auc": 0.9})
    # a rerun of job 2 with head.dim=0 was refused: the old metrics.json stays, .hydra/ shows the refused start
    (refused / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["head.dim=0", "seed=0"]))
    (refused / "failure.json").write_text(json.dumps({"error": "ValueError: head.dim=0: expected an integer >= 1"}))
    runs, failed = rep.collect(root)
    assert [r.path.name for r in runs] == ["0", "1"] and [r.path.name for r in failed] == ["2"]
    assert "head.dim=0" in failed[0].error
    table = rep.build_table(runs, failed, metrics=["test/rmse", "test/auc"])
    text = rep.to_markdown(table)
    assert "| 2 | 0.9500 ± 0.0707 | 0.7000 (1/2) |" in text  # the AUC mean is over 1 of the 2 runs
    frame = rep.to_frame(table)
    assert frame.loc[0, "n"] == 2 and frame.loc[0, "test/auc_n"] == 1 and frame.loc[0, "test/rmse_n"] == 2


def test_the_test_standard_errors_can_be_reported_beside_the_means(tmp_path):
    """test_se/<metric> (metrics.json's test_se) is a metric like the others: not shown by default, named
    with --metrics; its row value is the mean of the seeds' standard errors."""
    root = tmp_path / "sweep"
    for num, (seed, se) in enumerate([(0, 0.010), (1, 0.014)]):
        job = make_job(root, num, ["head=ease", f"seed={seed}"], test={"ndcg@10": 0.40 + seed / 100})
        summary = json.loads((job / "metrics.json").read_text())
        (job / "metrics.json").write_text(json.dumps({**summary, "test_se": {"ndcg@10": se}}))
    runs, failed = rep.collect(root)
    assert "test_se/ndcg@10" not in rep.build_table(runs, failed).metrics
    table = rep.build_table(runs, failed, metrics=["test/ndcg@10", "test_se/ndcg@10"])
    (stats,) = table.stats
    assert stats["test/ndcg@10"][0] == pytest.approx(0.405) and stats["test_se/ndcg@10"][0] == pytest.approx(0.012)


def versus_sweep(root: Path, gain: float, split_seeds=(0,)) -> Path:
    """head=a / head=b x seed 0-2 (x split.seed), each run with a per_user.parquet on one test set of 150 users;
    head=b's users score `gain` more NDCG@10 than head=a's, plus noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    users = np.arange(150)
    base = rng.uniform(0, 0.6, 150)
    num = 0
    for split_seed in split_seeds:
        for head, shift in (("a", 0.0), ("b", gain)):
            for seed in range(3):
                values = np.clip(base + shift + rng.normal(0, 0.05, 150), 0, 1)
                ovr = [f"head={head}", f"seed={seed}"] + ([f"split.seed={split_seed}"] if len(split_seeds) > 1 else [])
                job = make_job(root, num, ovr, test={"ndcg@10": float(values.mean())})
                summary = json.loads((job / "metrics.json").read_text())
                summary.update(task="ranking", dataset="fake", split={"protocol": "per_user", "seed": split_seed,
                                                                       "test": 500, "items": 40})
                (job / "metrics.json").write_text(json.dumps(summary))
                pd.DataFrame({"user_id": users.astype(str), "relevant": 3, "ndcg@10": values}).to_parquet(
                    job / "per_user.parquet", index=False)
                num += 1
    return root


def test_versus_pairs_each_configuration_with_the_baseline_per_user(tmp_path):
    root = versus_sweep(tmp_path / "sweep", gain=0.05)
    written = rep.report(root, versus_spec=["head=a"], resamples=500)
    vs = written["versus"]
    assert vs.baseline == {"head": "a"} and vs.metrics == ["test/ndcg@10"]
    rows = {r["head"]: c for r, c in zip(written["table"].rows, vs.cells)}
    assert rows["a"] == {}  # the baseline itself
    c = rows["b"]["test/ndcg@10"]
    stats = {r["head"]: s for r, s in zip(written["table"].rows, written["table"].stats)}
    assert c.diff == pytest.approx(stats["b"]["test/ndcg@10"][0] - stats["a"]["test/ndcg@10"][0])  # seed means
    assert c.ci_low > 0.03 and c.p_value < 0.01 and c.users == 150
    assert "Paired against `head=a`" in written["markdown"] and "p=" in written["markdown"]
    frame = pd.read_csv(root / "report.csv")
    assert frame.loc[frame["head"] == "b", "test/ndcg@10_vs_diff"].item() == pytest.approx(c.diff)
    assert math.isnan(frame.loc[frame["head"] == "a", "test/ndcg@10_vs_p"].item())


def test_versus_refuses_an_unclear_baseline_and_says_why_a_cell_is_empty(tmp_path, capsys):
    root = versus_sweep(tmp_path / "sweep", gain=0.0, split_seeds=(0, 1))
    with pytest.raises(rep.ReportError, match="not a swept key"):
        rep.report(root, versus_spec=["optimizer.lr=1"])
    with pytest.raises(rep.ReportError, match="0 configurations match"):
        rep.report(root, versus_spec=["head=c"])
    written = rep.report(root, versus_spec=["head=a"], resamples=200)
    (cell,) = [c["test/ndcg@10"] for c in written["versus"].cells if c]
    assert cell == "several split seeds: one test set at a time"
    assert rep.main([str(root), "--versus", "head=a", "--resamples", "200"]) == 0
    assert "several split seeds" in capsys.readouterr().out
