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

Each process's RNG states (Accelerate's ``random_states_<process>.pkl``) must be readable for the resumed run
to draw what the uninterrupted one would have drawn: a missing or unreadable one is refused
(``trainer.resume_rng=strict``, the default) or, with ``trainer.resume_rng=warn``, reported while the run goes on
with the RNG it has. A checkpoint file that cannot be read (a truncated ``model.safetensors``, a corrupt
``loop.json``) is named in the error.

``RECSYS_FEWSHOT_KILL_AFTER_CHECKPOINT=N`` (tests) kills the process right after its N-th checkpoint, with SIGKILL
(what an out-of-time cluster job looks like) or ``RECSYS_FEWSHOT_KILL_SIGNAL`` (e.g. INT: a Ctrl-C).
"""

from __future__ import annotations

import json
import logging
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
KILL_SIGNAL_ENV = "RECSYS_FEWSHOT_KILL_SIGNAL"
RNG_FILE = "random_states_{}.pkl"  # Accelerate's RNG_STATE_NAME, one per process
RESUME_RNG = ("strict", "warn")
log = logging.getLogger(__name__)


class quiet_accelerate:
    """Accelerate's INFO lines of a checkpoint save or load ("Saving current state to ...", one per file) kept
    out of the run's log; its warnings still pass."""

    def __enter__(self):
        self.logger = logging.getLogger("accelerate")
        self.level = self.logger.level
        self.logger.setLevel(max(logging.WARNING, self.level))

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
_saved = 0
# dotted keys (and their subtrees) a resumed run may change without becoming another experiment
RESUMABLE_CHANGES = ("trainer.resume", "trainer.resume_rng", "trainer.max_epochs", "trainer.patience", "trainer.progress",
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


def read_loop(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``loop.json``; an unreadable one is named."""
    path = Path(folder) / LOOP_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"trainer.resume: cannot read {path} ({type(err).__name__}: {err}): the checkpoint is "
                         "damaged; resume from another checkpoint or start a new run directory (trainer.resume=null)"
                         ) from err


def unreadable_files(folder: Path, processes: range | None = None) -> list[str]:
    """`folder`'s files that cannot be read: safetensors headers (a truncated file fails here) and the RNG
    states of `processes` (missing ones too)."""
    from safetensors import safe_open

    bad = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            bad.append(f"{path} ({_short(err)})")
    for index in processes or ():
        reason = rng_problem(Path(folder), index)
        if reason:
            bad.append(reason)
    return bad


def rng_problem(folder: Path, index: int) -> Optional[str]:
    """Why process `index`'s RNG states in `folder` cannot be restored, or None."""
    from accelerate.utils import load

    path = Path(folder) / RNG_FILE.format(index)
    if not path.is_file():
        return f"{path} (missing)"
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol: this file is read again below
            warnings.simplefilter("ignore", UserWarning)
            states = load(path)
        if not isinstance(states["torch_manual_seed"], torch.Tensor) or "random_state" not in states:
            raise ValueError("not Accelerate's RNG states")
    except Exception as err:  # noqa: BLE001 - a pickle can fail in many ways
        return f"{path} ({_short(err)})"
    return None


def _short(err: BaseException) -> str:
    """An error's type and first line (torch's unpickling errors run to a page)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:160]}"


def check_rng(folder: Path, processes: range, mode: str) -> None:
    """The RNG states of `processes` in `folder`: refused when missing or unreadable (`mode` strict), else a warning."""
    if mode not in RESUME_RNG:
        raise ValueError(f"trainer.resume_rng={mode!r}: expected {' or '.join(RESUME_RNG)}")
    problems = [p for p in (rng_problem(folder, i) for i in processes) if p]
    if not problems:
        return
    text = (f"trainer.resume: the random number generator states of {folder} cannot be restored: "
            f"{'; '.join(problems)}")
    if mode == "strict":
        raise ValueError(f"{text}. The resumed run would draw other dropout masks and negatives than the "
                         "uninterrupted one: resume from another checkpoint, or set trainer.resume_rng=warn to "
                         "go on without them")
    log.warning("%s; going on with the RNG states this run was seeded with (trainer.resume_rng=warn): the "
                "results will differ from an uninterrupted run", text)


def preflight(resume: Optional[str], run_dir: Path, cfg) -> None:
    """Before any work: the checkpoint `resume` points at exists, can be read and was saved under `cfg`'s
    configuration."""
    with warnings.catch_warnings():  # "starting fresh" is said once, when training starts
        warnings.simplefilter("ignore", RuntimeWarning)
        found = resolve(resume, run_dir)
    if found is not None:
        loop = read_loop(found)
        check_config(loop.get("config"), config_fingerprint(cfg), found)
        bad = unreadable_files(found)
        if bad:
            raise ValueError(f"trainer.resume: {found} holds files that cannot be read: {'; '.join(bad)}. Resume "
                             "from another checkpoint or start a new run directory (trainer.resume=null)")
        mode = cfg.trainer.get("resume_rng", "strict")
        if mode != "warn":  # strict, or a wrong value (refused by check_rng); warn: said once, when loading
            check_rng(found, range(loop.get("num_processes", 1)), mode)


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
    with quiet_accelerate():
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
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(KILL_SIGNAL_ENV, "KILL")))
    return final


def load(accelerator, folder: Path, config: Optional[dict[str, Any]] = None, resume_rng: str = "strict"
         ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what Accelerate saved into the prepared objects; returns (loop state, loop tensors).
    `config`: this run's ``config_fingerprint``, checked against the one saved (nothing is restored on a mismatch);
    `resume_rng`: what a missing or unreadable RNG state does (`check_rng`)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    loop = read_loop(folder)
    check_config(loop.get("config"), config, folder)
    saved_by = loop.get("num_processes", accelerator.num_processes)
    if saved_by != accelerator.num_processes:  # the per-process RNG states and batch positions would not fit
        raise ValueError(f"trainer.resume: {folder} was saved by {saved_by} processes, this run has "
                         f"{accelerator.num_processes}: resume with the same number of processes")
    index = getattr(accelerator, "process_index", 0)
    check_rng(folder, range(index, index + 1), resume_rng)
    try:
        with quiet_accelerate():
            accelerator.load_state(str(folder))
        return loop, load_file(str(folder / LOOP_TENSORS))
    except Exception as err:  # name the file: the libraries' errors do not
        bad = unreadable_files(folder) or [_short(err)]
        raise ValueError(f"trainer.resume: cannot restore {folder}: {'; '.join(bad)}. Resume from another "
                         "checkpoint or start a new run directory (trainer.resume=null)") from err


def read_tensors(path: Path, key: str) -> dict[str, torch.Tensor]:
    """A safetensors file (a run's model.safetensors, a checkpoint's), its name and `key` in the error when it
    cannot be read (safetensors' own errors name no file)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise ValueError(f"{key}: cannot read {path} ({_short(err)}): the file is damaged or truncated") from err


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and CUDA)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
