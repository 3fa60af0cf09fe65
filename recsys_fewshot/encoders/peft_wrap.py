"""Make a Hugging Face encoder trainable for joint training: PEFT adapters, BitFit, or all weights.

``wrap(model, method, knobs, total_steps)`` leaves exactly the method's parameters trainable:

- ``lora``, ``adalora``, ``ia3``, ``prefix``, ``prompt``: adapters from the ``peft`` library
  (``TaskType.FEATURE_EXTRACTION``), the base weights frozen;
- ``bitfit``: the bias terms only (Ben Zaken et al., 2022), a few lines of ``requires_grad``;
- ``full``: every weight.

The pooler of BERT-style models is never trained: the text vectors pool the last hidden states, so the
pooler gets no gradient (and a parameter without a gradient stalls DDP). ``save``/``load`` write and read
what the method trained: a PEFT adapter with ``save_pretrained``, BitFit's biases as safetensors, the whole
model with ``save_pretrained`` for ``full``.

``peft`` and ``transformers`` are imported inside the functions: the frozen path never needs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

METHODS = ("frozen", "lora", "adalora", "ia3", "prefix", "prompt", "bitfit", "full")
PEFT_METHODS = ("lora", "adalora", "ia3", "prefix", "prompt")
UNUSED_PREFIXES = ("pooler.",)  # modules the text vectors never go through
BITFIT_FILE = "bitfit.safetensors"
METHOD_FILE = "method.json"


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"peft.method={method!r}: expected one of {', '.join(METHODS)}")
    return method


def peft_config(method: str, knobs: dict[str, Any], total_steps: int, tokenizer_path: Optional[str] = None):
    """The ``peft`` config of `method` from the ``peft.*`` knobs (see ``conf/peft/<method>.yaml``)."""
    from peft import (AdaLoraConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig,
                      PromptTuningInit, TaskType)

    task = TaskType.FEATURE_EXTRACTION
    targets = knobs.get("target_modules")
    targets = list(targets) if targets else None  # None: peft's default for the architecture
    if method == "lora":
        return LoraConfig(task_type=task, r=knobs["r"], lora_alpha=knobs["alpha"], lora_dropout=knobs["dropout"],
                          target_modules=targets)
    if method == "adalora":
        if knobs["tinit"] + knobs["tfinal"] >= total_steps:
            raise ValueError(f"peft.tinit + peft.tfinal ({knobs['tinit']} + {knobs['tfinal']}) must be below the "
                             f"run's {total_steps} optimizer steps: lower them or train longer")
        return AdaLoraConfig(task_type=task, init_r=knobs["init_r"], target_r=knobs["target_r"],
                             lora_alpha=knobs["alpha"], lora_dropout=knobs["dropout"], target_modules=targets,
                             tinit=knobs["tinit"], tfinal=knobs["tfinal"], deltaT=knobs["delta_t"],
                             orth_reg_weight=0.0, total_step=total_steps)
    if method == "ia3":
        ff = knobs.get("feedforward_modules")
        return IA3Config(task_type=task, target_modules=targets, feedforward_modules=list(ff) if ff else None)
    if method == "prefix":
        return PrefixTuningConfig(task_type=task, num_virtual_tokens=knobs["num_virtual_tokens"],
                                  prefix_projection=knobs["projection"])
    if method == "prompt":
        text = knobs.get("init_text")
        if text:
            return PromptTuningConfig(task_type=task, num_virtual_tokens=knobs["num_virtual_tokens"],
                                      prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=text,
                                      tokenizer_name_or_path=tokenizer_path)
        return PromptTuningConfig(task_type=task, num_virtual_tokens=knobs["num_virtual_tokens"])
    raise ValueError(f"peft.method={method!r} is not a peft adapter ({', '.join(PEFT_METHODS)})")


def _is_unused(name: str) -> bool:
    """A parameter of a module the text vectors never go through (also under PEFT's ``base_model.model.``)."""
    return any(name.startswith(p) or f".{p}" in name for p in UNUSED_PREFIXES)


def wrap(model: nn.Module, method: str, knobs: Optional[dict[str, Any]] = None, total_steps: int = 1,
         tokenizer_path: Optional[str] = None) -> nn.Module:
    """`model` made trainable by `method`; only that method's parameters keep ``requires_grad``."""
    check_method(method)
    knobs = knobs or {}
    model.requires_grad_(False)
    if method == "frozen":
        return model
    if method in PEFT_METHODS:
        from peft import get_peft_model

        wrapped = get_peft_model(model, peft_config(method, knobs, total_steps, tokenizer_path))
        # an adapter a target pattern put on an unused module (e.g. "dense" also matches pooler.dense) would
        # never get a gradient: dead parameters on one process, a DDP "unused parameters" error on several
        for name, param in wrapped.named_parameters():
            if param.requires_grad and _is_unused(name):
                param.requires_grad_(False)
        return wrapped
    for name, param in model.named_parameters():
        if _is_unused(name):
            continue
        param.requires_grad_(method == "full" or name.endswith("bias"))
    return model


def count_parameters(module: nn.Module) -> dict[str, int]:
    """``{"trainable": ..., "total": ...}`` parameter counts of an encoder (adapters included)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(sum(p.numel() for p in module.parameters()))}


def virtual_tokens(module: nn.Module) -> int:
    """Positions prompt tuning prepends to the hidden states (0 for every other method)."""
    config = getattr(module, "active_peft_config", None)
    if config is not None and type(config).__name__ == "PromptTuningConfig":
        return int(config.num_virtual_tokens)
    return 0


def after_step(module: nn.Module, step: int) -> None:
    """Per-optimizer-step work some methods need (AdaLoRA's rank budget); call before zeroing the gradients."""
    base = getattr(module, "base_model", None)
    if base is not None and hasattr(base, "update_and_allocate"):
        base.update_and_allocate(step)


def save(module: nn.Module, method: str, folder: Path) -> Path:
    """Write what `method` trained into `folder` (a PEFT adapter, BitFit biases, or the whole model).

    Written into a temporary sibling folder, made readable like the run's other results (``save_pretrained``
    writes 0600 files), then moved into place: a killed run never leaves half an adapter behind."""
    import os
    import shutil
    import uuid

    from recsys_fewshot import tracking

    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        if method == "adalora":
            # AdaLoRA's rank_pattern is the LAST step's; the weights in memory may be an earlier (best) epoch's,
            # masked by another pattern: save them whole (rank_pattern=None), exactly what produced the metrics
            config = module.peft_config[module.active_adapter]
            pattern, config.rank_pattern = config.rank_pattern, None
            try:
                module.save_pretrained(str(tmp))
            finally:
                config.rank_pattern = pattern
        elif method in PEFT_METHODS or method == "full":
            module.save_pretrained(str(tmp))
        elif method == "bitfit":
            tracking.write_safetensors(tmp / BITFIT_FILE,
                                       {n: p for n, p in module.named_parameters() if p.requires_grad})
        tracking.write_json(tmp / METHOD_FILE, {"method": method, **count_parameters(module)})
        umask = os.umask(0)
        os.umask(umask)
        for file in tmp.rglob("*"):
            if file.is_file():
                os.chmod(file, 0o666 & ~umask)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load(model: nn.Module, folder: Path) -> tuple[nn.Module, str]:
    """The base `model` with the weights `save` wrote into `folder` applied; returns (module, method)."""
    folder = Path(folder)
    info = folder / METHOD_FILE
    if not info.is_file():
        raise FileNotFoundError(f"{folder} holds no trained encoder ({METHOD_FILE} is missing)")
    method = check_method(json.loads(info.read_text())["method"])
    model.requires_grad_(False)
    if method in PEFT_METHODS:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(folder), is_trainable=False), method
    if method == "bitfit":
        from safetensors.torch import load_file

        biases = load_file(str(folder / BITFIT_FILE))
        missing = sorted(set(biases) - {n for n, _ in model.named_parameters()})
        if missing:
            raise KeyError(f"{folder / BITFIT_FILE}: {len(missing)} tensors the base encoder lacks, e.g. {missing[0]}")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in biases.items():
                params[name].copy_(value)
        return model, method
    if method == "full":
        from safetensors.torch import load_file

        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{folder}: no *.safetensors weights of the fine-tuned encoder")
        state = {}
        for file in files:
            state.update(load_file(str(file)))
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise KeyError(f"{folder}: fine-tuned weights lack {len(result.missing_keys)} tensors of the base "
                           f"encoder, e.g. {result.missing_keys[0]}")
        return model, method
    return model, method
