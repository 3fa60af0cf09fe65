"""The one description of a language model that turns item text into vectors (`encoder=` config group).

`EncoderSpec` is both the config schema of the `encoder` group and what the frozen extractor
(`text_encoder.TextEncoder`) and the trainable text tower (`trainable.build_tower`) are built from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional


@dataclass
class EncoderSpec:
    name_or_path: Optional[str] = None  # None: no text (ID-only baseline); a folder, hub id or packaged alias
    pooling: str = "mean"  # cls | mean | last (decoder LMs: the hidden state of the text's last token)
    max_length: int = 64  # tokens, template included; a longer item text loses its own end, never the template
    batch_size: int = 128  # texts per forward pass during extraction
    normalize: bool = True  # L2-normalise the text vectors
    dtype: str = "auto"  # auto: bfloat16 on a CUDA GPU that supports it, else float32 | float32 | bfloat16 (GPU only)
    template: str = "{text}"  # what the model reads, {text} being the item text: 'This item: "{text}". In one word:'
    center: bool = False  # subtract the catalogue's mean vector before normalising (frozen extraction)

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (`TextEncoder(**spec.kwargs())`)."""
        return asdict(self)
