"""Standard errors of test metrics (`metrics.mean_se`, `metrics.clustered_error_se`), the per-user table a run
writes, and the paired comparison of two runs (`python -m recsys_fewshot.compare`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakes import write_ml100k
from recsys_fewshot import metrics as M
from recsys_fewshot.compare import CompareError, compare, format_table, main
from test_train_cli import REPO, cli

# ---------------------------------------------------------------- standard errors: known answers


def test_mean_se_is_the_sample_std_over_root_n_and_skips_nan_users():
    assert M.mean_se([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert M.mean_se([1.0, np.nan, 3.0]) == pytest.approx(math.sqrt(2) / math.sqrt(2))
    assert math.isnan(M.mean_se([0.5])) and math.isnan(M.mean_se([np.nan, 0.2]))


def test_clustered_error_se_with_one_pair_per_user_is_the_plain_se():
    rng = np.random.default_rng(0)
    err = rng.normal(0, 1, 50)
    users = np.arange(50)
    assert M.clustered_error_se(users, err, "mae") == pytest.approx(np.abs(err).std(ddof=1) / math.sqrt(50))
    se_mse = (err ** 2).std(ddof=1) / math.sqrt(50)
    assert M.clustered_error_se(users, err, "rmse") == pytest.approx(se_mse / (2 * math.sqrt(np.mean(err ** 2))))


def test_clustered_error_se_does_not_shrink_when_a_user_repeats_the_same_errors():
    """Doubling every user's pairs adds no information: the clustered se stays put, where treating the pairs
    as independent would shrink it by sqrt(2)."""
    rng = np.random.default_rng(1)
    err = rng.normal(0, 1, 80)
    users = np.arange(80)
    once = M.clustered_error_se(users, err)
    twice = M.clustered_error_se(np.repeat(users, 2), np.repeat(err, 2))
    assert twice == pytest.approx(once)
    naive = (np.repeat(err, 2) ** 2).std(ddof=1) / math.sqrt(160) / (2 * math.sqrt(np.mean(err ** 2)))
    assert naive < 0.75 * twice


def test_clustered_error_se_refuses_bad_input():
    with pytest.raises(ValueError, match="kind"):
        M.clustered_error_se([0, 1], [0.1, 0.2], "mse")
    with pytest.raises(ValueError, match="length mismatch"):
        M.clustered_error_se([0, 1, 2], [0.1, 0.2])
    assert math.isnan(M.clustered_error_se([3, 3], [0.1, 0.2]))  # one user: no spread to measure


# ---------------------------------------------------------------- compare on hand-made run folders


def fake_run(folder: Path, per_user: pd.DataFrame | None = None, predictions: pd.DataFrame | None = None,
             task: str = "ranking", seed: int = 0, **split) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "dataset": "fake", "task": task,
        "split": {"protocol": "per_user", "seed": seed, "train": 10, "valid": 2, "test": 5, "users": 3, "items": 4,
                  **split}}))
    if per_user is not None:
        per_user.to_parquet(folder / "per_user.parquet", index=False)
    if predictions is not None:
        predictions.to_parquet(folder / "predictions.parquet", index=False)
    return folder


def ranking_table(values: np.ndarray, users=None) -> pd.DataFrame:
    users = np.arange(len(values)) + 100 if users is None else users
    return pd.DataFrame({"user_id": users.astype(str), "relevant": 3, "ndcg@10": values, "recall@10": values / 2})


def test_a_planted_gain_is_found_and_identical_runs_are_not(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 0.8, 300)
    a = fake_run(tmp_path / "a", ranking_table(np.clip(base + 0.05 + rng.normal(0, 0.02, 300), 0, 1)))
    b = fake_run(tmp_path / "b", ranking_table(base))
    info, rows = compare(a, b, ["ndcg@10"], resamples=2000)
    (row,) = rows
    assert info["protocol"] == "per_user" and row.users == 300
    assert row.diff == pytest.approx(row.a - row.b) and row.diff > 0.04
    assert row.ci_low > 0 and row.p_value < 0.01
    assert "  A" in format_table(a, b, info, rows, 2000).splitlines()[-1]
    # the same values in a shuffled user order: no difference at all
    order = rng.permutation(300)
    same = fake_run(tmp_path / "same", ranking_table(base[order], (np.arange(300) + 100)[order]))
    (row,) = compare(b, same, ["ndcg@10"], resamples=500)[1]
    assert row.diff == 0 and row.p_value == 1.0 and row.ci_low == row.ci_high == 0


def test_a_difference_within_the_noise_is_not_called(tmp_path):
    rng = np.random.default_rng(3)
    a = fake_run(tmp_path / "a", ranking_table(rng.uniform(0, 1, 200)))
    b = fake_run(tmp_path / "b", ranking_table(rng.uniform(0, 1, 200)))
    (row,) = compare(a, b, ["ndcg@10"], resamples=2000)[1]
    assert row.ci_low < row.diff < row.ci_high
    assert row.se == pytest.approx(math.sqrt(2 / 12 / 200), rel=0.25)  # two independent U(0,1) per user


def test_rmse_is_compared_from_the_predictions_with_users_kept_together(tmp_path):
    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(60), 5).astype(str)
    items = np.tile(np.arange(5), 60).astype(str)
    target = rng.integers(1, 6, 300).astype(float)
    good = target + rng.normal(0, 0.5, 300)
    bad = target + rng.normal(0, 1.0, 300)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "target": target})
    a = fake_run(tmp_path / "a", predictions=frame.assign(score=good), task="rating")
    b = fake_run(tmp_path / "b", predictions=frame.assign(score=bad), task="rating")
    info, rows = compare(a, b, resamples=1000)  # default for a rating run without per-user tables: rmse, mae
    assert [r.metric for r in rows] == ["rmse", "mae"]
    rmse, mae = rows
    assert rmse.a == pytest.approx(math.sqrt(np.mean((good - target) ** 2)))
    assert mae.b == pytest.approx(np.mean(np.abs(bad - target)))
    assert rmse.lower_is_better and rmse.diff < 0 and rmse.ci_high < 0 and rmse.p_value < 0.01
    assert rmse.users == 60


def test_runs_on_different_test_sets_are_refused_with_the_reason(tmp_path):
    table = ranking_table(np.linspace(0, 1, 10))
    a = fake_run(tmp_path / "a", table)
    with pytest.raises(CompareError, match="seed = 0 vs 1"):
        compare(a, fake_run(tmp_path / "b", table, seed=1), resamples=100)
    with pytest.raises(CompareError, match="different users"):
        compare(a, fake_run(tmp_path / "c", ranking_table(np.linspace(0, 1, 10), np.arange(10) + 7)), resamples=100)
    with pytest.raises(CompareError, match=r"per_user\.parquet: not found"):
        compare(a, fake_run(tmp_path / "d"), ["ndcg@10"], resamples=100)
    with pytest.raises(CompareError, match=r"no column 'ndcg@5'.*ndcg@10, recall@10"):
        compare(a, a, ["ndcg@5"], resamples=100)
    with pytest.raises(CompareError, match="not rating"):
        compare(a, a, ["rmse"], resamples=100)
    with pytest.raises(CompareError, match="metrics.json: not found"):
        compare(a, tmp_path / "nowhere", resamples=100)


def test_main_prints_an_error_and_exits_2(tmp_path, capsys):
    a = fake_run(tmp_path / "a", ranking_table(np.linspace(0, 1, 10)))
    assert main([str(a), str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------- through the real CLI


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_ml100k(root / "ml-100k", n_users=80, n_items=40, n_per_user=20, seed=5)
    return root


@pytest.mark.slow
def test_training_runs_write_per_user_tables_and_compare_pairs_them(data_root, tmp_path):
    common = [f"dataset.root={data_root}", f"cache_dir={tmp_path / 'cache'}", "logger=none",
              "trainer.progress=false", "encoder=none", "head=ease", "split=per_user", "task=ranking",
              "eval.ks=[5,10]"]
    runs = {}
    for name, reg in (("strong", 10.0), ("weak", 1000.0)):
        runs[name] = tmp_path / name
        proc = cli(*common, f"hydra.run.dir={runs[name]}", f"head.reg={reg}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((runs["strong"] / "metrics.json").read_text())
    table = pd.read_parquet(runs["strong"] / "per_user.parquet")
    # the table is what the means came from; raw user ids; the se is the table's
    assert len(table) == table["user_id"].nunique() and table["relevant"].min() >= 1
    assert table["user_id"].isin(pd.read_csv(data_root / "ml-100k" / "u.data", sep="\t", header=None)[0]
                                 .astype(str)).all()
    assert table["ndcg@10"].mean() == pytest.approx(m["test"]["ndcg@10"])
    assert m["test_se"]["ndcg@10"] == pytest.approx(table["ndcg@10"].std(ddof=1) / math.sqrt(len(table)))
    out = tmp_path / "cmp.json"
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.compare", str(runs["strong"]), str(runs["weak"]),
                           "--resamples", "500", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert [r["metric"] for r in saved["metrics"]] == ["ndcg@5", "ndcg@10", "recall@5", "recall@10"]
    ndcg10 = saved["metrics"][1]
    assert ndcg10["a"] == pytest.approx(m["test"]["ndcg@10"]) and ndcg10["users"] == len(table)
    assert "ndcg@10" in proc.stdout and "95% interval" in proc.stdout


# ---------------------------------------------------------------- AUC


def test_weighted_auc_matches_sklearn_counts_ties_half_and_reads_weights_as_copies():
    from sklearn.metrics import roc_auc_score

    from recsys_fewshot.compare import weighted_auc

    rng = np.random.default_rng(6)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    labels = (rng.random(40) < 0.4).astype(float)
    got = weighted_auc(scores, labels, np.ones((1, 40)))[0]
    assert got == pytest.approx(roc_auc_score(labels, scores))
    assert weighted_auc(np.array([1.0, 1.0]), np.array([1.0, 0.0]), np.ones((1, 2)))[0] == 0.5
    copies = rng.integers(0, 3, (3, 40))  # three rows of weights at once; weight 0: the pair is absent
    for row in range(3):
        expanded = roc_auc_score(np.repeat(labels, copies[row]), np.repeat(scores, copies[row]))
        assert weighted_auc(scores, labels, copies.astype(float))[row] == pytest.approx(expanded)


def ctr_runs(tmp_path: Path, noise_a: float, noise_b: float, seed: int = 7, scale_b=lambda x: x):
    rng = np.random.default_rng(seed)
    n_users, per_user = 150, 6
    labels = (rng.random(n_users * per_user) < 0.5).astype(float)
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), per_user).astype(str),
                          "item_id": np.tile(np.arange(per_user), n_users).astype(str), "target": labels})
    a = fake_run(tmp_path / "a", predictions=frame.assign(score=labels + rng.normal(0, noise_a, len(labels))),
                 task="ctr")
    b = fake_run(tmp_path / "b", predictions=frame.assign(score=scale_b(labels + rng.normal(0, noise_b, len(labels)))),
                 task="ctr")
    return a, b, frame


def test_ctr_runs_are_compared_on_auc_by_default(tmp_path):
    from sklearn.metrics import roc_auc_score

    a, b, frame = ctr_runs(tmp_path, 0.6, 1.5)
    info, rows = compare(a, b, resamples=1000)
    (row,) = rows
    assert row.metric == "auc" and row.users == 150 and not row.lower_is_better
    scores_a = pd.read_parquet(a / "predictions.parquet")["score"]
    assert row.a == pytest.approx(roc_auc_score(frame["target"], scores_a))
    assert row.diff > 0 and row.ci_low > 0 and row.p_value < 0.01


def test_auc_needs_both_classes_and_a_labelled_task(tmp_path):
    frame = pd.DataFrame({"user_id": ["1", "2", "3"], "item_id": ["a", "b", "c"], "target": 1.0, "score": 0.5})
    a = fake_run(tmp_path / "a", ranking_table(np.linspace(0, 1, 3)), predictions=frame)
    with pytest.raises(CompareError, match="AUC needs liked and not-liked"):
        compare(a, a, ["auc"], resamples=100)
    r = fake_run(tmp_path / "r", predictions=frame, task="rating")
    with pytest.raises(CompareError, match="0/1 labels only on ctr and ranking"):
        compare(r, r, ["auc"], resamples=100)


def test_auc_permutation_test_holds_when_the_runs_score_on_different_scales(tmp_path):
    """Swapping a user's scores between runs puts them beside the other run's: on raw scores a run scoring
    in logits and one scoring 100x larger would make every permuted AUC noise and the p-value far too large.
    On within-run ranks the p-value agrees with the bootstrap interval."""
    a, b, _ = ctr_runs(tmp_path, 0.9, 1.2, seed=8, scale_b=lambda x: 100 * x + 50)
    (row,) = compare(a, b, resamples=4000)[1]
    assert row.ci_low > 0  # the bootstrap sees the gain ...
    assert row.p_value < 0.01  # ... and so does the permutation test
    (same,) = compare(a, fake_run(tmp_path / "c", predictions=pd.read_parquet(a / "predictions.parquet")
                                  .assign(score=lambda f: np.exp(f["score"])), task="ctr"), resamples=500)[1]
    assert same.diff == pytest.approx(0) and same.p_value == 1.0  # a monotone map changes no AUC


def test_the_fast_auc_path_gives_the_direct_one_s_numbers(tmp_path, monkeypatch):
    """Per-user pair-count tables (matrix products) and the sorted-pairs path (cumulative sums) must agree on
    every resample: the same seed draws the same resamples."""
    import recsys_fewshot.compare as C

    a, b, _ = ctr_runs(tmp_path, 0.8, 1.0, seed=9, scale_b=lambda x: np.round(3 * x))  # B: many ties
    fast = compare(a, b, ["auc"], resamples=300)[1][0]
    monkeypatch.setattr(C, "PAIR_COUNT_LIMIT", 0)
    direct = compare(a, b, ["auc"], resamples=300)[1][0]
    for field in ("a", "b", "diff", "se", "ci_low", "ci_high", "p_value"):
        assert getattr(fast, field) == pytest.approx(getattr(direct, field), abs=1e-9), field


def test_samples_are_grouped_by_their_source_user_and_shot_counts_compare(tmp_path):
    """TALLRec-style runs: 200 test samples from 8 real users. The pairs are grouped by source_user (8
    units, not 200), and runs that differ in what was trained (split seed, train size) but scored the same
    pairs compare; different pairs are refused."""
    rng = np.random.default_rng(10)
    labels = (rng.random(200) < 0.5).astype(float)
    frame = pd.DataFrame({"user_id": [f"test-{k}" for k in range(200)], "item_id": rng.integers(0, 50, 200).astype(str),
                          "target": labels, "source_user": np.repeat(np.arange(8), 25).astype(str)})
    a = fake_run(tmp_path / "a", predictions=frame.assign(score=labels + rng.normal(0, 1, 200)), task="ctr")
    b = fake_run(tmp_path / "b", predictions=frame.assign(score=labels + rng.normal(0, 1, 200)), task="ctr", seed=3)
    (row,) = compare(a, b, resamples=300)[1]
    assert row.users == 8 and row.grouped_by == "source_user"
    moved = frame.assign(target=1 - labels, score=0.0)
    with pytest.raises(CompareError, match="different test pairs"):
        compare(a, fake_run(tmp_path / "c", predictions=moved, task="ctr"), resamples=300)


def test_damaged_or_unsupported_input_gets_a_clear_error(tmp_path):
    good = ranking_table(np.linspace(0, 1, 4))
    a = fake_run(tmp_path / "a", good)
    twice = fake_run(tmp_path / "twice", good.assign(user_id=["100", "100", "101", "102"]))
    with pytest.raises(CompareError, match="user_id '100' repeats"):
        compare(a, twice, ["ndcg@10"], resamples=100)
    holes = fake_run(tmp_path / "holes", good.assign(**{"ndcg@10": [0.1, np.nan, 0.2, 0.3]}))
    with pytest.raises(CompareError, match="1 users have no ndcg@10"):
        compare(a, holes, ["ndcg@10"], resamples=100)
    with pytest.raises(CompareError, match="'logloss': compare takes rmse, mae, auc or a ranking metric"):
        compare(a, a, ["logloss"], resamples=100)
    empty = pd.DataFrame({"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str),
                          "target": pd.Series([], dtype=float), "score": pd.Series([], dtype=float)})
    e = fake_run(tmp_path / "e", predictions=empty, task="ctr")
    with pytest.raises(CompareError, match="no test pairs"):
        compare(e, e, ["auc"], resamples=100)
    holes = pd.DataFrame({"user_id": ["1", "2"], "item_id": ["a", "b"], "target": [1.0, 0.0], "score": [0.3, np.nan]})
    n = fake_run(tmp_path / "n", predictions=holes, task="ctr")
    with pytest.raises(CompareError, match="1 test pairs have a NaN or infinite score"):
        compare(n, n, ["auc"], resamples=100)
    nobody = fake_run(tmp_path / "nobody", good.iloc[:0])
    with pytest.raises(CompareError, match="no ranked users"):
        compare(nobody, nobody, ["ndcg@10"], resamples=100)


def test_pair_counts_known_answer():
    """Users 0 and 1, each with one liked and one not-liked pair; ties count half."""
    from recsys_fewshot.compare import pair_counts

    users, labels = np.array([0, 0, 1, 1]), np.array([1.0, 0.0, 1.0, 0.0])
    scores = np.array([0.5, 0.2, 0.2, 0.9])  # liked: u0 0.5, u1 0.2; not liked: u0 0.2, u1 0.9
    got = pair_counts(users, labels, scores, scores, 2)
    # u0's 0.5 beats u0's 0.2 (1) and loses to u1's 0.9 (0); u1's 0.2 ties u0's 0.2 (0.5), loses to 0.9 (0)
    assert got.tolist() == [[1.0, 0.0], [0.5, 0.0]]


def test_settings_that_pick_the_test_set_must_match_without_predictions(tmp_path):
    table = ranking_table(np.linspace(0, 1, 10))
    a = fake_run(tmp_path / "a", table, fold="ua")
    with pytest.raises(CompareError, match="fold = 'ua' vs 'ub'"):
        compare(a, fake_run(tmp_path / "b", table, fold="ub"), resamples=100)
    # what only shapes training may differ
    (row,) = compare(a, fake_run(tmp_path / "c", table, fold="ua", train=99, n_shots=64), ["ndcg@10"],
                     resamples=100)[1]
    assert row.diff == 0
    (a / "config.yaml").write_text("dataset:\n  positive_threshold: 4\n")
    d = fake_run(tmp_path / "d", table, fold="ua")
    (d / "config.yaml").write_text("dataset:\n  positive_threshold: 3\n")
    with pytest.raises(CompareError, match="positive_threshold = 4 vs 3"):
        compare(a, d, resamples=100)


def test_source_users_must_be_recorded_alike_in_both_runs(tmp_path):
    frame = pd.DataFrame({"user_id": ["t-0", "t-1", "t-2", "t-3"], "item_id": ["a", "b", "c", "d"],
                          "target": [1.0, 0.0, 1.0, 0.0], "score": [0.9, 0.1, 0.8, 0.3]})
    with_source = frame.assign(source_user=["u1", "u1", "u2", "u2"])
    a = fake_run(tmp_path / "a", predictions=with_source, task="ctr")
    with pytest.raises(CompareError, match="only .* has a source_user column"):
        compare(a, fake_run(tmp_path / "b", predictions=frame, task="ctr"), resamples=100)
    with pytest.raises(CompareError, match="different test pairs"):
        compare(a, fake_run(tmp_path / "c", predictions=with_source.assign(source_user=["u1", "u2", "u2", "u2"]),
                            task="ctr"), resamples=100)


def test_a_bare_metrics_json_still_prints_a_table(tmp_path, capsys):
    table = ranking_table(np.linspace(0, 1, 10))
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"task": "ranking"}))
        table.to_parquet(folder / "per_user.parquet", index=False)
        runs.append(str(folder))
    assert main([*runs, "--metric", "ndcg@10", "--resamples", "100"]) == 0
    assert "ndcg@10" in capsys.readouterr().out


# ---------------------------------------------------------------- several seeds per side


def test_seeds_are_averaged_per_user_before_the_paired_comparison(tmp_path):
    """Three seeds per side on one test set: A's and B's per-user values are their means over the seeds (a
    known answer), the users stay the units; unequal sides, AUC and a seed on another test set are refused."""
    rng = np.random.default_rng(11)
    base = rng.uniform(0, 0.6, 120)
    a_runs = [fake_run(tmp_path / f"a{s}", ranking_table(base + 0.1 + rng.normal(0, 0.05, 120))) for s in range(3)]
    b_runs = [fake_run(tmp_path / f"b{s}", ranking_table(base + rng.normal(0, 0.05, 120))) for s in range(3)]
    (row,) = compare(a_runs, b_runs, ["ndcg@10"], resamples=1000)[1]
    means = [np.mean([pd.read_parquet(r / "per_user.parquet")["ndcg@10"].mean() for r in runs])
             for runs in (a_runs, b_runs)]
    assert (row.a, row.b) == (pytest.approx(means[0]), pytest.approx(means[1]))
    assert row.users == 120 and row.ci_low > 0.05 and row.p_value < 0.01
    with pytest.raises(CompareError, match="A has 3 runs and B 2"):
        compare(a_runs, b_runs[:2], ["ndcg@10"], resamples=100)
    elsewhere = fake_run(tmp_path / "b_other", ranking_table(base), seed=5)
    with pytest.raises(CompareError, match="seed = 0 vs 5"):
        compare(a_runs, [*b_runs[:2], elsewhere], ["ndcg@10"], resamples=100)
    a, b, _ = ctr_runs(tmp_path / "ctr", 0.5, 1.0)
    with pytest.raises(CompareError, match="one run per side"):
        compare([a, a], [b, b], ["auc"], resamples=100)


def test_main_takes_several_runs_per_side_with_vs(tmp_path, capsys):
    runs = [fake_run(tmp_path / name, ranking_table(np.linspace(0, 1, 20) * w))
            for name, w in (("a0", 1.0), ("a1", 0.9), ("b0", 0.5), ("b1", 0.6))]
    assert main([str(runs[0]), str(runs[1]), "--vs", str(runs[2]), str(runs[3]), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "A: 2 runs, averaged per user" in out and "ndcg@10" in out
    with pytest.raises(SystemExit):
        main([str(runs[0]), str(runs[1]), str(runs[2])])  # three runs without --vs: ambiguous


def test_rmse_over_seeds_is_the_root_of_the_seeds_mean_squared_error(tmp_path):
    rng = np.random.default_rng(12)
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(30), 4).astype(str),
                          "item_id": np.tile(np.arange(4), 30).astype(str),
                          "target": rng.integers(1, 6, 120).astype(float)})
    runs, mse = {}, {}
    for side, noise in (("a", 0.6), ("b", 0.9)):
        runs[side], errs = [], []
        for s in range(2):
            score = frame["target"] + rng.normal(0, noise, 120)
            runs[side].append(fake_run(tmp_path / f"{side}{s}", predictions=frame.assign(score=score), task="rating"))
            errs.append(np.mean((score - frame["target"]) ** 2))
        mse[side] = np.mean(errs)
    (row,) = compare(runs["a"], runs["b"], ["rmse"], resamples=300)[1]
    assert row.a == pytest.approx(math.sqrt(mse["a"])) and row.b == pytest.approx(math.sqrt(mse["b"]))
