"""Helpers of scripts/gpu_check.sh: frozen extraction in fp32 vs bf16, and the summary table.

    python scripts/gpu_check.py extract --out DIR [--quick]   # ML-100K item texts, MiniLM, fp32 then bf16
    python scripts/gpu_check.py table DIR                      # extract.json + lora/metrics.json -> table

The texts are the run's own item texts (the ml100k dataset config's template), read from
$RECSYS_FEWSHOT_DATA/ml-100k. Each precision gets one warm-up call, then the median of 3 timed passes
(CUDA synchronised). bf16 autocasts on CUDA only; on a CPU both columns run float32 (`--quick` uses the
first 64 texts: a dry run of the code path, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def item_texts(quick: bool) -> list[str]:
    from hydra import compose, initialize_config_dir

    from recsys_fewshot import build
    from recsys_fewshot.config import register_configs

    register_configs()
    from recsys_fewshot.data.text import render_texts

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["dataset=ml100k"])
    data = build.load_data(cfg)
    texts = render_texts(data.items, cfg.dataset.text_template, list(cfg.dataset.list_columns))
    return texts[:64] if quick else texts


def extract(out: Path, quick: bool) -> dict:
    import torch

    from recsys_fewshot.encoders.text_encoder import TextEncoder

    texts = item_texts(quick)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, vectors = {}, {}
    for dtype in ("float32", "bfloat16"):
        encoder = TextEncoder("all-MiniLM-L6-v2", pooling="mean", max_length=64, batch_size=256, normalize=True,
                              device=device, dtype=dtype)
        encoder.encode(texts[:256])  # load, warm up kernels
        times = []
        for _ in range(1 if quick else 3):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            vectors[dtype] = encoder.encode(texts)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rows[dtype] = {"seconds": statistics.median(times), "items_per_s": len(texts) / statistics.median(times)}
    cosine = torch.nn.functional.cosine_similarity(vectors["float32"], vectors["bfloat16"], dim=-1)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "texts": len(texts),
              "extract": rows, "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "extract.json").write_text(json.dumps(result, indent=2))
    return result


def table(out: Path) -> str:
    ext = json.loads((out / "extract.json").read_text())
    lines = [f"device: {ext['device']}; {ext['texts']} ML-100K item texts, all-MiniLM-L6-v2 (mean pooling)",
             f"{'step':<34}{'value':>14}"]
    fp32, bf16 = ext["extract"]["float32"], ext["extract"]["bfloat16"]
    lines += [f"{'extraction fp32 items/s':<34}{fp32['items_per_s']:>14.0f}",
              f"{'extraction bf16 items/s':<34}{bf16['items_per_s']:>14.0f}",
              f"{'bf16 / fp32 speed':<34}{bf16['items_per_s'] / fp32['items_per_s']:>14.2f}",
              f"{'cosine(fp32, bf16) min':<34}{ext['cosine_min']:>14.5f}",
              f"{'cosine(fp32, bf16) mean':<34}{ext['cosine_mean']:>14.5f}"]
    metrics_file = out / "lora" / "metrics.json"
    if metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        tr = m["training"]
        lines += [f"{'LoRA epoch (' + tr['mixed_precision'] + ') samples/s':<34}{tr['samples_per_second']:>14.0f}",
                  f"{'LoRA run seconds (train)':<34}{m['seconds']['train']:>14.1f}",
                  f"{'LoRA test rmse':<34}{m['test'].get('rmse', float('nan')):>14.4f}",
                  f"{'LoRA trainable encoder params':<34}{tr['encoder_parameters']['trainable']:>14d}"]
    else:
        lines.append(f"{'LoRA epoch':<34}{'(no run)':>14}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="64 texts, one pass: a dry run of the code path")
    p = sub.add_parser("table")
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command == "extract":
        extract(args.out, args.quick)
    else:
        print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
