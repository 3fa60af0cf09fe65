"""Implicit ALS, LightFM and popularity on one of the project's splits, scored by the project's own evaluation.

The split, the relevant interactions and the exclusions are built as a run builds them (`build.prepare`), so
the numbers sit beside a run's metrics.json: the peers fit on train + valid (they do not stop early), every
test user ranks all items (or the split's candidates) without their train and valid items, and the metrics
are `evaluation.ranking_metrics`' (the same tie order, the same definitions). ALS and LightFM run under another
Python (`--peers-python`; `make peers-venv` builds one): they are not dependencies of the project.

    python scripts/peers_on_split.py --peers-python /tmp/recsys-fewshot-peers/bin/python \\
        dataset=lastfm split=per_user task=ranking eval.ks=[10,20]

Prints one JSON line per model: its test metrics and fit seconds. ``--bm25-plays`` adds ALS on BM25-weighted
play counts (the interactions' ``plays`` column, Last.fm), the weighting implicit's own Last.fm example uses.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from recsys_fewshot.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides)


class Factors:
    """A scorer for `evaluation.ranking_metrics`: user · item factors (+ an item bias)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, bias: np.ndarray | None = None):
        import torch

        self.users, self.items = torch.as_tensor(users, dtype=torch.float32), torch.as_tensor(items, dtype=torch.float32)
        self.bias = torch.zeros(len(items)) if bias is None else torch.as_tensor(bias, dtype=torch.float32)

    def score_candidates(self, users, items):
        return self.users[users.cpu()] @ self.items[items.cpu()].T + self.bias[items.cpu()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", help="a Python with implicit and lightfm (without: popularity only)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--als-iterations", type=int, default=15)
    parser.add_argument("--als-reg", type=float, default=0.01)
    parser.add_argument("--lightfm-epochs", type=int, default=30)
    parser.add_argument("--bm25-plays", action="store_true", help="also ALS on BM25-weighted play counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.worker:
        worker(Path(args.worker), args)
        return

    import pandas as pd
    from accelerate import Accelerator
    from hydra.utils import instantiate

    from recsys_fewshot import build
    from recsys_fewshot.evaluation import ranking_metrics, relevant

    cfg = compose(overrides)
    data = build.load_data(cfg)
    split = instantiate(cfg.split)(data)
    task = build.resolve_task(cfg, split)
    if task != "ranking":
        raise SystemExit(f"the peers rank items: use task=ranking (this split's task is {task})")
    prep = build.prepare(cfg, data, split, task, all_rows=False)
    known = pd.concat([split.train[relevant(split.train, prep.spec)], split.valid[relevant(split.valid, prep.spec)]])
    candidates = (prep.candidates or {}).get("test")
    accelerator = Accelerator(cpu=True)
    rows = []
    counts = np.bincount(known["item"].to_numpy(), minlength=data.n_items).astype(np.float32)
    scorers = {"popularity": (Factors(np.zeros((data.n_users, 1)), np.zeros((data.n_items, 1)), counts), 0.0)}
    if args.peers_python:
        with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
            plays = known["plays"].to_numpy() if "plays" in known.columns else np.ones(len(known))
            np.savez(Path(tmp) / "fit.npz", users=known["user"].to_numpy(), items=known["item"].to_numpy(),
                     plays=plays, shape=np.array([data.n_users, data.n_items]))
            command = [args.peers_python, str(Path(__file__).resolve()), "--worker", tmp, "--factors",
                       str(args.factors), "--als-iterations", str(args.als_iterations), "--als-reg", str(args.als_reg),
                       "--lightfm-epochs", str(args.lightfm_epochs), "--threads", str(args.threads),
                       "--seed", str(args.seed), *(["--bm25-plays"] if args.bm25_plays else [])]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"the peers' worker failed:\n{proc.stderr[-3000:]}")
            seconds = json.loads(proc.stdout.strip().splitlines()[-1])
            factors = np.load(Path(tmp) / "factors.npz")
            for name in seconds:
                bias = factors[f"{name}/bias"] if f"{name}/bias" in factors else None
                scorers[name] = (Factors(factors[f"{name}/users"], factors[f"{name}/items"], bias), seconds[name])
    for name, (scorer, fit_seconds) in scorers.items():
        metrics, table = ranking_metrics(scorer, split.test, prep.exclude_test, data.n_items, prep.spec, accelerator,
                                     candidates)
        rows.append({"model": name, "fit_seconds": round(fit_seconds, 1), "test_users": int(len(table)),
                     **{k: round(v, 4) for k, v in metrics.items()}})
        print(json.dumps(rows[-1]), flush=True)


def worker(folder: Path, args) -> None:
    """Runs under the peers' Python: fits each peer on fit.npz, writes factors.npz, prints the fit seconds."""
    import scipy.sparse as sp

    fit = np.load(folder / "fit.npz")
    shape = tuple(int(v) for v in fit["shape"])
    binary = sp.csr_matrix((np.ones(len(fit["users"]), np.float32), (fit["users"], fit["items"])), shape=shape)
    out, seconds = {}, {}
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight
    from threadpoolctl import threadpool_limits

    variants = {"implicit ALS": binary}
    if args.bm25_plays:
        plays = sp.csr_matrix((fit["plays"].astype(np.float32), (fit["users"], fit["items"])), shape=shape)
        variants["implicit ALS, BM25 plays"] = bm25_weight(plays, K1=100, B=0.8).tocsr()
    for name, matrix in variants.items():
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=args.factors, regularization=args.als_reg,
                                            iterations=args.als_iterations, num_threads=args.threads,
                                            random_state=args.seed)
            start = time.perf_counter()
            model.fit(matrix, show_progress=False)
            seconds[name] = time.perf_counter() - start
        out[f"{name}/users"], out[f"{name}/items"] = np.asarray(model.user_factors), np.asarray(model.item_factors)
    from lightfm import LightFM

    model = LightFM(no_components=args.factors, loss="warp", random_state=args.seed)
    start = time.perf_counter()
    model.fit(binary.tocoo(), epochs=args.lightfm_epochs, num_threads=args.threads)
    name = "LightFM WARP"
    seconds[name] = time.perf_counter() - start
    out[f"{name}/users"], out[f"{name}/items"] = model.user_embeddings, model.item_embeddings
    out[f"{name}/bias"] = model.item_biases
    np.savez(folder / "factors.npz", **out)
    print(json.dumps(seconds))


if __name__ == "__main__":
    sys.exit(main())
