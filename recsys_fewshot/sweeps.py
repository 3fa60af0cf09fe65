"""What a job needs to know about the sweep it belongs to, and what it hands back to the sweeper.

- `job_context()`: the Hydra job's place in a sweep (plain data: sweep dir, job number, overrides,
  the chosen config options), from which the tracker takes its group, job type, name and tags.
- `objective()`: the number a sweeper optimises, selected by the `optimized_metric` config key.
- `record_failure()`: a failed or interrupted job leaves `failure.json` (status, error, newest checkpoint,
  traceback) in its run directory,
  so the report lists it; the sweep itself goes on with the other jobs (Hydra runs a whole batch, then
  exits non-zero naming the first failure), and `LogJobFailures` logs each failure as it happens.
- `export_slurm_distributed_env()`: one SLURM job step with several tasks (the submitit launcher's
  `tasks_per_node`) becomes a torch.distributed group that Accelerate picks up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra.experimental.callback import Callback

log = logging.getLogger("recsys_fewshot.sweeps")
METRIC_PARTS = ("valid", "test", "best_valid")
MAX_TAG = 64  # wandb rejects longer tags
TAG_GROUPS = ("dataset", "split", "encoder", "head", "peft", "trainer", "experiment", "hparams_search")


@dataclass
class JobContext:
    """A Hydra job's place in its sweep; all plain values."""

    multirun: bool = False
    sweep_dir: Optional[str] = None
    job_num: Optional[int] = None
    overrides: list[str] = field(default_factory=list)  # this job's command-line overrides, as typed
    choices: dict[str, str] = field(default_factory=dict)  # config group -> chosen option

    @property
    def group(self) -> Optional[str]:
        """The tracker group: the sweep directory's name (every job of one sweep shares it)."""
        return Path(self.sweep_dir).name if self.multirun and self.sweep_dir else None

    @property
    def job_type(self) -> str:
        return "sweep" if self.multirun else "train"

    @property
    def tags(self) -> list[str]:
        tags = [f"{g}={self.choices[g]}" for g in TAG_GROUPS if self.choices.get(g)]
        return [t[:MAX_TAG] for t in tags]

    def run_name(self, default: str) -> str:
        """`<job number>: <overrides>` for a sweep job (what tells it apart in the group), else `default`."""
        if not self.multirun or self.job_num is None:
            return default
        return f"{self.job_num}: {','.join(self.overrides)}"[:128]


def job_context() -> JobContext:
    """The running Hydra job's context; an empty one outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return JobContext()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    choices = {str(k): str(v) for k, v in hc.runtime.choices.items()
               if v is not None and not str(k).startswith(("hydra/", "schema/"))}
    return JobContext(multirun=multirun, sweep_dir=str(hc.sweep.dir) if multirun else None,
                      job_num=int(hc.job.num) if multirun else None, overrides=[str(o) for o in hc.overrides.task],
                      choices=choices)


def check_optimized_metric(name: Optional[str]) -> None:
    """Fail before training when `optimized_metric` cannot name a metric (the metric itself is checked at the end)."""
    if name is None:
        return
    part, _, metric = name.partition("/")
    if part not in METRIC_PARTS or not metric:
        raise ValueError(f"optimized_metric={name!r}: expected <part>/<metric> with part one of "
                         f"{', '.join(METRIC_PARTS)}, e.g. valid/rmse, valid/auc, valid/ndcg@10")


def objective(summary: dict[str, Any], optimized_metric: Optional[str], default: Optional[float]) -> float:
    """The value a sweeper optimises: `summary[part][metric]` for `optimized_metric="part/metric"`, else `default`.

    NaN (e.g. AUC with one class) comes back as NaN: Optuna records such a trial as failed.
    """
    if optimized_metric is None:
        value = default
    else:
        check_optimized_metric(optimized_metric)
        part, _, metric = optimized_metric.partition("/")
        table = summary.get(part) or {}
        if metric not in table:
            raise KeyError(f"optimized_metric={optimized_metric!r}: this run's {part} metrics are "
                           f"{', '.join(sorted(table)) or 'none'}")
        value = table[metric]
    return float("nan") if value is None or not math.isfinite(float(value)) else float(value)


def is_main_process() -> bool:
    """Rank 0 (or no distributed launch): the process that writes files."""
    from recsys_fewshot.runtime import launch_rank

    return launch_rank() == 0


@contextlib.contextmanager
def record_failure(run_dir: Path) -> Iterator[None]:
    """Re-raises any exception after writing `run_dir/failure.json` on the main process: status (failed, or
    interrupted for Ctrl-C), error, the newest checkpoint (a resume's starting point) and the traceback. A run
    folder refused as held by another run or not a run folder gets none (it is not this run's)."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        from recsys_fewshot.rundir import RunDirError

        if is_main_process() and not isinstance(exc, RunDirError):
            from recsys_fewshot.checkpoint import FOLDER, latest
            from recsys_fewshot.tracking import write_json

            interrupted = isinstance(exc, KeyboardInterrupt)
            last = latest(Path(run_dir) / FOLDER)
            write_json(Path(run_dir) / "failure.json", {
                "status": "interrupted" if interrupted else "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "checkpoint": str(last) if last else None,
                "traceback": traceback.format_exc(),
            })
            if interrupted:
                log.warning("interrupted; %s. Details: %s", f"resume from {last} with trainer.resume=true" if last
                            else "no checkpoint to resume from", Path(run_dir) / "failure.json")
        raise


class LogJobFailures(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`): one log line per failed job, when it fails.

    In a sweep the line names the job number and says the sweep goes on; a single run (no job number:
    `hydra.job.num` exists only in multirun) logs the failure and where its failure.json is, so the
    run's train.log records why it ended.
    """

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if getattr(job_return, "status", None) != JobStatus.FAILED:
            return
        from recsys_fewshot.failures import original

        error = original(job_return._return_value)  # the exception (reading .return_value would raise it)
        hydra = job_return.hydra_cfg.hydra
        details = f"{hydra.runtime.output_dir}/failure.json"
        if hydra.get("mode") == RunMode.MULTIRUN:
            log.error("job %s failed (%s: %s); the sweep goes on. Details: %s", hydra.job.num,
                      type(error).__name__, error, details)
        else:
            log.error("run failed (%s: %s). Details: %s", type(error).__name__, error, details)


def export_slurm_distributed_env() -> bool:
    """Inside a SLURM step of several tasks not started by a launcher, export RANK/WORLD_SIZE/MASTER_ADDR...

    (submitit's `TorchDistributedEnvironment`), so Accelerate joins the tasks into one process group.
    Returns whether it did. `accelerate launch` / torchrun set RANK themselves, and then nothing changes.
    """
    # SLURM_STEP_NUM_TASKS: set by srun for the step (a batch script running once has SLURM_NTASKS only)
    if "RANK" in os.environ or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) <= 1 \
            or "SLURM_PROCID" not in os.environ:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    # all GPUs stay visible: Accelerate picks cuda:LOCAL_RANK itself
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    log.info("SLURM step of %d tasks: rank %d of %d, rendezvous %s:%d", env.world_size, env.rank, env.world_size,
             env.master_addr, env.master_port)
    return True
