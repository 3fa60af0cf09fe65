"""Run the presets (and a set of short component runs) and record, or check, their metrics.

    python scripts/check_presets.py record FILE [--only NAME ...] [--out DIR]
    python scripts/check_presets.py check FILE [--only NAME ...] [--out DIR] [--tolerance 1e-6]

`record` writes every case's valid, test (and test_adapted) metrics to FILE; `check` runs them again and
compares, printing one line per case and the largest difference; it exits with 1 when a case differs by more
than the tolerance, fails, or is missing. Use it around a change that must not move any number: record on
the commit before, check on the commit after. Each case is one `python -m recsys_fewshot.train` process
(logger=none), so this covers the CLI, Hydra's composition and every stage of a run. A case whose encoder is
not installed (mpnet: `python scripts/fetch_mpnet.py`) is skipped with the reason.

The cases are every `experiment=` preset that finishes in about two minutes on a 2-core CPU, plus short
runs of the components those presets do not reach (other heads, splits, PEFT methods, KG, the scale
optimizer). Needs RECSYS_FEWSHOT_DATA with ml-100k/, amazon-scientific-unisrec/ and tallrec-book/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHORT = ["trainer.max_epochs=2"]
CASES: dict[str, list[str]] = {
    # the published presets (experiment=...)
    "cold_items": ["experiment=cold_items"],
    "cold_items_ease": ["experiment=cold_items_ease"],
    "cold_items_mpnet": ["experiment=cold_items_mpnet"],
    "cold_items_ease_mpnet": ["experiment=cold_items_ease_mpnet"],
    "cold_users_k5": ["experiment=cold_users_k5"],
    "cold_users_k10": ["experiment=cold_users_k10"],
    "cold_users_k20": ["experiment=cold_users_k20"],
    "cold_users_k5_ranking": ["experiment=cold_users_k5_ranking"],
    "cold_users_k20_ranking": ["experiment=cold_users_k20_ranking"],
    "cold_users_k5_episodic": ["experiment=cold_users_k5_episodic"],
    "cold_users_k20_episodic": ["experiment=cold_users_k20_episodic"],
    "warm": ["experiment=warm"],
    "warm_ease": ["experiment=warm_ease"],
    "amazon_ease": ["experiment=amazon_ease"],
    "amazon_zeroshot": ["experiment=amazon_zeroshot"],
    "tallrec_movie_16": ["experiment=tallrec_movie", "split.n_shots=16"],
    "tallrec_movie_64": ["experiment=tallrec_movie"],
    "tallrec_movie_256_none": ["experiment=tallrec_movie", "split.n_shots=256", "split.valid=none"],
    "tallrec_movie_likerate": ["experiment=tallrec_movie", "head=likerate"],
    "tallrec_movie_random": ["experiment=tallrec_movie", "head=random"],
    "tallrec_book_64": ["experiment=tallrec_book"],
    "tallrec_book_holdout": ["experiment=tallrec_book", "split.n_shots=256", "split.valid=holdout"],
    # the default job and short runs of what the presets do not reach
    "default": [],
    "default_id_only": ["encoder=none", "split=given", *SHORT],
    "mlp": ["head=mlp", *SHORT],
    "temporal_mf": ["split=temporal", *SHORT],
    "loo_ranking_mf": ["split=leave_one_out", "trainer.num_negatives=64", *SHORT],
    "seq_loo": ["split=leave_one_out", "head=seq", "trainer.limit_train_batches=30", *SHORT],
    "ml100k_seq_short": ["experiment=ml100k_seq", "trainer.max_epochs=1", "trainer.limit_train_batches=10"],
    "amazon_trained_short": ["experiment=amazon_trained", "trainer.max_epochs=1", "trainer.limit_train_batches=20"],
    "text_pool_ml100k": ["head=text_pool", "task=ranking", "trainer.max_epochs=0"],
    "ease_ml100k": ["head=ease", "task=ranking"],
    "episodic_k10": ["split=cold_users", "split.k=10", "head=episodic", "task=ranking", "encoder=none"],
    "cold_users_k5_adapt": ["experiment=cold_users_k5", "split.adapt_steps=5", *SHORT],
    "kg_attributes": ["kg=attributes", *SHORT],
    "kg_cold_items_rotate": ["experiment=cold_items", "kg=attributes", "kg.model=rotate", *SHORT],
    "lora_minilm": ["peft=lora", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                    "trainer.batch_size=256"],
    "bitfit_minilm": ["peft=bitfit", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                      "trainer.batch_size=256"],
    "scale_lazy": ["experiment=scale", *SHORT],
    "inductive_cold_users": ["split=cold_users", "model=inductive", *SHORT],
    "fewshot_book_head": ["experiment=tallrec_movie", "model=fewshot_book"],
}
NEEDS_MPNET = {"cold_items_mpnet", "cold_items_ease_mpnet"}
PARTS = ("valid", "test", "test_adapted")


def mpnet_missing() -> str | None:
    sys.path.insert(0, str(REPO))
    from recsys_fewshot.encoders.text_encoder import EncoderError, resolve_model_path

    try:
        resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    except EncoderError as err:
        return str(err).splitlines()[0][:200]
    return None


def run_case(name: str, overrides: list[str], out: Path) -> dict:
    run_dir = out / name
    log = out / f"{name}.log"
    cmd = [sys.executable, "-m", "recsys_fewshot.train", *overrides, "logger=none", "trainer.progress=false",
           f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    start = time.perf_counter()
    with open(log, "w") as handle:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = round(time.perf_counter() - start, 1)
    if rc != 0:
        return {"error": f"exit {rc}: see {log}", "seconds": seconds}
    summary = json.loads((run_dir / "metrics.json").read_text())
    return {**{part: summary[part] for part in PARTS if part in summary}, "seconds": seconds}


def differences(before: dict, now: dict) -> tuple[float, list[str]]:
    """The largest absolute difference over every metric of every part, and what is missing or extra."""
    worst, notes = 0.0, []
    for part in PARTS:
        a, b = before.get(part, {}), now.get(part, {})
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                notes.append(f"{part}/{key} only {'before' if key in a else 'now'}")
                worst = math.inf
                continue
            x, y = a[key], b[key]
            if x is None and y is None:
                continue
            if x is None or y is None:
                worst = math.inf
                notes.append(f"{part}/{key}: {x} vs {y}")
                continue
            worst = max(worst, abs(float(x) - float(y)))
    return worst, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["record", "check"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    parser.add_argument("--out", type=Path, help="run folders and logs (default: a temporary folder)")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; cases: {', '.join(CASES)}")
    names = args.only or list(CASES)
    out = args.out or Path(tempfile.mkdtemp(prefix="check-presets-"))
    out.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(args.file.read_text()) if args.file.is_file() else {}
    if args.mode == "check" and not recorded:
        parser.error(f"{args.file}: nothing recorded (run `record` first)")
    no_mpnet = mpnet_missing() if NEEDS_MPNET & set(names) else None
    failed, results = 0, dict(recorded) if args.mode == "record" else {}
    print(f"{'case':<26}{'seconds':>9}  result", flush=True)
    for name in names:
        if name in NEEDS_MPNET and no_mpnet:
            print(f"{name:<26}{'-':>9}  skipped: {no_mpnet}", flush=True)
            continue
        now = run_case(name, CASES[name], out)
        if "error" in now:
            failed += 1
            print(f"{name:<26}{now['seconds']:>9.1f}  FAILED {now['error']}", flush=True)
            continue
        if args.mode == "record":
            results[name] = {**now, "overrides": CASES[name]}
            tmp = args.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
            tmp.replace(args.file)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in list(now.get("test", {}).items())[:3]
                              if isinstance(v, (int, float)))
            print(f"{name:<26}{now['seconds']:>9.1f}  recorded: {shown}", flush=True)
            continue
        if name not in recorded:
            failed += 1
            print(f"{name:<26}{now['seconds']:>9.1f}  NOT RECORDED in {args.file}", flush=True)
            continue
        worst, notes = differences(recorded[name], now)
        ok = worst <= args.tolerance
        failed += not ok
        was = recorded[name].get("seconds")
        print(f"{name:<26}{now['seconds']:>9.1f}  {'same' if ok else 'DIFFERS'}: max |diff| {worst:.1e}"
              f" (recorded run {was} s){'; ' + '; '.join(notes) if notes else ''}", flush=True)
    print(f"{len(names) - failed} of {len(names)} cases {'recorded' if args.mode == 'record' else 'identical'}"
          f" (tolerance {args.tolerance:g}); run folders under {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
