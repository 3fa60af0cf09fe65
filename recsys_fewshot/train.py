"""`python -m recsys_fewshot.train [group=option ...] [key=value ...]`: one run, start to finish.

seed -> data -> split -> item text -> encoder vectors -> model -> fit (early stopping on valid)
-> test with the best weights -> metrics.json, predictions.parquet, model.safetensors, tracker.
Returns `optimized_metric` (e.g. valid/rmse; default: the monitored metric on valid), so sweepers can optimise it.
"""

from __future__ import annotations

import time

_T_IMPORT = time.perf_counter()

import logging  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from recsys_fewshot.compare import METRICS, PER_USER, PREDICTIONS  # noqa: E402  (the result files compare reads)
from recsys_fewshot.config import register_configs  # noqa: E402

log = logging.getLogger("recsys_fewshot.train")
register_configs()


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._t, 3)
        self._t = now


def load_data(cfg: DictConfig):
    from recsys_fewshot.config import resolve_cache_dir, resolve_data_root
    from recsys_fewshot.data.recdata import DataError
    from recsys_fewshot.data.sources import ensure_ml100k
    from recsys_fewshot.data.store import load_cached

    root = resolve_data_root(cfg.dataset.root)
    folder = Path(cfg.dataset.dir).expanduser()
    if not folder.is_absolute():
        folder = root / folder
    if cfg.dataset.kind == "ml100k" and not folder.exists() and folder == root / "ml-100k":
        folder = ensure_ml100k(root)
    if not folder.exists():
        raise DataError(f"dataset.dir: folder {folder} does not exist (dataset.root / $RECSYS_FEWSHOT_DATA "
                        f"is {root})")
    options = OmegaConf.to_container(cfg.dataset.options, resolve=True)
    return load_cached(cfg.dataset.kind, folder, resolve_cache_dir(cfg.cache_dir), **options)


def item_vectors(cfg: DictConfig, data, accelerator) -> tuple[Optional[Any], dict]:
    """Frozen text vectors of every item (None for encoder=none), through the embedding cache."""
    if cfg.encoder.name_or_path is None:
        return None, {"encoder": "none"}
    from recsys_fewshot.config import resolve_cache_dir
    from recsys_fewshot.data.text import render_texts
    from recsys_fewshot.encoders.text_encoder import TextEncoder
    from recsys_fewshot.runtime import encode_items

    texts = render_texts(data.items, cfg.dataset.text_template, list(cfg.dataset.list_columns))
    enc = cfg.encoder
    encoder = TextEncoder(enc.name_or_path, pooling=enc.pooling, max_length=enc.max_length,
                          batch_size=enc.batch_size, normalize=enc.normalize, dtype=enc.dtype,
                          device=str(accelerator.device))
    vectors, stats = encode_items(encoder, texts, resolve_cache_dir(cfg.cache_dir), accelerator)  # sharded over ranks
    log.info("item text, e.g.: %r", texts[0] if texts else "")
    log.info("encoder %s (%s): %d texts, %d cached, %d encoded in %.1fs", enc.name_or_path, encoder.path,
             len(texts), stats["hits"], stats["misses"], stats["seconds"])
    return vectors, {"encoder": enc.name_or_path, "path": str(encoder.path), **stats}


@dataclass
class Prepared:
    """What the training stage needs, derived from the split (no model yet)."""

    spec: Any  # evaluation.TaskSpec
    train_users: Any  # np.ndarray of the interactions the model trains on
    train_items: Any
    train_targets: Any
    global_mean: float  # initial global bias: mean rating, or the logit of the positive rate
    warm: Any  # torch [n_items] 1.0 for items seen in training
    known: Any  # torch [n_users] 1.0 for users seen in training
    history: Any  # UserHistory the user tower pools
    exclude_valid: Any  # UserHistory of items removed from the ranking when scoring valid
    exclude_test: Any  # ... and test
    eval_histories: Any = None  # inductive.EvalHistories: what valid/test show the user tower (cold users...)
    candidates: Any = None  # {"valid"|"test": item indices} the split ranks (cold items); None: all


def prepare(cfg: DictConfig, data, split, task: str) -> Prepared:
    import numpy as np
    import torch

    from recsys_fewshot.evaluation import TaskSpec, relevant, targets

    train = split.train
    users, items = train["user"].to_numpy().copy(), train["item"].to_numpy().copy()
    spec = TaskSpec(task=task, positive_threshold=cfg.dataset.positive_threshold,
                    ks=list(cfg.eval.ks), chunk_size=cfg.eval.chunk_size, rank_all=cfg.eval.ranking,
                    candidates=cfg.eval.candidates)
    y = targets(train, spec)
    if task == "rating":
        if np.isnan(y).any():
            fix = ("these rows carry 0/1 labels: use task=ctr" if "label" in train.columns
                   else "use task=ranking")
            raise ValueError(f"task=rating needs explicit ratings; {data.name} has none: {fix}")
        spec.rating_range = (float(y.min()), float(y.max()))
        global_mean = float(y.mean())
    elif task == "ctr":
        rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        global_mean = float(np.log(rate / (1 - rate)))
    else:
        global_mean = 0.0
        keep = y > 0  # ranking trains on the relevant interactions
        if not keep.any():
            scale = (f"ratings in the training part run from {np.nanmin(train['rating'])} to "
                     f"{np.nanmax(train['rating'])}" if train["rating"].notna().any() else "no ratings")
            raise ValueError(f"task=ranking: no training interaction is relevant (dataset.positive_threshold="
                             f"{cfg.dataset.positive_threshold}; {scale}): lower dataset.positive_threshold")
        users, items, y = users[keep], items[keep], y[keep]
    warm = torch.zeros(data.n_items)
    warm[torch.as_tensor(items)] = 1.0
    known = torch.zeros(data.n_users)
    known[torch.as_tensor(users)] = 1.0
    from recsys_fewshot.inductive import eval_histories, history_of

    # heads that also read what a user did not like: head=ease with negative_weight > 0, head=episodic
    from hydra.utils import get_class

    all_rows = task == "ranking" and (float(cfg.head.get("negative_weight") or 0) > 0
                                      or getattr(get_class(cfg.head._target_), "reads_all_rows", False))
    hist = eval_histories(split, data.n_users, task, lambda f: relevant(f, spec), cfg.eval.history_with_valid,
                          all_rows)
    return Prepared(
        spec=spec, train_users=users, train_items=items, train_targets=y, global_mean=global_mean,
        warm=warm, known=known, history=history_of(train, data.n_users, task, relevant(train, spec), all_rows),
        exclude_valid=hist.exclude_valid, exclude_test=hist.exclude_test, eval_histories=hist,
        candidates=split.candidates)


def sample_users(cfg: DictConfig, data, split):
    """Rows that carry a history (few-shot CTR samples, split=tallrec or CSV CTR data) become users of their
    own, read only through their history (data/tallrec.py); returns (data, split, view or None)."""
    if "history" not in split.train.columns:
        return data, split, None
    from recsys_fewshot.data.tallrec import as_sample_users

    view = as_sample_users(data, split, cfg.dataset.positive_threshold)
    return view.data, view.split, view


def attach_samples(prep: Prepared, view) -> None:
    """Training sees the training samples' histories only; valid and test samples get theirs to be scored."""
    if view is not None:
        prep.history = view.history
        prep.eval_histories.valid, prep.eval_histories.test = view.valid_history, view.test_history


def text_tower(cfg: DictConfig, data, n_train: int, accelerator, adapter: Optional[Path] = None):
    """The trainable item-text tower of joint training (`peft` other than frozen; or, with `adapter`, a
    saved run's trained encoder), else None. Item vectors for the user history still come from `item_vectors`."""
    if cfg.peft.method == "frozen" and adapter is None:
        return None
    if cfg.encoder.name_or_path is None:
        raise ValueError(f"peft={cfg.peft.method} trains the text encoder: set an encoder (encoder=minilm)")
    from recsys_fewshot.data.text import render_texts
    from recsys_fewshot.encoders.trainable import build_tower
    from recsys_fewshot.optim import optimizer_steps

    t, enc = cfg.trainer, cfg.encoder
    per_step = t.batch_size * (1 if t.split_batches else accelerator.num_processes)
    steps = optimizer_steps(n_train, per_step, t.max_epochs, t.gradient_accumulation_steps, t.limit_train_batches)
    texts = render_texts(data.items, cfg.dataset.text_template, list(cfg.dataset.list_columns))
    tower = build_tower(enc.name_or_path, texts, pooling=enc.pooling, max_length=enc.max_length,
                        normalize=enc.normalize, batch_size=enc.batch_size, method=cfg.peft.method,
                        knobs=OmegaConf.to_container(cfg.peft, resolve=True), total_steps=steps,
                        device=str(accelerator.device), adapter=adapter,
                        autocast=t.mixed_precision if accelerator.native_amp else None)  # as training
    log.info("peft=%s: %s encoder parameters trainable", tower.method, tower.parameter_counts())
    return tower


def build_model(cfg: DictConfig, data, prep: Prepared, features, text=None):
    """The `head=` recommender, built by Hydra's `_target_` with the data-derived arguments."""
    from hydra.utils import instantiate

    build = instantiate(cfg.head, _partial_=True, _convert_="all")
    extra = {"item_text": text} if text is not None else {}  # joint training: the trainable text tower
    kg = cfg.get("kg")
    if kg is not None and kg.source != "none":  # kg=attributes/triples: a KG embedding trained jointly (kg/joint.py)
        from recsys_fewshot.kg.joint import build_side, check_head

        check_head(cfg.head._target_)
        extra["kg"] = build_side(data, kg.source, kg.path, cfg.head.dim, kg.model, kg.weight, kg.margin,
                                 kg.num_negatives, kg.batch_size, kg.aggregate)
    return build(n_users=data.n_users, n_items=data.n_items, item_features=features, history=prep.history,
                 warm_items=prep.warm, known_users=prep.known, global_mean=prep.global_mean, **extra)


def train_model(cfg: DictConfig, model, prep: Prepared, valid, n_items: int, task: str, accelerator, log_with,
                run_dir: Optional[Path] = None, text=None):
    import numpy as np
    import torch
    from hydra.utils import instantiate

    from recsys_fewshot import checkpoint, optim
    from recsys_fewshot.engine import FitOptions, batch_loader, fit
    from recsys_fewshot.evaluation import (default_monitor, pointwise_metrics, predict_pairs, ranking_metrics,
                                           resolve_candidates)
    from recsys_fewshot.inductive import using_history
    from recsys_fewshot.models.objectives import TaskLoss

    # ranking negatives come from the items seen in training: held-out (cold) items stay unseen until scored
    loss_module = TaskLoss(model, task, cfg.trainer.num_negatives, negative_pool=prep.warm.nonzero().squeeze(-1))
    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    lrs = {key: opt.pop(key) for key in ("head_lr", "encoder_lr", "scheduler", "warmup")}
    if opt.get("fused") is None or (opt["fused"] and accelerator.device.type == "cpu"
                                    and tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 4)):
        opt.pop("fused", None)  # unset, or a torch without the fused CPU kernel (2.3): the default kernel
    encoder_params = {id(p) for p in text.parameters()} if text is not None else set()
    groups = optim.param_groups(loss_module.parameters(), lambda p: id(p) in encoder_params, opt["lr"],
                                lrs["head_lr"], lrs["encoder_lr"])
    from hydra.utils import get_class

    if getattr(get_class(opt["_target_"]), "sparse_embeddings", False):  # optimizer=lazy_adamw
        tables = optim.make_embeddings_sparse(model, skip=encoder_params)
        log.info("optimizer %s: sparse gradients for %s", opt["_target_"], ", ".join(tables) or "no table")
    optimizer = instantiate(opt)(params=groups)
    t = cfg.trainer
    scheduler = optim.build_scheduler(optimizer, lrs["scheduler"], lrs["warmup"], optim.scheduler_steps(
        len(prep.train_users), t.batch_size, t.max_epochs, t.gradient_accumulation_steps, t.limit_train_batches,
        accelerator.num_processes, t.split_batches))
    loader = batch_loader(torch.as_tensor(prep.train_users), torch.as_tensor(prep.train_items),
                          torch.as_tensor(prep.train_targets), batch_size=cfg.trainer.batch_size, shuffle=True,
                          seed=cfg.seed, groups=torch.as_tensor(prep.train_users) if t.batching == "users" else None)
    monitor = cfg.trainer.monitor or default_monitor(task)
    spec = prep.spec
    if monitor == "auc" and len(valid):
        from recsys_fewshot.evaluation import relevant

        liked = relevant(valid, spec)
        if liked.all() or not liked.any():  # AUC undefined on every epoch: early stopping would never see a best
            if cfg.trainer.monitor:
                raise ValueError(f"trainer.monitor=auc: the {len(valid)} valid rows are all of one class, so AUC is "
                                 "undefined; monitor logloss (or draw another valid set)")
            log.warning("the %d valid rows are all of one class (AUC undefined): early stopping monitors logloss",
                        len(valid))
            monitor = "logloss"

    def evaluate_valid(m) -> dict[str, float]:
        with using_history(m, prep.eval_histories.valid, prep.history):
            scores = predict_pairs(m, valid["user"].to_numpy(), valid["item"].to_numpy(), accelerator,
                                   cfg.trainer.eval_batch_size)
            if not np.isfinite(scores).all():
                raise FloatingPointError(f"{int((~np.isfinite(scores)).sum())} valid predictions are NaN or inf")
            out = pointwise_metrics(spec, valid, scores)
            if task == "ranking" or monitor not in out:
                candidates = resolve_candidates(spec.candidates, valid, (prep.candidates or {}).get("valid"))
                out.update(ranking_metrics(m, valid, prep.exclude_valid, n_items, spec, accelerator,
                                           candidates)[0])
        return out

    def log_epoch(row: dict, step: int) -> None:
        accelerator.log(row, step=step)

    kg = getattr(model, "kg", None)

    def kg_epoch() -> dict[str, float]:  # kg=...: the epoch's mean KG loss (unweighted), over processes
        return {"train/kg_loss": float(accelerator.reduce(kg.epoch_loss().to(accelerator.device), reduction="mean"))}

    max_epochs = cfg.trainer.max_epochs
    if getattr(model, "closed_form", False) and max_epochs:  # head=ease: fitted when built
        log.info("head %s is fitted in closed form: no training epochs (trainer.max_epochs=%d ignored)",
                 type(model).__name__, max_epochs)
        max_epochs = 0
    options = FitOptions(
        max_epochs=max_epochs, patience=t.patience, monitor=monitor, grad_clip=t.grad_clip,
        limit_train_batches=t.limit_train_batches, progress=t.progress, log=log_epoch if log_with else None,
        scheduler=scheduler, on_step=text.after_optimizer_step if text is not None else None,
        checkpoint_dir=run_dir / checkpoint.FOLDER if run_dir is not None else None,
        checkpoint_every=t.checkpoint_every,
        resume_from=checkpoint.resolve(t.resume, run_dir) if run_dir is not None else None,
        epoch_extras=kg_epoch if kg is not None else None,
        config=checkpoint.config_fingerprint(cfg) if run_dir is not None else None)
    result = fit(loss_module, model, optimizer, loader, evaluate_valid, accelerator, options)
    return result, monitor


def evaluate_model(cfg: DictConfig, model, prep: Prepared, split, n_items: int, accelerator):
    """(valid metrics, the test part's `PartResult`: metrics, pair scores, per-user ranking table) of a trained
    model (also `python -m ...evaluate`)."""
    import torch

    from recsys_fewshot.evaluation import evaluate_frame
    from recsys_fewshot.inductive import using_history

    model.eval()
    spec, valid, test = prep.spec, split.valid, split.test
    cands, hists = prep.candidates or {}, prep.eval_histories
    with torch.no_grad():
        with using_history(model, hists.valid, prep.history):
            valid_metrics = evaluate_frame(model, valid, prep.exclude_valid, n_items, spec, accelerator,
                                           cfg.trainer.eval_batch_size, cands.get("valid")).metrics
        with using_history(model, hists.test, prep.history):
            tested = evaluate_frame(model, test, prep.exclude_test, n_items, spec, accelerator,
                                    cfg.trainer.eval_batch_size, cands.get("test"))
    return valid_metrics, tested


def adapt_and_test(cfg: DictConfig, model, prep: Prepared, split, n_items: int, task: str, accelerator) -> dict:
    """`split.adapt_steps` > 0: test metrics after fitting a bias and a vector per cold user on their
    support (the trained model frozen); {} otherwise. Reported apart, as `test_adapted`."""
    steps = int(cfg.split.get("adapt_steps", 0) or 0)
    if steps <= 0:
        return {}
    if split.support is None or task != "rating":
        raise ValueError("split.adapt_steps needs split=cold_users and task=rating (it fits the support ratings)")
    import torch

    from recsys_fewshot.evaluation import evaluate_frame
    from recsys_fewshot.inductive import adapt_users, using_history

    with using_history(model, prep.eval_histories.test, prep.history):
        adapted = adapt_users(model, split.support, prep.known.shape[0], steps, float(cfg.split.adapt_lr))
        with torch.no_grad():
            metrics = evaluate_frame(adapted, split.test, prep.exclude_test, n_items, prep.spec, accelerator,
                                     cfg.trainer.eval_batch_size, (prep.candidates or {}).get("test")).metrics
    return {**metrics, "steps": steps, "lr": float(cfg.split.adapt_lr)}


def fallback_counts(prep: Prepared, test, features) -> dict[str, int]:
    """Test rows the model cannot represent (they fall back to biases; see models/heads.py)."""
    import numpy as np

    users_ok = prep.known.numpy().astype(bool)
    items_ok = np.ones(len(prep.warm), bool) if features is not None else prep.warm.numpy().astype(bool)
    tu, ti = test["user"].to_numpy(), test["item"].to_numpy()
    return {"unseen_user_rows": int((~users_ok[tu]).sum()), "unseen_item_rows": int((~items_ok[ti]).sum()),
            "fallback_rows": int((~users_ok[tu] | ~items_ok[ti]).sum())}


RUN_CONFIG = "config.yaml"  # the config of the results beside it (.hydra/config.yaml is the latest start's)
RESULT_FILES = (METRICS, "failure.json", "model.safetensors", PREDICTIONS, PER_USER, RUN_CONFIG)


def clear_results(run_dir: Path) -> None:
    """Remove an earlier run's results from a reused run dir (its checkpoints stay: trainer.resume reads them)."""
    import shutil

    for name in RESULT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "encoder", ignore_errors=True)


def check_settings(cfg: DictConfig) -> None:
    """Numbers and names that would otherwise fail late (after training) or silently: each error names its key."""
    from recsys_fewshot.engine import BATCHING
    from recsys_fewshot.metrics import RANKING_METRICS

    t, ks = cfg.trainer, list(cfg.eval.ks)

    def at_least(key: str, value, low: int) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{key}={value!r}: expected an integer >= {low}")

    if not ks:
        raise ValueError("eval.ks=[]: give at least one cut-off, e.g. eval.ks=[10,20]")
    for k in ks:
        at_least(f"eval.ks (entry {k!r})", k, 1)
    at_least("eval.chunk_size", cfg.eval.chunk_size, 1)
    for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
        at_least(f"trainer.{key}", t.get(key), 1)
    for key in ("max_epochs", "limit_train_batches", "patience", "checkpoint_every"):
        at_least(f"trainer.{key}", t.get(key), 0)
    if "dim" in cfg.head:
        at_least("head.dim", cfg.head.dim, 1)
    if cfg.get("kg") is not None and cfg.kg.source != "none":
        at_least("kg.num_negatives", cfg.kg.num_negatives, 1)
        at_least("kg.batch_size", cfg.kg.batch_size, 1)
        if not cfg.kg.weight >= 0:
            raise ValueError(f"kg.weight={cfg.kg.weight}: expected >= 0 (the KG loss's share beside the "
                             "recommendation loss)")
    if t.batching not in BATCHING:
        raise ValueError(f"trainer.batching={t.batching!r}: expected one of {', '.join(BATCHING)}")
    accumulation, limit = t.get("gradient_accumulation_steps") or 1, t.get("limit_train_batches") or 0
    if limit and limit % accumulation:  # a partial accumulation group at the cut would be carried or lost
        raise ValueError(f"trainer.limit_train_batches={limit} must be a multiple of "
                         f"trainer.gradient_accumulation_steps={accumulation}")
    if (t.get("grad_clip") or 0) > 0 and "lazy" in str(cfg.optimizer.get("_target_", "")).lower():
        raise ValueError(f"trainer.grad_clip={t.grad_clip} with optimizer={cfg.optimizer._target_}: its sparse ID "
                         "gradients cannot be norm-clipped; set trainer.grad_clip=0")
    if cfg.optimized_metric:  # its <part>/ is checked by sweeps; here the metric's name, before any training
        metric = str(cfg.optimized_metric).partition("/")[2]
        known = ["rmse", "mae", "auc", "accuracy", "f1", "logloss"] + [f"{m}@{k}" for m in RANKING_METRICS for k in ks]
        if metric not in known:
            raise ValueError(f"optimized_metric={cfg.optimized_metric!r}: no run reports {metric!r}; metrics are "
                             f"{', '.join(known)} (ranking cut-offs from eval.ks)")


def run(cfg: DictConfig, run_dir: Path) -> float:
    """The whole job; everything it writes goes under `run_dir`."""
    import pandas as pd
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from hydra.utils import instantiate

    from recsys_fewshot import checkpoint, runtime, sweeps, tracking
    from recsys_fewshot.evaluation import standard_errors, targets
    from recsys_fewshot.inductive import load_init
    from recsys_fewshot.models.objectives import TASKS

    timer = Timer()
    startup = round(timer._t - _T_IMPORT, 3)
    preload = runtime.preload_in_background()  # overlaps with the tracker's start-up and the data
    run_dir.mkdir(parents=True, exist_ok=True)
    job = sweeps.job_context()  # a multirun job's tracker group is its sweep dir's name
    log_with, init_kwargs = tracking.tracker_setup(
        cfg.logger.name, run_dir, cfg.logger.mode, cfg.logger.group or job.group, [*job.tags, *cfg.logger.tags],
        cfg.logger.entity, job.run_name(run_dir.name), job_type=cfg.logger.job_type or job.job_type)
    t = cfg.trainer
    accelerator = Accelerator(cpu=runtime.use_cpu(t.cpu), log_with=log_with or None, project_dir=str(run_dir),
                              **runtime.accelerator_options(t.mixed_precision, t.gradient_accumulation_steps,
                                                            t.split_batches))
    run_dir = runtime.shared_run_dir(run_dir, accelerator)  # rank 0's, on every rank
    try:
        # settings first: a refused start leaves a reused run dir's earlier results as they were
        check_settings(cfg)
        runtime.check_batch_sizes(accelerator.num_processes, t.split_batches, batch_size=t.batch_size,
                                  eval_batch_size=t.eval_batch_size)
        checkpoint.preflight(t.resume, run_dir, cfg)  # a resume under another configuration stops here, early
        if accelerator.is_main_process:  # a reused run dir (resume, a rerun): no stale result may outlive this run
            clear_results(run_dir)
        accelerator.wait_for_everyone()
        if log_with:
            resolved = {**OmegaConf.to_container(cfg, resolve=True),
                        "job": {"run_dir": str(run_dir), "sweep_dir": job.sweep_dir, "num": job.job_num,
                                "overrides": job.overrides}}
            accelerator.init_trackers(cfg.logger.project, config=tracking.tracker_config(cfg.logger.name, resolved),
                                      init_kwargs=init_kwargs)
        set_seed(cfg.seed)

        data = load_data(cfg)
        split = instantiate(cfg.split)(data)
        data, split, samples = sample_users(cfg, data, split)  # few-shot CTR samples: each a user of its own
        task = cfg.task or split.task or cfg.dataset.task
        if task not in TASKS:
            raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
        for suffix, name in ((".EASE", "ease"), (".EpisodicRidge", "episodic")):  # before any encoding
            if cfg.head._target_.endswith(suffix) and task != "ranking":
                raise ValueError(f"head={name} ranks items from implicit histories: task={task} needs a head that "
                                 "predicts values (e.g. head=mf); use task=ranking")
        timer.lap("data")
        log.info("%s: %d users, %d items; split %s %s; task %s", data.name, data.n_users, data.n_items,
                 split.info.get("protocol"), split.sizes(), task)

        preload.join()  # before the encoder (a cache miss imports transformers) can import beside it
        features, enc_info = item_vectors(cfg, data, accelerator)
        timer.lap("encode")

        prep = prepare(cfg, data, split, task)
        attach_samples(prep, samples)
        text = text_tower(cfg, data, len(prep.train_users), accelerator)  # None unless joint training
        model = build_model(cfg, data, prep, features, text).to(accelerator.device)
        init_info = load_init(model, cfg.init_from) if cfg.init_from else None
        kg_side = getattr(model, "kg", None)
        if kg_side is not None and log_with:  # the graph's statistics join the tracker's config
            for tracker in accelerator.trackers:
                tracker.store_init_configuration(tracking.tracker_config(cfg.logger.name, {"kg_stats": kg_side.stats}))
        result, monitor = train_model(cfg, model, prep, split.valid, data.n_items, task, accelerator, log_with,
                                      run_dir, text)
        timer.lap("train")
        if kg_side is not None:
            from recsys_fewshot.kg.joint import run_summary as kg_run_summary

        valid_metrics, tested = evaluate_model(cfg, model, prep, split, data.n_items, accelerator)
        spec, test = prep.spec, split.test
        test_metrics, scores = tested.metrics, tested.scores
        timer.lap("eval")
        adapted = adapt_and_test(cfg, model, prep, split, data.n_items, task, accelerator)
        if adapted:
            timer.lap("adapt")

        timer.seconds["startup"] = startup
        timer.seconds["total"] = round(time.perf_counter() - _T_IMPORT, 3)
        summary = {
            "task": task,
            "dataset": data.name,
            "split": {**split.info, **split.sizes(), "protocol": split.info.get("protocol"), "seed": cfg.split.seed,
                      "users": data.n_users, "items": data.n_items, **fallback_counts(prep, test, features)},
            "seed": cfg.seed,
            "monitor": monitor,
            "best_epoch": result.best_epoch,
            "epochs": len(result.history),
            "valid": valid_metrics,
            "test": test_metrics,
            "test_se": standard_errors(spec, test, scores, tested.per_user),
            "baseline": baseline(spec, test, prep.train_targets),
            "encoder": enc_info,
            "seconds": timer.seconds,
            **({"init_from": init_info} if init_info else {}),
            **({"kg": kg_run_summary(kg_side, result.history)} if kg_side is not None else {}),
            **({"test_adapted": adapted} if adapted else {}),
            "training": {"peft": cfg.peft.method, "processes": accelerator.num_processes,
                         "mixed_precision": runtime.recorded_precision(t.mixed_precision, accelerator.device),
                         "updates": result.updates,
                         "samples_per_second": round(result.samples / max(result.train_seconds, 1e-9), 1),
                         **({"encoder_parameters": text.parameter_counts()} if text is not None else {})},
        }
        value = sweeps.objective(summary, cfg.optimized_metric, result.best.get(monitor))  # may fail: before any file
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            tracking.write_text(run_dir / RUN_CONFIG, OmegaConf.to_yaml(cfg))  # what these results came from
            tracking.write_safetensors(run_dir / "model.safetensors", runtime.head_state(unwrapped, text))
            if text is not None:
                text.save(run_dir / "encoder")  # the adapter (save_pretrained), BitFit biases or whole encoder
            if cfg.save_predictions:
                tu, ti = test["user"].to_numpy(), test["item"].to_numpy()
                frame = pd.DataFrame({"user_id": data.user_raw_ids()[tu], "item_id": data.item_raw_ids()[ti],
                                      "target": targets(test, spec), "score": scores})
                if "source_user" in data.users.columns:  # samples as users: the real user each came from
                    frame["source_user"] = data.users["source_user"].to_numpy()[tu]
                tracking.write_parquet(run_dir / PREDICTIONS, frame)
            if len(tested.per_user):  # per-user test ranking metrics: `python -m recsys_fewshot.compare` pairs them
                per_user = tested.per_user.assign(user=data.user_raw_ids()[tested.per_user["user"].to_numpy()])
                tracking.write_parquet(run_dir / PER_USER, per_user.rename(columns={"user": "user_id"}))
            tracking.write_json(run_dir / METRICS, summary)
            print_table(summary)
        accelerator.log(tracking.flatten("test", test_metrics) | tracking.flatten("best_valid", result.best))
        tracking.set_summary(accelerator, {**tracking.flatten("test", test_metrics),
                                           **tracking.flatten("test_se", summary["test_se"]),
                                           **tracking.flatten("valid", valid_metrics),
                                           **tracking.flatten("best_valid", result.best),
                                           "best_epoch": result.best_epoch})
        return value
    except BaseException as exc:
        tracking.mark_failed(accelerator, exc)  # the wandb run ends as failed; the sweep goes on
        raise
    finally:
        accelerator.end_training()


def baseline(spec, test, y_train) -> dict[str, float]:
    """The trivial predictor on test: the global mean rating (rating task) or the train positive rate."""
    import numpy as np

    from recsys_fewshot.evaluation import pointwise_metrics

    if spec.task == "ranking" or len(y_train) == 0:
        return {}
    value = float(np.mean(y_train))
    if spec.task == "ctr":  # CTR scores are logits (pointwise_metrics applies the sigmoid)
        rate = float(np.clip(value, 1e-6, 1 - 1e-6))
        value = float(np.log(rate / (1 - rate)))
    return pointwise_metrics(spec, test, np.full(len(test), value, np.float32))


def print_table(summary: dict) -> None:
    names = list(dict.fromkeys(list(summary["valid"]) + list(summary["test"])))
    se = summary.get("test_se", {})
    lines = [f"{'metric':<14}{'valid':>10}{'test':>10}{'± se':>9}"]
    for name in names:
        cells = []
        for part in ("valid", "test"):
            v = summary[part].get(name)
            cells.append(f"{v:>10.4f}" if isinstance(v, float) else f"{'-':>10}")
        v = se.get(name)
        cells.append(f"{v:>9.4f}" if isinstance(v, float) and v == v else f"{'':>9}")
        lines.append(f"{name:<14}{''.join(cells)}".rstrip())
    sizes = summary["split"]
    print(f"\n{summary['dataset']} / {sizes['protocol']} / task {summary['task']}: "
          f"train {sizes['train']}, valid {sizes['valid']}, test {sizes['test']} "
          f"(best epoch {summary['best_epoch']}, {summary['seconds']['total']:.1f}s)")
    print("\n".join(lines))


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from recsys_fewshot import sweeps

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    sweeps.export_slurm_distributed_env()  # several SLURM tasks (submitit tasks_per_node) -> one DDP group
    with sweeps.record_failure(run_dir):  # a failed job leaves failure.json for the report
        sweeps.check_optimized_metric(cfg.optimized_metric)
        return run(cfg, run_dir)


if __name__ == "__main__":
    import sys

    from recsys_fewshot.runtime import route_hydra_outputs

    sys.argv[1:] = route_hydra_outputs(sys.argv[1:])  # ranks > 0: Hydra's own outputs go to a scratch folder
    main()
