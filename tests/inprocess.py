"""Run training stages in this process, the way the CLI composes them (no subprocess, no Hydra run dir).

`compose(...)` builds the config exactly as `python -m recsys_fewshot.train ...` would; `run_job` calls
`train.run` and writes `.hydra/config.yaml` as Hydra does (evaluate reads it); `stages` gives the pieces
(data, split, prep, text tower, model) so a test can look inside the model before and after training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from recsys_fewshot.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def fresh_accelerator(cfg):
    """An Accelerator for `cfg` (the process-wide Accelerate state reset first, as a new process would)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from recsys_fewshot import runtime

    AcceleratorState._reset_state(reset_partial_state=True)
    t = cfg.trainer
    return Accelerator(cpu=True, **runtime.accelerator_options(t.mixed_precision, t.gradient_accumulation_steps,
                                                               t.split_batches, cpu=True))


def run_job(run_dir: Path, *overrides: str) -> dict:
    """`train.run` in this process; returns metrics.json."""
    from accelerate.state import AcceleratorState
    from omegaconf import OmegaConf

    from recsys_fewshot import train

    cfg = compose(*overrides)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    AcceleratorState._reset_state(reset_partial_state=True)
    train.run(cfg, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


@dataclass
class Stages:
    cfg: Any
    accelerator: Any
    run: Any  # build.Run

    def __getattr__(self, name: str):  # data, split, task, features, prep, text, model: the Run's
        return getattr(self.run, name)

    def train(self, run_dir: Path | None = None):
        from recsys_fewshot import build
        from recsys_fewshot.engine import fit

        t = build.build_training(self.cfg, self.run, self.accelerator, run_dir)
        return fit(t.loss_module, self.run.model, t.optimizer, t.loader, t.evaluate_valid, self.accelerator,
                   t.options)


def stages(*overrides: str) -> Stages:
    """Everything `train.run` builds before fitting (`build.build_run`), for `overrides`."""
    from accelerate.utils import set_seed

    from recsys_fewshot import build

    cfg = compose(*overrides)
    accelerator = fresh_accelerator(cfg)
    set_seed(cfg.seed)
    return Stages(cfg, accelerator, build.build_run(cfg, accelerator))
