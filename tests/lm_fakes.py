"""Tiny random causal LMs (real Llama / Qwen2 / Gemma 3 configs, saved with save_pretrained) with a byte-level
BPE tokenizer trained here with `tokenizers` on the words of the prompts, and few-shot CTR samples whose
label a language model can read off the candidate's title."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fakes import FILLER, GENRES

LIKED_GENRES = ("Comedy", "Drama", "Romance")
CORPUS = [
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    "### Instruction: Given the user's preference and unpreference, identify whether the user will like the "
    "target movie by answering \"Yes.\" or \"No.\".",
    "### Input: User Preference: \"a\", \"b\" User Unpreference: \"c\" Whether the user will like the target "
    "movie \"d\"? ### Response: Yes. No. Yes No",
    " ".join(FILLER), " ".join(GENRES), " ".join(str(k) for k in range(100)),
]


def build_tiny_causal_lm(path: Path, kind: str = "llama", seed: int = 0) -> Path:
    """conftest's tiny random decoder of `kind` (llama | qwen2 | gemma3), its tokenizer trained on the prompts'
    words (so a TALLRec prompt is ~100 tokens) and room for in-context demonstrations (2,048 positions)."""
    from conftest import build_tiny_decoder

    return build_tiny_decoder(path, kind, seed=seed, corpus=CORPUS * 20, vocab_size=600, max_positions=2048)


def write_genre_ctr_csv(folder: Path, n_samples: int = 160, n_items: int = 30, history_len: int = 4,
                        seed: int = 0, parts=(0.5, 0.25, 0.25)) -> Path:
    """CSV CTR samples (train/valid/test.csv: user_id, item_id, label, history; items.csv: item_id, title) whose
    label is 1 exactly when the candidate's title names a liked genre: a rule a language model reads off the
    prompt, invisible to ID-only or history-rate baselines."""
    rng = np.random.default_rng(seed)
    genre = rng.permutation(np.arange(n_items) % len(GENRES))
    titles = [f"{FILLER[k % len(FILLER)]} {GENRES[g]} {k}" for k, g in enumerate(genre)]
    liked = np.isin(np.array(GENRES)[genre], LIKED_GENRES)
    rows = []
    for k in range(n_samples):
        items = rng.choice(n_items, history_len + 1, replace=False)
        history = " ".join(f"i{i}:{int(liked[i])}" for i in items[:-1])
        rows.append({"user_id": f"s{k}", "item_id": f"i{items[-1]}", "label": int(liked[items[-1]]),
                     "history": history})
    folder.mkdir(parents=True, exist_ok=True)
    cuts = np.cumsum([int(round(p * n_samples)) for p in parts])
    for name, a, b in (("train", 0, cuts[0]), ("valid", cuts[0], cuts[1]), ("test", cuts[1], n_samples)):
        pd.DataFrame(rows[a:b]).to_csv(folder / f"{name}.csv", index=False)
    pd.DataFrame({"item_id": [f"i{k}" for k in range(n_items)], "title": titles}).to_csv(folder / "items.csv",
                                                                                          index=False)
    return folder
