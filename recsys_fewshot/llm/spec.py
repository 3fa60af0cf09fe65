"""The `llm=` config group: a causal (decoder) language model that reads prompts and answers them.

Heads that declare `Capabilities(prompts=True)` (head=llm, head=hybrid) score a (user, item) pair by the
model's answer to a prompt; `peft=` then trains this model (LoRA by default in the LLM model presets).
`encoder=` stays what turns item text into vectors (for the text probe of head=hybrid, or similar
demonstrations). Kept free of heavy imports: the config schema is read at composition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATION = ("none", "4bit", "8bit")


@dataclass
class LLMSpec:
    name_or_path: Optional[str] = None  # a causal LM: folder, hub id or models-root name; None: no LLM
    dtype: str = "auto"  # auto: bfloat16 on a CUDA GPU that supports it, else float32 | float32 | bfloat16 | float16
    max_length: int = 512  # tokens a prompt may take; longer prompts lose their oldest history items (counted)
    batch_size: int = 8  # prompts per forward pass when scoring
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower
    quantization: str = "none"  # none | 4bit | 8bit: load the weights quantized with bitsandbytes (CUDA only; QLoRA)

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)
