"""PEFT methods: how a Hugging Face model becomes trainable, what trains, how it is saved and loaded.

`peft=<name>` chooses a method class by `_target_` (`conf/peft/<name>.yaml`); the class is its schema
(`config.py`, the knobs users type: `peft.r`, `peft.alpha`, ...) plus what the method does:

- `wrap(model, kind, ...)`: the model with exactly the method's parameters trainable. `kind` is what the
  model is (`ModelKind`): a text encoder whose hidden states are pooled (peft `TaskType.FEATURE_EXTRACTION`)
  or a causal LM (`TaskType.CAUSAL_LM`), so the same `peft=lora` trains either;
- `save(module, folder)` / `load(model, folder)`: what it trained, and `method.json` naming the method.

The methods: `Lora`, `AdaLora`, `IA3`, `Prefix`, `Prompt` (adapters from the ``peft`` library, the base
weights frozen), `BitFit` (the bias terms only; Ben Zaken et al., 2022), `Full` (every weight) and `Frozen`
(nothing trains: the vectors come from the embedding cache). LoRA and AdaLoRA take `peft.top_layers`: adapters
in the model's last N layers only, through peft's `layers_to_transform`.

The pooler of BERT-style models is never trained: the text vectors pool the last hidden states, so the
pooler gets no gradient (and a parameter without a gradient stalls DDP).

A saved `method.json` names its method; `load` maps that name to this module's classes (`METHODS`), never to
a class a run folder names. ``peft`` and ``transformers`` are imported inside the methods: the frozen path
never needs them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import torch
from torch import nn

from recsys_fewshot.config import (AdaLoraPeftConfig, BitFitPeftConfig, FrozenPeftConfig, FullPeftConfig,
                                   IA3PeftConfig, LoraPeftConfig, PrefixPeftConfig, PromptPeftConfig)

UNUSED_PREFIXES = ("pooler.",)  # modules the text vectors never go through
BITFIT_FILE = "bitfit.safetensors"
METHOD_FILE = "method.json"


class ModelKind(enum.Enum):
    """What a wrapped model is; the value is the name of peft's `TaskType` for it."""

    TEXT_ENCODER = "FEATURE_EXTRACTION"  # hidden states pooled into text vectors (the item text tower)
    CAUSAL_LM = "CAUSAL_LM"  # a decoder language model, read through its next-token logits


def _is_unused(name: str) -> bool:
    """A parameter of a module the text vectors never go through (also under PEFT's ``base_model.model.``)."""
    return any(name.startswith(p) or f".{p}" in name for p in UNUSED_PREFIXES)


def _targets(modules: Optional[list[str]]) -> Optional[list[str]]:
    return list(modules) if modules else None  # None: peft's default for the architecture


def layer_count(model: nn.Module) -> int:
    """The number of transformer layers, from the model's config (`num_hidden_layers`; GPT-2's `n_layer`
    reads as it through the config's attribute map)."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"peft.top_layers: the model's config ({type(getattr(model, 'config', None)).__name__}) "
                         "gives no num_hidden_layers to count its layers from; set peft.top_layers=0")
    return count


def top_layer_indices(model: nn.Module, top: int) -> Optional[list[int]]:
    """peft's `layers_to_transform` for `peft.top_layers=top`: the indices of the model's last `top` layers
    (None, every layer, for 0)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"peft.top_layers={top!r}: expected an integer >= 0 (0: every layer)")
    if top == 0:
        return None
    count = layer_count(model)
    if top > count:
        raise ValueError(f"peft.top_layers={top}: the model has {count} layers (num_hidden_layers in its config); "
                         f"set at most {count}, or 0 for every layer")
    return list(range(count - top, count))


class PeftMethod:
    """What every method does; each concrete class adds its schema's fields (`method` and its knobs)."""

    method: str
    trains_encoder: ClassVar[bool] = True  # False (peft=frozen): nothing trains; vectors come from the cache

    @property
    def name(self) -> str:
        return self.method

    def __str__(self) -> str:
        return self.method

    def trains(self, parameter: str) -> bool:
        """Whether a base-model parameter trains (BitFit, full); adapter methods train only what they add."""
        return False

    def prepended_positions(self) -> int:
        """Positions the method puts in front of every text (prompt and prefix tuning), known before wrapping."""
        return 0

    def wrap(self, model: nn.Module, kind: ModelKind = ModelKind.TEXT_ENCODER, total_steps: int = 1,
             tokenizer_path: Optional[str] = None) -> nn.Module:
        """`model` made trainable by this method; only its parameters keep ``requires_grad``."""
        ModelKind(kind)
        model.requires_grad_(False)
        for name, param in model.named_parameters():
            if not _is_unused(name) and self.trains(name):
                param.requires_grad_(True)
        return model

    def save(self, module: nn.Module, folder: Path) -> Path:
        """Write what the method trained, and `method.json`, into `folder`.

        Written into a temporary sibling folder, made readable like the run's other results
        (``save_pretrained`` writes 0600 files), then moved into place: a killed run never leaves half an
        adapter behind."""
        import os
        import shutil
        import uuid

        from recsys_fewshot import tracking

        folder = Path(folder)
        tmp = folder.parent / f".{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        try:
            self.write_weights(module, tmp)
            tracking.write_json(tmp / METHOD_FILE, {"method": type(self).method, **count_parameters(module)})
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

    def write_weights(self, module: nn.Module, folder: Path) -> None:
        """The trained weights into `folder` (nothing for a frozen model)."""

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        """The base `model` (frozen) with the weights `write_weights` wrote into `folder` applied."""
        return model


class Frozen(PeftMethod, FrozenPeftConfig):
    trains_encoder = False


class BitFit(PeftMethod, BitFitPeftConfig):
    def trains(self, parameter: str) -> bool:
        return parameter.endswith("bias")

    def write_weights(self, module: nn.Module, folder: Path) -> None:
        from recsys_fewshot import tracking

        tracking.write_safetensors(folder / BITFIT_FILE, {n: p for n, p in module.named_parameters() if p.requires_grad})

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        from safetensors.torch import load_file

        biases = load_file(str(folder / BITFIT_FILE))
        missing = sorted(set(biases) - {n for n, _ in model.named_parameters()})
        if missing:
            raise KeyError(f"{folder / BITFIT_FILE}: {len(missing)} tensors the base encoder lacks, e.g. {missing[0]}")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in biases.items():
                params[name].copy_(value)
        return model


class Full(PeftMethod, FullPeftConfig):
    def trains(self, parameter: str) -> bool:
        return True

    def write_weights(self, module: nn.Module, folder: Path) -> None:
        module.save_pretrained(str(folder))

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        from safetensors.torch import load_file

        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{folder}: no *.safetensors weights of the fine-tuned encoder")
        state = {}
        for file in files:
            state.update(load_file(str(file)))
        result = model.load_state_dict(state, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or ())  # save_pretrained leaves out tied copies
        result.missing_keys[:] = [k for k in result.missing_keys if k not in tied]
        if tied and hasattr(model, "tie_weights"):
            model.tie_weights()
        if result.missing_keys:
            raise KeyError(f"{folder}: fine-tuned weights lack {len(result.missing_keys)} tensors of the base "
                           f"encoder, e.g. {result.missing_keys[0]}")
        return model


class AdapterMethod(PeftMethod):
    """A method of the ``peft`` library: `peft_config` builds its config, ``get_peft_model`` adds the adapter."""

    def peft_config(self, model: nn.Module, task_type: Any, total_steps: int, tokenizer_path: Optional[str]):
        raise NotImplementedError

    def wrap(self, model: nn.Module, kind: ModelKind = ModelKind.TEXT_ENCODER, total_steps: int = 1,
             tokenizer_path: Optional[str] = None) -> nn.Module:
        from peft import TaskType, get_peft_model

        task_type = TaskType[ModelKind(kind).value]
        model.requires_grad_(False)
        wrapped = get_peft_model(model, self.peft_config(model, task_type, total_steps, tokenizer_path))
        # an adapter a target pattern put on an unused module (e.g. "dense" also matches pooler.dense) would
        # never get a gradient: dead parameters on one process, a DDP "unused parameters" error on several
        for name, param in wrapped.named_parameters():
            if param.requires_grad and _is_unused(name):
                param.requires_grad_(False)
        return wrapped

    def write_weights(self, module: nn.Module, folder: Path) -> None:
        module.save_pretrained(str(folder))

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        from peft import PeftModel

        if not (Path(folder) / "adapter_model.safetensors").is_file():  # never a pickled adapter_model.bin
            raise FileNotFoundError(f"{folder}: no adapter_model.safetensors (adapters load from safetensors only)")
        return PeftModel.from_pretrained(model, str(folder), is_trainable=False)


class Lora(AdapterMethod, LoraPeftConfig):
    def peft_config(self, model, task_type, total_steps, tokenizer_path):
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=_targets(self.target_modules),
                          layers_to_transform=top_layer_indices(model, self.top_layers))


class AdaLora(AdapterMethod, AdaLoraPeftConfig):
    def peft_config(self, model, task_type, total_steps, tokenizer_path):
        from peft import AdaLoraConfig

        if self.tinit + self.tfinal >= total_steps:
            raise ValueError(f"peft.tinit + peft.tfinal ({self.tinit} + {self.tfinal}) must be below the run's "
                             f"{total_steps} optimizer steps: lower them or train longer")
        return AdaLoraConfig(task_type=task_type, init_r=self.init_r, target_r=self.target_r, lora_alpha=self.alpha,
                             lora_dropout=self.dropout, target_modules=_targets(self.target_modules),
                             tinit=self.tinit, tfinal=self.tfinal, deltaT=self.delta_t, orth_reg_weight=0.0,
                             total_step=total_steps, layers_to_transform=top_layer_indices(model, self.top_layers))

    def write_weights(self, module: nn.Module, folder: Path) -> None:
        # AdaLoRA's rank_pattern is the LAST step's; the weights in memory may be an earlier (best) epoch's,
        # masked by another pattern: save them whole (rank_pattern=None), exactly what produced the metrics
        config = module.peft_config[module.active_adapter]
        pattern, config.rank_pattern = config.rank_pattern, None
        try:
            module.save_pretrained(str(folder))
        finally:
            config.rank_pattern = pattern


class IA3(AdapterMethod, IA3PeftConfig):
    def peft_config(self, model, task_type, total_steps, tokenizer_path):
        from peft import IA3Config

        return IA3Config(task_type=task_type, target_modules=_targets(self.target_modules),
                         feedforward_modules=_targets(self.feedforward_modules))


class Prefix(AdapterMethod, PrefixPeftConfig):
    def prepended_positions(self) -> int:
        return int(self.num_virtual_tokens)

    def peft_config(self, model, task_type, total_steps, tokenizer_path):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=self.num_virtual_tokens,
                                  prefix_projection=self.projection)


class Prompt(AdapterMethod, PromptPeftConfig):
    def prepended_positions(self) -> int:
        return int(self.num_virtual_tokens)

    def peft_config(self, model, task_type, total_steps, tokenizer_path):
        from peft import PromptTuningConfig, PromptTuningInit

        if self.init_text:
            return PromptTuningConfig(task_type=task_type, num_virtual_tokens=self.num_virtual_tokens,
                                      prompt_tuning_init=PromptTuningInit.TEXT,
                                      prompt_tuning_init_text=self.init_text, tokenizer_name_or_path=tokenizer_path)
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=self.num_virtual_tokens)


# the saved names (`peft.method`, method.json) and this project's classes: what loading a run folder may build
METHODS: dict[str, type[PeftMethod]] = {cls.method: cls for cls in (Frozen, BitFit, Full, Lora, AdaLora, IA3, Prefix,
                                                                     Prompt)}


def method_named(name: Any, source: str = "peft.method") -> type[PeftMethod]:
    """The class of the method a run recorded as `name` (ValueError naming `source` if there is none)."""
    cls = METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{source}: {name!r} is not a PEFT method of this project; expected one of "
                         f"{', '.join(METHODS)}")
    return cls


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


def method_of(method: Union[str, PeftMethod], knobs: Optional[dict[str, Any]] = None) -> PeftMethod:
    """`method` itself, or the method named `method` with the knobs of `knobs` it takes (a `peft` node as a
    dict: its `_target_` is not read, the name is)."""
    if isinstance(method, PeftMethod):
        return method
    cls = method_named(method)
    fields = {f.name for f in dataclasses.fields(cls)} - {"_target_", "method"}
    return cls(**{k: v for k, v in (knobs or {}).items() if k in fields})


def wrap(model: nn.Module, method: Union[str, PeftMethod], knobs: Optional[dict[str, Any]] = None,
         total_steps: int = 1, tokenizer_path: Optional[str] = None,
         kind: ModelKind = ModelKind.TEXT_ENCODER) -> nn.Module:
    """`method_of(method, knobs).wrap(model, kind, total_steps, tokenizer_path)`."""
    return method_of(method, knobs).wrap(model, kind, total_steps, tokenizer_path)


def save(module: nn.Module, method: Union[str, PeftMethod], folder: Path) -> Path:
    """`method.save(module, folder)`; `method` may also be a method's name (`peft.method`)."""
    return method_of(method).save(module, folder)


def load(model: nn.Module, folder: Path) -> tuple[nn.Module, PeftMethod]:
    """The base `model` with what `save` wrote into `folder` applied, and the method (named by its
    `method.json`, mapped to this module's classes)."""
    folder = Path(folder)
    info = folder / METHOD_FILE
    if not info.is_file():
        raise FileNotFoundError(f"{folder} holds no trained encoder ({METHOD_FILE} is missing)")
    method = method_named(json.loads(info.read_text()).get("method"), str(info))()
    model.requires_grad_(False)
    return method.load(model, folder), method
