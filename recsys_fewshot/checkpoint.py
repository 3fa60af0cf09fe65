"""Training checkpoints for kill-and-resume: ``accelerator.save_state`` plus the loop's own state.

A checkpoint is a folder ``<run_dir>/checkpoints/step-<optimizer step>/`` holding what Accelerate saves
(model, optimizer, scheduler, each process's RNG states, gradient-accumulation counter) and, written by
the main process only, ``loop.json`` (epoch, batches done in it, counters, early-stopping state,
history) and ``loop.safetensors`` (the shuffling generator's state at the start of the epoch, each
process's running loss, the best weights so far): the training loop's ``engine.ResumeState``, which
saves and restores itself through `save` and `load`. It is written under a temporary name and renamed
once every process has finished, so a kill never leaves a half-written checkpoint behind; only the
newest one is kept.

``loop.json`` also records the run's configuration (``config_fingerprint``): resuming under another one
(a different head, learning rate, seed, split...) stops with an error listing the keys that differ, since
the restored weights, optimizer state and batch order would silently belong to another experiment. Keys a
resumed run may change (``RESUMABLE_CHANGES``: more epochs, patience, logging, evaluation, where the data
and caches live, the device) are left out of the comparison.

``RECSYS_FEWSHOT_KILL_AFTER_CHECKPOINT=N`` (tests) kills the process with SIGKILL right after its N-th
checkpoint, which is what an out-of-time cluster job looks like.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

FOLDER = "checkpoints"
LOOP_JSON = "loop.json"
LOOP_TENSORS = "loop.safetensors"
KILL_ENV = "RECSYS_FEWSHOT_KILL_AFTER_CHECKPOINT"
_saved = 0
# dotted keys (and their subtrees) a resumed run may change without becoming another experiment
RESUMABLE_CHANGES = ("trainer.resume", "trainer.max_epochs", "trainer.patience", "trainer.progress",
                     "trainer.checkpoint_every", "trainer.eval_batch_size", "trainer.cpu", "logger", "eval",
                     "cache_dir", "dataset.root", "dataset.dir", "kg.path", "encoder.batch_size",
                     "optimizer.fused", "save_predictions", "optimized_metric", "hydra")


def config_fingerprint(cfg) -> dict[str, Any]:
    """The run's resolved configuration as flat ``{dotted.key: value}`` (JSON values), minus RESUMABLE_CHANGES."""
    from omegaconf import OmegaConf

    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if any(prefix == k or prefix.startswith(k + ".") for k in RESUMABLE_CHANGES):
            return
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return json.loads(json.dumps(flat, default=str))  # what loop.json will give back


def check_config(saved: Optional[dict[str, Any]], current: Optional[dict[str, Any]], folder: Path) -> None:
    """Refuse to resume `folder` under a configuration other than the one that saved it."""
    if saved is None or current is None:  # a checkpoint from before fingerprints, or a caller without one
        return
    missing = object()
    diffs = [k for k in sorted(set(saved) | set(current)) if saved.get(k, missing) != current.get(k, missing)]
    if diffs:
        shown = "; ".join(f"{k}: {saved.get(k, '(unset)')!r} -> {current.get(k, '(unset)')!r}" for k in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise ValueError(f"trainer.resume: {folder} was saved by a run with another configuration: {shown}{more}. "
                         "Resume with the same settings, or start a new run directory (trainer.resume=null); "
                         f"keys a resume may change: {', '.join(RESUMABLE_CHANGES)}")


def name(step: int) -> str:
    return f"step-{step:09d}"


def latest(root: Path) -> Optional[Path]:
    """The newest complete checkpoint under `root` (a ``checkpoints`` folder), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / LOOP_JSON).is_file())
    return done[-1] if done else None


def resolve(resume: Optional[str], run_dir: Path) -> Optional[Path]:
    """The checkpoint ``trainer.resume`` points at: true/latest (this run dir's newest), a checkpoint
    folder, or another run dir (its newest). None when there is nothing to resume."""
    if resume is None or str(resume).strip().lower() in ("", "false", "no", "none", "null"):
        return None
    if str(resume).strip().lower() in ("true", "latest", "yes"):
        found = latest(Path(run_dir) / FOLDER)
        if found is None:
            warnings.warn(f"trainer.resume={resume}: no checkpoint in {Path(run_dir) / FOLDER} yet; starting fresh",
                          RuntimeWarning, stacklevel=2)
        return found
    path = Path(str(resume)).expanduser()
    if (path / LOOP_JSON).is_file():
        return path
    found = latest(path / FOLDER)
    if found is None:
        raise FileNotFoundError(f"trainer.resume={resume}: neither a checkpoint folder (with {LOOP_JSON}) nor a "
                                f"run directory with complete checkpoints under {path / FOLDER}")
    return found


def preflight(resume: Optional[str], run_dir: Path, cfg) -> None:
    """Before any work: the checkpoint `resume` points at exists and was saved under `cfg`'s configuration."""
    with warnings.catch_warnings():  # "starting fresh" is said once, when training starts
        warnings.simplefilter("ignore", RuntimeWarning)
        found = resolve(resume, run_dir)
    if found is not None:
        saved = json.loads((found / LOOP_JSON).read_text()).get("config")
        check_config(saved, config_fingerprint(cfg), found)


def save(accelerator, root: Path, step: int, loop: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write checkpoint `step` under `root` (every process calls this: it synchronises them)."""
    global _saved
    from recsys_fewshot import tracking

    root = Path(root)
    final, partial = root / name(step), root / f".{name(step)}.partial"
    if accelerator.is_main_process:
        for stale in root.glob(".step-*.partial"):  # left by a kill during an earlier save
            shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        tracking.write_safetensors(partial / LOOP_TENSORS, tensors)
        # last: its presence marks a complete checkpoint
        tracking.write_json(partial / LOOP_JSON, {**loop, "num_processes": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    _saved += 1
    kill_after = os.environ.get(KILL_ENV)
    if kill_after and _saved >= int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)
    return final


def load(accelerator, folder: Path, config: Optional[dict[str, Any]] = None
         ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what Accelerate saved into the prepared objects; returns (loop state, loop tensors).
    `config`: this run's ``config_fingerprint``, checked against the one saved (nothing is restored on a mismatch)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    loop = json.loads((folder / LOOP_JSON).read_text())
    check_config(loop.get("config"), config, folder)
    saved_by = loop.get("num_processes", accelerator.num_processes)
    if saved_by != accelerator.num_processes:  # the per-process RNG states and batch positions would not fit
        raise ValueError(f"trainer.resume: {folder} was saved by {saved_by} processes, this run has "
                         f"{accelerator.num_processes}: resume with the same number of processes")
    accelerator.load_state(str(folder))
    return loop, load_file(str(folder / LOOP_TENSORS))


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and CUDA)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
