"""Extraction speed: our TextEncoder.encode against SentenceTransformer.encode, same model, same texts.

    HF_HUB_OFFLINE=1 python scripts/bench_extract.py --texts both --data-root /path/to/datasets

The data root holds ``ml-100k/u.item`` (MovieLens titles) and ``amazon-scientific-unisrec/Scientific.text``.
Runs alternate A/B/A/B in one process after one warm-up call each; the table shows median items/s, the
ratio ours/ST and the cosine between the two sets of vectors (ours with mean pooling + L2 norm, which is
what ST does for all-MiniLM-L6-v2). Also shown: the share of our time spent tokenizing (via `datasets`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # both contenders: no tokenizer threads fighting torch's

import torch

from recsys_fewshot.encoders.text_encoder import TextEncoder

SOURCES = {"ml100k": Path("ml-100k") / "u.item", "amazon": Path("amazon-scientific-unisrec") / "Scientific.text"}


def load_texts(kind: str, root: Path) -> list[str]:
    """MovieLens-100K titles (u.item field 2, latin-1) or the Amazon Scientific item texts (.text column 2)."""
    file = root / SOURCES[kind]
    if not file.is_file():
        sys.exit(f"--data-root: {file} not found")
    if kind == "ml100k":
        lines = file.read_text(encoding="latin-1").splitlines()
        return [line.split("|")[1] for line in lines if line.strip()]
    lines = file.read_text(encoding="utf-8").splitlines()[1:]  # first line: RecBole header
    return [line.split("\t", 1)[1] for line in lines if "\t" in line]


def timed(fn, texts: list[str]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    vectors = fn(texts)
    return time.perf_counter() - start, vectors


def bench(kind: str, texts: list[str], args: argparse.Namespace) -> dict:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(args.model_path, device="cpu")
    ours = TextEncoder(args.model_path, pooling="mean", normalize=True, max_length=st.max_seq_length,
                       batch_size=args.batch_size, device="cpu")
    st_encode = lambda t: st.encode(t, convert_to_tensor=True).cpu()  # noqa: E731
    warm = texts[: args.batch_size]
    ours.encode(warm), st_encode(warm)
    times: dict[str, list[float]] = {"ours": [], "st": [], "tokenize": []}
    for _ in range(args.repeats):
        seconds, mine = timed(ours.encode, texts)
        times["ours"].append(seconds)
        seconds, theirs = timed(st_encode, texts)
        times["st"].append(seconds)
        times["tokenize"].append(timed(ours._tokenize, texts)[0])
    cosine = torch.nn.functional.cosine_similarity(mine, theirs, dim=1)
    ours_rate = len(texts) / statistics.median(times["ours"])
    st_rate = len(texts) / statistics.median(times["st"])
    return {"texts": kind, "n": len(texts), "max_length": st.max_seq_length, "ours/s": ours_rate, "st/s": st_rate, "ratio": ours_rate / st_rate,
            "cos min": cosine.min().item(), "cos mean": cosine.mean().item(),
            "tokenize %": 100 * statistics.median(times["tokenize"]) / statistics.median(times["ours"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", choices=["ml100k", "amazon", "both"], default="both")
    parser.add_argument("--data-root", type=Path, default=os.environ.get("RECSYS_FEWSHOT_DATA"),
                        help="folder holding ml-100k/ and amazon-scientific-unisrec/ (default: $RECSYS_FEWSHOT_DATA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="alias, local folder or hub id")
    parser.add_argument("--batch-size", type=int, default=128, help="our encoder's batch size (ST keeps its 32)")
    args = parser.parse_args()
    if args.data_root is None:
        parser.error("--data-root is required when RECSYS_FEWSHOT_DATA is not set")
    args.model_path = str(TextEncoder(args.model).path)
    kinds = ["ml100k", "amazon"] if args.texts == "both" else [args.texts]
    rows = [bench(kind, load_texts(kind, Path(args.data_root)), args) for kind in kinds]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model_path}, "
          f"median of {args.repeats} alternating runs")
    formats = {"texts": "{:>8}", "n": "{:>6}", "ours/s": "{:>8.0f}", "st/s": "{:>8.0f}", "ratio": "{:>6.2f}",
               "cos min": "{:>9.6f}", "cos mean": "{:>9.6f}", "tokenize %": "{:>10.1f}"}
    print(" | ".join(f"{name:>{len(fmt.format(rows[0][name]))}}" for name, fmt in formats.items()))
    for row in rows:
        print(" | ".join(fmt.format(row[name]) for name, fmt in formats.items()))

if __name__ == "__main__":
    main()
