#!/usr/bin/env python
"""Serving benchmark: how fast a trained run answers, in one table.

    python scripts/bench_recommend.py --work-dir /tmp/bench-recommend            # every section
    python scripts/bench_recommend.py --sections a,c --ml100k-run outputs/<date>/<time>

Sections:
a. batch, ML-100K: top-20 for all 943 users of the default job's run (`python -m recsys_fewshot.train`, trained
   into the work dir unless --ml100k-run names one), in this process after `load_run`: the first call (it builds
   the item side once) and the median of the next ones.
b. scale: scripts/make_synthetic.py data (100k users x 50k items, --scale-interactions), trained with
   `experiment=scale` for --scale-epochs epochs, then `python -m recsys_fewshot.recommend users=all k=20
   out=recs.parquet` in a subprocess: wall clock (load included), the ranking and writing time it prints, and
   the process's peak RSS (wait4's rusage).
c. HTTP: `python -m recsys_fewshot.serve` on the ML-100K run; GET /recommend top-20 for random users from one
   keep-alive client (p50 / p99 latency), then from --clients clients at once (requests per second). The clients
   run on the same CPUs as the server.

Every measure is listed with the load average (1 min) read just before it: the CPUs may be shared.
Needs RECSYS_FEWSHOT_DATA (ML-100K) for a and c, the serve extra for c.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"batch_s": 0.5, "scale_s": 60.0, "scale_rss_gib": 4.0, "p99_ms": 20.0}


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def verdict(ok: bool, goal: str) -> str:
    return f"{'met' if ok else 'MISSED'} ({goal})"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, section: str, measure: str, value: str, detail: str = "", goal: str = "") -> None:
        self.rows.append((section, measure, value, detail, goal))
        print(f"  [{section}] {measure}: {value}  {detail}  {goal}", flush=True)

    def render(self) -> str:
        head = ("section", "measure", "value", "detail", "goal")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, self.rows)])


def env(work: Path) -> dict[str, str]:
    out = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    out.setdefault("RECSYS_FEWSHOT_CACHE", str(work / "cache"))
    return out


def train(run: Path, overrides: list[str], work: Path) -> Path:
    """`python -m recsys_fewshot.train OVERRIDES` into `run`, unless a finished run is there already."""
    if (run / "metrics.json").is_file():
        return run
    print(f"training {run.name}: {' '.join(overrides) or 'default job'}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", *overrides, "logger=none",
                           "trainer.progress=false", f"hydra.run.dir={run}"], cwd=ROOT, env=env(work),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"training {run} failed:\n{proc.stderr[-3000:]}")
    return run


# ---------------------------------------------------------------------------------- a. batch
def section_batch(table: Table, run: Path, repeats: int) -> None:
    import recsys_fewshot

    trained = recsys_fewshot.load_run(run)
    before = load()
    start = time.perf_counter()
    first = trained.recommend("all", k=20)
    cold = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trained.recommend("all", k=20)
        times.append(time.perf_counter() - start)
    warm = statistics.median(times)
    users = first["user_id"].nunique()
    table.add("a batch", f"top-20 for all {users} users, first call", f"{cold:.3f} s",
              f"{len(first)} rows; {before}", verdict(cold <= GOALS["batch_s"], "<= 0.5 s"))
    table.add("a batch", f"top-20 for all {users} users, median of {repeats}", f"{warm:.3f} s", load(),
              verdict(warm <= GOALS["batch_s"], "<= 0.5 s"))


# ---------------------------------------------------------------------------------- b. scale
def scale_run(args, work: Path) -> Path:
    if args.scale_run:
        return Path(args.scale_run)
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_synthetic

    n, users, items = args.scale_interactions, args.scale_users, args.scale_items
    folder = work / f"synthetic-{n}-{users}-{items}"
    if not (folder / "interactions.csv").is_file():
        print(f"writing {folder.name}", flush=True)
        inter, item_frame = make_synthetic.generate(n, users, items, 0)
        folder.mkdir(parents=True, exist_ok=True)
        make_synthetic.write_csv_atomic(item_frame, folder / "items.csv")
        make_synthetic.write_csv_atomic(inter, folder / "interactions.csv")
    return train(work / f"scale-{n}-{args.scale_epochs}ep", [
        "dataset=csv", f"dataset.dir={folder}", "experiment=scale", f"trainer.max_epochs={args.scale_epochs}",
        "trainer.batch_size=4096", "save_predictions=false", "eval.ranking=false"], work)


def section_scale(table: Table, args, work: Path) -> None:
    run = scale_run(args, work)
    out = work / "scale-recs.parquet"
    before = load()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "recsys_fewshot.recommend", f"run_dir={run}", "users=all",
                             "k=20", f"out={out}"], cwd=ROOT, env=env(work), stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"recommend failed:\n{err[-3000:]}")
    said = re.search(r"(\d+) rows for (\d+) users .*loaded in ([\d.]+)s, ranked in ([\d.]+)s", err)
    rows, users, loaded, ranked = said.groups()
    rss = usage.ru_maxrss * 1024 / 2**30  # Linux: kilobytes
    import pyarrow.parquet as pq

    assert pq.ParquetFile(out).metadata.num_rows == int(rows)
    metrics = json.loads((run / "metrics.json").read_text())
    table.add("b scale", f"recommend users=all k=20 out=.parquet, {int(users):,} users x {args.scale_items:,} items",
              f"{wall:.1f} s", f"load {float(loaded):.1f} s + rank and write {float(ranked):.1f} s; {int(rows):,} rows; "
              f"{before}", verdict(wall <= GOALS["scale_s"], "<= 60 s"))
    table.add("b scale", "peak RSS of the recommend process", f"{rss:.2f} GiB",
              f"run: {args.scale_interactions:,} interactions, {metrics['epochs']} epoch(s), test rmse "
              f"{metrics['test'].get('rmse', float('nan')):.4f}", verdict(rss <= GOALS["scale_rss_gib"], "<= 4 GiB"))


# ---------------------------------------------------------------------------------- c. HTTP
def start_server(run: Path, work: Path, threads: int):
    proc = subprocess.Popen([sys.executable, "-m", "recsys_fewshot.serve", f"run_dir={run}", "port=0",
                             f"threads={threads}"], cwd=ROOT, env=env(work), stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"on http://([\d.]+):(\d+)$", line.strip())
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1), int(found.group(2))
    sys.exit(f"the server did not start (exit {proc.wait()})")


def fetch(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return body


def section_http(table: Table, args, run: Path, work: Path) -> None:
    import random

    proc, host, port = start_server(run, work, args.serve_threads)
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        for _ in range(100):  # connected once uvicorn's loop runs
            try:
                users = json.loads(fetch(conn, "/health"))["users"]
                break
            except ConnectionError:
                time.sleep(0.05)
                conn = http.client.HTTPConnection(host, port, timeout=30)
        ids = [str(u) for u in range(1, users + 1)]  # ML-100K's user ids are 1..943
        rng = random.Random(0)
        for _ in range(200):  # warm-up
            fetch(conn, f"/recommend?user_id={rng.choice(ids)}&k=20")
        before = load()
        latencies = []
        for _ in range(args.requests):
            path = f"/recommend?user_id={rng.choice(ids)}&k=20"
            start = time.perf_counter()
            fetch(conn, path)
            latencies.append(time.perf_counter() - start)
        latencies.sort()
        p50, p99 = (latencies[int(q * (len(latencies) - 1))] * 1e3 for q in (0.5, 0.99))
        table.add("c HTTP", f"GET /recommend k=20, one keep-alive client ({args.requests} requests)",
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", f"max {latencies[-1] * 1e3:.1f} ms; server threads="
                  f"{args.serve_threads}; {before}", verdict(p99 < GOALS["p99_ms"], "p99 < 20 ms"))

        before = load()
        counts, stop = [0] * args.clients, time.perf_counter() + args.seconds

        def client(n: int) -> None:
            mine, pick = http.client.HTTPConnection(host, port, timeout=30), random.Random(n)
            while time.perf_counter() < stop:
                fetch(mine, f"/recommend?user_id={pick.choice(ids)}&k=20")
                counts[n] += 1

        start = time.perf_counter()
        workers = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        table.add("c HTTP", f"GET /recommend k=20, {args.clients} keep-alive clients at once",
                  f"{sum(counts) / elapsed:.0f} requests/s", f"{sum(counts)} requests in {elapsed:.1f} s; {before}")
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-recommend"))
    parser.add_argument("--sections", default="a,b,c")
    parser.add_argument("--ml100k-run", type=Path, help="a run folder of the default job (else trained in --work-dir)")
    parser.add_argument("--scale-run", help="a scale run folder (else data written and trained in --work-dir)")
    parser.add_argument("--scale-interactions", type=int, default=1_000_000)
    parser.add_argument("--scale-users", type=int, default=100_000)
    parser.add_argument("--scale-items", type=int, default=50_000)
    parser.add_argument("--scale-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="a: timed calls after the first")
    parser.add_argument("--requests", type=int, default=2000, help="c: requests of the latency client")
    parser.add_argument("--clients", type=int, default=4, help="c: concurrent clients of the throughput measure")
    parser.add_argument("--seconds", type=float, default=10.0, help="c: length of the throughput measure")
    parser.add_argument("--serve-threads", type=int, default=1, help="c: the server's threads=")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    work = args.work_dir.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RECSYS_FEWSHOT_CACHE", str(work / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    table = Table()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    ml100k = None
    if sections & {"a", "c"}:
        ml100k = args.ml100k_run or train(work / "ml100k-default", [], work)
    if "a" in sections:
        section_batch(table, ml100k, args.repeats)
    if "b" in sections:
        section_scale(table, args, work)
    if "c" in sections:
        section_http(table, args, ml100k, work)
    import torch

    print(f"\nrecsys-fewshot serving benchmark: commit {commit.strip() or '?'}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), {load()} at the end\n")
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
