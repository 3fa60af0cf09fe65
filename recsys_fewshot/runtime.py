"""One command on 1 or N processes (``torchrun``/``accelerate launch``): one run directory, one cache write.

- **Run directory.** Hydra resolves ``hydra.run.dir`` (``outputs/${now:...}``) in every process before
  any process group exists, so N ranks would make N directories. Ranks other than 0 therefore send
  Hydra's own outputs to a throwaway folder (:func:`route_hydra_outputs`, before Hydra starts) and, once
  Accelerate has joined the processes, adopt rank 0's directory (:func:`shared_run_dir`). This works
  for any launcher and across nodes, with or without an explicit ``hydra.run.dir``.
- **Frozen extraction.** :func:`encode_items` lets rank 0 alone read the embedding cache and decide what
  is missing; every rank encodes a contiguous slice of the missing texts; the slices are gathered in
  order, rank 0 writes the one new cache shard, and all ranks receive the vectors.
- **Accelerator options** (:func:`accelerator_options`): mixed precision, gradient accumulation,
  ``split_batches`` (the batch size is the global batch, so a run does not depend on N) and DDP without
  per-step buffer broadcasts (the towers' buffers are constant data: text vectors, histories, tokens).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)
RANK_ENV = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")
PRECISIONS = ("auto", "no", "bf16", "fp16")
_HYDRA_OUTPUT_KEYS = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.output_subdir=", "hydra/job_logging=",
                      "hydra/hydra_logging=")


def preload_in_background() -> threading.Thread:
    """Import, in a thread, what the first torch optimizer imports (torch._dynamo: about 1.3 s on this CPU),
    while the main thread waits on the tracker's start-up or reads data. Join it before other torch imports."""
    def work() -> None:
        try:
            import torch._dynamo  # noqa: F401
        except Exception:  # noqa: BLE001 - only a head start: the optimizer imports it again if this failed
            pass

    thread = threading.Thread(target=work, name="preload", daemon=True)
    thread.start()
    return thread


def launch_rank() -> int:
    """This process's global rank as the launcher set it (0 when not launched as several processes)."""
    for key in RANK_ENV:
        value = os.environ.get(key)
        if value not in (None, ""):
            return int(value)
    return 0


def route_hydra_outputs(argv: list[str]) -> list[str]:
    """Command-line overrides for this process: on ranks > 0, Hydra writes its run dir, ``.hydra/`` and log
    file into a temporary folder (removed at exit) and logs nothing; rank 0's arguments are unchanged."""
    rank = launch_rank()
    if rank == 0:
        return list(argv)
    scratch = tempfile.mkdtemp(prefix=f"recsys-fewshot-rank{rank}-")
    atexit.register(shutil.rmtree, scratch, True)
    kept = [a for a in argv if not a.lstrip("+").startswith(_HYDRA_OUTPUT_KEYS)]
    return kept + [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
                   "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def shared_run_dir(run_dir: Path, accelerator) -> Path:
    """Rank 0's run directory, on every rank."""
    if accelerator.num_processes == 1:
        return Path(run_dir)
    from accelerate.utils import broadcast_object_list

    box = [str(run_dir)]
    broadcast_object_list(box, from_process=0)
    return Path(box[0])


def use_cpu(requested: bool) -> bool:
    """`trainer.cpu`, or True when a launcher started several processes (torchrun: WORLD_SIZE > 1) on a
    machine without CUDA: Accelerate would otherwise not join them into one job, and every process would run
    the whole job on its own (twice the work, one result kept)."""
    if requested:
        return True
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and not torch.cuda.is_available():
        log.warning("%s processes launched without CUDA: running them as one job on the CPU (trainer.cpu=true)",
                    os.environ["WORLD_SIZE"])
        return True
    return False


def recorded_precision(mixed_precision: str, device) -> str:
    """What a run really computes in: fp16 autocast does not exist on the CPU (Accelerate runs it as fp32)."""
    if mixed_precision == "fp16" and getattr(device, "type", str(device)) == "cpu":
        log.warning("trainer.mixed_precision=fp16 on the CPU runs in fp32 (no fp16 autocast there); recorded as 'no'")
        return "no"
    return mixed_precision


def resolve_precision(mixed_precision: str, cpu: bool = False) -> str:
    """`trainer.mixed_precision=auto`: bf16 on a CUDA GPU that supports it, else no (fp32: on CPUs without AMX
    bf16 is slower than fp32)."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"trainer.mixed_precision={mixed_precision!r}: expected one of {', '.join(PRECISIONS)}")
    if mixed_precision != "auto":
        return mixed_precision
    gpu = not cpu and torch.cuda.is_available()
    return "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"


def accelerator_options(mixed_precision: str, gradient_accumulation_steps: int, split_batches: bool,
                        cpu: bool = False) -> dict:
    """Keyword arguments of ``accelerate.Accelerator`` for the ``trainer.*`` settings."""
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    mixed_precision = resolve_precision(mixed_precision, cpu)
    if gradient_accumulation_steps < 1:
        raise ValueError(f"trainer.gradient_accumulation_steps={gradient_accumulation_steps}: expected >= 1")
    return {"mixed_precision": mixed_precision, "gradient_accumulation_steps": gradient_accumulation_steps,
            "dataloader_config": DataLoaderConfiguration(split_batches=split_batches),
            "kwargs_handlers": [_ddp_without_buffer_sync(DistributedDataParallelKwargs)]}


def _ddp_without_buffer_sync(base: type) -> Any:
    """DDP options that skip the per-forward buffer broadcast: ``forward_sync_buffers=False`` where torch has
    it (Accelerate's handler has no such field yet, so its keyword arguments are given directly), else the
    older ``broadcast_buffers=False``."""
    import inspect

    if "forward_sync_buffers" not in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters:
        return base(broadcast_buffers=False)
    handler = base()
    handler.to_kwargs = lambda: {"forward_sync_buffers": False}
    return handler


def check_batch_sizes(num_processes: int, split_batches: bool, **sizes: int) -> None:
    """With split batches every batch size must divide evenly over the processes."""
    if not split_batches or num_processes == 1:
        return
    for key, size in sizes.items():
        if size % num_processes:
            raise ValueError(f"trainer.{key}={size} does not split over {num_processes} processes "
                             f"(trainer.split_batches=true): use a multiple of {num_processes}")


def head_state(model: torch.nn.Module, text: Optional[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """`model`'s state dict without the text tower's tensors (those are saved by the tower itself)."""
    state = model.state_dict()
    if text is None:
        return state
    prefix = next((f"{name}." for name, module in model.named_modules() if module is text), None)
    if prefix is None:
        raise ValueError("the trained text encoder is not part of the model: this head ignores peft= (use peft=frozen)")
    return {k: v for k, v in state.items() if not k.startswith(prefix)}


# --- frozen extraction sharded over processes ------------------------------------------------------

def broadcast(message: Any) -> Any:
    """Rank 0's `message`, on every rank (every rank calls this)."""
    from accelerate.utils import broadcast_object_list

    box = [message]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _encode_slice(encoder, texts: list[str], accelerator) -> tuple[torch.Tensor, list[int]]:
    """This rank's contiguous slice of `texts`, encoded; gathered in rank order on every rank."""
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    bounds = [len(texts) * r // world for r in range(world + 1)]
    mine = texts[bounds[rank]:bounds[rank + 1]]
    before = encoder.forward_calls
    try:
        part = (encoder.encode(mine) if mine else torch.zeros(0, encoder.dim), None)
    except Exception as err:  # noqa: BLE001 - every rank must reach the gather, or the others hang
        part = (None, f"rank {rank}: {type(err).__name__}: {err}")
    parts = gather_object([(part[0], part[1], encoder.forward_calls - before)])
    errors = [p[1] for p in parts if p[1] is not None]
    if errors:
        raise RuntimeError("encoding the item texts failed on " + "; ".join(errors))
    return torch.cat([p[0] for p in parts]), [p[2] for p in parts]


class _ShardedEncoder:
    """What ``encode_cached`` sees on rank 0: the encoder, with ``encode`` spread over every rank."""

    def __init__(self, encoder, accelerator):
        self._encoder, self._accelerator = encoder, accelerator
        self.forward_calls = 0  # all ranks together
        self.calls_by_rank = [0] * accelerator.num_processes

    def __getattr__(self, name: str) -> Any:  # identity, dim, ...
        return getattr(self._encoder, name)

    def encode(self, texts: list[str]) -> torch.Tensor:
        broadcast(("encode", list(texts)))
        vectors, calls = _encode_slice(self._encoder, list(texts), self._accelerator)
        self.forward_calls += sum(calls)
        self.calls_by_rank = [a + b for a, b in zip(self.calls_by_rank, calls)]
        return vectors


def encode_items(encoder, texts: list[str], cache_dir: Optional[Path], accelerator) -> tuple[torch.Tensor, dict]:
    """``encode_cached`` on one process; on several, rank 0 reads/writes the cache and the ranks share the
    encoding of what is missing (same vectors and stats on every rank)."""
    from recsys_fewshot.encoders.cache import encode_cached

    if accelerator.num_processes == 1:
        return encode_cached(encoder, texts, cache_dir)
    if accelerator.is_main_process:
        sharded = _ShardedEncoder(encoder, accelerator)
        try:
            vectors, stats = encode_cached(sharded, texts, cache_dir)
            stats["forward_calls_by_rank"] = sharded.calls_by_rank
        except BaseException as err:
            broadcast(("error", f"{type(err).__name__}: {err}"))
            raise
        broadcast(("done", (vectors, stats)))
        return vectors, stats
    while True:
        kind, payload = broadcast(None)
        if kind == "encode":
            try:
                _encode_slice(encoder, payload, accelerator)
            except RuntimeError:
                continue  # rank 0 raises and tells every rank
        elif kind == "error":
            raise RuntimeError(f"the main process failed to prepare the item vectors: {payload}")
        else:
            return payload
