"""`python -m recsys_fewshot.train [group=option ...] [key=value ...]`: one run, start to finish.

check the settings -> build the run (data, split, item vectors, model: `build.py`) -> fit with early stopping
on valid (`engine.py`) -> test with the best weights -> write metrics.json, predictions, weights (`results.py`)
and log to the tracker. Returns `optimized_metric` (e.g. valid/rmse; default: the monitored metric on valid),
so sweepers can optimise it.
"""

from __future__ import annotations

import time

_T_IMPORT = time.perf_counter()

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

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


def run(cfg: DictConfig, run_dir: Path) -> float:
    """The whole job; everything it writes goes under `run_dir`."""
    from accelerate.utils import set_seed

    from recsys_fewshot import build, results, rundir, runtime, settings, sweeps
    from recsys_fewshot.engine import fit

    timer = Timer()
    startup = round(timer._t - _T_IMPORT, 3)
    preload = runtime.preload_in_background()  # overlaps with the tracker's start-up and the data
    run_dir.mkdir(parents=True, exist_ok=True)
    job = sweeps.job_context()  # a multirun job's tracker group is its sweep dir's name
    tracker = build.tracker(cfg, run_dir, job)
    accelerator = build.accelerator_for(cfg, run_dir, tracker.log_with)
    run_dir = runtime.shared_run_dir(run_dir, accelerator)  # rank 0's, on every rank
    try:
        # settings first: a refused start leaves a reused run dir's earlier results as they were
        settings.check_settings(cfg)
        settings.check_launch(cfg, accelerator.num_processes, run_dir)
        # one run per folder; the earlier results are set aside until this run has written its own
        with rundir.claim(run_dir, accelerator) as claim:
            tracker.start(accelerator, build.tracked_config(cfg, run_dir, job))
            set_seed(cfg.seed)

            def on_data(data, split, task) -> None:
                timer.lap("data")
                log.info("%s: %d users, %d items; split %s %s; task %s", data.name, data.n_users, data.n_items,
                         split.info.get("protocol"), split.sizes(), task)
                preload.join()  # before the encoder (a cache miss imports transformers) can import beside it

            run = build.build_run(cfg, accelerator, on_data=on_data)
            timer.lap("encode")
            if getattr(run.model, "kg", None) is not None:  # the graph's statistics join the tracker's config
                tracker.store(accelerator, {"kg_stats": run.model.kg.stats})
            training = build.build_training(cfg, run, accelerator, run_dir, tracker.log_epoch(accelerator))
            fitted = fit(training.loss_module, run.model, training.optimizer, training.loader,
                         training.evaluate_valid, accelerator, training.options)
            timer.lap("train")
            valid_metrics, tested = run.evaluate(accelerator)
            timer.lap("eval")
            adapted = run.adapt_and_test(accelerator)
            if adapted:
                timer.lap("adapt")
            timer.seconds["startup"] = startup
            timer.seconds["total"] = round(time.perf_counter() - _T_IMPORT, 3)
            summary = results.summary(run, seed=cfg.seed, split_seed=cfg.split.seed, fit=fitted,
                                      monitor=training.monitor, valid=valid_metrics, tested=tested, adapted=adapted,
                                      seconds=timer.seconds,
                                      training=build.training_record(cfg, run, fitted, accelerator))
            # before any file
            value = sweeps.objective(summary, cfg.optimized_metric, fitted.best.get(training.monitor))
            if accelerator.is_main_process:
                head_state = runtime.head_state(accelerator.unwrap_model(run.model), run.text)
                results.write_results(run_dir, run, OmegaConf.to_yaml(cfg), summary, tested, head_state,
                                      cfg.save_predictions)
                claim.commit()  # this run's results are written: the earlier ones go
                results.print_table(summary)
            tracker.finish(accelerator, summary, fitted.best)
            return value
    except BaseException as exc:
        tracker.mark_failed(accelerator, exc)  # the wandb run ends as failed; the sweep goes on
        raise
    finally:
        accelerator.end_training()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from recsys_fewshot import failures, sweeps

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    sweeps.export_slurm_distributed_env()  # several SLURM tasks (submitit tasks_per_node) -> one DDP group
    # a failed or interrupted job leaves failure.json for the report; a known error prints as its message alone
    with failures.known_errors(), sweeps.record_failure(run_dir):
        sweeps.check_optimized_metric(cfg.optimized_metric)
        return run(cfg, run_dir)


if __name__ == "__main__":
    import sys

    from recsys_fewshot import rundir
    from recsys_fewshot.failures import exit_on_interrupt
    from recsys_fewshot.registry import explain_on_failure
    from recsys_fewshot.runtime import route_hydra_outputs

    sys.argv[1:] = route_hydra_outputs(sys.argv[1:])  # ranks > 0: Hydra's own outputs go to a scratch folder
    with explain_on_failure(sys.argv[1:]), exit_on_interrupt():  # hints after Hydra's error; Ctrl-C: exit 130
        rundir.precheck_command_line(sys.argv[1:])  # before Hydra writes into hydra.run.dir
        main()
