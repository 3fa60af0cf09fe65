"""The trainable text tower: item indices in, text vectors out, with the encoder inside the training loop.

Joint training runs the (PEFT-wrapped) encoder on every batch, so the costs are kept where they must be:

- item texts are tokenized once, up front (flat token ids + lengths, as buffers on the device);
- a training batch encodes only its distinct items, bucketed by token length like frozen extraction
  (:func:`~recsys_fewshot.encoders.text_encoder.plan_batches`), and gradients flow into the encoder;
- evaluation (``eval()`` mode) encodes every item once under ``no_grad`` and reuses those
  vectors for every score until the tower goes back to training (``train()``/``eval()`` clear them),
  so ranking all items costs one pass over the catalogue, not one per user chunk.

Pooling and normalisation are those of :class:`~recsys_fewshot.encoders.text_encoder.TextEncoder`, so a
freshly wrapped LoRA/IA3 tower reproduces the frozen vectors exactly (tested).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from recsys_fewshot.encoders import peft_wrap
from recsys_fewshot.encoders.text_encoder import CPU_PAD_BUDGET, plan_batches

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat token ids, lengths) of every text: truncated to `max_length`, no padding."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    if len(ids) and lengths.min() == 0:
        raise ValueError(f"item text {int(lengths.argmin())} has no tokens")
    flat = np.fromiter((t for x in ids for t in x), np.int64, int(lengths.sum()))
    return flat, lengths


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """[b, L, d] hidden states + [b, L] mask -> [b, d] (cls | mean | last), as TextEncoder pools."""
    if pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    elif pooling == "last":
        vectors = hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(1) - 1]
    else:
        raise ValueError(f"encoder.pooling={pooling!r}: expected cls, mean or last")
    return nn.functional.normalize(vectors, dim=-1) if normalize else vectors


class TextTower(nn.Module):
    """``forward(items) -> [len(items), dim]`` text vectors from a trainable encoder.

    `encoder`: a Hugging Face model (possibly a ``peft`` model) taking ``input_ids``/``attention_mask``;
    `flat`/`lengths`: the item texts' token ids (:func:`tokenize`), item ``i`` being the ``i``-th text.
    `skip_tokens`: leading positions of the output that are not text (prompt tuning's virtual tokens).
    `autocast`: ``bf16``/``fp16`` for the no-grad catalogue pass (training runs under Accelerate's autocast).
    `peft`: the method (`peft_wrap.PeftMethod`) that made `encoder` trainable (what :meth:`save` writes);
    `method` is its name.
    """

    def __init__(self, encoder: nn.Module, flat: np.ndarray, lengths: np.ndarray, dim: int, pad_id: int = 0,
                 pooling: str = "mean", normalize: bool = True, skip_tokens: int = 0, batch_size: int = 128,
                 autocast: Optional[str] = None, peft: Optional[peft_wrap.PeftMethod] = None):
        super().__init__()
        self.encoder, self.peft = encoder, peft if peft is not None else peft_wrap.Lora()
        self.dim, self.pad_id, self.pooling, self.normalize = dim, int(pad_id), pooling, normalize
        self.skip_tokens, self.batch_size, self.autocast = int(skip_tokens), int(batch_size), autocast
        self.n_items = len(lengths)
        self.register_buffer("flat", torch.as_tensor(flat, dtype=torch.long), persistent=False)
        self.register_buffer("lengths", torch.as_tensor(lengths, dtype=torch.long), persistent=False)
        self.register_buffer("starts", torch.cumsum(self.lengths, 0) - self.lengths, persistent=False)
        self._lengths_np = np.asarray(lengths, np.int64)
        self._catalogue: Optional[torch.Tensor] = None  # every item's vector, for evaluation
        self.register_load_state_dict_post_hook(TextTower._weights_changed)  # e.g. the best epoch restored
        self.forward_calls = 0  # encoder forward passes so far (tests and logs)
        self.encoded_texts = 0

    @property
    def method(self) -> str:
        """The name of the PEFT method (`peft.method`)."""
        return self.peft.name

    @staticmethod
    def _weights_changed(module: "TextTower", incompatible_keys) -> None:
        module._catalogue = None

    def train(self, mode: bool = True) -> "TextTower":
        self._catalogue = None  # the weights are about to change, or were just restored
        return super().train(mode)

    def _encode(self, items: np.ndarray) -> torch.Tensor:
        """Vectors of `items` (distinct indices), length-bucketed forward passes, rows in input order."""
        device = self.flat.device
        if len(items) == 0:
            return torch.zeros(0, self.dim, device=device)
        pad_budget = CPU_PAD_BUDGET if device.type == "cpu" else None
        flat, parts, order = self.flat, [], []
        for rows in plan_batches(self._lengths_np[items], self.batch_size, pad_budget):
            chosen = torch.as_tensor(items[rows], device=device)
            lengths = self.lengths[chosen]
            positions = torch.arange(int(lengths.max()), device=device)
            mask = positions.unsqueeze(0) < lengths.unsqueeze(1)  # right padding, as frozen extraction
            gather = (self.starts[chosen].unsqueeze(1) + positions).clamp(max=len(flat) - 1)
            ids = torch.where(mask, flat[gather], self.pad_id)
            hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            parts.append(pool(hidden[:, self.skip_tokens:].float(), mask, self.pooling, self.normalize))
            order.append(rows)
            self.forward_calls += 1
            self.encoded_texts += len(rows)
        position = np.empty(len(items), np.int64)
        position[np.concatenate(order)] = np.arange(len(items))
        return torch.cat(parts)[torch.as_tensor(position, device=device)]

    def catalogue(self) -> torch.Tensor:
        """Every item's vector under no_grad, computed once per evaluation (cleared by train()/eval())."""
        if self._catalogue is None:
            dtype = AUTOCAST.get(self.autocast or "")
            device = self.flat.device
            amp = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                   else contextlib.nullcontext())
            with torch.no_grad(), amp:
                self._catalogue = self._encode(np.arange(self.n_items))
        return self._catalogue

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.catalogue()[items]
        distinct, inverse = torch.unique(items, return_inverse=True)
        return self._encode(distinct.cpu().numpy())[inverse]

    def after_optimizer_step(self, step: int) -> None:
        """Per-step work of the method (AdaLoRA's rank budget): after optimizer.step(), before zero_grad()."""
        peft_wrap.after_step(self.encoder, step)

    def parameter_counts(self) -> dict[str, int]:
        return peft_wrap.count_parameters(self.encoder)

    def save(self, folder: Path) -> Path:
        """What the method trained (adapter, biases or whole model), loadable by ``build_tower(adapter=...)``."""
        return self.peft.save(self.encoder, folder)


def prepended_positions(module: nn.Module) -> int:
    """Positions a prompt-learning adapter takes in front of every text (0 for other methods).

    Prompt tuning (and p-tuning) prepends its virtual tokens to the input embeddings; prefix tuning prepends
    key/value pairs, and the model numbers the text's positions after them (BERT, RoBERTa, GPT-2 start
    position ids at the past key/value length). Either way the text gets that many positions fewer.
    """
    config = getattr(module, "active_peft_config", None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        return int(getattr(config, "num_virtual_tokens", 0) or 0)
    return 0


def check_positions(model_path: Path, max_length: int, virtual: int, method: str, source: str = "") -> None:
    """ValueError naming encoder.max_length, peft.num_virtual_tokens and the limit when the text and the
    `virtual` prepended positions do not fit in the model's position embeddings."""
    from recsys_fewshot.encoders.text_encoder import _config_position_limit

    found = _config_position_limit(Path(model_path))
    if found is None or virtual <= 0 or max_length + virtual <= found[0]:
        return
    limit, where = found
    fix = (f"set encoder.max_length to at most {limit - virtual} or lower peft.num_virtual_tokens"
           if limit > virtual else f"set peft.num_virtual_tokens below {limit}")
    raise ValueError(f"encoder.max_length={max_length} + peft.num_virtual_tokens={virtual}{source} = "
                     f"{max_length + virtual} positions exceed the model's limit of {limit} "
                     f"({where} in {Path(model_path) / 'config.json'}): peft={method} puts its virtual tokens in "
                     f"front of every text; {fix}")


def build_tower(spec, texts: list[str], *, method: peft_wrap.PeftMethod, total_steps: int = 1,
                device: Optional[str] = None, autocast: Optional[str] = None,
                adapter: Optional[Path] = None) -> TextTower:
    """A text tower over `texts` (item i = texts[i]) from the encoder `spec` (`encoders.spec.EncoderSpec`):
    the encoder loaded, wrapped by `method` (a `peft_wrap.PeftMethod`; or, with `adapter`, the weights a run
    saved applied, for evaluation: the method its `method.json` names), the texts tokenized once."""
    from recsys_fewshot.encoders.text_encoder import TextEncoder

    if not method.trains_encoder and adapter is None:
        raise ValueError(f"peft={method.name} has no trainable text tower: its vectors come from the embedding cache")
    encoder = TextEncoder(**spec.kwargs(), device=device)
    pooling, max_length, normalize, batch_size = spec.pooling, spec.max_length, spec.normalize, spec.batch_size
    if adapter is None and method.prepended_positions():  # prompt and prefix tuning: before loading the model
        check_positions(encoder.path, int(max_length), method.prepended_positions(), method.name)
    model, tokenizer = encoder.load()
    if adapter is not None:
        module, method = peft_wrap.load(model, Path(adapter))
        check_positions(encoder.path, int(max_length), prepended_positions(module), method.name,
                        f" (of the trained encoder in {adapter})")
    else:
        module = method.wrap(model, peft_wrap.ModelKind.TEXT_ENCODER, total_steps, tokenizer_path=str(encoder.path))
        check_positions(encoder.path, int(max_length), prepended_positions(module), method.name)
    flat, lengths = tokenize(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TextTower(module, flat, lengths, encoder.dim, pad_id, pooling, normalize,
                     peft_wrap.virtual_tokens(module), batch_size, autocast, method)
