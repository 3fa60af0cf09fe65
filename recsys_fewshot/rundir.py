"""One run at a time in a run folder, and an earlier run's results kept until the new run has its own.

- `precheck(path)`: before Hydra writes anything (``hydra.run.dir`` given on the command line): the path is a
  writable folder, a run folder or empty, and no live run holds it.
- `claim(run_dir, accelerator)`: the main process takes the folder's lock (`LOCK`: host, pid, start time, SLURM
  job) and moves the earlier results (`results.RESULT_FILES`, ``encoder/``) into the hidden `ASIDE` folder.
  `Claim.commit()` (after the new results are written) removes them; a run that fails or is interrupted before
  that gets them back. A kill (SIGKILL, out of time) leaves `ASIDE` behind; the next start in the folder puts it
  back first (`recover`).
- A lock is taken over, with a warning, when its process is gone from this host, or when it is this SLURM job's
  own from before a requeue (same SLURM_JOB_ID, maybe another node). A lock from another host is never guessed
  at: the message says which file to delete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

from recsys_fewshot.results import ENCODER_DIR, METRICS, RESULT_FILES

log = logging.getLogger(__name__)
LOCK = ".run.lock"
ASIDE = ".previous-results"
CHECKPOINTS = "checkpoints"  # checkpoint.FOLDER (not imported: that module imports torch)
RUN_MARKERS = (".hydra", CHECKPOINTS, LOCK, ASIDE)


class RunDirError(ValueError):
    """A run folder this run may not use (held by another run, not a run folder, not writable)."""


def _results(folder: Path) -> list[Path]:
    return [folder / n for n in (*RESULT_FILES, ENCODER_DIR) if (folder / n).exists()]


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


# --- the lock ------------------------------------------------------------------------------------------

def holder(run_dir: Path) -> Optional[dict]:
    """The lock's record, or None when the folder is not locked ({} for an unreadable lock file)."""
    return holder_of(Path(run_dir) / LOCK)


def holder_of(lock: Path) -> Optional[dict]:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _alive(record: dict) -> bool:
    """Whether the holder may still run: another host, or a live pid here (an unreadable lock counts as live).
    A lock of this very SLURM job (SLURM_JOB_ID) is an earlier start of it, requeued since: gone."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and record.get("slurm_job") == job and record.get("pid") != os.getpid():
        return False
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return True
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(record: dict) -> str:
    if not record:
        return "an unreadable lock"
    job = f", SLURM job {record['slurm_job']}" if record.get("slurm_job") else ""
    return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}{job}"


def _held_message(run_dir: Path, record: dict) -> str:
    return (f"run folder {run_dir} is in use by another run ({_describe(record)}): one run per folder at a time. "
            f"Wait for it, choose another hydra.run.dir, or, if that run is gone, delete {Path(run_dir) / LOCK}")


def acquire(run_dir: Path) -> Path:
    """Create `run_dir/LOCK` naming this process, or raise RunDirError naming the holder."""
    run_dir = Path(run_dir)
    lock = run_dir / LOCK
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "slurm_job": os.environ.get("SLURM_JOB_ID")}
    for _ in range(5):
        try:  # O_EXCL: of two runs creating it at once, one fails
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:  # a reader that sees it still empty counts it as held
                json.dump(record, f)
            return lock
        found = holder(run_dir)
        if found is None:  # released meanwhile
            continue
        if _alive(found):
            raise RunDirError(_held_message(run_dir, found))
        log.warning("run folder %s: taking over the lock of a run that is gone (%s)", run_dir, _describe(found))
        moved = run_dir / f"{LOCK}.stale-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):  # another taker moved it first
            os.replace(lock, moved)
            if holder_of(moved) != found:  # that taker's fresh lock, not the stale one: put it back
                with contextlib.suppress(FileExistsError):
                    os.link(moved, lock)
            moved.unlink()
    raise RunDirError(f"run folder {run_dir}: could not take {lock} (other runs keep starting in it)")


def release(run_dir: Path) -> None:
    """Remove the lock if this process holds it."""
    found = holder(run_dir)
    if found and found.get("pid") == os.getpid() and found.get("host") == socket.gethostname():
        (Path(run_dir) / LOCK).unlink(missing_ok=True)


# --- earlier results -------------------------------------------------------------------------------------

def recover(run_dir: Path) -> None:
    """An `ASIDE` folder left by a killed run: its results come back unless that run finished (its metrics.json,
    written last, is there: then the set-aside ones are the older)."""
    aside = Path(run_dir) / ASIDE
    if not aside.is_dir():
        return
    if (Path(run_dir) / METRICS).exists():
        shutil.rmtree(aside)
        return
    log.warning("run folder %s: restoring the results of the run before an unfinished one", run_dir)
    restore(run_dir)


def set_aside(run_dir: Path) -> None:
    """Move the earlier results into `ASIDE` (a rename each: nothing is copied or lost)."""
    aside = Path(run_dir) / ASIDE
    found = _results(Path(run_dir))
    if found:
        aside.mkdir()
        for path in found:
            os.replace(path, aside / path.name)


def restore(run_dir: Path) -> None:
    """Put the set-aside results back, replacing whatever this run wrote of its own."""
    run_dir, aside = Path(run_dir), Path(run_dir) / ASIDE
    if not aside.is_dir():
        return
    for path in _results(run_dir):
        _remove(path)
    for path in aside.iterdir():
        os.replace(path, run_dir / path.name)
    aside.rmdir()


def discard(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / ASIDE, ignore_errors=True)


class Claim:
    def __init__(self, run_dir: Path, main: bool):
        self.run_dir, self.main, self.committed = Path(run_dir), main, False

    def commit(self) -> None:
        """The new results are written: the earlier ones go for good."""
        if self.main:
            discard(self.run_dir)
        self.committed = True


def _take(run_dir: Path) -> None:
    try:
        acquire(run_dir)
    except PermissionError as err:
        raise RunDirError(f"run folder {run_dir} is not writable ({err.strerror}): choose another hydra.run.dir"
                          ) from err
    try:
        recover(run_dir)
        set_aside(run_dir)
    except BaseException:
        release(run_dir)
        raise


@contextlib.contextmanager
def claim(run_dir: Path, accelerator) -> Iterator[Claim]:
    """Hold `run_dir` for this run (every process enters; the main process does the work and tells the others
    whether the folder was refused)."""
    from recsys_fewshot.runtime import broadcast

    error = None
    if accelerator.is_main_process:
        try:
            _take(run_dir)
        except RunDirError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        error = broadcast(error)
    if error is not None:
        raise RunDirError(error)
    held = Claim(run_dir, accelerator.is_main_process)
    try:
        yield held
    except BaseException:
        if held.main and not held.committed:
            restore(run_dir)
        raise
    finally:
        if held.main:
            release(run_dir)


# --- before Hydra ---------------------------------------------------------------------------------------

def precheck(path: Path) -> None:
    """A run folder given on the command line, before Hydra writes into it: a writable folder (or one that can be
    made), empty or a run folder, not held by a live run."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RunDirError(f"hydra.run.dir={path} is a file, not a folder: give a folder for the run's outputs")
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise RunDirError(f"hydra.run.dir={path}: {parent} is a file, not a folder")
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(f"hydra.run.dir={path}: cannot create it, {parent} is not writable")
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"hydra.run.dir={path} is not writable: choose another folder")
    entries = [p.name for p in path.iterdir()]
    if entries and not any(name in entries for name in RUN_MARKERS):
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunDirError(f"hydra.run.dir={path} holds files ({shown}) but is not a run folder (no .hydra/): a run "
                          "would write its results among them. Choose a new or empty folder")
    found = holder(path)
    if found is not None and _alive(found):
        raise RunDirError(_held_message(path, found))


def run_dir_argument(argv: list[str]) -> Optional[Path]:
    """`hydra.run.dir=` of a single run's command line, when given as a plain path (no interpolation)."""
    if any(a in ("-m", "--multirun") or a.lstrip("+").upper() == "HYDRA.MODE=MULTIRUN" for a in argv):
        return None
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra.run.dir" and value and "${" not in value:
            return Path(value.strip("'\""))
    return None


def precheck_command_line(argv: list[str]) -> None:
    """`precheck` of the command line's ``hydra.run.dir``; a refused folder ends the command with its message."""
    import sys

    path = run_dir_argument(argv)
    if path is not None:
        try:
            precheck(path)
        except RunDirError as err:
            sys.exit(f"RunDirError: {err}")
