"""scripts/peers_on_split.py scores the peers on the run's own split: without the peers' Python, popularity alone."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes_releases import write_lastfm

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "peers_on_split.py"


def run_script(monkeypatch, *argv: str) -> None:
    spec = importlib.util.spec_from_file_location("peers_on_split", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    module.main()


@pytest.mark.slow
def test_popularity_ranks_the_runs_test_users_and_a_rating_task_is_refused(tmp_path, monkeypatch, capsys):
    from hydra.utils import instantiate
    from inprocess import compose

    from recsys_fewshot import build

    root = tmp_path / "data"
    write_lastfm(root / "lastfm-hetrec2011-2k")
    overrides = ["dataset=lastfm", f"dataset.root={root}", f"cache_dir={tmp_path / 'cache'}", "encoder=none",
                 "split=per_user", "eval.ks=[5,10]"]
    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    run_script(monkeypatch, *overrides)
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = compose(*overrides)
    split = instantiate(cfg.split)(build.load_data(cfg))
    assert row["model"] == "popularity" and row["test_users"] == split.test["user"].nunique()
    # the most popular known artist is recommended to every test user who has not heard it yet
    known = np.concatenate([split.train["item"], split.valid["item"]])
    top = np.bincount(known).argmax()
    fresh = split.test.groupby("user")["item"].apply(lambda s: top in set(s))
    heard = set(split.train.loc[split.train["item"] == top, "user"]) | set(split.valid.loc[split.valid["item"] == top, "user"])
    hits = fresh[[u not in heard for u in fresh.index]]
    assert row["hr@5"] >= hits.sum() / len(fresh) and 0 < row["ndcg@10"] <= 1
    with pytest.raises(SystemExit, match="use task=ranking"):
        run_script(monkeypatch, *overrides, "task=rating")
