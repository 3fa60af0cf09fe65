"""Which split protocols each of dataset=ml1m / ml25m / lastfm supports, built as a run builds them (data, split,
task, histories, model), on tiny copies of the releases: the ones that fit run, the others are refused naming why."""

from __future__ import annotations

import logging

import pytest
from fakes_releases import write_lastfm, write_ml1m, write_ml25m
from inprocess import compose, fresh_accelerator

from recsys_fewshot.data.recdata import DataError

SPLITS = ("random", "temporal", "leave_one_out", "cold_items", "cold_users", "per_user")
# what each data set does not support, and the words of the refusal
REFUSED = {("ml1m", "given"): "has no such split", ("ml25m", "given"): "has no such split",
           ("lastfm", "given"): "has no such split", ("lastfm", "temporal"): "has no timestamps"}
FILE_ORDER = {("lastfm", "leave_one_out"), ("lastfm", "cold_users")}  # run, warning that there is no time


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    write_ml1m(root / "ml-1m", n_users=50, n_items=30, n_per_user=12)
    write_ml25m(root / "ml-25m", n_users=50, n_items=30, n_per_user=12)
    write_lastfm(root / "lastfm-hetrec2011-2k", n_users=50, n_items=30, n_per_user=14)
    return root


@pytest.mark.parametrize("dataset", ["ml1m", "ml25m", "lastfm"])
@pytest.mark.parametrize("split", [*SPLITS, "given"])
def test_each_protocol_runs_or_is_refused(root, dataset, split, caplog):
    from recsys_fewshot import build

    cfg = compose(f"dataset={dataset}", f"split={split}", f"dataset.root={root}", f"cache_dir={root / 'cache'}",
                  "encoder=none", "logger=none", *(["split.k=3"] if split == "cold_users" else []))
    refused = REFUSED.get((dataset, split))
    if refused:
        with pytest.raises(DataError, match=refused):
            build.build_run(cfg, fresh_accelerator(cfg))
        return
    with caplog.at_level(logging.WARNING, logger="recsys_fewshot.data.protocols"):
        run = build.build_run(cfg, fresh_accelerator(cfg))
    assert run.task == ("ranking" if dataset == "lastfm" or split == "leave_one_out" else "rating")
    assert min(run.split.sizes().values()) > 0 and run.model is not None
    assert ("no timestamps" in caplog.text) == ((dataset, split) in FILE_ORDER), caplog.text
    if split == "cold_items":
        test_items = set(run.split.test["item"])
        assert test_items == set(run.split.candidates["test"]) and not test_items & set(run.split.train["item"])
