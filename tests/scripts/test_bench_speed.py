"""scripts/bench_speed.py --quick runs every section end to end and prints its one table."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_speed.py"


@pytest.mark.slow
def test_quick_benchmark_prints_the_table(tmp_path, tiny_bert):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work-dir", str(tmp_path),
                           "--model", str(tiny_bert)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("| section"):]
    for section in ("1 extraction", "2 cache", "3 whole run", "4 scale", "5 peers"):
        assert f"| {section}" in table, section
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    # the warm cache does no forward pass, and a frozen warm run never imports transformers or peft
    assert "met (0)" in next(v for k, v in rows.items() if "forward passes" in k)
    assert "met (no transformers/peft)" in rows["heavy modules imported (warm, frozen)"]
    assert "cosine" in table and "skipped" in rows["implicit ALS, LightFM"]  # no --peers-python given


def _bench_speed():
    """scripts/bench_speed.py as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_speed_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_metrics(n: int) -> dict:
    """A scale run's metrics.json: cost proportional to the data size n."""
    return {"training": {"updates": 10, "samples_per_second": 1000.0}, "split": {"train": n},
            "seconds": {"eval": n / 1000}, "test": {"rmse": 1.0}}


def test_scale_sizes_given_in_any_order_compare_the_largest_to_the_smallest(tmp_path, monkeypatch):
    bench = _bench_speed()
    monkeypatch.setattr(bench, "synthetic", lambda work, n, users, items: tmp_path / f"data-{n}")
    monkeypatch.setattr(bench, "warm_item_vectors", lambda overrides, work: None)
    monkeypatch.setattr(bench, "run_cli", lambda overrides, work, name, reuse=False: {
        "metrics": _fake_metrics(int(name.split("-")[1])), "peak_rss": 2**30, "wall": 1.0})
    args = argparse.Namespace(quick=True, scale_sizes="20000,2000", scale_preset=[], scale_batch_size=4096,
                              eval_chunk_size=1024, scale_train_batches=0, scale_baseline_batches=0,
                              model=bench.DEFAULT_MODEL, reuse_runs=False)
    table = bench.Table()
    folders = bench.section_scale(table, args, tmp_path)
    assert sorted(folders) == [2000, 20000]
    rows = {measure: (value, goal) for _, measure, value, _, goal in table.rows}
    assert rows["epoch: cost 10x data"] == ("10.0x", "met (<= 12x)")
    assert rows["eval: cost 10x data"][0] == "10.0x"
    # the absolute goals are judged on the largest size, not on whichever size came last
    assert rows["20000: one epoch (batch 4096)"][1].startswith("met") and rows["2000: one epoch (batch 4096)"][1] == ""
    assert rows["20000: full-ranking eval, valid + test users"][1].startswith("met")
    assert rows["2000: full-ranking eval, valid + test users"][1] == ""


def test_reuse_runs_only_reads_back_a_run_with_the_same_overrides(tmp_path, monkeypatch):
    bench = _bench_speed()
    calls = []

    def fake_run(args, cwd, env, capture_output, text, timeout):  # the CLI: metrics.json + the wrapper's report
        calls.append(args)
        run_dir = Path(next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"run": len(calls)}))
        Path(env["BENCH_REPORT"]).write_text(json.dumps({"modules": {}, "peak_rss": 1}))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    first = bench.run_cli(["a=1", "b=2"], tmp_path, "scale-2000", reuse=True)
    assert first["metrics"] == {"run": 1} and len(calls) == 1
    again = bench.run_cli(["a=1", "b=2"], tmp_path, "scale-2000", reuse=True)  # same settings: read back
    assert again["metrics"] == {"run": 1} and len(calls) == 1
    other = bench.run_cli(["a=1", "b=3"], tmp_path, "scale-2000", reuse=True)  # other settings: run again
    assert other["metrics"] == {"run": 2} and len(calls) == 2 and other["overrides"] == ["a=1", "b=3"]
    bench.run_cli(["a=1", "b=3"], tmp_path, "scale-2000", reuse=False)  # no reuse asked: always runs
    assert len(calls) == 3
