"""Every check of a composed config, run before anything is read, written or trained.

Hydra and the schemas (`config.py`) already refuse unknown keys and wrong types at composition; what is
left here is what a schema cannot say: ranges, combinations (a head and the task, KG, joint training),
and names checked against what the run will report. Each error names its key and, where there is one,
the fix.
"""

from __future__ import annotations

from omegaconf import DictConfig

from recsys_fewshot.models.capabilities import TASKS


def task_of(cfg: DictConfig) -> str:
    """The run's task: `task=`, else the split protocol's, else the data set's."""
    return cfg.task or cfg.split.get("task") or cfg.dataset.task


def _at_least(key: str, value, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ValueError(f"{key}={value!r}: expected an integer >= {low}")


def check_settings(cfg: DictConfig) -> None:
    """Numbers and names that would otherwise fail late (after training) or silently: each error names its key."""
    from recsys_fewshot import build
    from recsys_fewshot.engine import BATCHING
    from recsys_fewshot.metrics import RANKING_METRICS
    from recsys_fewshot.optim import sparse_embeddings

    t, ks = cfg.trainer, list(cfg.eval.ks)
    if not ks:
        raise ValueError("eval.ks=[]: give at least one cut-off, e.g. eval.ks=[10,20]")
    for k in ks:
        _at_least(f"eval.ks (entry {k!r})", k, 1)
    _at_least("eval.chunk_size", cfg.eval.chunk_size, 1)
    if cfg.eval.candidates not in (None, "all", "test_items", "sampled"):
        raise ValueError(f"eval.candidates={cfg.eval.candidates!r}: expected all, test_items, sampled or null (the "
                         "split's choice)")
    if cfg.eval.candidates == "sampled":
        from recsys_fewshot.sampled import SAMPLING

        _at_least("eval.num_negatives", cfg.eval.num_negatives, 1)
        if cfg.eval.negatives not in SAMPLING:
            raise ValueError(f"eval.negatives={cfg.eval.negatives!r}: expected {' or '.join(SAMPLING)} (how "
                             "eval.candidates=sampled draws each user's negatives)")
    for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
        _at_least(f"trainer.{key}", t.get(key), 1)
    for key in ("max_epochs", "limit_train_batches", "patience", "checkpoint_every"):
        _at_least(f"trainer.{key}", t.get(key), 0)
    if "dim" in cfg.head:
        _at_least("head.dim", cfg.head.dim, 1)
    _at_least("peft.top_layers", cfg.peft.get("top_layers"), 0)
    build.tracker_of(cfg)  # logger.name is the name of the tracker logger._target_ names
    if cfg.get("kg") is not None and cfg.kg.source != "none":
        _at_least("kg.num_negatives", cfg.kg.num_negatives, 1)
        _at_least("kg.batch_size", cfg.kg.batch_size, 1)
        if not cfg.kg.weight >= 0:
            raise ValueError(f"kg.weight={cfg.kg.weight}: expected >= 0 (the KG loss's share beside the "
                             "recommendation loss)")
    if t.get("resume_rng", "strict") not in ("strict", "warn"):
        raise ValueError(f"trainer.resume_rng={t.resume_rng!r}: expected strict (a resume refuses missing or "
                         "unreadable RNG states) or warn")
    if t.batching not in BATCHING:
        raise ValueError(f"trainer.batching={t.batching!r}: expected one of {', '.join(BATCHING)}")
    accumulation, limit = t.get("gradient_accumulation_steps") or 1, t.get("limit_train_batches") or 0
    if limit and limit % accumulation:  # a partial accumulation group at the cut would be carried or lost
        raise ValueError(f"trainer.limit_train_batches={limit} must be a multiple of "
                         f"trainer.gradient_accumulation_steps={accumulation}")
    if (t.get("grad_clip") or 0) > 0 and sparse_embeddings(cfg.optimizer._target_):
        raise ValueError(f"trainer.grad_clip={t.grad_clip} with optimizer={cfg.optimizer._target_}: its sparse ID "
                         "gradients cannot be norm-clipped; set trainer.grad_clip=0")
    if cfg.optimized_metric:  # its <part>/ is checked by sweeps; here the metric's name, before any training
        metric = str(cfg.optimized_metric).partition("/")[2]
        known = ["rmse", "mae", "auc", "accuracy", "f1", "logloss"] + [f"{m}@{k}" for m in RANKING_METRICS for k in ks]
        if metric not in known:
            raise ValueError(f"optimized_metric={cfg.optimized_metric!r}: no run reports {metric!r}; metrics are "
                             f"{', '.join(known)} (ranking cut-offs from eval.ks)")
    check_head(cfg, task_of(cfg))


def check_head(cfg: DictConfig, task: str) -> None:
    """What the chosen head declares it can do (`models.capabilities`) against the task, KG, joint training
    and split settings of the run."""
    from recsys_fewshot import build
    from recsys_fewshot.models.capabilities import capabilities_of

    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
    target = cfg.head._target_
    caps = capabilities_of(target)
    name = _head_name(cfg)
    if task not in caps.tasks:
        raise ValueError(f"head={name} supports task {' or '.join(caps.tasks)}, not task={task}: "
                         + ("it ranks items from implicit histories; use task=ranking" if caps.tasks == ("ranking",)
                            else f"use task={caps.tasks[0]} or another head"))
    if cfg.get("kg") is not None and cfg.kg.source != "none" and not caps.kg:
        raise ValueError(f"kg={cfg.kg.source}: head={name} does not take KG vectors (heads whose towers do: "
                         f"{', '.join(_heads_with('kg'))}); use kg=none with this head")
    if build.peft_method(cfg).trains_encoder and not (caps.text_tower or caps.prompts):
        raise ValueError(f"peft={cfg.peft.method}: head={name} reads frozen, cached text vectors and cannot train "
                         f"the encoder; use peft=frozen (joint training works with head="
                         f"{', '.join(_heads_with('text_tower'))}; peft= trains the language model of head="
                         f"{', '.join(_heads_with('prompts'))})")
    if build.peft_method(cfg).trains_encoder and caps.text_tower and not caps.prompts:
        enc = cfg.encoder
        if enc.get("template", "{text}") != "{text}" or enc.get("center", False):
            raise ValueError(f"peft={cfg.peft.method} trains the text encoder on the plain item text: "
                             "encoder.template and encoder.center apply to frozen extraction only; set "
                             "encoder.template='{text}' encoder.center=false, or use peft=frozen")
    if caps.prompts and build.peft_method(cfg).prepended_positions() > 0:
        raise ValueError(f"peft={cfg.peft.method} prepends virtual tokens, which the answer-position scorer of "
                         f"head={name} does not read: use peft=lora (or adalora, ia3, bitfit, full)")
    llm = cfg.get("llm")
    has_llm = llm is not None and llm.get("name_or_path") is not None
    if caps.prompts and not has_llm:
        raise ValueError(f"head={name} asks a language model about each pair: set llm= (e.g. llm=smollm2-135m or "
                         "llm.name_or_path=/path/to/a/causal/lm)")
    if has_llm and not caps.prompts:
        raise ValueError(f"llm={llm.name_or_path}: head={name} reads no prompts, so the language model would be "
                         f"unused; use llm=none, or a head that asks it (head={', '.join(_heads_with('prompts'))})")
    if not caps.full_ranking and cfg.eval.ranking and task != "ranking":
        raise ValueError(f"head={name} scores one prompt per (user, item) pair and cannot rank the whole catalogue "
                         "for every user: set eval.ranking=false")
    if caps.needs_text and cfg.encoder.name_or_path is None:
        raise ValueError(f"head={name} reads item text vectors: set an encoder (e.g. encoder=minilm)")
    steps = int(cfg.split.get("adapt_steps", 0) or 0)
    if steps > 0 and task != "rating":
        raise ValueError(f"split.adapt_steps={steps} fits the cold users' support ratings: it needs task=rating "
                         f"(this run: task={task})")


def _head_name(cfg: DictConfig) -> str:
    """The `head=` option chosen (for messages), else the class name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get("head")
        if choice:
            return str(choice)
    except Exception:  # noqa: BLE001 - outside a Hydra run (tests compose configs themselves)
        pass
    from recsys_fewshot.registry import head_options

    names = [name for name, target in head_options().items() if target == cfg.head._target_]
    return names[0] if names else str(cfg.head._target_).rsplit(".", 1)[-1]


def _heads_with(flag: str) -> list[str]:
    """The `conf/head/` options whose class declares `flag`."""
    from recsys_fewshot.registry import head_options
    from recsys_fewshot.models.capabilities import heads_that

    return heads_that(lambda caps: getattr(caps, flag), head_options())


def check_launch(cfg: DictConfig, processes: int, run_dir) -> None:
    """What depends on the launch: batch sizes that must divide over the processes, and a resume that must
    match the run it continues (checked before the run folder is touched)."""
    from recsys_fewshot import checkpoint, runtime

    t = cfg.trainer
    runtime.check_batch_sizes(processes, t.split_batches, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size)
    checkpoint.preflight(t.resume, run_dir, cfg)  # a resume under another configuration stops here, early
