"""`python -m recsys_fewshot.evaluate run_dir=PATH [check=true] [key=value ...]`: score a saved run again.

Reads the run's config (``config.yaml``, written beside the results; ``.hydra/config.yaml`` for older
runs), rebuilds the same split (seeded), the item
vectors (embedding cache) and the model, loads the head weights (``model.safetensors``) and, after joint
training, the trained encoder (``encoder/``: the PEFT adapter through ``PeftModel.from_pretrained``,
BitFit's biases, or the fine-tuned weights), then scores valid and test exactly as training did and
prints them beside ``metrics.json``.

Other ``key=value`` arguments override the saved config (``dataset.root=/elsewhere``, ``cache_dir=...``,
``trainer.eval_batch_size=1024``; ``peft.method=frozen``: the trained head over the untuned encoder).
``check=true`` exits with status 1 when a test metric differs from ``metrics.json`` by more than
``tolerance`` (default 1e-4).

The saved config only ever builds this project's classes (`saved_config.saved_run_config`): the PEFT method and the
tracker are the classes of the names the run recorded, a run saved before readers were chosen by `_target_`
gets the reader of its `dataset.kind`, and any other `_target_` outside `recsys_fewshot` (and torch's
optimizers) is refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

OWN_KEYS = ("run_dir", "check", "tolerance")


def load_run_config(run_dir: Path, overrides: list[str]):
    from omegaconf import OmegaConf

    from recsys_fewshot.saved_config import saved_run_config

    # config.yaml: written with the results (a later, refused start in this dir rewrites .hydra/config.yaml
    # but leaves the results and it alone); .hydra/config.yaml: runs from before it existed
    file = run_dir / "config.yaml"
    if not file.is_file():
        file = run_dir / ".hydra" / "config.yaml"
    if not file.is_file():
        raise FileNotFoundError(f"run_dir={run_dir}: no config.yaml or .hydra/config.yaml (is it a training run "
                                "directory?)")
    def trusted(node):  # today's shape, naming this project's classes only (again after the overrides)
        out = OmegaConf.create(saved_run_config(OmegaConf.to_container(node, resolve=False), str(file)))
        OmegaConf.set_struct(out, True)  # an override of a key the run does not have is a typo: fail, naming it
        return out

    cfg = trusted(OmegaConf.load(file))
    if overrides:
        cfg = trusted(OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)))
    return cfg


def load_trained(run_dir: Path, overrides: Optional[list[str]] = None):
    """(config, `build.Run`, accelerator) of the saved run in `run_dir`: the run rebuilt from its config (this
    project's classes only) with its trained weights loaded; errors name the missing or mismatched file."""
    from accelerate.utils import set_seed

    from recsys_fewshot import build, settings
    from recsys_fewshot.checkpoint import read_tensors
    from recsys_fewshot.results import ENCODER_DIR, WEIGHTS
    from recsys_fewshot.runtime import head_state

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, list(overrides or []))
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"run_dir={run_dir}: no {WEIGHTS} (the run did not finish?)")
    encoder_dir = run_dir / ENCODER_DIR
    trained = build.peft_method(cfg).trains_encoder
    if trained and not encoder_dir.is_dir():
        raise FileNotFoundError(f"run_dir={run_dir}: peft={cfg.peft.method} but no {ENCODER_DIR}/ folder")
    settings.check_settings(cfg)
    # same precision and batching as training (the catalogue pass autocasts under bf16/fp16)
    accelerator = build.accelerator_for(cfg)
    set_seed(cfg.seed)
    run = build.build_run(cfg, accelerator, adapter=encoder_dir if trained else None,
                          init=False)  # the run's own weights are loaded below
    saved = read_tensors(weights, f"run_dir={run_dir}")
    expected = head_state(run.model, run.text)
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise KeyError(f"{weights} does not fit the model the config builds: missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}")
    run.model.load_state_dict(saved, strict=False)
    run.model.to(accelerator.device)
    return cfg, run, accelerator


def evaluate_run(run_dir: Path, overrides: Optional[list[str]] = None) -> dict:
    """{"valid": ..., "test": ...} metrics of the saved run in `run_dir`, recomputed."""
    _, run, accelerator = load_trained(run_dir, overrides)
    valid, tested = run.evaluate(accelerator)
    return {"valid": valid, "test": tested.metrics}


def compare(saved: dict, now: dict) -> tuple[list[str], float]:
    """Table lines (metric, metrics.json, now, |diff|) over the test metrics, and the largest difference."""
    import math

    def number(v) -> Optional[float]:  # None: absent or undefined (metrics.json writes NaN as null)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    def show(v) -> str:
        return f"{v:.6f}" if isinstance(v, (int, float)) else "-"

    lines = [f"{'test metric':<14}{'metrics.json':>14}{'now':>12}{'|diff|':>12}"]
    worst = 0.0
    for name in list(dict.fromkeys([*now, *saved])):
        before, value = number(saved.get(name)), number(now.get(name))
        if before is not None and value is not None:
            diff = abs(before - value)
        elif before is None and value is None and name in saved and name in now:
            diff = 0.0  # undefined both times (e.g. AUC of one class)
        else:
            diff = math.inf  # defined on one side only, or missing from one side: not reproduced
        worst = max(worst, diff)
        lines.append(f"{name:<14}{show(saved.get(name)):>14}{show(now.get(name)):>12}{diff:>12.2e}")
    return lines, worst


def main(argv: Optional[list[str]] = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0] in OWN_KEYS}
    overrides = [a for a in args if a.split("=", 1)[0] not in OWN_KEYS]
    if "run_dir" not in own:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    run_dir = Path(own["run_dir"]).expanduser()
    result = evaluate_run(run_dir, overrides)
    from recsys_fewshot.results import METRICS

    metrics_file = run_dir / METRICS
    saved = json.loads(metrics_file.read_text()).get("test", {}) if metrics_file.is_file() else {}
    lines, worst = compare(saved, result["test"])
    print("\n".join(lines))
    tolerance = float(own.get("tolerance", 1e-4))
    print(f"largest difference from metrics.json: {worst:.2e} (tolerance {tolerance:g})")
    if own.get("check", "false").lower() in ("1", "true", "yes") and (worst > tolerance or not saved):
        print(f"evaluate: the test metrics do not reproduce {metrics_file}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
