"""Training checkpoints for kill-and-resume: ``accelerator.save_state`` plus the loop's own state.

A checkpoint is a folder ``<run_dir>/checkpoints/step-<optimizer step>/`` holding what Accelerate saves
(model, optimizer, scheduler, each process's RNG states, gradient-accumulation counter) and, written by
the main process only, ``loop.json`` (epoch, batches done in it, counters, early-stopping state,
history) and ``loop.safetensors`` (the shuffling generator's state at the start of the epoch, each
process's running loss, the best weights so far). It is written under a temporary name and renamed
once every process has finished, so a kill never leaves a half-written checkpoint behind; only the
newest one is kept.

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


def load(accelerator, folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what Accelerate saved into the prepared objects; returns (loop state, loop tensors)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    loop = json.loads((folder / LOOP_JSON).read_text())
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
