"""Every option of every config group under conf/ is composed, checked and instantiated on tiny data in the
real formats: the data read, the split drawn, item vectors extracted (a tiny random BERT stands in for every
encoder), the model, loss and optimizer built. A broken YAML, a key its schema lacks, a `_target_` that does
not import or a preset that no longer composes fails here, naming the option.

Also: the schema of each head is exactly its constructor's knobs; the generated reference in docs/ is up to
date; adding a head takes its class and its YAML only.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from fakes import planted_ctr_samples, write_amazon_unisrec, write_csv_dataset, write_ml100k, write_tallrec_json
from fakes_releases import write_lastfm, write_ml1m, write_ml25m
from inprocess import REPO, compose, fresh_accelerator

pytestmark = pytest.mark.usefixtures("one_thread")
CONF = REPO / "conf"
GROUPS = ("dataset", "split", "encoder", "head", "peft", "optimizer", "trainer", "kg", "logger",
          "protocol", "model", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL = [(g, o) for g in GROUPS for o in options(g)]

# what an option needs beside it to make a run (on tiny data): the companions a user would give too
COMPANIONS = {
    ("dataset", "amazon_unisrec"): ["split=given"],
    ("dataset", "mind_small"): ["split=given"],
    ("dataset", "csv"): ["split=given", "dataset.dir={csv}"],
    ("dataset", "tallrec_json"): ["split=tallrec", "dataset.dir={tallrec}", "dataset.train_file=valid.json",
                                  "head=likerate", "task=ctr"],
    ("split", "tallrec"): ["head=likerate", "split.n_shots=16"],
    ("split", "given"): [],
    ("head", "ease"): ["task=ranking"],
    ("head", "text_pool"): ["task=ranking"],
    ("head", "episodic"): ["task=ranking", "split=cold_users", "split.k=3"],
    ("head", "random"): ["split=tallrec", "split.n_shots=16"],
    ("head", "likerate"): ["split=tallrec", "split.n_shots=16"],
    ("head", "fewshot"): ["split=tallrec", "split.n_shots=16"],
    ("kg", "triples"): ["kg.path={triples}"],
    ("head", "llm"): ["split=tallrec", "split.n_shots=16", "eval.ranking=false", "llm=smollm2-135m", "task=ctr"],
    ("head", "hybrid"): ["split=tallrec", "split.n_shots=16", "eval.ranking=false", "llm=smollm2-135m",
                         "task=ctr"],
    ("llm", "smollm2-135m"): ["head=llm", "split=tallrec", "split.n_shots=16", "eval.ranking=false"],
    ("llm", "gemma3-270m"): ["head=llm", "split=tallrec", "split.n_shots=16", "eval.ranking=false"],
    ("model", "llm_lora"): ["split=tallrec", "split.n_shots=16", "eval.ranking=false"],
    ("model", "llm_zeroshot"): ["split=tallrec", "split.n_shots=16", "eval.ranking=false"],
    ("model", "llm_icl"): ["split=tallrec", "split.n_shots=16", "eval.ranking=false"],
    ("model", "hybrid"): ["split=tallrec", "split.n_shots=16", "eval.ranking=false"],
    ("model", "likerate"): ["split=tallrec", "split.n_shots=16"],
    ("model", "random"): ["split=tallrec", "split.n_shots=16"],
    ("model", "episodic_k5"): ["split=cold_users", "task=ranking"],
    ("model", "episodic_k20"): ["split=cold_users", "split.k=3", "head.k=3", "task=ranking"],
    ("model", "fewshot"): ["split=tallrec", "split.n_shots=16"],
    ("model", "fewshot_book"): ["split=tallrec", "split.n_shots=16"],
    ("model", "warm_ease"): ["task=ranking"],
    ("model", "amazon_ease"): ["task=ranking"],
    ("model", "cold_items_ease"): ["task=ranking"],
    ("model", "cold_items_ease_mpnet"): ["task=ranking"],
    ("model", "amazon_zeroshot"): ["task=ranking"],
    ("model", "amazon_transfer"): ["task=ranking"],
    ("model", "cold_users"): ["split=cold_users", "split.k=3"],
    ("model", "cold_users_ranking"): ["split=cold_users", "split.k=3", "task=ranking"],
}
# tiny data: fewer support ratings than the published protocols, and few TALLRec samples
TINY = {
    "ml100k_cold_users_k5": ["split.k=3"], "ml100k_cold_users_k10": ["split.k=3"],
    "ml100k_cold_users_k20": ["split.k=3"], "ml100k_cold_users_k5_ranking": ["split.k=3"],
    "ml100k_cold_users_k20_ranking": ["split.k=3"],
    "tallrec_movie": ["split.n_shots=16"], "tallrec_book": ["split.n_shots=16"],
    "tallrec_book_rebuilt": ["split.n_shots=16"],
}
EXPERIMENT_PROTOCOL = {"cold_users_k5_episodic": "ml100k_cold_users_k5_ranking",
                       "cold_users_k20_episodic": "ml100k_cold_users_k20_ranking"}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("configs")
    data = root / "data"
    write_ml100k(data / "ml-100k", n_users=60, n_items=40, n_per_user=18, seed=0)
    write_ml1m(data / "ml-1m", n_users=40, n_items=30, n_per_user=12, seed=0)
    write_ml25m(data / "ml-25m", n_users=40, n_items=30, n_per_user=12, seed=0)
    write_lastfm(data / "lastfm-hetrec2011-2k", n_users=40, n_items=30, n_per_user=12, seed=0)
    write_amazon_unisrec(data / "amazon-scientific-unisrec", n_users=40, n_items=25, seed=0)
    from raw_formats import planted_bookcrossing

    planted_bookcrossing(data / "bookcrossing", n_users=40, n_items=30, n_per_user=12, seed=0)
    from raw_formats import planted_amazon2023

    planted_amazon2023(data / "amazon-2023", n_users=40, n_items=30, n_per_user=12, seed=0)
    from raw_formats import planted_mind

    planted_mind(data / "mind-small", n_users=30, n_news=40, n_impressions=60, seed=0)
    samples, titles = planted_ctr_samples(n_samples=150, n_items=30, history_len=6, seed=0)
    books = [([titles[i] for i, y in zip(h, ys) if y], [titles[i] for i, y in zip(h, ys) if not y], titles[t], label)
             for h, ys, t, label in samples]
    write_tallrec_json(data / "tallrec-book" / "valid.json", books, noun="movie")
    csv = write_csv_dataset(root / "csv")
    triples = root / "triples.tsv"
    triples.write_text("item:1\tgenre\tComedy\nitem:2\tgenre\tDrama\nuser:1\tlikes\tComedy\n")
    from lm_fakes import build_tiny_causal_lm

    return {"root": data, "csv": csv, "tallrec": data / "tallrec-book", "triples": triples, "bert": tiny_bert,
            "cache": root / "cache", "llm": build_tiny_causal_lm(root / "tiny-llm", "llama")}


def overrides_for(group: str, option: str, world: dict) -> list[str]:
    extra = list(COMPANIONS.get((group, option), []))
    if group == "protocol":
        extra += TINY.get(option, [])
    if group == "experiment":
        proto = EXPERIMENT_PROTOCOL.get(option) or _experiment_protocol(option)
        extra += TINY.get(proto, []) if proto else []
        if option.endswith("_episodic"):
            extra.append("head.k=3")
        if option == "amazon_transfer":
            extra.append("task=ranking")
    fmt = {k: str(v) for k, v in world.items()}
    extra = [e.format(**fmt) for e in extra]
    return [f"{group}={option}", *extra, f"dataset.root={world['root']}", f"cache_dir={world['cache']}",
            *([] if group == "logger" else ["logger=none"]), "trainer.progress=false", "trainer.cpu=true", "trainer.max_epochs=1",
            "trainer.limit_train_batches=1", "trainer.batch_size=64"]


def _experiment_protocol(option: str):
    import yaml

    body = yaml.safe_load((CONF / "experiment" / f"{option}.yaml").read_text())
    for entry in body.get("defaults", []):
        if isinstance(entry, dict) and "override /protocol" in entry:
            return entry["override /protocol"]
    return None


@pytest.mark.slow
@pytest.mark.parametrize("group,option", ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_every_option_composes_and_builds_on_tiny_data(group, option, tiny_world):
    from recsys_fewshot import build, settings

    overrides = overrides_for(group, option, tiny_world)
    cfg = compose(*overrides)
    if cfg.encoder.name_or_path is not None:  # every encoder option's settings, on the tiny random BERT
        cfg.encoder.name_or_path = str(tiny_world["bert"])
        cfg.encoder.max_length = min(cfg.encoder.max_length, 64)
    if cfg.llm.name_or_path is not None:  # every language-model option's settings, on a tiny random Llama
        cfg.llm.name_or_path = str(tiny_world["llm"])
        cfg.llm.dtype = "float32"
    if group == "logger":
        from recsys_fewshot.sweeps import job_context

        tracker = build.tracker(cfg, tiny_world["cache"] / "run", job_context())
        assert tracker.log_with == ([] if option == "none" else [option])
        return
    settings.check_settings(cfg)
    accelerator = fresh_accelerator(cfg)
    run = build.build_run(cfg, accelerator)
    training = build.build_training(cfg, run, accelerator)
    assert run.model is not None and training.optimizer.param_groups
    if cfg.encoder.name_or_path is not None and not build.peft_method(cfg).trains_encoder:
        assert run.features is not None and len(run.features) == run.data.n_items


def test_hparams_search_presets_compose():
    for option in options("hparams_search"):
        cfg = compose(f"hparams_search={option}")
        assert cfg.optimized_metric.startswith("valid/")


@pytest.mark.parametrize("target", sorted(set(__import__("recsys_fewshot.registry").registry.head_options().values())))
def test_each_head_schema_is_exactly_its_constructor_knobs(target):
    from recsys_fewshot.models.capabilities import DATA_ARGS, capabilities_of, head_class
    from recsys_fewshot.registry import head_schema

    cls = head_class(target)
    params = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith("torch"):
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self" and name not in DATA_ARGS:
                params.setdefault(name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
            break  # NCF(*args, hidden, dropout, **kwargs) forwards the rest to Recommender: its base's knobs count
    fields = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
              for f in dataclasses.fields(head_schema(target)) if f.name != "_target_"}
    assert set(fields) == set(params)
    for name, default in params.items():
        assert fields[name] == (list(default) if isinstance(default, tuple) else default), name
    capabilities_of(target)  # every head declares what it can do
    from recsys_fewshot.models.capabilities import schema_fields
    from recsys_fewshot.registry import source_knobs

    # the schema is read from the source (no torch import at composition): it must say what the import says
    assert [(n, d) for n, _, d in source_knobs(target)] == [(n, d) for n, _, d in schema_fields(cls)]


def test_composing_a_config_imports_no_model_code():
    """Head schemas come from the constructors' source: `--help` and a refused command line stay quick."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); from inprocess import compose; compose('head=ease', "
            "'task=ranking'); assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_head_yaml_does_not_restate_defaults():
    """Defaults are written once, in the constructor: a head's YAML sets only `_target_` and wiring to other keys."""
    import yaml

    for option in options("head"):
        body = yaml.safe_load((CONF / "head" / f"{option}.yaml").read_text())
        own = {k: v for k, v in body.items() if k not in ("defaults", "_target_")}
        assert all(isinstance(v, str) and v.startswith("${") for v in own.values()), (option, own)


def test_the_generated_reference_is_up_to_date():
    from recsys_fewshot.reference import OUT, generate

    assert OUT.is_file(), f"{OUT} is missing: python -m recsys_fewshot.reference --write"
    assert OUT.read_text() == generate(), "docs/usage/reference.md is stale: python -m recsys_fewshot.reference --write"


def test_unknown_or_inapplicable_head_keys_fail_at_composition_listing_the_heads_keys():
    from hydra.errors import ConfigCompositionException

    from recsys_fewshot.registry import failure_hints

    for bad in (["head=ease", "head.dim=7"], ["head=random", "head.recency=0.5"], ["head=mf", "head.dimm=8"],
                ["experiment=warm_ease", "head.loo_history=true"]):
        with pytest.raises(ConfigCompositionException):
            compose(*bad)
        hints = failure_hints(bad)
        assert len(hints) == 1 and "has no key" in hints[0] and bad[-1].split("=")[0] in hints[0], hints
    assert "reg, text_weight" in failure_hints(["head=ease", "head.dim=7"])[0]
    assert failure_hints(["head=inductive"]) == ["head=inductive is now spelled model=inductive"]
    assert failure_hints(["head=fewshot_book", "seed=1"]) == ["head=fewshot_book is now spelled model=fewshot_book"]


def test_a_model_preset_runs_on_another_split_in_one_command(tiny_world):
    """Model presets set no protocol keys: any tuned model composes with any data set and split."""
    import yaml

    protocol_keys = {"dataset", "split", "task"}
    for option in options("model"):
        body = yaml.safe_load((CONF / "model" / f"{option}.yaml").read_text()) or {}
        assert not protocol_keys & set(body), (option, protocol_keys & set(body))
        for entry in body.get("defaults", []):
            if isinstance(entry, dict):
                assert not any(k.split("/")[-1] in ("dataset", "split") for k in entry), (option, entry)
    cfg = compose("model=warm_ease", "dataset=csv", f"dataset.dir={tiny_world['csv']}", "split=given",
                  "task=ranking")
    assert cfg.head.reg == 400.0 and cfg.split._target_.endswith("given")
    assert cfg.dataset.reader._target_ == "recsys_fewshot.data.sources.Csv"


class ConstantHead(__import__("torch").nn.Module):
    """A trivial head: the same score for every pair (test of what adding a head takes)."""

    from recsys_fewshot.models.capabilities import Capabilities

    capabilities = Capabilities(tasks=("rating", "ranking"))

    def __init__(self, n_users: int, n_items: int,
                 value: float = 3.0):  # the score of every pair
        import torch

        super().__init__()
        self.n_items = n_items
        self.value = torch.nn.Parameter(torch.tensor(float(value)))

    def forward(self, users, items):
        return self.value.expand(len(users))

    def score_candidates(self, users, items):
        return self.value.expand(len(users), len(items)).clone()

    def regularization(self, users, items):
        return self.value.new_zeros(())


def test_adding_a_head_takes_its_class_and_its_yaml(tmp_path, tiny_world):
    """The walk-through: a class with its capabilities (above) and conf/head/constant.yaml; nothing else."""
    import shutil

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from recsys_fewshot import build
    from recsys_fewshot.config import register_configs

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "head" / "constant.yaml").write_text(
        "defaults:\n  - /schema/head/constant@_here_\n  - _self_\n\n_target_: test_configs.ConstantHead\n")
    register_configs(conf)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=[
            "head=constant", "head.value=4.5", "encoder=none", f"dataset.root={tiny_world['root']}",
            f"cache_dir={tiny_world['cache']}", "logger=none", "trainer.cpu=true"])
        with pytest.raises(Exception, match="dim"):
            hydra_compose(config_name="config", overrides=["head=constant", "head.dim=3"])
    GlobalHydra.instance().clear()
    assert cfg.head.value == 4.5
    run = build.build_run(cfg, fresh_accelerator(cfg))
    valid, tested = run.evaluate(fresh_accelerator(cfg))
    assert tested.metrics["rmse"] > 0 and float(run.model.value) == 4.5


def test_a_saved_config_with_keys_its_head_ignored_loads_without_them():
    """Run folders written when every head's config also held MF's knobs (which EASE ignored) still re-score."""
    from recsys_fewshot.saved_config import saved_run_config

    old = {"head": {"_target_": "recsys_fewshot.models.ease.EASE", "reg": 400.0, "dim": 64, "user_id": True}}
    assert saved_run_config(old, "config.yaml")["head"] == {"_target_": "recsys_fewshot.models.ease.EASE",
                                                             "reg": 400.0}


@pytest.mark.parametrize("key,node", [
    ("dataset", {"reader": {"_target_": "recsys_fewshot.tracking.write_text", "path": "/tmp/x.pth", "text": "x"}}),
    ("split", {"_target_": "recsys_fewshot.rundir.discard", "run_dir": "/tmp"}),
    ("head", {"_target_": "recsys_fewshot.tracking.write_json", "path": "/tmp/x", "obj": 1}),
    ("optimizer", {"_target_": "torch.optim.lr_scheduler.LambdaLR"}),
])
def test_a_saved_config_may_only_name_the_classes_the_projects_own_options_use(key, node):
    """A function of the package put where a reader, split or head belongs is refused: a shared run folder's
    config.yaml cannot write or delete files through `evaluate`."""
    from recsys_fewshot.saved_config import saved_run_config

    with pytest.raises(ValueError, match=r"config.yaml: .*_target_=.* is not one of the classes"):
        saved_run_config({key: node}, "config.yaml")
