"""scripts/bench_speed.py --quick runs every section end to end and prints its one table."""

from __future__ import annotations

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
