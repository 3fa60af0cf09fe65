"""What a finished run writes into its run folder, and the summary table it prints.

Files (each written atomically, see `tracking.write_*`):
`metrics.json` (the summary), `config.yaml` (the config of these results), `model.safetensors` (head
weights; the trainable encoder part under `encoder/`), `predictions.parquet` (test pairs and scores),
`per_user.parquet` (per-user test ranking metrics, what `compare` pairs), `ids.parquet` (the raw user and
item ids of the model's indices). `compare`, `report`, `evaluate` and `recommend` read them by the names below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
PER_USER = "per_user.parquet"
RUN_CONFIG = "config.yaml"  # the config of the results beside it (.hydra/config.yaml is the latest start's)
WEIGHTS = "model.safetensors"
ENCODER_DIR = "encoder"
FAILURE = "failure.json"
IDS = "ids.parquet"  # kind (user | item), index (the model's row), id (the data set's raw id)
RESULT_FILES = (METRICS, FAILURE, WEIGHTS, PREDICTIONS, PER_USER, RUN_CONFIG, IDS)


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


def fallback_counts(prep, test, features) -> dict[str, int]:
    """Test rows the model cannot represent (they fall back to biases; see models/heads.py)."""
    import numpy as np

    users_ok = prep.known.numpy().astype(bool)
    items_ok = np.ones(len(prep.warm), bool) if features is not None else prep.warm.numpy().astype(bool)
    tu, ti = test["user"].to_numpy(), test["item"].to_numpy()
    return {"unseen_user_rows": int((~users_ok[tu]).sum()), "unseen_item_rows": int((~items_ok[ti]).sum()),
            "fallback_rows": int((~users_ok[tu] | ~items_ok[ti]).sum())}


def summary(run, *, seed: int, split_seed: Any, fit, monitor: str, valid: dict, tested, adapted: dict,
            seconds: dict, training: dict) -> dict[str, Any]:
    """metrics.json's content for a finished run (`run`: a `build.Run`; `fit`: the loop's `FitResult`)."""
    from recsys_fewshot.evaluation import standard_errors

    spec, test, split, data = run.prep.spec, run.split.test, run.split, run.data
    kg_side = getattr(run.model, "kg", None)
    out = {
        "task": run.task,
        "dataset": data.name,
        "split": {**split.info, **split.sizes(), "protocol": split.info.get("protocol"), "seed": split_seed,
                  "users": data.n_users, "items": data.n_items, **fallback_counts(run.prep, test, run.features)},
        "seed": seed,
        "monitor": monitor,
        "best_epoch": fit.best_epoch,
        "epochs": len(fit.history),
        "valid": valid,
        "test": tested.metrics,
        "test_se": standard_errors(spec, test, tested.scores, tested.per_user),
        "baseline": baseline(spec, test, run.prep.train_targets),
        "encoder": run.encoder_info,
        "seconds": seconds,
    }
    if spec.task == "ranking" or (spec.rank_all and spec.task == "rating"):  # what the ranking metrics ranked
        from recsys_fewshot.sampled import candidates_label

        out["candidates"] = candidates_label(spec, (run.prep.candidates or {}).get("test"))
    if run.init_info:
        out["init_from"] = run.init_info
    if kg_side is not None:
        from recsys_fewshot.kg.joint import run_summary

        out["kg"] = run_summary(kg_side, fit.history)
    if adapted:
        out["test_adapted"] = adapted
    if hasattr(run.model, "prompt_stats"):  # prompt heads: prompts built, history items the budget left out
        out["prompts"] = run.model.prompt_stats()
    out["training"] = training
    return out


def id_map(data):
    """The raw ids behind the model's user and item indices, as `ids.parquet` holds them."""
    import numpy as np
    import pandas as pd

    parts = [pd.DataFrame({"kind": kind, "index": np.arange(len(ids), dtype=np.int64), "id": ids.astype(str)})
             for kind, ids in (("user", data.user_raw_ids()), ("item", data.item_raw_ids()))]
    return pd.concat(parts, ignore_index=True)


def write_results(run_dir: Path, run, config_yaml: str, summary: dict, tested, head_state: dict,
                  save_predictions: bool) -> None:
    """Every result file of a finished run (main process only); metrics.json last, so its presence means
    the rest is there."""
    import pandas as pd

    from recsys_fewshot import tracking
    from recsys_fewshot.evaluation import targets

    data, test = run.data, run.split.test
    tracking.write_text(run_dir / RUN_CONFIG, config_yaml)  # what these results came from
    tracking.write_safetensors(run_dir / WEIGHTS, head_state)
    tracking.write_parquet(run_dir / IDS, id_map(data))  # raw ids of the weights' rows (recommend reads them)
    if run.text is not None:
        run.text.save(run_dir / ENCODER_DIR)  # the adapter (save_pretrained), BitFit biases or whole encoder
    if save_predictions:
        tu, ti = test["user"].to_numpy(), test["item"].to_numpy()
        frame = pd.DataFrame({"user_id": data.user_raw_ids()[tu], "item_id": data.item_raw_ids()[ti],
                              "target": targets(test, run.prep.spec), "score": tested.scores})
        if "source_user" in data.users.columns:  # samples as users: the real user each came from
            frame["source_user"] = data.users["source_user"].to_numpy()[tu]
        tracking.write_parquet(run_dir / PREDICTIONS, frame)
    if len(tested.per_user):  # per-user test ranking metrics: `python -m recsys_fewshot.compare` pairs them
        per_user = tested.per_user.assign(user=data.user_raw_ids()[tested.per_user["user"].to_numpy()])
        tracking.write_parquet(run_dir / PER_USER, per_user.rename(columns={"user": "user_id"}))
    tracking.write_json(run_dir / METRICS, summary)


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
    ranked = f" / candidates {summary['candidates']}" if "candidates" in summary else ""
    print(f"\n{summary['dataset']} / {sizes['protocol']} / task {summary['task']}{ranked}: "
          f"train {sizes['train']}, valid {sizes['valid']}, test {sizes['test']} "
          f"(best epoch {summary['best_epoch']}, {summary['seconds']['total']:.1f}s)")
    print("\n".join(lines))
