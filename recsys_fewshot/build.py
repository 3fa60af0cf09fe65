"""The one build path: a composed config in, a runnable job out.

`build_run(cfg, accelerator)` reads the data set, draws the split, renders the item texts once, extracts
their vectors (embedding cache), derives the histories the model reads, and builds the model (with the
trainable text tower of joint training and the KG side when asked). `build_training(cfg, run, ...)` adds
the loss, optimizer, scheduler, loader and the loop's options. `train`, `evaluate` (and every later entry
point that needs a model from a config) go through these two functions; this module is the only one that
reads a `DictConfig` to build something (`settings.check` reads it to refuse bad values first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("recsys_fewshot.train")


def component(node: DictConfig, key: str, name_key: Optional[str] = None):
    """The object a `_target_` node names, built with the node's other keys (`key`: its name in messages).
    `name_key`: the key recording the component's name (`peft.method`, `logger.name`), which must be the
    name its class declares."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        built = instantiate(node, _convert_="all")
    except InstantiationException as err:
        raise ValueError(f"{key}._target_={node.get('_target_')!r}: {err}") from err
    if name_key is not None:
        declared = getattr(type(built), name_key, None)
        if getattr(built, name_key, None) != declared:
            raise ValueError(f"{key}.{name_key}={node.get(name_key)!r}: {key}._target_={node.get('_target_')} is "
                             f"{key}={declared}; {key}.{name_key} only records that name: choose another with "
                             f"{key}={node.get(name_key)}")
    return built


def reader(cfg: DictConfig):
    """The `dataset.reader` of `cfg` (`data.sources.Reader`): its class by `_target_`, its options the other keys."""
    return component(cfg.dataset.reader, "dataset.reader")


def peft_method(cfg: DictConfig):
    """The `peft=` method of `cfg` (`encoders.peft_wrap.PeftMethod`), its knobs the group's other keys."""
    return component(cfg.peft, "peft", "method")


def tracker_of(cfg: DictConfig):
    """The `logger=` tracker class's instance (`tracking.Tracker`), its settings the group's other keys."""
    return component(cfg.logger, "logger", "name")


def data_folder(cfg: DictConfig) -> Path:
    """`dataset.dir`, absolute (relative to the data root)."""
    from recsys_fewshot.config import resolve_data_root

    folder = Path(cfg.dataset.dir).expanduser()
    return folder if folder.is_absolute() else resolve_data_root(cfg.dataset.root) / folder


def load_data(cfg: DictConfig):
    from recsys_fewshot.config import resolve_cache_dir, resolve_data_root
    from recsys_fewshot.data.recdata import DataError
    from recsys_fewshot.data.store import load_cached

    source = reader(cfg)
    root = resolve_data_root(cfg.dataset.root)
    folder = data_folder(cfg)
    fetch = source.download  # how the reader installs missing files (MovieLens-100K: its checked download)
    if fetch is not None and not folder.exists() and folder == root / fetch.folder:
        folder = fetch.install(root)
    if not folder.exists():
        raise DataError(f"dataset.dir: folder {folder} does not exist (dataset.root / $RECSYS_FEWSHOT_DATA "
                        f"is {root})")
    return load_cached(source, folder, resolve_cache_dir(cfg.cache_dir))


def encoder_spec(cfg: DictConfig):
    """The `encoder=` group as an `EncoderSpec` (None for encoder=none)."""
    from recsys_fewshot.encoders.spec import EncoderSpec

    spec = EncoderSpec(**OmegaConf.to_container(cfg.encoder, resolve=True))
    return spec if spec.name_or_path is not None else None


def item_texts(cfg: DictConfig, data) -> Optional[list[str]]:
    """Every item's text, rendered once from `dataset.text_template` (null: from every text column of the items
    table, the columns logged); None without an encoder."""
    if cfg.encoder.name_or_path is None:
        return None
    from recsys_fewshot.data.text import check_text_coverage, item_template, render_texts

    items_file = reader(cfg).items_file()
    source = str(data_folder(cfg) / items_file) if items_file else f"dataset.dir={cfg.dataset.dir}"
    template = item_template(data.items, cfg.dataset.text_template, source, log)
    texts = render_texts(data.items, template, list(cfg.dataset.list_columns))
    check_text_coverage(data.items, template, cfg.dataset.missing_text_limit, source)
    return texts


def item_vectors(spec, texts: Optional[list[str]], cache_dir: Path, accelerator) -> tuple[Optional[Any], dict]:
    """Frozen text vectors of every item (None without an encoder), through the embedding cache."""
    if spec is None:
        return None, {"encoder": "none"}
    from recsys_fewshot.encoders.text_encoder import TextEncoder
    from recsys_fewshot.runtime import encode_items

    encoder = TextEncoder(**spec.kwargs(), device=str(accelerator.device))
    vectors, stats = encode_items(encoder, texts, cache_dir, accelerator)  # sharded over ranks
    log.info("item text, e.g.: %r", texts[0] if texts else "")
    log.info("encoder %s (%s): %d texts, %d cached, %d encoded in %.1fs", spec.name_or_path, encoder.path,
             len(texts), stats["hits"], stats["misses"], stats["seconds"])
    return vectors, {"encoder": spec.name_or_path, "path": str(encoder.path), **stats}


def frozen_item_vectors(cfg: DictConfig, data, accelerator) -> tuple[Optional[Any], dict]:
    """`item_vectors` of `cfg`'s encoder and item texts (what `build_run` computes; benchmarks call it alone)."""
    from recsys_fewshot.config import resolve_cache_dir

    return item_vectors(encoder_spec(cfg), item_texts(cfg, data), resolve_cache_dir(cfg.cache_dir), accelerator)


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


def prepare(cfg: DictConfig, data, split, task: str, all_rows: bool) -> Prepared:
    """Targets, histories and exclusions of the split for `task`; `all_rows` (ranking): histories hold every
    row, weighted 1 if relevant else 0, for heads that also read what a user did not like."""
    import numpy as np
    import torch

    from recsys_fewshot.evaluation import TaskSpec, relevant, targets
    from recsys_fewshot.inductive import eval_histories, history_of

    train = split.train
    users, items = train["user"].to_numpy().copy(), train["item"].to_numpy().copy()
    spec = TaskSpec(task=task, positive_threshold=cfg.dataset.positive_threshold,
                    ks=list(cfg.eval.ks), chunk_size=cfg.eval.chunk_size, rank_all=cfg.eval.ranking,
                    candidates=cfg.eval.candidates)
    if cfg.eval.candidates == "sampled":  # the negatives each positive is ranked against: drawn once per user
        from recsys_fewshot.sampled import NegativeSampler

        spec.sampler = NegativeSampler.from_data(data, cfg.eval.num_negatives, cfg.eval.negatives,
                                                 cfg.eval.candidates_seed)
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
    all_rows = task == "ranking" and all_rows
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


def total_steps(cfg: DictConfig, n_train: int, accelerator) -> int:
    """Optimizer steps of the whole run (schedules of PEFT methods that need them, e.g. AdaLoRA's)."""
    from recsys_fewshot.optim import optimizer_steps

    t = cfg.trainer
    per_step = t.batch_size * (1 if t.split_batches else accelerator.num_processes)
    return optimizer_steps(n_train, per_step, t.max_epochs, t.gradient_accumulation_steps, t.limit_train_batches)


def language_model(cfg: DictConfig, n_train: int, accelerator, adapter: Optional[Path] = None):
    """The `llm=` causal language model of a prompt head, made trainable by `peft=` (or, with `adapter`, a
    saved run's trained weights applied), as a `llm.causal.LanguageModel`."""
    from recsys_fewshot.encoders import peft_wrap
    from recsys_fewshot.llm.causal import LanguageModel, load_causal_lm
    from recsys_fewshot.llm.spec import LLMSpec

    spec = LLMSpec(**OmegaConf.to_container(cfg.llm, resolve=True))
    model, tokenizer, path = load_causal_lm(spec.name_or_path, spec.dtype, str(accelerator.device),
                                            spec.quantization)
    method = peft_method(cfg)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter is not None and not (Path(adapter) / "llm.json").is_file():  # a trained model: its weights or an error
        module, method = peft_wrap.load(model, Path(adapter))
    elif method.trains_encoder and adapter is None:
        if spec.quantization != "none":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
        module = method.wrap(model, peft_wrap.ModelKind.CAUSAL_LM, total_steps(cfg, n_train, accelerator),
                             tokenizer_path=str(path))
    else:
        module, method = model.requires_grad_(False), peft_wrap.Frozen()
    lm = LanguageModel(module, tokenizer, spec.max_length, spec.batch_size, method,
                       accelerator.mixed_precision if accelerator.native_amp else None, spec.name_or_path)
    if not method.trains_encoder and spec.quantization == "none":  # a frozen model's answers are kept across runs
        from recsys_fewshot.config import resolve_cache_dir
        from recsys_fewshot.llm.score_cache import ScoreCache

        lm.score_cache = ScoreCache(resolve_cache_dir(cfg.cache_dir), path, lm.numerics)
    log.info("llm %s (%s), peft=%s: %s parameters trainable", spec.name_or_path, path, method.name,
             lm.parameter_counts())
    return lm


def text_tower(cfg: DictConfig, spec, texts: list[str], n_train: int, accelerator, adapter: Optional[Path] = None):
    """The trainable item-text tower of joint training (a `peft` method that trains the encoder; or, with
    `adapter`, a saved run's trained encoder), else None. Item vectors for the user history still come from
    `item_vectors`."""
    method = peft_method(cfg)
    if not method.trains_encoder and adapter is None:
        return None
    if spec is None:
        raise ValueError(f"peft={method.name} trains the text encoder: set an encoder (encoder=minilm)")
    from recsys_fewshot.encoders.trainable import build_tower

    t = cfg.trainer
    steps = total_steps(cfg, n_train, accelerator)
    tower = build_tower(spec, texts, method=method, total_steps=steps, device=str(accelerator.device), adapter=adapter,
                        autocast=accelerator.mixed_precision if accelerator.native_amp else None)  # as training
    log.info("peft=%s: %s encoder parameters trainable", tower.method, tower.parameter_counts())
    return tower


def build_model(cfg: DictConfig, data, prep: Prepared, features, text=None):
    """The `head=` recommender, built by Hydra's `_target_` with the data-derived arguments its constructor takes
    (`text`: the trainable text tower of joint training, or a prompt head's language model)."""
    import numpy as np
    import torch
    from hydra.utils import instantiate

    from recsys_fewshot.models.capabilities import capabilities_of, data_arguments, head_class

    build = instantiate(cfg.head, _partial_=True, _convert_="all")
    extra = {}
    if text is not None:
        extra["llm" if capabilities_of(cfg.head._target_).prompts else "item_text"] = text
    kg = cfg.get("kg")
    if kg is not None and kg.source != "none":  # kg=attributes/triples: a KG embedding trained jointly (kg/joint.py)
        from recsys_fewshot.kg.joint import build_side

        extra["kg"] = build_side(data, kg.source, kg.path, cfg.head.dim, kg.model, kg.weight, kg.margin,
                                 kg.num_negatives, kg.batch_size, kg.aggregate)
    offered = dict(n_users=data.n_users, n_items=data.n_items, item_features=features, history=prep.history,
                   warm_items=prep.warm, known_users=prep.known, global_mean=prep.global_mean)
    takes = set(data_arguments(head_class(cfg.head._target_)))
    if "item_names" in takes:  # prompt heads: how a prompt names each item, and what it calls one
        from recsys_fewshot.data.text import item_template, render_texts

        template = cfg.dataset.get("item_name") or item_template(data.items, cfg.dataset.text_template)
        offered["item_names"] = render_texts(data.items, template, list(cfg.dataset.list_columns))
        offered["item_noun"] = cfg.dataset.get("item_noun") or "item"
    if "sample_sources" in takes:  # the real user behind each sample (samples as users: data/tallrec.py)
        import pandas as pd

        users = data.users
        offered["sample_sources"] = (pd.factorize(users["source_user"])[0] if "source_user" in users.columns
                                     else np.arange(data.n_users))
    if "train_pairs" in takes:  # the training rows (in-context demonstrations are drawn from them)
        offered["train_pairs"] = tuple(torch.as_tensor(x.copy()) for x in
                                       (prep.train_users, prep.train_items, prep.train_targets))
    return build(**{k: v for k, v in offered.items() if k in takes}, **extra)


@dataclass
class Run:
    """A model and everything it is trained and scored on, built from one config by `build_run`."""

    data: Any  # RecData (few-shot CTR: samples as users)
    split: Any  # Split: train / valid / test frames (+ support, candidates)
    task: str
    features: Any  # frozen item text vectors, or None
    encoder_info: dict
    prep: Prepared
    text: Any  # the trainable text tower (joint training), or None
    model: Any
    eval_batch_size: int
    adapt: tuple[int, float] = (0, 0.0)  # split.adapt_steps, split.adapt_lr
    init_info: Optional[dict] = None

    def evaluate(self, accelerator):
        """(valid metrics, the test part's `PartResult`: metrics, pair scores, per-user ranking table)."""
        import torch

        from recsys_fewshot.evaluation import evaluate_frame
        from recsys_fewshot.inductive import using_history

        model, prep, n_items = self.model, self.prep, self.data.n_items
        model.eval()
        cands, hists = prep.candidates or {}, prep.eval_histories
        with torch.no_grad():
            with using_history(model, hists.valid, prep.history):
                valid = evaluate_frame(model, self.split.valid, prep.exclude_valid, n_items, prep.spec, accelerator,
                                       self.eval_batch_size, cands.get("valid")).metrics
            with using_history(model, hists.test, prep.history):
                tested = evaluate_frame(model, self.split.test, prep.exclude_test, n_items, prep.spec, accelerator,
                                        self.eval_batch_size, cands.get("test"))
        return valid, tested

    def adapt_and_test(self, accelerator) -> dict:
        """`split.adapt_steps` > 0: test metrics after fitting a bias and a vector per cold user on their
        support (the trained model frozen); {} otherwise. Reported apart, as `test_adapted`."""
        steps, lr = self.adapt
        if steps <= 0:
            return {}
        import torch

        from recsys_fewshot.evaluation import evaluate_frame
        from recsys_fewshot.inductive import adapt_users, using_history

        prep = self.prep
        with using_history(self.model, prep.eval_histories.test, prep.history):
            adapted = adapt_users(self.model, self.split.support, prep.known.shape[0], steps, lr)
            with torch.no_grad():
                metrics = evaluate_frame(adapted, self.split.test, prep.exclude_test, self.data.n_items, prep.spec,
                                         accelerator, self.eval_batch_size,
                                         (prep.candidates or {}).get("test")).metrics
        return {**metrics, "steps": steps, "lr": lr}


def resolve_task(cfg: DictConfig, split) -> str:
    """`task=`, else the split's (its config's `task`), else the data set's."""
    return cfg.task or split.task or cfg.dataset.task


def build_run(cfg: DictConfig, accelerator, *, adapter: Optional[Path] = None, init: bool = True,
              on_data: Optional[Callable[[Any, Any, str], None]] = None) -> Run:
    """Data, split, item vectors, histories and model of `cfg`. `adapter`: a saved run's trained encoder
    folder (evaluation of a joint-training run); `init`: load `init_from`'s weights (not when the caller
    loads a run's own); `on_data(data, split, task)` runs once the data are read, before any encoding (the
    caller's timing and log line)."""
    from hydra.utils import instantiate

    from recsys_fewshot import settings
    from recsys_fewshot.config import resolve_cache_dir
    from recsys_fewshot.inductive import load_init
    from recsys_fewshot.models.capabilities import capabilities_of, reads_all_rows

    data = load_data(cfg)
    split = instantiate(cfg.split)(data)
    data, split, samples = sample_users(cfg, data, split)  # few-shot CTR samples: each a user of its own
    task = resolve_task(cfg, split)
    settings.check_head(cfg, task)  # what the head declares it can do, before any encoding
    if on_data is not None:
        on_data(data, split, task)
    spec = encoder_spec(cfg)
    texts = item_texts(cfg, data)
    features, encoder_info = item_vectors(spec, texts, resolve_cache_dir(cfg.cache_dir), accelerator)
    head_knobs = OmegaConf.to_container(cfg.head, resolve=True)
    prep = prepare(cfg, data, split, task, reads_all_rows(cfg.head._target_, head_knobs))
    attach_samples(prep, samples)
    if capabilities_of(cfg.head._target_).prompts:  # the language model the head asks (trained by peft=)
        text = language_model(cfg, len(prep.train_users), accelerator, adapter)
    else:  # None unless joint training
        text = text_tower(cfg, spec, texts, len(prep.train_users), accelerator, adapter)
    model = build_model(cfg, data, prep, features, text).to(accelerator.device)
    init_info = load_init(model, cfg.init_from) if cfg.init_from and init else None
    adapt = (int(cfg.split.get("adapt_steps", 0) or 0), float(cfg.split.get("adapt_lr", 0.0) or 0.0))
    return Run(data=data, split=split, task=task, features=features, encoder_info=encoder_info, prep=prep,
               text=text, model=model, eval_batch_size=cfg.trainer.eval_batch_size, adapt=adapt,
               init_info=init_info)


@dataclass
class Training:
    """The loss, optimizer, scheduler and loader of a run, and how to score valid during training."""

    loss_module: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    monitor: str
    evaluate_valid: Callable[[Any], dict]
    options: Any  # engine.FitOptions
    extras: dict = field(default_factory=dict)


def build_optimizer(cfg: DictConfig, loss_module, text, n_train: int, accelerator):
    """(optimizer, scheduler) of `optimizer=`: parameter groups by part (head / trainable encoder), sparse ID
    tables for optimizers that declare `sparse_embeddings`, the learning-rate schedule over all steps."""
    import torch
    from hydra.utils import instantiate

    from recsys_fewshot import optim

    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    lrs = {key: opt.pop(key) for key in ("head_lr", "encoder_lr", "scheduler", "warmup")}
    if opt.get("fused") is None or (opt["fused"] and accelerator.device.type == "cpu"
                                    and tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 4)):
        opt.pop("fused", None)  # unset, or a torch without the fused CPU kernel (2.3): the default kernel
    encoder_params = {id(p) for p in text.parameters()} if text is not None else set()
    groups = optim.param_groups(loss_module.parameters(), lambda p: id(p) in encoder_params, opt["lr"],
                                lrs["head_lr"], lrs["encoder_lr"])
    if optim.sparse_embeddings(opt["_target_"]):  # optimizer=lazy_adamw
        tables = optim.make_embeddings_sparse(loss_module.model, skip=encoder_params)
        log.info("optimizer %s: sparse gradients for %s", opt["_target_"], ", ".join(tables) or "no table")
    optimizer = instantiate(opt)(params=groups)
    t = cfg.trainer
    scheduler = optim.build_scheduler(optimizer, lrs["scheduler"], lrs["warmup"], optim.scheduler_steps(
        n_train, t.batch_size, t.max_epochs, t.gradient_accumulation_steps, t.limit_train_batches,
        accelerator.num_processes, t.split_batches))
    return optimizer, scheduler


def monitor_of(cfg: DictConfig, run: Run) -> str:
    """The metric early stopping follows: `trainer.monitor`, else the task's default; AUC falls back to
    logloss when the valid rows are all of one class."""
    from recsys_fewshot.evaluation import default_monitor, relevant

    monitor = cfg.trainer.monitor or default_monitor(run.task)
    valid = run.split.valid
    if monitor == "auc" and len(valid):
        liked = relevant(valid, run.prep.spec)
        if liked.all() or not liked.any():  # AUC undefined on every epoch: early stopping would never see a best
            if cfg.trainer.monitor:
                raise ValueError(f"trainer.monitor=auc: the {len(valid)} valid rows are all of one class, so AUC is "
                                 "undefined; monitor logloss (or draw another valid set)")
            log.warning("the %d valid rows are all of one class (AUC undefined): early stopping monitors logloss",
                        len(valid))
            monitor = "logloss"
    return monitor


def valid_scorer(run: Run, monitor: str, accelerator, batch_size: int) -> Callable[[Any], dict]:
    """model -> valid metrics, as the loop calls it after each epoch (histories swapped as at test time)."""
    import numpy as np

    from recsys_fewshot.evaluation import pointwise_metrics, predict_pairs, ranking_metrics, resolve_candidates
    from recsys_fewshot.inductive import using_history

    prep, valid, spec, n_items = run.prep, run.split.valid, run.prep.spec, run.data.n_items

    def evaluate_valid(m) -> dict[str, float]:
        with using_history(m, prep.eval_histories.valid, prep.history):
            scores = predict_pairs(m, valid["user"].to_numpy(), valid["item"].to_numpy(), accelerator, batch_size)
            if not np.isfinite(scores).all():
                raise FloatingPointError(f"{int((~np.isfinite(scores)).sum())} valid predictions are NaN or inf")
            out = pointwise_metrics(spec, valid, scores)
            if run.task == "ranking" or monitor not in out:
                candidates = resolve_candidates(spec.candidates, valid, (prep.candidates or {}).get("valid"))
                out.update(ranking_metrics(m, valid, prep.exclude_valid, n_items, spec, accelerator, candidates)[0])
        return out

    return evaluate_valid


def build_training(cfg: DictConfig, run: Run, accelerator, run_dir: Optional[Path] = None,
                   log_epoch: Optional[Callable[[dict, int], None]] = None) -> Training:
    """Loss, optimizer, scheduler, loader and loop options for `run` (`run_dir`: checkpoints and resume)."""
    import torch

    from recsys_fewshot import checkpoint
    from recsys_fewshot.engine import FitOptions, batch_loader
    from recsys_fewshot.models.capabilities import capabilities_of
    from recsys_fewshot.models.objectives import TaskLoss

    prep, model, t = run.prep, run.model, cfg.trainer
    # ranking negatives come from the items seen in training: held-out (cold) items stay unseen until scored
    loss_module = TaskLoss(model, run.task, t.num_negatives, negative_pool=prep.warm.nonzero().squeeze(-1))
    optimizer, scheduler = build_optimizer(cfg, loss_module, run.text, len(prep.train_users), accelerator)
    # copies: the arrays may be read-only views of the cached Arrow tables (torch warns on those)
    users, items, targets = (torch.tensor(x) for x in (prep.train_users, prep.train_items, prep.train_targets))
    loader = batch_loader(users, items, targets,
                          batch_size=t.batch_size, shuffle=True, seed=cfg.seed,
                          groups=users if t.batching == "users" else None)
    monitor = monitor_of(cfg, run)
    kg = getattr(model, "kg", None)

    def kg_epoch() -> dict[str, float]:  # kg=...: the epoch's mean KG loss (unweighted), over processes
        return {"train/kg_loss": float(accelerator.reduce(kg.epoch_loss().to(accelerator.device), reduction="mean"))}

    max_epochs = t.max_epochs
    if capabilities_of(cfg.head._target_).closed_form and max_epochs:  # head=ease: fitted when built
        log.info("head %s is fitted in closed form: no training epochs (trainer.max_epochs=%d ignored)",
                 type(model).__name__, max_epochs)
        max_epochs = 0
    options = FitOptions(
        max_epochs=max_epochs, patience=t.patience, monitor=monitor, grad_clip=t.grad_clip,
        limit_train_batches=t.limit_train_batches, progress=t.progress, log=log_epoch, scheduler=scheduler,
        on_step=run.text.after_optimizer_step if run.text is not None else None,
        checkpoint_dir=run_dir / checkpoint.FOLDER if run_dir is not None else None,
        checkpoint_every=t.checkpoint_every,
        resume_from=checkpoint.resolve(t.resume, run_dir) if run_dir is not None else None,
        resume_rng=t.get("resume_rng", "strict"),
        epoch_extras=kg_epoch if kg is not None else None,
        config=checkpoint.config_fingerprint(cfg) if run_dir is not None else None)
    return Training(loss_module, optimizer, scheduler, loader, monitor,
                    valid_scorer(run, monitor, accelerator, t.eval_batch_size), options)


def accelerator_for(cfg: DictConfig, run_dir: Optional[Path] = None, log_with: Optional[list] = None):
    """The `accelerate.Accelerator` of `trainer.*` (precision, accumulation, batch splitting, CPU)."""
    from accelerate import Accelerator

    from recsys_fewshot import runtime

    t = cfg.trainer
    extra = {"log_with": log_with or None, "project_dir": str(run_dir)} if run_dir is not None else {}
    cpu = runtime.use_cpu(t.cpu)
    return Accelerator(cpu=cpu, **extra, **runtime.accelerator_options(t.mixed_precision, t.gradient_accumulation_steps,
                                                                       t.split_batches, cpu))


def tracker(cfg: DictConfig, run_dir: Path, job):
    """The `logger=` tracker of a run (`job`: `sweeps.job_context()`, its group, tags and name in a sweep)."""
    from recsys_fewshot import tracking

    chosen = tracker_of(cfg)  # a tracking.Tracker: wandb, TensorBoard or none
    init_kwargs = chosen.init_kwargs(run_dir, job.run_name(run_dir.name), group=chosen.group or job.group,
                                     tags=[*job.tags, *chosen.tags], job_type=chosen.job_type or job.job_type)
    return tracking.RunTracker(chosen, init_kwargs)


def tracked_config(cfg: DictConfig, run_dir: Path, job) -> dict:
    """The resolved config as the tracker records it, with the job's place in its sweep."""
    return {**OmegaConf.to_container(cfg, resolve=True),
            "job": {"run_dir": str(run_dir), "sweep_dir": job.sweep_dir, "num": job.job_num,
                    "overrides": job.overrides}}


def training_record(cfg: DictConfig, run: Run, fitted, accelerator) -> dict:
    """metrics.json's `training` entry: how the run trained."""
    from recsys_fewshot import runtime

    return {"peft": cfg.peft.method, "processes": accelerator.num_processes,
            "mixed_precision": runtime.recorded_precision(accelerator.mixed_precision, accelerator.device),
            "updates": fitted.updates,
            "samples_per_second": round(fitted.samples / max(fitted.train_seconds, 1e-9), 1),
            **({"encoder_parameters": run.text.parameter_counts()} if run.text is not None else {})}
