"""Cost of frozen item-vector extraction: several encoders on one protocol's item texts, in one process.

    python scripts/bench_encoders.py [--protocol ml100k_cold_items] [--model cold_items_ease]
                                     [--encoders minilm gemma3-270m smollm2-135m] [OVERRIDE ...]

Each encoder is composed as a run composes it (``protocol=P model=M encoder=E OVERRIDE...``), so it reads that
run's item texts (``dataset.text_template``) with the preset's pooling, template, centring, max_length and batch
size. Per encoder, one after another in the order given: the model load, then one full extraction without the
embedding cache (tokenizing, forward passes, centring). Columns: load seconds, extraction seconds, items/s,
mean tokens per item (template included), vector width. Needs the real data (``$RECSYS_FEWSHOT_DATA``) and the
models (``python scripts/fetch_llm.py all`` for the decoders).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from recsys_fewshot.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides)


def measure(overrides: list[str]) -> dict:
    import torch

    from recsys_fewshot import build
    from recsys_fewshot.encoders.text_encoder import TextEncoder

    cfg = compose(overrides)
    texts = build.item_texts(cfg, build.load_data(cfg))
    spec = build.encoder_spec(cfg)
    encoder = TextEncoder(**spec.kwargs(), device="cpu")
    start = time.perf_counter()
    encoder.load()
    loaded = time.perf_counter()
    vectors = encoder.finish(encoder.encode(texts))
    done = time.perf_counter()
    assert vectors.shape == (len(texts), encoder.dim) and torch.isfinite(vectors).all()
    lengths = encoder._tokenize(texts)[1]
    return {"encoder": spec.name_or_path, "items": len(texts), "load s": loaded - start, "extract s": done - loaded,
            "items/s": len(texts) / (done - loaded), "tokens": float(lengths.mean()), "dim": encoder.dim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="ml100k_cold_items")
    parser.add_argument("--model", default="cold_items_ease", help="the model preset whose encoder settings apply")
    parser.add_argument("--encoders", nargs="+", default=["minilm", "gemma3-270m", "smollm2-135m"])
    parser.add_argument("overrides", nargs="*", help="more config overrides, e.g. encoder.batch_size=64")
    args = parser.parse_args()
    import torch

    rows = [measure([f"protocol={args.protocol}", f"model={args.model}", f"encoder={name}", *args.overrides])
            for name in args.encoders]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, protocol={args.protocol} "
          f"model={args.model} {' '.join(args.overrides)}")
    print("| encoder | items | load s | extract s | items/s | tokens/item | dim |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['encoder']} | {row['items']} | {row['load s']:.1f} | {row['extract s']:.1f} | "
              f"{row['items/s']:.0f} | {row['tokens']:.1f} | {row['dim']} |")


if __name__ == "__main__":
    main()
