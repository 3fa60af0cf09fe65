"""`python -m recsys_fewshot.train [group=option ...] [key=value ...]`: one run, start to finish.

seed -> data -> split -> item text -> encoder vectors -> model -> fit (early stopping on valid)
-> test with the best weights -> metrics.json, predictions.parquet, model.safetensors, tracker.
Returns the validation value of the monitored metric, so sweepers can optimise it.
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
    if cfg.peft.method != "frozen":
        raise ValueError(f"peft={cfg.peft.method!r} is not available yet: use peft=frozen")
    from recsys_fewshot.config import resolve_cache_dir
    from recsys_fewshot.data.text import render_texts
    from recsys_fewshot.encoders.cache import encode_cached
    from recsys_fewshot.encoders.text_encoder import TextEncoder

    texts = render_texts(data.items, cfg.dataset.text_template, list(cfg.dataset.list_columns))
    enc = cfg.encoder
    encoder = TextEncoder(enc.name_or_path, pooling=enc.pooling, max_length=enc.max_length,
                          batch_size=enc.batch_size, normalize=enc.normalize, dtype=enc.dtype,
                          device=str(accelerator.device))
    vectors, stats = encode_cached(encoder, texts, resolve_cache_dir(cfg.cache_dir))
    log.info("item text, e.g.: %r", texts[0] if texts else "")
    log.info("encoder %s: %d texts, %d cached, %d encoded in %.1fs", enc.name_or_path, len(texts),
             stats["hits"], stats["misses"], stats["seconds"])
    return vectors, {"encoder": enc.name_or_path, **stats}


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


def prepare(cfg: DictConfig, data, split, task: str) -> Prepared:
    import numpy as np
    import pandas as pd
    import torch

    from recsys_fewshot.data.recdata import UserHistory
    from recsys_fewshot.evaluation import TaskSpec, targets

    train, valid = split.train, split.valid
    users, items = train["user"].to_numpy().copy(), train["item"].to_numpy().copy()
    spec = TaskSpec(task=task, positive_threshold=cfg.dataset.positive_threshold,
                    ks=list(cfg.eval.ks), chunk_size=cfg.eval.chunk_size, rank_all=cfg.eval.ranking)
    y = targets(train, spec)
    if task == "rating":
        if np.isnan(y).any():
            raise ValueError(f"task=rating needs explicit ratings; {data.name} is implicit: use task=ranking")
        spec.rating_range = (float(y.min()), float(y.max()))
        global_mean = float(y.mean())
    elif task == "ctr":
        rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        global_mean = float(np.log(rate / (1 - rate)))
    else:
        global_mean = 0.0
        keep = y > 0  # ranking trains on the relevant interactions
        users, items, y = users[keep], items[keep], y[keep]
    warm = torch.zeros(data.n_items)
    warm[torch.as_tensor(items)] = 1.0
    known = torch.zeros(data.n_users)
    known[torch.as_tensor(users)] = 1.0
    seen = pd.concat([train, valid])
    return Prepared(
        spec=spec, train_users=users, train_items=items, train_targets=y, global_mean=global_mean,
        warm=warm, known=known, history=UserHistory.from_pairs(users, items, data.n_users),
        exclude_valid=UserHistory.from_pairs(train["user"].to_numpy(), train["item"].to_numpy(), data.n_users),
        exclude_test=UserHistory.from_pairs(seen["user"].to_numpy(), seen["item"].to_numpy(), data.n_users))


def build_model(cfg: DictConfig, data, prep: Prepared, features):
    """The `head=` recommender, built by Hydra's `_target_` with the data-derived arguments."""
    from hydra.utils import instantiate

    build = instantiate(cfg.head, _partial_=True, _convert_="all")
    return build(n_users=data.n_users, n_items=data.n_items, item_features=features, history=prep.history,
                 warm_items=prep.warm, known_users=prep.known, global_mean=prep.global_mean)


def train_model(cfg: DictConfig, model, prep: Prepared, valid, n_items: int, task: str, accelerator, log_with):
    import torch
    from hydra.utils import instantiate

    from recsys_fewshot.engine import batch_loader, fit
    from recsys_fewshot.evaluation import default_monitor, pointwise_metrics, predict_pairs, ranking_metrics
    from recsys_fewshot.models.objectives import TaskLoss

    loss_module = TaskLoss(model, task, cfg.trainer.num_negatives)
    optimizer = instantiate(cfg.optimizer)(params=[p for p in loss_module.parameters() if p.requires_grad])
    loader = batch_loader(torch.as_tensor(prep.train_users), torch.as_tensor(prep.train_items),
                          torch.as_tensor(prep.train_targets), batch_size=cfg.trainer.batch_size, shuffle=True,
                          seed=cfg.seed)
    monitor = cfg.trainer.monitor or default_monitor(task)
    spec = prep.spec

    def evaluate_valid(m) -> dict[str, float]:
        scores = predict_pairs(m, valid["user"].to_numpy(), valid["item"].to_numpy(), accelerator,
                               cfg.trainer.eval_batch_size)
        out = pointwise_metrics(spec, valid, scores)
        if task == "ranking" or monitor not in out:
            out.update(ranking_metrics(m, valid, prep.exclude_valid, n_items, spec, accelerator)[0])
        return out

    def log_epoch(row: dict, step: int) -> None:
        accelerator.log(row, step=step)

    result = fit(loss_module, model, optimizer, loader, evaluate_valid, accelerator,
                 max_epochs=cfg.trainer.max_epochs, patience=cfg.trainer.patience, monitor=monitor,
                 grad_clip=cfg.trainer.grad_clip, limit_train_batches=cfg.trainer.limit_train_batches,
                 progress=cfg.trainer.progress, log=log_epoch if log_with else None)
    return result, monitor


def fallback_counts(prep: Prepared, test, features) -> dict[str, int]:
    """Test rows the model cannot represent (they fall back to biases; see models/heads.py)."""
    import numpy as np

    users_ok = prep.known.numpy().astype(bool)
    items_ok = np.ones(len(prep.warm), bool) if features is not None else prep.warm.numpy().astype(bool)
    tu, ti = test["user"].to_numpy(), test["item"].to_numpy()
    return {"unseen_user_rows": int((~users_ok[tu]).sum()), "unseen_item_rows": int((~items_ok[ti]).sum()),
            "fallback_rows": int((~users_ok[tu] | ~items_ok[ti]).sum())}


def run(cfg: DictConfig, run_dir: Path) -> float:
    """The whole job; everything it writes goes under `run_dir`."""
    import pandas as pd
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from hydra.utils import instantiate

    from recsys_fewshot import tracking
    from recsys_fewshot.evaluation import evaluate_frame, targets
    from recsys_fewshot.models.objectives import TASKS

    timer = Timer()
    startup = round(timer._t - _T_IMPORT, 3)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_with, init_kwargs = tracking.tracker_setup(
        cfg.logger.name, run_dir, cfg.logger.mode, cfg.logger.group, list(cfg.logger.tags),
        cfg.logger.entity, run_dir.name)
    accelerator = Accelerator(cpu=cfg.trainer.cpu, mixed_precision=cfg.trainer.mixed_precision,
                              log_with=log_with or None, project_dir=str(run_dir))
    try:
        if log_with:
            accelerator.init_trackers(cfg.logger.project, config=OmegaConf.to_container(cfg, resolve=True),
                                      init_kwargs=init_kwargs)
        set_seed(cfg.seed)

        data = load_data(cfg)
        split = instantiate(cfg.split)(data)
        task = cfg.task or split.task or cfg.dataset.task
        if task not in TASKS:
            raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
        timer.lap("data")
        log.info("%s: %d users, %d items; split %s %s; task %s", data.name, data.n_users, data.n_items,
                 split.info.get("protocol"), split.sizes(), task)

        features, enc_info = item_vectors(cfg, data, accelerator)
        timer.lap("encode")

        prep = prepare(cfg, data, split, task)
        model = build_model(cfg, data, prep, features).to(accelerator.device)
        result, monitor = train_model(cfg, model, prep, split.valid, data.n_items, task, accelerator, log_with)
        timer.lap("train")

        model.eval()
        spec, valid, test = prep.spec, split.valid, split.test
        with torch.no_grad():
            valid_metrics = evaluate_frame(model, valid, prep.exclude_valid, data.n_items, spec, accelerator,
                                           cfg.trainer.eval_batch_size)[0]
            test_metrics, scores = evaluate_frame(model, test, prep.exclude_test, data.n_items, spec, accelerator,
                                                  cfg.trainer.eval_batch_size)
        timer.lap("eval")

        timer.seconds["startup"] = startup
        timer.seconds["total"] = round(time.perf_counter() - _T_IMPORT, 3)
        summary = {
            "task": task,
            "dataset": data.name,
            "split": {**split.sizes(), "protocol": split.info.get("protocol"), "seed": cfg.split.seed,
                      "users": data.n_users, "items": data.n_items, **fallback_counts(prep, test, features)},
            "seed": cfg.seed,
            "monitor": monitor,
            "best_epoch": result.best_epoch,
            "epochs": len(result.history),
            "valid": valid_metrics,
            "test": test_metrics,
            "baseline": baseline(spec, test, prep.train_targets),
            "encoder": enc_info,
            "seconds": timer.seconds,
        }
        if accelerator.is_main_process:
            tracking.write_safetensors(run_dir / "model.safetensors", accelerator.unwrap_model(model).state_dict())
            if cfg.save_predictions:
                tu, ti = test["user"].to_numpy(), test["item"].to_numpy()
                frame = pd.DataFrame({"user_id": data.user_raw_ids()[tu], "item_id": data.item_raw_ids()[ti],
                                      "target": targets(test, spec), "score": scores})
                tracking.write_parquet(run_dir / "predictions.parquet", frame)
            tracking.write_json(run_dir / "metrics.json", summary)
            print_table(summary)
        accelerator.log(tracking.flatten("test", test_metrics) | tracking.flatten("best_valid", result.best))
        tracking.set_summary(accelerator, {**tracking.flatten("test", test_metrics),
                                           **tracking.flatten("valid", valid_metrics),
                                           "best_epoch": result.best_epoch})
        return float(result.best.get(monitor, float("nan")))
    finally:
        accelerator.end_training()


def baseline(spec, test, y_train) -> dict[str, float]:
    """The trivial predictor on test: the global mean rating (rating task) or the train positive rate."""
    import numpy as np

    from recsys_fewshot.evaluation import pointwise_metrics

    if spec.task == "ranking" or len(y_train) == 0:
        return {}
    return pointwise_metrics(spec, test, np.full(len(test), float(np.mean(y_train)), np.float32))


def print_table(summary: dict) -> None:
    names = list(dict.fromkeys(list(summary["valid"]) + list(summary["test"])))
    lines = [f"{'metric':<14}{'valid':>10}{'test':>10}"]
    for name in names:
        cells = []
        for part in ("valid", "test"):
            v = summary[part].get(name)
            cells.append(f"{v:>10.4f}" if isinstance(v, float) else f"{'-':>10}")
        lines.append(f"{name:<14}{''.join(cells)}")
    sizes = summary["split"]
    print(f"\n{summary['dataset']} / {sizes['protocol']} / task {summary['task']}: "
          f"train {sizes['train']}, valid {sizes['valid']}, test {sizes['test']} "
          f"(best epoch {summary['best_epoch']}, {summary['seconds']['total']:.1f}s)")
    print("\n".join(lines))


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    return run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
