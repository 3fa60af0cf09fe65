#!/usr/bin/env python
"""Speed and scale benchmark (issue 8): one table.

    make bench                                   # full: real texts, ML-100K, 1M and 10M interactions
    python scripts/bench_speed.py --quick        # tiny sizes, under a minute (run by the test suite)
    python scripts/bench_speed.py --peers-python /tmp/peers-venv/bin/python   # + implicit ALS / LightFM

Sections:
1. extraction (CPU): our TextEncoder vs sentence-transformers on ML-100K titles and Amazon Scientific texts
   (scripts/bench_extract.py: alternated A/B, medians, cosine), plus each one's fraction of the compute
   bound = FLOPs of the forward pass over the real token counts / an fp32 matmul rate measured here.
2. cache: the same texts a second time: forward passes (must be 0) and the time to load the vectors.
3. whole run: the default `python -m recsys_fewshot.train` on ML-100K with a warm cache, split as in its
   metrics.json (startup, data, encode, train, eval), plus the heavy modules the process imported.
4. scale: scripts/make_synthetic.py data (100k users, 50k items) at 1M and 10M interactions through the
   CLI (dataset=csv, one epoch, frozen MiniLM vectors from the cache): epoch time (training batches only),
   full-ranking evaluation of every valid and test user (chunked, top-k only), peak RSS of the process.
5. peers at 1M: implicit ALS and LightFM fit times, run by `--peers-python` (a separate venv; they are
   not project dependencies). Skipped with a note when not given.

Every run happens in a subprocess (fresh imports, its own peak RSS). Data and caches go to --work-dir.
Timings on a shared machine are noisy: compare ratios measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
HEAVY_MODULES = ("transformers", "peft", "datasets", "sklearn", "wandb", "sentence_transformers")
DEFAULT_MODEL = "all-MiniLM-L6-v2"
QUICK_SCALE = [(2_000, 2_000, 1_000), (20_000, 2_000, 1_000)]  # (interactions, users, items)
FULL_SCALE = [(1_000_000, 100_000, 50_000), (10_000_000, 100_000, 50_000)]
GOALS = {"speedup": 1.3, "cosine": 0.9999, "total_s": 15.0, "startup_s": 3.0, "epoch_s": 60.0, "eval_s": 60.0,
         "rss_gib": 4.0, "growth": 12.0}

# Runs `python -m recsys_fewshot.train ARGS` in this process and, at exit, writes its peak RSS and which
# heavy modules it imported to $BENCH_REPORT (a JSON file).
_WRAPPER = """
import atexit, json, os, resource, runpy, sys
def _report():
    mods = {m: m in sys.modules for m in %r}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(os.environ["BENCH_REPORT"], "w") as fh:
        json.dump({"modules": mods, "peak_rss": rss}, fh)
atexit.register(_report)
sys.argv = ["recsys_fewshot.train", *sys.argv[1:]]
runpy.run_module("recsys_fewshot.train", run_name="__main__", alter_sys=True)
""" % (HEAVY_MODULES,)


# ----------------------------------------------------------------------------------------------- table
class Table:
    """Rows of (section, measure, value, reference, verdict), printed once at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, section: str, measure: str, value: str, reference: str = "", verdict: str = "") -> None:
        self.rows.append((section, measure, value, reference, verdict))
        print(f"  [{section}] {measure}: {value}  {reference}  {verdict}", flush=True)

    def render(self) -> str:
        head = ("section", "measure", "value", "reference / baseline", "ratio / goal")
        rows = [head, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                          *(line(r) for r in self.rows)])


def verdict(ok: bool, goal: str) -> str:
    return f"{'met' if ok else 'MISSED'} ({goal})"


# ------------------------------------------------------------------------------------ helpers
def _load_script(name: str):
    """A module from scripts/ (they are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["RECSYS_FEWSHOT_CACHE"] = str(work / "cache")
    return env


def run_cli(overrides: list[str], work: Path, name: str, timeout: int = 3600, reuse: bool = False) -> dict:
    """One `recsys_fewshot.train` process: its metrics.json, wall clock, peak RSS and imported heavy modules.
    `reuse`: an earlier invocation's finished run of the same name and the same overrides is read back instead
    of run again (a run with other settings is run again)."""
    run_dir = work / "runs" / name
    report = work / "runs" / f"{name}.report.json"
    if reuse and report.is_file() and (run_dir / "metrics.json").is_file():
        saved = json.loads(report.read_text())
        if "wall" in saved and saved.get("overrides") == list(overrides):
            return {"metrics": json.loads((run_dir / "metrics.json").read_text()), **saved}
    report.parent.mkdir(parents=True, exist_ok=True)
    env = {**bench_env(work), "BENCH_REPORT": str(report)}
    args = [sys.executable, "-c", _WRAPPER, *overrides, "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"run {name} failed ({' '.join(overrides)}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    saved = {**json.loads(report.read_text()), "wall": wall, "overrides": overrides}
    report.write_text(json.dumps(saved))
    return {"metrics": metrics, **saved}


def synthetic(work: Path, n: int, users: int, items: int, seed: int = 0) -> Path:
    """scripts/make_synthetic.py data in work/synthetic-..., generated once."""
    folder = work / f"synthetic-{n}-{users}-{items}-s{seed}"
    if not (folder / "interactions.csv").is_file():
        gen = _load_script("make_synthetic")
        inter, item_frame = gen.generate(n, users, items, seed)
        folder.mkdir(parents=True, exist_ok=True)
        gen.write_csv_atomic(item_frame, folder / "items.csv")
        gen.write_csv_atomic(inter, folder / "interactions.csv")
    return folder


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


# ------------------------------------------------------------------------- 1. extraction
def matmul_rate(seconds: float = 1.0) -> float:
    """Measured fp32 matmul FLOP/s on this machine's torch threads: the best of repeated [4096,384]x[384,1536]
    products (the shape of MiniLM's feed-forward layer on a full batch)."""
    import torch

    a, b = torch.randn(4096, 384), torch.randn(384, 1536)
    torch.mm(a, b)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best


def forward_flops(model, lengths) -> float:
    """FLOPs of one forward pass over texts of `lengths` tokens, unpadded: 2 x non-embedding parameters per
    token (the linear layers) + attention (QK^T and AV: 4 x n^2 x hidden per layer and text)."""
    import numpy as np

    config = model.config
    params = sum(p.numel() for name, p in model.named_parameters()
                 if not name.startswith(("embeddings.", "pooler.")))
    n = np.asarray(lengths, dtype=np.float64)
    return float(2 * params * n.sum() + 4 * config.num_hidden_layers * config.hidden_size * (n ** 2).sum())


def section_extraction(table: Table, args, texts_by_kind: dict[str, list[str]]) -> None:
    import torch

    extract = _load_script("bench_extract")
    from recsys_fewshot.encoders.text_encoder import TextEncoder

    ns = argparse.Namespace(model_path=str(TextEncoder(args.model).path), batch_size=args.encoder_batch_size,
                            repeats=args.repeats)
    seconds = 0.3 if args.quick else 2.0
    for kind, texts in texts_by_kind.items():
        before = matmul_rate(seconds)
        row = extract.bench(kind, texts, ns)
        rate = max(before, matmul_rate(seconds))  # the best the machine gave around the runs (it may be shared)
        table.add("1 extraction", f"{kind}: fp32 matmul rate (measured before/after)", f"{rate / 1e9:.1f} GFLOP/s",
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        counter = TextEncoder(ns.model_path, max_length=row["max_length"])
        model, _ = counter.load()
        flops = forward_flops(model, counter._tokenize(texts)[1])
        bound = flops / rate  # seconds at the measured matmul rate
        ours_frac = bound / (len(texts) / row["ours/s"])
        st_frac = bound / (len(texts) / row["st/s"])
        table.add("1 extraction", f"{kind}: items/s ({len(texts)} texts)", f"{row['ours/s']:.0f} ours",
                  f"{row['st/s']:.0f} sentence-transformers",
                  f"{row['ratio']:.2f}x " + verdict(row["ratio"] >= GOALS["speedup"], ">= 1.3x"))
        table.add("1 extraction", f"{kind}: cosine ours vs ST (min)", f"{row['cos min']:.6f}", "",
                  verdict(row["cos min"] >= GOALS["cosine"], ">= 0.9999"))
        table.add("1 extraction", f"{kind}: fraction of compute bound", f"{100 * ours_frac:.0f}% ours",
                  f"{100 * st_frac:.0f}% ST", f"{flops / 1e9:.1f} GFLOP per pass")


# ------------------------------------------------------------------------------ 2. cache
def cli_stage_inputs(overrides: list[str], work: Path):
    """(config, data, one-process stand-in for Accelerate) as the CLI would have them, for calling the build
    path's stages in this process; the cache is the bench's."""
    from types import SimpleNamespace

    import torch
    from hydra import compose, initialize_config_dir

    from recsys_fewshot import build
    from recsys_fewshot.config import register_configs

    register_configs()

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    os.environ["RECSYS_FEWSHOT_CACHE"] = str(work / "cache")
    return cfg, build.load_data(cfg), SimpleNamespace(device=torch.device("cpu"), num_processes=1)


def whole_run_overrides(args, work: Path) -> tuple[list[str], str]:
    """The whole run of section 3: the default config on ML-100K (quick: tiny synthetic CSV data, 1 epoch)."""
    if args.quick:
        folder = synthetic(work, *QUICK_SCALE[0])
        return ["dataset=csv", f"dataset.dir={folder}", "trainer.max_epochs=1", "logger=none",
                *model_override(args)], "synthetic 2k, 1 epoch"
    return model_override(args), "ML-100K, default config"


def model_override(args) -> list[str]:
    """The CLI runs use conf/encoder/minilm.yaml; --model (e.g. a tiny test model) replaces its model."""
    return [] if args.model == DEFAULT_MODEL else [f"encoder.name_or_path={args.model}"]


def section_cache(table: Table, args, work: Path) -> None:
    """The item vectors of section 3's run, through the build path's own stage (so that run starts warm): once from
    an empty embedding cache, then again from the cache."""
    import shutil

    from recsys_fewshot import build

    overrides, what = whole_run_overrides(args, work)
    shutil.rmtree(work / "cache" / "embeddings", ignore_errors=True)
    cfg, data, single = cli_stage_inputs(overrides, work)
    start = time.perf_counter()
    _, cold = build.frozen_item_vectors(cfg, data, single)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    _, warm = build.frozen_item_vectors(cfg, data, single)
    warm_s = time.perf_counter() - start
    n = warm["hits"] + warm["misses"]
    table.add("2 cache", f"{what}: second run, forward passes ({n} items)", f"{warm['forward_calls']}",
              f"first run: {cold['forward_calls']}", verdict(warm["forward_calls"] == 0 and warm["misses"] == 0, "0"))
    table.add("2 cache", "second run: time to load the vectors", f"{warm_s * 1000:.0f} ms",
              f"first run (encode + write): {cold_s:.1f} s", f"{cold_s / max(warm_s, 1e-9):.0f}x faster")


# -------------------------------------------------------------------------- 3. whole run
def section_whole_run(table: Table, args, work: Path) -> None:
    overrides, what = whole_run_overrides(args, work)
    if not args.quick and not (work / "cache" / "embeddings").is_dir():
        run_cli(overrides, work, "whole-cold")  # section 2 skipped: fill the embedding cache first
    warm = run_cli(overrides, work, "whole-warm")
    sec, m = warm["metrics"]["seconds"], warm["metrics"]
    outside = warm["wall"] - sec["total"]  # interpreter start before train.py's first line, and exit
    parts = ", ".join(f"{k} {sec.get(k, 0):.1f}" for k in ("startup", "data", "encode", "train", "eval"))
    table.add("3 whole run", f"{what}: wall clock, warm cache", f"{warm['wall']:.1f} s",
              f"{parts}, rest {outside:.1f}; {m['epochs']} epochs, test rmse {m['test'].get('rmse', float('nan')):.4f}",
              verdict(warm["wall"] < GOALS["total_s"], "< 15 s"))
    table.add("3 whole run", "startup: imports before the first line of work", f"{sec['startup']:.1f} s",
              f"+ interpreter start/exit {outside:.1f} s", verdict(sec["startup"] < GOALS["startup_s"], "< 3 s"))
    imported = [name for name, yes in warm["modules"].items() if yes]
    frozen_ok = not {"transformers", "peft"} & set(imported)
    table.add("3 whole run", "heavy modules imported (warm, frozen)", ", ".join(imported) or "none",
              f"encoder hits {m['encoder'].get('hits')}, misses {m['encoder'].get('misses')}",
              verdict(frozen_ok, "no transformers/peft"))


# ------------------------------------------------------------------------------- 4. scale
def section_scale(table: Table, args, work: Path) -> dict[int, Path]:
    grid = QUICK_SCALE if args.quick else FULL_SCALE
    if args.scale_sizes:
        grid = [(int(n), users, items) for n in args.scale_sizes.split(",") for _, users, items in grid[:1]]
    grid = sorted(grid)  # smallest first: growth = largest / smallest size, the goals judged on the largest
    sizes = [n for n, _, _ in grid]
    folders, costs = {}, {}
    for n, users, items in grid:
        start = time.perf_counter()
        folders[n] = synthetic(work, n, users, items)
        gen = time.perf_counter() - start
        overrides = ["dataset=csv", f"dataset.dir={folders[n]}", *args.scale_preset, "trainer.max_epochs=1",
                     f"trainer.batch_size={args.scale_batch_size}", "logger=none", "save_predictions=false",
                     f"eval.chunk_size={args.eval_chunk_size}", *model_override(args)]
        if args.scale_train_batches:
            overrides.append(f"trainer.limit_train_batches={args.scale_train_batches}")
        if n == sizes[0]:
            warm_item_vectors(overrides, work)  # sizes share the items: the measured runs never load the model
        out = run_cli(overrides, work, f"scale-{n}", reuse=args.reuse_runs)
        m = out["metrics"]
        epoch = m["training"]["updates"] and (_train_rows(m) / m["training"]["samples_per_second"])
        evaluation = m["seconds"]["eval"]
        costs[n] = (epoch, evaluation, out["peak_rss"])
        label = f"{n / 1e6:g}M" if n >= 1e6 else f"{n}"
        partial = m["training"]["updates"] * args.scale_batch_size < _train_rows(m)
        label_epoch = f" (from {m['training']['updates']} batches)" if partial else ""
        table.add("4 scale", f"{label}: one epoch (batch {args.scale_batch_size}){label_epoch}", f"{epoch:.1f} s",
                  f"{_train_rows(m):,} rows, {m['training']['samples_per_second']:,.0f} rows/s, "
                  f"test rmse {m['test'].get('rmse', float('nan')):.4f} ({' '.join(args.scale_preset) or 'defaults'}); "
                  f"data gen {gen:.0f} s",
                  verdict(epoch <= GOALS["epoch_s"], "<= 60 s") if n == sizes[-1] else "")
        if args.scale_baseline_batches and args.scale_preset:
            # the same data through the plain defaults (uniform batches, dense AdamW), first K batches only
            base_over = [o for o in overrides if o not in args.scale_preset]
            base = run_cli([*base_over, f"trainer.limit_train_batches={args.scale_baseline_batches}",
                            "eval.ranking=false"], work, f"scale-{n}-defaults", reuse=args.reuse_runs)["metrics"]
            rate = base["training"]["samples_per_second"]
            table.add("4 scale", f"{label}: rows/s, {' '.join(args.scale_preset)} vs the default config",
                      f"{m['training']['samples_per_second']:,.0f} vs {rate:,.0f}",
                      f"defaults timed on their first {args.scale_baseline_batches} batches (epoch ~{_train_rows(m) / rate:.0f} s)",
                      f"{m['training']['samples_per_second'] / rate:.1f}x")
        table.add("4 scale", f"{label}: full-ranking eval, valid + test users", f"{evaluation:.1f} s",
                  f"{users:,} users x {items:,} items, chunk {args.eval_chunk_size}, top-20 kept",
                  verdict(evaluation <= GOALS["eval_s"], "<= 60 s") if n == sizes[-1] else "")
        table.add("4 scale", f"{label}: peak RSS of the run", gib(out["peak_rss"]),
                  f"whole process (data + split + model + eval), wall {out['wall']:.0f} s",
                  verdict(out["peak_rss"] <= GOALS["rss_gib"] * 2**30, "<= 4 GiB") if n == sizes[-1] else "")
    if len(sizes) != 2:
        return folders
    small, big = sorted(sizes)
    for i, name in enumerate(("epoch", "eval", "peak RSS")):
        growth = costs[big][i] / max(costs[small][i], 1e-9)
        table.add("4 scale", f"{name}: cost {big // small}x data", f"{growth:.1f}x", "",
                  verdict(growth <= GOALS["growth"], "<= 12x"))
    return folders


def warm_item_vectors(overrides: list[str], work: Path) -> None:
    """The CLI's item vectors for `overrides`, written to the bench's embedding cache by the build path's own stage."""
    from recsys_fewshot import build

    cfg, data, single = cli_stage_inputs(overrides, work)
    build.frozen_item_vectors(cfg, data, single)


def _train_rows(metrics: dict) -> int:
    return int(metrics["split"]["train"])


# ------------------------------------------------------------------------------- 5. peers
def section_peers(table: Table, args, folder: Path) -> None:
    if not args.peers_python:
        table.add("5 peers", "implicit ALS, LightFM", "skipped", "pass --peers-python PATH (a separate venv)")
        return
    proc = subprocess.run([args.peers_python, str(Path(__file__).resolve()), "--peer-worker", str(folder),
                           "--threads", str(args.peer_threads)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        table.add("5 peers", "implicit ALS, LightFM", "failed", proc.stderr.strip().splitlines()[-1][:100])
        return
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, value in result.items():
        if isinstance(value, str):
            table.add("5 peers", name, "skipped", value)
        else:
            table.add("5 peers", name, f"{value:.1f} s", f"{folder.name}, {args.peer_threads} threads")


def peer_worker(folder: Path, threads: int) -> None:
    """Runs under the peers' Python: fit times of implicit ALS and LightFM on the 80% train rows."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    frame = pd.read_csv(folder / "interactions.csv")
    rng = np.random.default_rng(0)
    frame = frame[rng.random(len(frame)) >= 0.2]
    users, items = frame.user_id.to_numpy(), frame.item_id.to_numpy()
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    matrix = sp.csr_matrix((np.ones(len(frame), np.float32), (users, items)), shape=shape)
    out: dict[str, object] = {}
    try:
        from implicit.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=64, iterations=15, num_threads=threads, random_state=0)
            start = time.perf_counter()
            model.fit(matrix, show_progress=False)
            out["implicit ALS fit (64 factors, 15 iterations)"] = time.perf_counter() - start
    except ImportError as err:
        out["implicit ALS"] = f"not installed ({err.name})"
    try:
        from lightfm import LightFM

        coo = matrix.tocoo()
        for loss in ("warp", "bpr"):
            model = LightFM(no_components=64, loss=loss, random_state=0)
            start = time.perf_counter()
            model.fit(coo, epochs=1, num_threads=threads)
            out[f"LightFM {loss}: one epoch (64 components)"] = time.perf_counter() - start
    except ImportError as err:
        out["LightFM"] = f"not installed ({err.name})"
    print(json.dumps(out))


# -------------------------------------------------------------------------------- main
def real_texts(args, quick: bool) -> dict[str, list[str]]:
    """ML-100K titles and Amazon Scientific texts when the data root has them, else synthetic titles."""
    extract = _load_script("bench_extract")
    out = {}
    root = Path(args.data_root) if args.data_root else None
    for kind in ("ml100k", "amazon"):
        if root is not None and (root / extract.SOURCES[kind]).is_file():
            texts = extract.load_texts(kind, root)
            out[kind] = texts[:64] if quick else texts
            if quick:
                break  # one small text set is enough to exercise the section
    if not out:
        out["synthetic"] = _load_script("make_synthetic").generate(2000, 200, 64, 0)[1].title.tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI): every section, under a minute")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-fewshot-bench",
                        help="synthetic data, caches and run folders (reused between invocations)")
    parser.add_argument("--data-root", default=os.environ.get("RECSYS_FEWSHOT_DATA"),
                        help="folder holding ml-100k/ and amazon-scientific-unisrec/ (default: $RECSYS_FEWSHOT_DATA)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="alias or model folder (all sections)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating extraction runs (median)")
    parser.add_argument("--encoder-batch-size", type=int, default=128)
    parser.add_argument("--scale-batch-size", type=int, default=4096,
                        help="training batch at scale (the default config's 1024 is for ML-100K-sized data)")
    parser.add_argument("--scale-baseline-batches", type=int, default=100,
                        help="also time the default config (no --scale-preset) on this many batches; 0: skip")
    parser.add_argument("--scale-preset", default="experiment=scale",
                        help="overrides of the scale runs, comma-separated (default: conf/experiment/scale.yaml, "
                             "user-grouped batches + sparse ID-table updates; '' runs the default config)")
    parser.add_argument("--scale-sizes", help="comma-separated interaction counts (default 1M,10M; quick 2k,20k)")
    parser.add_argument("--scale-train-batches", type=int, default=0,
                        help="time only this many training batches and extrapolate the epoch (0: whole epoch)")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="read back the finished scale runs of an earlier invocation (same size and settings)")
    parser.add_argument("--eval-chunk-size", type=int, default=1024, help="users scored at once")
    parser.add_argument("--peers-python", help="a Python with implicit and/or lightfm installed")
    parser.add_argument("--peer-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sections", default="1,2,3,4,5", help="comma-separated subset of 1-5")
    parser.add_argument("--peer-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.scale_preset = [o for o in args.scale_preset.split(",") if o]
    if args.peer_worker:
        peer_worker(args.peer_worker, args.threads)
        return
    if args.quick:
        args.repeats = 1
    os.environ.update({k: v for k, v in bench_env(args.work_dir).items() if k != "RECSYS_FEWSHOT_CACHE"})
    work = args.work_dir / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    sections = {s.strip() for s in args.sections.split(",")}
    table = Table()
    start = time.perf_counter()
    if "1" in sections:
        section_extraction(table, args, real_texts(args, args.quick))
    if "2" in sections:
        section_cache(table, args, work)
    if "3" in sections:
        section_whole_run(table, args, work)
    folders = section_scale(table, args, work) if "4" in sections else {}
    if "5" in sections:
        small = min(folders) if folders else None
        folder = folders[small] if small else synthetic(work, *(QUICK_SCALE if args.quick else FULL_SCALE)[0])
        section_peers(table, args, folder)
    import torch

    print(f"\nrecsys-fewshot speed benchmark ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {time.perf_counter() - start:.0f} s\n")
    print(table.render())


if __name__ == "__main__":
    main()
