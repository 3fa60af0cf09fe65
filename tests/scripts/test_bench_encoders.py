"""scripts/bench_encoders.py measures what a run would extract: the preset's texts, template and width."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fakes import write_ml100k

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_encoders.py"
spec = importlib.util.spec_from_file_location("bench_encoders", SCRIPT)
bench_encoders = importlib.util.module_from_spec(spec)
sys.modules["bench_encoders"] = bench_encoders
spec.loader.exec_module(bench_encoders)


def test_a_decoder_preset_is_measured_on_the_runs_item_texts(tiny_llama, tmp_path):
    write_ml100k(tmp_path / "data" / "ml-100k", n_users=30, n_items=20, n_per_user=8, seed=0)
    row = bench_encoders.measure(["protocol=ml100k_cold_items", "model=cold_items_ease", "encoder=smollm2-135m",
                                  f"encoder.name_or_path={tiny_llama}", f"dataset.root={tmp_path / 'data'}",
                                  f"cache_dir={tmp_path / 'cache'}"])
    assert row["items"] == 20 and row["dim"] == 64 and row["extract s"] > 0 and row["items/s"] > 0
    assert row["tokens"] > 12  # the preset's template: 'This item: "..." In one word, it means:' around each title
