"""The TALLRec ceiling study's pieces: known answers, and an item-quality feature that must help when planted."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fewshot_ceiling.py"
spec = importlib.util.spec_from_file_location("fewshot_ceiling", SCRIPT)
ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling)


def test_recency_like_rate_by_hand():
    hist = pd.Series([[(0, 5.0), (1, 1.0), (2, 4.0)], [(3, 2.0), (4, 3.0)]], dtype=object)
    w = np.array([0.81, 0.9, 1.0])  # oldest first
    expected = (w[0] + w[2]) / w.sum()
    assert ceiling.recency_like_rate(hist) == pytest.approx([expected, 0.0])


def test_item_like_rate_shrinks_to_the_global_rate():
    items = np.array([0, 0, 0, 1])
    liked = np.array([1.0, 1.0, 0.0, 1.0])
    q = ceiling.item_like_rate(items, liked, n_items=3)
    p = 0.75
    assert q == pytest.approx([(2 + 5 * p) / 8, (1 + 5 * p) / 6, p])


def test_logistic_fit_recovers_planted_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))).astype(float)
    w = ceiling.fit_logistic(x, y)
    assert w == pytest.approx([0.5, 2.0, -1.0], abs=0.1)


def test_a_planted_item_quality_lifts_the_auc_above_the_like_rate():
    rng = np.random.default_rng(1)
    n_items, quality = 50, rng.random(50)

    def frame(n):
        hist = [[(int(i), 5.0 if rng.random() < 0.5 else 1.0) for i in rng.integers(0, n_items, 10)]
                for _ in range(n)]
        items = rng.integers(0, n_items, n)
        label = (rng.random(n) < quality[items]).astype(int)
        return pd.DataFrame({"item": items, "label": label, "history": pd.Series(hist, dtype=object)})

    valid, test = frame(2000), frame(2000)
    alone = ceiling.combined_auc(valid, test, None, ["lr"])
    with_quality = ceiling.combined_auc(valid, test, quality, ["lr", "q"])
    assert alone < 0.56 < 0.7 < with_quality  # histories carry no signal here; the item's quality does
