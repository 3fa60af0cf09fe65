"""A causal language model read at one answer position: prompts in, logit(yes) - logit(no) out.

`LanguageModel.answer_scores(prompts)` left-pads a batch (position ids follow the padding, so a padded
prompt scores as it would alone), runs the decoder body, and multiplies the hidden state at the last
position by the two output-embedding rows of the answer tokens only: the vocabulary-wide logits (262k
columns for Gemma 3) are never formed. The model is wrapped by the `peft=` method for training (LoRA
by default in the LLM presets) and saved by it, like the trainable text tower of joint training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from recsys_fewshot.llm.spec import DTYPES, QUANTIZATION

log = logging.getLogger(__name__)
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LLMError(ValueError):
    """A language model that cannot score prompts as configured (the message names the key or file)."""


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`llm.dtype`: auto is bfloat16 on a CUDA device that supports it, float32 elsewhere (bf16 is slow on CPUs
    without AMX, and fp16 weights are unsafe for training)."""
    if name not in DTYPES:
        raise LLMError(f"llm.dtype={name!r}: expected one of {', '.join(DTYPES)}")
    if name == "auto":
        cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return _TORCH_DTYPES[name]


def check_causal(path: Path) -> None:
    """Refuse, naming the model, a folder whose config is not a causal (decoder) language model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(str(path))
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise LLMError(f"llm.name_or_path={path}: a {config.model_type!r} model has no causal-LM head to answer a "
                       "prompt with (use a decoder LM: Llama, Qwen2, Gemma 3, SmolLM2, ...)")
    if config.model_type in ("bert", "roberta", "mpnet"):  # mapped for masked-LM generation only
        raise LLMError(f"llm.name_or_path={path}: {config.model_type!r} is an encoder, not a causal LM")


def quantization_config(mode: str, device: torch.device):
    """bitsandbytes 4-bit (NF4, bf16 compute) or 8-bit loading; CUDA only."""
    if mode not in QUANTIZATION:
        raise LLMError(f"llm.quantization={mode!r}: expected one of {', '.join(QUANTIZATION)}")
    if mode == "none":
        return None
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise LLMError(f"llm.quantization={mode} loads the weights with bitsandbytes, which needs a CUDA GPU; this "
                       "run is on the CPU: use llm.quantization=none")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise LLMError(f"llm.quantization={mode} needs the bitsandbytes package: pip install bitsandbytes") from err
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_causal_lm(name_or_path: str, dtype: str = "auto", device: Optional[str] = None, quantization: str = "none"):
    """(model, tokenizer, local path): safetensors weights only, no remote code; the tokenizer pads on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recsys_fewshot.encoders.text_encoder import resolve_model_path

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = resolve_model_path(name_or_path)
    check_causal(path)
    quant = quantization_config(quantization, dev)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev), "use_safetensors": True}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": dev.index or 0})
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except OSError as err:
        raise LLMError(f"cannot load the language model from {path}: {err}") from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # decoder LMs often ship without one
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.use_cache = False
    if quant is None:
        model.to(dev)
    return model, tokenizer, path


def answer_token(tokenizer, text: str, key: str) -> int:
    """The id of `text` as ONE token (no special tokens added), else an error naming the tokens it splits into."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise LLMError(f"{key}={text!r} is {len(ids)} tokens for this tokenizer ({pieces}): the score reads one "
                       f"answer token; choose an answer that is a single token (e.g. with or without a leading space)")
    return int(ids[0])


class LanguageModel(nn.Module):
    """The scoring side of a prompt head: a (PEFT-wrapped) causal LM, its tokenizer and the answer tokens.

    Shares the trainable text tower's interface (`save`, `parameter_counts`, `after_optimizer_step`), so the
    build path saves it beside the run (`encoder/`), keeps its weights out of model.safetensors, and gives
    its parameters `optimizer.encoder_lr`.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int, batch_size: int, method=None,
                 autocast: Optional[str] = None, name_or_path: str = ""):
        """`method`: the `encoders.peft_wrap.PeftMethod` that made `model` trainable (None: frozen)."""
        super().__init__()
        if max_length < 8:
            raise LLMError(f"llm.max_length={max_length}: expected at least 8 tokens")
        if batch_size < 1:
            raise LLMError(f"llm.batch_size={batch_size}: expected at least 1")
        self.model, self.tokenizer, self.method = model, tokenizer, method
        self.max_length, self.batch_size, self.name_or_path = int(max_length), int(batch_size), name_or_path
        self.yes_id = self.no_id = None
        self.autocast = AUTOCAST.get(autocast or "")
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._softcap = getattr(causal.config, "final_logit_softcapping", None)
        self.prompts_scored = 0  # forward passes' prompts (not those the score cache answered)
        self.score_cache = None  # llm.score_cache.ScoreCache of a frozen model, set by the build path

    def train(self, mode: bool = True) -> "LanguageModel":
        """A frozen model stays in eval mode (no dropout) even while the head around it trains: its scores are
        kept across epochs and runs."""
        super().train(mode)
        if not any(p.requires_grad for p in self.model.parameters()):
            self.model.eval()
        return self

    @property
    def numerics(self) -> str:
        """What else a score depends on beside the model files and the prompt: weight dtype and autocast."""
        return f"{next(self.model.parameters()).dtype}-{self.autocast}".replace("torch.", "")

    def set_answers(self, yes: str, no: str) -> None:
        """The tokens whose logits are compared (the head's `yes` / `no`): each must be one token."""
        self.yes_id = answer_token(self.tokenizer, yes, "head.yes")
        self.no_id = answer_token(self.tokenizer, no, "head.no")
        if self.yes_id == self.no_id:
            raise LLMError(f"head.yes={yes!r} and head.no={no!r} are the same token")

    # --- the two parts of the causal LM: the decoder body and the output embedding -------------------
    def _causal(self) -> nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    def answer_scores(self, prompts: list[str]) -> torch.Tensor:
        """logit(yes) - logit(no) after each prompt, in input order; `llm.batch_size` prompts per forward,
        batched by length (little padding)."""
        if not prompts:
            return torch.zeros(0, device=self.device)
        cache = self.score_cache if not any(p.requires_grad for p in self.model.parameters()) else None
        if cache is not None:  # a frozen model: answers kept across runs (llm/score_cache.py)
            keys = [cache.key((self.yes_id, self.no_id), p) for p in prompts]
            known = cache.get(list(dict.fromkeys(keys)))
            todo = [k for k in range(len(prompts)) if keys[k] not in known]
            if todo:
                with torch.no_grad():
                    fresh = self._score_all([prompts[k] for k in todo]).float().cpu().tolist()
                new = dict(zip((keys[k] for k in todo), fresh))
                cache.put(new)
                known.update(new)
            return torch.tensor([known[k] for k in keys], device=self.device)
        return self._score_all(prompts)

    def _score_all(self, prompts: list[str]) -> torch.Tensor:
        lengths = self.count_tokens(prompts)
        order = sorted(range(len(prompts)), key=lambda k: lengths[k])
        out = torch.empty(len(prompts), device=self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            out[torch.as_tensor(idx, device=self.device)] = self._score_batch([prompts[k] for k in idx])
        self.prompts_scored += len(prompts)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _score_batch(self, prompts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        if ids.shape[1] > self.max_length:
            raise LLMError(f"a prompt of {ids.shape[1]} tokens passed llm.max_length={self.max_length} (the prompt "
                           "builder should have shortened it)")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each prompt's positions start at 0
        causal = self._causal()
        dtype = self.autocast if self.autocast is not None and self.device.type == "cuda" else None
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            hidden = causal.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions,
                                          use_cache=False).last_hidden_state[:, -1]
            head = causal.get_output_embeddings()
            rows = torch.tensor([self.yes_id, self.no_id], device=self.device)
            logits = hidden @ head.weight[rows].T.to(hidden.dtype)
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[rows]
        logits = logits.float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits[:, 0] - logits[:, 1]

    def full_vocabulary_scores(self, prompts: list[str]) -> torch.Tensor:
        """The naive reference: the model's own forward with logits over the whole vocabulary at every position,
        read at the last one (for tests and the throughput benchmark)."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        last = logits[:, -1].float()
        return last[:, self.yes_id] - last[:, self.no_id]

    # --- the trainable-part interface ------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        from recsys_fewshot.encoders.peft_wrap import count_parameters

        return count_parameters(self.model)

    def after_optimizer_step(self, step: int) -> None:
        from recsys_fewshot.encoders.peft_wrap import after_step

        after_step(self.model, step)

    def save(self, folder: Path) -> Path:
        """What `peft=` trained (an adapter, biases or the whole model); a frozen model saves only its name."""
        from recsys_fewshot import tracking

        folder = Path(folder)
        if self.method is None or not self.method.trains_encoder:
            tracking.write_json(folder / "llm.json", {"method": "frozen", "name_or_path": self.name_or_path})
            return folder
        return self.method.save(self.model, folder)
