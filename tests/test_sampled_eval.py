"""Sampled-candidate evaluation (`eval.candidates=sampled`): each positive ranked against negatives drawn once
per user from `eval.candidates_seed` (recsys_fewshot/sampled.py): known answers on hand-built scores, the
draw (the same for every run, never a user's own items, popularity-weighted when asked), the labels in
metrics.json, compare refusing runs ranked on other candidates, and one run through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from fakes import write_ml100k
from recsys_fewshot.compare import CompareError, compare
from recsys_fewshot.data.recdata import RecData, UserHistory
from recsys_fewshot.evaluation import TaskSpec, ranking_metrics
from recsys_fewshot.sampled import NegativeSampler
from test_compare import fake_run, ranking_table

REPO = Path(__file__).resolve().parents[1]
SINGLE = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)


class FixedScores(torch.nn.Module):
    """A model whose score of (user, item) is a given matrix's cell."""

    def __init__(self, scores: np.ndarray):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.scores[users][:, items]


def tiny_data(n_users: int = 6, n_items: int = 60, per_user: int = 4, seed: int = 0) -> RecData:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    inter = pd.DataFrame({"user": users, "item": items, "rating": np.float32(5), "timestamp": np.arange(len(users))})
    return RecData("tiny", inter, pd.DataFrame({"item": np.arange(n_items), "item_id": [f"i{k}" for k in range(n_items)]}),
                   pd.DataFrame({"user": np.arange(n_users), "user_id": [f"u{k}" for k in range(n_users)]})).validate()


def sampled_spec(data: RecData, n: int, kind: str = "uniform", seed: int = 0, ks=(1, 5, 10)) -> TaskSpec:
    return TaskSpec(task="ranking", positive_threshold=4.0, ks=list(ks), chunk_size=4, candidates="sampled",
                    sampler=NegativeSampler.from_data(data, n, kind, seed))


def last_item_as_test(data: RecData):
    """(test frame: each user's last interaction, train history: the others)."""
    inter = data.interactions
    last = inter.groupby("user").tail(1)
    rest = inter.drop(last.index)
    return last, UserHistory.from_pairs(rest["user"].to_numpy(), rest["item"].to_numpy(), data.n_users)


def test_a_positive_scored_above_every_item_hits_at_1_and_below_every_item_never():
    data = tiny_data()
    test, history = last_item_as_test(data)
    spec = sampled_spec(data, 20)
    best = np.zeros((data.n_users, data.n_items))
    best[test["user"], test["item"]] = 1.0
    metrics, table = ranking_metrics(FixedScores(best), test, history, data.n_items, spec, SINGLE)
    assert metrics["hr@1"] == metrics["hr@10"] == metrics["ndcg@10"] == metrics["mrr@10"] == 1.0
    assert metrics["precision@10"] == pytest.approx(0.1) and len(table) == data.n_users
    worst = -best  # below all 20 negatives: rank 20, outside every cut-off up to 10
    metrics, _ = ranking_metrics(FixedScores(worst), test, history, data.n_items, spec, SINGLE)
    assert metrics["hr@10"] == metrics["ndcg@10"] == metrics["mrr@10"] == 0.0


def test_ranks_against_the_drawn_negatives_known_answer_and_ties_at_random():
    """Item i scores i for everyone: a positive's rank is its count of higher-numbered negatives."""
    data = tiny_data()
    test, history = last_item_as_test(data)
    spec = sampled_spec(data, 10)
    scores = np.tile(np.arange(data.n_items, dtype=np.float64), (data.n_users, 1))
    _, table = ranking_metrics(FixedScores(scores), test, history, data.n_items, spec, SINGLE)
    pool = np.arange(data.n_items)
    ranks = []
    for _, row in table.iterrows():
        pos = int(test.loc[test["user"] == row["user"], "item"].iloc[0])
        negatives, _ = spec.sampler.draw(int(row["user"]), pool, 1)
        rank = int((negatives > pos).sum())
        ranks.append(rank)
        assert row["hr@5"] == float(rank < 5)
        assert row["mrr@10"] == pytest.approx(1 / (rank + 1) if rank < 10 else 0.0)
        assert row["ndcg@10"] == pytest.approx(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    assert len(set(ranks)) > 2  # the positives sit at various ranks: the check above is not of one case
    # a model that scores everything alike: the positive lands anywhere among its 11 candidates, not first
    many = tiny_data(n_users=400, n_items=60, seed=3)
    test, history = last_item_as_test(many)
    metrics, _ = ranking_metrics(FixedScores(np.zeros((400, 60))), test, history, 60, sampled_spec(many, 10), SINGLE)
    assert metrics["hr@1"] == pytest.approx(1 / 11, abs=0.035) and metrics["hr@5"] == pytest.approx(5 / 11, abs=0.06)


def test_negatives_are_never_the_users_items_unique_in_the_pool_and_reproducible():
    data = tiny_data(n_users=30, n_items=25, per_user=6)
    sampler = NegativeSampler.from_data(data, 12, "uniform", 5)
    pool = np.arange(0, 25, 2)  # a split's own candidate set: 13 items
    for kind in ("uniform", "popularity"):
        sampler.kind = kind
        for user in range(data.n_users):
            known = set(data.interactions.loc[data.interactions["user"] == user, "item"])
            negatives, ties = sampler.draw(user, pool, 3)
            available = set(pool) - known
            assert not set(negatives) & known and set(negatives) <= set(pool.tolist())
            assert len(set(negatives)) == len(negatives) == min(12, len(available) if kind == "uniform" else
                                                                  len([i for i in available if sampler.popularity[i] > 0]))
            assert len(ties) == 3 and ((0 <= ties) & (ties < 1)).all()
            again, _ = NegativeSampler.from_data(data, 12, kind, 5).draw(user, pool, 3)
            assert np.array_equal(negatives, again)  # from the seed and the user alone
    other, _ = NegativeSampler.from_data(data, 12, "uniform", 6).draw(0, np.arange(25), 1)
    assert not np.array_equal(other, NegativeSampler.from_data(data, 12, "uniform", 5).draw(0, np.arange(25), 1)[0])


def test_popularity_sampling_draws_popular_items_in_proportion():
    """Item i has 6 (i + 1) interactions, each from a user of its own. One negative a user, drawn by
    popularity, is item j with probability w_j / (W - w_own): the counts over all users fit that expectation
    (chi-square), and the uniform draw's counts do not."""
    from scipy.stats import chisquare

    weights = (np.arange(20) + 1) * 6.0
    items = np.repeat(np.arange(20), weights.astype(int))
    inter = pd.DataFrame({"user": np.arange(len(items)), "item": items, "rating": np.float32(1),
                          "timestamp": np.zeros(len(items), np.int64)})
    data = RecData("pop", inter, pd.DataFrame({"item": np.arange(20), "item_id": np.arange(20).astype(str)}),
                   pd.DataFrame({"user": np.arange(len(items)), "user_id": np.arange(len(items)).astype(str)})).validate()
    share = weights[None, :] / (weights.sum() - weights[items])[:, None]
    share[np.arange(len(items)), items] = 0.0
    expected = share.sum(0)
    fit = {}
    for kind in ("popularity", "uniform"):
        sampler = NegativeSampler.from_data(data, 1, kind, 0)
        drawn = np.concatenate([sampler.draw(u, np.arange(20), 1)[0] for u in range(data.n_users)])
        assert len(drawn) == data.n_users and not (drawn == items).any()  # never the user's own item
        counts = np.bincount(drawn, minlength=20)
        fit[kind] = (chisquare(counts, expected).pvalue, counts[15:].sum() / counts[:5].sum())
    assert fit["popularity"][0] > 0.01 and fit["uniform"][0] < 1e-10, fit
    assert fit["popularity"][1] > 4 * fit["uniform"][1], fit  # 90/15 = 6 expected against about 1


def test_two_runs_with_other_training_seeds_draw_the_same_candidates(tmp_path):
    from inprocess import stages

    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=40, n_items=30, n_per_user=10)
    common = [f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}", "encoder=none", "logger=none",
              "split=leave_one_out", "eval.candidates=sampled", "eval.num_negatives=8"]
    draws = {}
    for seed, cseed in ((0, 0), (1, 0), (0, 1)):
        run = stages(*common, f"seed={seed}", f"eval.candidates_seed={cseed}").run
        assert run.prep.spec.sampler.label() == f"sampled-8-uniform-seed{cseed}"
        draws[seed, cseed] = [run.prep.spec.sampler.draw(u, np.arange(run.data.n_items), 1)[0]
                              for u in range(run.data.n_users)]
    assert all(np.array_equal(a, b) for a, b in zip(draws[0, 0], draws[1, 0]))
    assert not all(np.array_equal(a, b) for a, b in zip(draws[0, 0], draws[0, 1]))


@pytest.mark.parametrize("override, needle", [
    ("eval.candidates=some", "eval.candidates='some'"),
    ("eval.negatives=zipf", "eval.negatives='zipf'"),
    ("eval.num_negatives=0", "eval.num_negatives=0"),
])
def test_bad_sampling_settings_are_refused_naming_the_key(override, needle):
    from inprocess import compose
    from recsys_fewshot.settings import check_settings

    extra = [] if override.startswith("eval.candidates") else ["eval.candidates=sampled"]
    with pytest.raises(ValueError) as err:
        check_settings(compose("encoder=none", "logger=none", override, *extra))
    assert needle in str(err.value)


def with_candidates(run: Path, label: str | None) -> Path:
    summary = json.loads((run / "metrics.json").read_text())
    if label is not None:
        summary["candidates"] = label
    (run / "metrics.json").write_text(json.dumps(summary))
    return run


def test_compare_refuses_runs_ranked_on_other_candidates(tmp_path):
    values = np.linspace(0, 1, 30)
    a = with_candidates(fake_run(tmp_path / "a", ranking_table(values)), "sampled-100-uniform-seed0")
    for name, label in (("b", "all"), ("c", "sampled-100-uniform-seed1"), ("d", "sampled-50-uniform-seed0"),
                        ("e", None)):
        b = with_candidates(fake_run(tmp_path / name, ranking_table(values)), label)
        with pytest.raises(CompareError, match="ranked different candidates"):
            compare(a, b, ["ndcg@10"], resamples=200)
    same = with_candidates(fake_run(tmp_path / "f", ranking_table(values * 0.9)), "sampled-100-uniform-seed0")
    info, rows = compare(a, same, ["ndcg@10"], resamples=200)
    assert info["candidates"] == "sampled-100-uniform-seed0" and rows[0].diff > 0
    # runs from before the label: full rankings, still comparable with a full ranking
    old, new = fake_run(tmp_path / "old", ranking_table(values)), with_candidates(
        fake_run(tmp_path / "new", ranking_table(values)), "all")
    assert compare(old, new, ["ndcg@10"], resamples=200)[1][0].diff == 0


@pytest.mark.slow
def test_cli_run_with_sampled_candidates_labels_its_metrics(tmp_path):
    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=50, n_items=40, n_per_user=12)
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "RECSYS_FEWSHOT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", f"dataset.root={root}", "encoder=none",
                           "logger=none", "split=leave_one_out", "eval.candidates=sampled", "eval.num_negatives=9",
                           "eval.negatives=popularity", "eval.ks=[1,10]", "trainer.max_epochs=2", "trainer.progress=false",
                           f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["candidates"] == "sampled-9-popularity-seed0"
    assert "candidates sampled-9-popularity-seed0" in proc.stdout
    # 10 candidates per positive: every positive is within the top 10, at worst 10th (reciprocal rank 0.1)
    per_user = pd.read_parquet(run / "per_user.parquet")
    liked = pd.read_parquet(run / "predictions.parquet").query("target > 0")["user_id"].nunique()
    assert len(per_user) == liked > 5
    assert metrics["test"]["hr@10"] == 1.0 and (per_user["hr@10"] == 1.0).all() and (per_user["mrr@10"] >= 0.1).all()
    assert metrics["test"]["hr@1"] == pytest.approx(per_user["hr@1"].mean())


def test_report_names_the_candidates_its_runs_ranked(tmp_path):
    from recsys_fewshot import report as rep
    from test_report import make_job

    root = tmp_path / "sweep"
    for num, (candidates, ndcg) in enumerate((("all", 0.2), ("sampled", 0.6))):
        job = make_job(root, num, [f"eval.candidates={candidates}", "seed=0"], test={"ndcg@10": ndcg})
        with_candidates(job, "all" if candidates == "all" else "sampled-100-uniform-seed0")
    markdown = rep.report(root)["markdown"]
    assert "Ranked candidates: `all`, `sampled-100-uniform-seed0`" in markdown
