"""How a failed run is reported: a known error as its message alone, an interrupt as one line and exit code 130.

A *known* error is one meant for the user: an exception class of this project (`DataError`, `RunDirError`, ...)
or a ValueError / KeyError / FileNotFoundError raised by this project's own code (its checks name the key or
file and the fix). `known_errors()` (around the Hydra task function) turns it into `KnownError`, which Hydra
prints without a traceback; the traceback stays in `failure.json`, and `HYDRA_FULL_ERROR=1` prints it as well.
Anything else (a bug, a library's error) keeps Hydra's traceback. The job still fails as before, so a sweep
goes on with its other jobs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

from hydra.errors import CompactHydraException

PACKAGE = Path(__file__).resolve().parent
INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


class KnownError(CompactHydraException):
    """A user-facing error (`error`, the original) that Hydra prints as its message alone."""

    def __init__(self, error: BaseException):
        self.error = error
        super().__init__(f"{type(error).__name__}: {message(error)}")

    def __reduce__(self):  # pickled back from a launcher's job (submitit): rebuilt from the original
        return type(self), (self.error,)


def message(error: BaseException) -> str:
    """The error's text (a KeyError's without the quotes str() adds)."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]
    return str(error)


def _ours(path: str) -> bool:
    try:
        return Path(path).resolve().is_relative_to(PACKAGE)
    except (OSError, ValueError):
        return False


def is_known(error: BaseException) -> bool:
    """An exception class of this project, or a ValueError / KeyError / FileNotFoundError raised in its code."""
    if any(cls.__module__.startswith("recsys_fewshot.") for cls in type(error).__mro__):
        return True
    if not isinstance(error, (ValueError, KeyError, FileNotFoundError)):
        return False
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and _ours(tb.tb_frame.f_code.co_filename)


def original(error: BaseException) -> BaseException:
    return error.error if isinstance(error, KnownError) else error


@contextlib.contextmanager
def known_errors() -> Iterator[None]:
    """Raise a known error as `KnownError` (from the original, so HYDRA_FULL_ERROR=1 still shows where)."""
    try:
        yield
    except Exception as err:
        if is_known(err):
            raise KnownError(err) from err
        raise


@contextlib.contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT): one line and exit code 130 instead of a traceback (the run recorded it in failure.json)."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted (SIGINT): the run folder's failure.json says what was kept", file=sys.stderr)
        sys.exit(INTERRUPTED)
