"""Known-answer tests for recsys_fewshot.metrics (answers worked out by hand in the comments)."""

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from recsys_fewshot import metrics as M

L2 = math.log2


# ---------------------------------------------------------------- rating prediction


def test_rmse_mae_known_answers():
    # errors 0, 0, -2 -> squared mean 4/3, absolute mean 2/3
    assert M.rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert M.mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert M.rmse(np.array([2.0]), np.array([2.0])) == 0.0
    assert isinstance(M.rmse([1.0], [0.0]), float) and isinstance(M.mae([1.0], [0.0]), float)


@pytest.mark.parametrize("fn", [M.rmse, M.mae])
def test_rmse_mae_bad_input(fn):
    with pytest.raises(ValueError, match="y_true is empty"):
        fn([], [])
    with pytest.raises(ValueError, match="length mismatch"):
        fn([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="y_pred contains NaN"):
        fn([1, 2], [1, np.nan])


# ---------------------------------------------------------------- binary prediction


def test_auc_with_ties_gets_half_credit():
    # positive/negative pairs: (0.5 vs 0.1) 1, (0.5 vs 0.5) 0.5, (0.9 vs 0.1) 1, (0.9 vs 0.5) 1 -> 3.5 / 4
    assert M.auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_auc_extremes_and_logits():
    assert M.auc([0, 1, 0, 1], [-3.0, 2.0, -1.0, 5.0]) == 1.0  # raw logits are fine
    assert M.auc([1, 0], [0.2, 0.8]) == 0.0


def test_auc_one_class_is_nan():
    warnings.simplefilter("error")  # pytest restores the filters after the test
    assert math.isnan(M.auc([1, 1, 1], [0.2, 0.4, 0.9]))
    assert math.isnan(M.auc([0, 0], [0.2, 0.4]))


def test_binary_bad_labels_and_probs():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        M.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        M.accuracy([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="length mismatch"):
        M.f1([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels is empty"):
        M.logloss([], [])


def test_accuracy_and_f1_at_threshold():
    labels = [1, 0, 1, 0]
    probs = [0.5, 0.49, 0.2, 0.7]
    # t=0.5: preds 1,0,0,1 (0.5 counts as positive) -> correct 1,1,0,0; tp=1 fp=1 fn=1 -> f1 0.5
    assert M.accuracy(labels, probs) == 0.5
    assert M.f1(labels, probs) == pytest.approx(0.5)
    # t=0.1: all predicted 1 -> accuracy 2/4; tp=2 fp=2 fn=0 -> p=1/2, r=1, f1=2/3
    assert M.accuracy(labels, probs, threshold=0.1) == 0.5
    assert M.f1(labels, probs, threshold=0.1) == pytest.approx(2 / 3)
    # t=0.6: preds 0,0,0,1 -> correct only index 1 -> 1/4; tp=0 -> f1 0
    assert M.accuracy(labels, probs, threshold=0.6) == 0.25
    assert M.f1(labels, probs, threshold=0.6) == 0.0


def test_f1_undefined_is_zero_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.f1([0, 0], [0.1, 0.2]) == 0.0


def test_logloss_known_answer_and_clipping():
    # -(ln 0.8 + ln(1 - 0.4)) / 2
    assert M.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # p=0 for a positive is clipped to 1e-7, p=1 for a negative to 1 - 1e-7: both cost -ln(1e-7)
    assert M.logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert M.logloss([1, 1], [1.0, 1.0]) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)


# ---------------------------------------------------------------- ranking

# K = 4 ranked items per user; ks = (2, 4).
TOPK = np.array(
    [
        [10, 3, 7, 5],  # user 0: positives {3, 5, 8}, hits at ranks 2 and 4
        [1, 2, 4, 6],  # user 1: positive {9}, no hit
        [0, 1, 2, 3],  # user 2: no positives -> NaN everywhere
        [4, 8, 2, 11],  # user 3: 6 positives (> k), hits at ranks 1, 3, 4; 4 listed twice
    ]
)
POSITIVES = [
    np.array([3, 5, 8]),
    np.array([9]),
    np.array([], dtype=np.int64),
    np.array([4, 2, 11, 20, 21, 22, 4]),
]
# user 0 (P=3)
#   @2: 1 hit -> recall 1/3, precision 1/2, hr 1, mrr 1/2 (first hit at rank 2),
#       ndcg = (1/log2 3) / (1 + 1/log2 3)             [IDCG: min(3, 2) = 2 hits]
#   @4: 2 hits -> recall 2/3, precision 2/4, mrr 1/2,
#       ndcg = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4)  [IDCG: 3 hits]
# user 1 (P=1): everything 0
# user 3 (P=6, duplicate 4 counts once)
#   @2: 1 hit -> recall 1/6, precision 1/2, hr 1, mrr 1, ndcg = 1 / (1 + 1/log2 3)
#   @4: 3 hits -> recall 3/6, precision 3/4, mrr 1,
#       ndcg = (1 + 1/log2 4 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4 + 1/log2 5)  [IDCG: 4 hits]
NAN = float("nan")
EXPECTED_PER_USER = {
    "recall@2": [1 / 3, 0, NAN, 1 / 6],
    "precision@2": [1 / 2, 0, NAN, 1 / 2],
    "hr@2": [1, 0, NAN, 1],
    "mrr@2": [1 / 2, 0, NAN, 1],
    "ndcg@2": [(1 / L2(3)) / (1 + 1 / L2(3)), 0, NAN, 1 / (1 + 1 / L2(3))],
    "recall@4": [2 / 3, 0, NAN, 1 / 2],
    "precision@4": [1 / 2, 0, NAN, 3 / 4],
    "hr@4": [1, 0, NAN, 1],
    "mrr@4": [1 / 2, 0, NAN, 1],
    "ndcg@4": [
        (1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3) + 1 / L2(4)),
        0,
        NAN,
        (1 + 1 / L2(4) + 1 / L2(5)) / (1 + 1 / L2(3) + 1 / L2(4) + 1 / L2(5)),
    ],
}


def test_ranking_per_user_known_answers():
    got = M.ranking_metrics_per_user(TOPK, POSITIVES, ks=[2, 4])
    assert set(got) == set(EXPECTED_PER_USER)
    for key, expected in EXPECTED_PER_USER.items():
        assert got[key].shape == (4,)
        np.testing.assert_allclose(got[key], expected, rtol=1e-12, err_msg=key)


def test_ranking_means_exclude_users_without_positives():
    got = M.ranking_metrics(TOPK, POSITIVES, ks=[2, 4])
    # means over users 0, 1, 3 (user 2 has no positives)
    assert got["recall@2"] == pytest.approx((1 / 3 + 0 + 1 / 6) / 3)  # = 1/6
    assert got["ndcg@2"] == pytest.approx(1 / 3)  # user 0 + user 3 = (1/log2 3 + 1) / (1 + 1/log2 3) = 1
    assert got["mrr@2"] == pytest.approx(0.5)
    assert got["hr@4"] == pytest.approx(2 / 3)
    assert got["precision@4"] == pytest.approx(5 / 12)
    assert got["recall@4"] == pytest.approx(7 / 18)
    assert "n_users" not in got
    assert all(isinstance(v, float) for v in got.values())


def test_ranking_padding_and_float_empty_positives():
    # -1 pads a short list and never counts as a hit (even where user * n_items - 1 would be the
    # key of the previous user's largest item, 7 here); an empty float array means "no positives"
    topk = np.array([[5, -1, -1], [2, 0, -1], [1, 2, 3]])
    got = M.ranking_metrics_per_user(topk, [[7], [0, 7], np.array([])], ks=[3])
    assert got["recall@3"][0] == 0.0
    # user 1: hit at rank 2 only, of 2 positives -> recall 1/2, mrr 1/2, ndcg (1/log2 3) / (1 + 1/log2 3)
    assert got["recall@3"][1] == pytest.approx(0.5)
    assert got["mrr@3"][1] == pytest.approx(0.5)
    assert got["ndcg@3"][1] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    assert math.isnan(got["recall@3"][2])


def test_ranking_all_users_without_positives_gives_nan_means():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = M.ranking_metrics(np.array([[1, 2]]), [[]], ks=[1])
    assert math.isnan(got["ndcg@1"])


def test_ranking_bad_input():
    with pytest.raises(ValueError, match=r"max\(ks\)=5 exceeds .*topk.shape\[1\]=4"):
        M.ranking_metrics_per_user(TOPK, POSITIVES, ks=[2, 5])
    with pytest.raises(ValueError, match="ks must be >= 1"):
        M.ranking_metrics_per_user(TOPK, POSITIVES, ks=[0])
    with pytest.raises(ValueError, match="ks is empty"):
        M.ranking_metrics_per_user(TOPK, POSITIVES, ks=[])
    with pytest.raises(ValueError, match="positives has 3 users, topk has 4 rows"):
        M.ranking_metrics_per_user(TOPK, POSITIVES[:3], ks=[2])
    with pytest.raises(ValueError, match="topk must be a 2-D integer array"):
        M.ranking_metrics_per_user(TOPK[0], POSITIVES[:1], ks=[2])
    with pytest.raises(ValueError, match="topk must be a 2-D integer array"):
        M.ranking_metrics_per_user(TOPK.astype(float), POSITIVES, ks=[2])
    with pytest.raises(ValueError, match="repeats an item id"):
        M.ranking_metrics_per_user(np.array([[1, 2, 1]]), [[1]], ks=[3])
    with pytest.raises(ValueError, match="integer item ids"):
        M.ranking_metrics_per_user(np.array([[1, 2]]), [[1.5]], ks=[1])
    with pytest.raises(ValueError, match="negative item id"):
        M.ranking_metrics_per_user(np.array([[1, 2]]), [[-3]], ks=[1])


def _slow_reference(topk, positives, k):
    """Straightforward per-user loop, for the cross-check."""
    out = {"recall": [], "ndcg": [], "precision": [], "hr": [], "mrr": []}
    for row, pos in zip(topk, positives):
        pos = set(int(i) for i in pos)
        if not pos:
            for values in out.values():
                values.append(math.nan)
            continue
        rel = [1 if int(i) in pos else 0 for i in row[:k]]
        dcg = sum(r / math.log2(rank + 1) for rank, r in enumerate(rel, start=1))
        idcg = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(pos), k) + 1))
        out["recall"].append(sum(rel) / len(pos))
        out["ndcg"].append(dcg / idcg)
        out["precision"].append(sum(rel) / k)
        out["hr"].append(float(any(rel)))
        out["mrr"].append(1 / (rel.index(1) + 1) if any(rel) else 0.0)
    return out


def test_ranking_matches_slow_loop_on_random_data():
    rng = np.random.default_rng(0)
    n_users, n_items, width = 300, 60, 20
    topk = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    positives = [rng.choice(n_items, size=rng.integers(0, 16), replace=False) for _ in range(n_users)]
    ks = [1, 5, 20]
    fast = M.ranking_metrics_per_user(topk, positives, ks)
    for k in ks:
        slow = _slow_reference(topk, positives, k)
        for name, values in slow.items():
            np.testing.assert_allclose(fast[f"{name}@{k}"], values, rtol=1e-12, err_msg=f"{name}@{k}")


def test_mean_over_users_skips_nan_and_concatenation_is_consistent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = M.mean_over_users({"a": np.array([1.0, NAN, 3.0]), "b": np.array([NAN, NAN]), "c": np.array([])})
    assert got["a"] == 2.0
    assert math.isnan(got["b"]) and math.isnan(got["c"])
    # per-user arrays from two "processes", concatenated, average to the whole-batch result
    part1 = M.ranking_metrics_per_user(TOPK[:2], POSITIVES[:2], ks=[2, 4])
    part2 = M.ranking_metrics_per_user(TOPK[2:], POSITIVES[2:], ks=[2, 4])
    merged = M.mean_over_users({key: np.concatenate([part1[key], part2[key]]) for key in part1})
    whole = M.ranking_metrics(TOPK, POSITIVES, ks=[2, 4])
    assert merged.keys() == whole.keys()
    for key in whole:
        assert merged[key] == pytest.approx(whole[key])


def test_import_does_not_load_sklearn():
    code = "import sys, recsys_fewshot.metrics; assert 'sklearn' not in sys.modules"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_auc_equals_scikit_learn_with_and_without_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    import numpy as np

    rng = np.random.default_rng(0)
    for trial in range(5):
        y = rng.integers(0, 2, 500)
        s = rng.normal(size=500) + y * 0.5
        if trial % 2:
            s = np.round(s, 1)  # many ties
        assert M.auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
