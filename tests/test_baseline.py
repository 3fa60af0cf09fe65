"""metrics.json's "baseline": the trivial predictor (train mean rating, or train positive rate) on test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys_fewshot.evaluation import TaskSpec
from recsys_fewshot.results import baseline


def test_ctr_baseline_predicts_the_train_positive_rate():
    test = pd.DataFrame({"label": [1, 0, 0, 0], "rating": [np.nan] * 4})
    rate = 0.25  # below 0.5: the constant predictor says "not liked" to everyone
    out = baseline(TaskSpec(task="ctr", positive_threshold=4), test, np.array([1, 0, 0, 0], np.float32))
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["logloss"] == pytest.approx(-(math.log(rate) + 3 * math.log(1 - rate)) / 4, rel=1e-5)
    assert out["auc"] == pytest.approx(0.5)


def test_rating_baseline_is_the_train_mean():
    test = pd.DataFrame({"rating": [1.0, 5.0, 3.0]})
    spec = TaskSpec(task="rating", positive_threshold=4, rating_range=(1.0, 5.0))
    out = baseline(spec, test, np.array([2.0, 4.0], np.float32))  # mean 3
    assert out["rmse"] == pytest.approx(math.sqrt(8 / 3))
    assert baseline(TaskSpec(task="ranking", positive_threshold=4), test, np.ones(2)) == {}
