"""Results on disk (always, atomically) and in an experiment tracker (wandb or TensorBoard, through Accelerate).

`logger=<name>` chooses a tracker class by `_target_` (`conf/logger/<name>.yaml`): `Wandb`, `TensorBoard`,
`NoTracker`, each its `logger` schema (config.py) plus what Accelerate and the run need from it (`Tracker`).
"""

from __future__ import annotations

import json
import math
import netrc
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Optional

from recsys_fewshot.config import NoLoggerConfig, TensorBoardLoggerConfig, WandbLoggerConfig


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN; null means "not defined" (e.g. AUC with one class)
    return obj


def write_json(path: Path, obj: Any) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
            f.write("\n")
    return _atomic(path, write)


def write_text(path: Path, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return _atomic(path, write)


def write_parquet(path: Path, frame) -> Path:
    return _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_file(path: Path, write) -> Path:
    """`write(tmp)` fills a temporary file beside `path` (e.g. in chunks), renamed onto `path` once complete."""
    return _atomic(path, write)


def write_safetensors(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return _atomic(path, lambda tmp: save_file(tensors, tmp))


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def wandb_mode(mode: Optional[str]) -> str:
    """The configured mode, else $WANDB_MODE, else online with an API key and offline without."""
    if mode:
        if mode not in ("online", "offline", "disabled"):
            raise ValueError(f"logger.mode={mode!r}: expected online, offline or disabled")
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_has_api_key() else "offline")


class Tracker:
    """An experiment tracker as `logger._target_` names it: what Accelerate needs to start it (`log_with`,
    `init_kwargs`), how the config is shaped for it (`config`), and what it does with a failure and the final
    numbers. Each concrete class adds the `logger` schema's fields (project, mode, group, tags, ...)."""

    name: str
    project: str
    log_with: ClassVar[Optional[str]] = None  # Accelerate's tracker (`Accelerator(log_with=...)`); None: no tracker

    def init_kwargs(self, run_dir: Path, run_name: str, group: Optional[str], tags: list[str],
                    job_type: Optional[str]) -> dict[str, Any]:
        """Accelerate's `init_trackers(init_kwargs=...)` for a run in `run_dir` (group, tags and job type merged
        from `logger.*` and the job's place in its sweep)."""
        return {}

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The resolved config as the tracker takes it."""
        return config

    def mark_failed(self, accelerator, error: BaseException) -> None:
        """Record that the run raised `error` (main process, trackers started)."""

    def set_summary(self, accelerator, values: dict[str, Any]) -> None:
        """Final numbers into the tracker's run summary (main process, trackers started)."""


class Wandb(Tracker, WandbLoggerConfig):
    """Weights & Biases: offline unless an API key is configured (`wandb_mode`); a failed run ends with exit code 1."""

    log_with = "wandb"

    def init_kwargs(self, run_dir, run_name, group, tags, job_type):
        kwargs = {"dir": str(run_dir), "mode": wandb_mode(self.mode), "name": run_name,
                  "tags": list(dict.fromkeys(tags)), "group": group, "job_type": job_type, "entity": self.entity,
                  "reinit": "finish_previous", "settings": {"quiet": True}}
        return {self.log_with: {k: v for k, v in kwargs.items() if v is not None}}

    def mark_failed(self, accelerator, error: BaseException) -> None:
        run = accelerator.get_tracker(self.log_with, unwrap=True)
        run.summary["error"] = f"{type(error).__name__}: {error}"[:1000]
        run.finish(exit_code=1)  # Accelerate's end_training() after this is a no-op for wandb

    def set_summary(self, accelerator, values: dict[str, Any]) -> None:
        accelerator.get_tracker(self.log_with, unwrap=True).summary.update(_jsonable(values))


class TensorBoard(Tracker, TensorBoardLoggerConfig):
    """TensorBoard event files under the Accelerator's project dir (the run dir) / `logger.project`; the config
    as hparams, which take scalars only."""

    log_with = "tensorboard"

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Flat `a.b.c` scalars; lists and None as JSON text."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(node, (bool, int, float, str)):
                flat[prefix] = node
            else:  # lists and None: hparams only take scalars
                flat[prefix] = json.dumps(_jsonable(node))
        walk("", config)
        return flat

    def mark_failed(self, accelerator, error: BaseException) -> None:
        accelerator.get_tracker(self.log_with, unwrap=True).add_text("error", f"{type(error).__name__}: {error}")


class NoTracker(Tracker, NoLoggerConfig):
    """`logger=none`: nothing is tracked (metrics.json and the result files are still written)."""


def flatten(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def set_summary(accelerator, values: dict[str, Any]) -> None:
    """Final numbers into the tracker's run summary (wandb), on the main process."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            tracker.tracker.summary.update(_jsonable(values))


class RunTracker:
    """The experiment tracker of one run, as the train loop uses it: `log_with` and `init_kwargs` for
    Accelerate, then `start` (the resolved config), `store` (more config), `finish` (final numbers) or
    `mark_failed`."""

    def __init__(self, tracker: Tracker, init_kwargs: dict):
        self.tracker, self.init_kwargs = tracker, init_kwargs
        self.log_with = [tracker.log_with] if tracker.log_with else []

    def start(self, accelerator, config: dict[str, Any]) -> None:
        if self.log_with:
            accelerator.init_trackers(self.tracker.project, config=self.tracker.config(config),
                                      init_kwargs=self.init_kwargs)

    def store(self, accelerator, config: dict[str, Any]) -> None:
        if self.log_with:
            for tracker in accelerator.trackers:
                tracker.store_init_configuration(self.tracker.config(config))

    def log_epoch(self, accelerator):
        """The loop's per-epoch callback (None without a tracker)."""
        if not self.log_with:
            return None
        return lambda row, step: accelerator.log(row, step=step)

    def _started(self, accelerator) -> bool:
        return bool(self.log_with) and accelerator.is_main_process and bool(accelerator.trackers)

    def mark_failed(self, accelerator, error: BaseException) -> None:
        """A job that raised: the tracker records it (the wandb run ends with exit code 1 and the error in its
        summary), when it was started."""
        if self._started(accelerator):
            self.tracker.mark_failed(accelerator, error)

    def finish(self, accelerator, summary: dict[str, Any], best: dict[str, float]) -> None:
        """Test and best-valid metrics logged; test, its standard errors, valid and best valid in the summary."""
        accelerator.log(flatten("test", summary["test"]) | flatten("best_valid", best))
        if self._started(accelerator):
            self.tracker.set_summary(accelerator, {
                **flatten("test", summary["test"]), **flatten("test_se", summary["test_se"]),
                **flatten("valid", summary["valid"]), **flatten("best_valid", best), "best_epoch": summary["best_epoch"]})
