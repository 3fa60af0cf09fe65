"""`python -m recsys_fewshot.evaluate run_dir=...` reloads a saved run (head weights + trained encoder)
and reproduces the test metrics of its metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inprocess import run_job

pytestmark = pytest.mark.usefixtures("one_thread")


def common(small_ml100k: Path, tiny_bert: Path, cache: Path) -> list[str]:
    return [f"dataset.root={small_ml100k}", f"encoder.name_or_path={tiny_bert}", f"cache_dir={cache}", "logger=none",
            "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.progress=false", "trainer.cpu=true"]


# each way a trained encoder is saved: none (frozen), peft adapter (lora; prompt also shifts the hidden
# states by its virtual tokens), BitFit biases, the whole fine-tuned model
@pytest.mark.slow
@pytest.mark.parametrize("method", ["frozen", "lora", "prompt", "bitfit", "full"])
def test_evaluate_reproduces_metrics_json(method, small_ml100k, tiny_bert, tmp_path):
    from recsys_fewshot.evaluate import evaluate_run

    run = tmp_path / "run"
    saved = run_job(run, *common(small_ml100k, tiny_bert, tmp_path / "cache"), f"peft={method}",
                    "peft.num_virtual_tokens=4" if method == "prompt" else "trainer.patience=3")
    if method != "frozen":
        assert (run / "encoder" / "method.json").is_file()
        if method in ("lora", "prompt"):
            assert (run / "encoder" / "adapter_config.json").is_file()  # peft's save_pretrained
    again = evaluate_run(run)
    assert set(again["test"]) == set(saved["test"])
    for name, value in saved["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.slow
def test_evaluate_entry_point_checks_and_fails_clearly(small_ml100k, tiny_bert, tmp_path, capsys):
    from recsys_fewshot.evaluate import evaluate_run, main

    run = tmp_path / "run"
    run_job(run, *common(small_ml100k, tiny_bert, tmp_path / "cache"), "peft=ia3")
    assert main([f"run_dir={run}", "check=true"]) == 0
    assert "largest difference from metrics.json: 0.00e+00" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"]["rmse"] += 0.01  # a run whose numbers no longer reproduce
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main([f"run_dir={run}", "check=true"]) == 1
    assert main([f"run_dir={run}", "check=true", "tolerance=0.02"]) == 0
    assert main([]) == 2  # usage
    with pytest.raises(Exception, match="rot"):  # a typo in an override fails, naming the key
        evaluate_run(run, ["dataset.rot=/elsewhere"])

    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_run(tmp_path / "nope")
    (run / "encoder" / "method.json").unlink()  # a damaged run: the error names what is missing
    with pytest.raises(FileNotFoundError, match="method.json"):
        evaluate_run(run)


@pytest.mark.slow
def test_evaluate_reproduces_a_few_shot_ctr_run(tmp_path, tiny_bert):
    """split=tallrec serves every sample as a user of its own: evaluate must rebuild them as training did."""
    from fakes import write_ml100k
    from recsys_fewshot.evaluate import evaluate_run

    root = tmp_path / "data"
    write_ml100k(root / "ml-100k", n_users=40, n_items=30, n_per_user=20, seed=5)
    run = tmp_path / "run"
    saved = run_job(run, "experiment=tallrec_movie", f"dataset.root={root}", f"encoder.name_or_path={tiny_bert}",
                    f"cache_dir={tmp_path / 'cache'}", "logger=none", "split.n_shots=12", "split.n_samples=300",
                    "split.history_len=5", "trainer.max_epochs=5")
    again = evaluate_run(run)
    assert saved["test"]["auc"] == pytest.approx(again["test"]["auc"], abs=1e-6)
    assert set(again["test"]) == set(saved["test"])


def test_check_counts_a_metric_defined_on_one_side_only_as_not_reproduced():
    import math

    from recsys_fewshot.evaluate import compare

    assert compare({"rmse": 0.9, "auc": 0.7}, {"rmse": 0.9, "auc": 0.7})[1] == 0.0
    assert compare({"rmse": 0.9, "auc": None}, {"rmse": 0.9, "auc": math.nan})[1] == 0.0  # undefined both times
    assert compare({"rmse": 0.9, "auc": 0.7}, {"rmse": math.nan, "auc": 0.7})[1] == math.inf
    assert compare({"rmse": None}, {"rmse": 1.3})[1] == math.inf  # null in metrics.json, a number now
    assert compare({"rmse": 0.9, "mae": 0.7}, {"rmse": 0.9})[1] == math.inf  # a saved metric not recomputed
    lines, worst = compare({"rmse": 0.9}, {"rmse": 0.95})
    assert worst == pytest.approx(0.05) and lines[1].split() == ["rmse", "0.900000", "0.950000", "5.00e-02"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cold_items", "cold_users_k5"])
def test_cold_start_presets_train_the_encoder_with_peft_and_reload(preset, small_ml100k, tiny_bert, tmp_path):
    """Issue 4's towers with the encoder tuned through peft=: cold items are scored, and cold users' supports
    pooled, by the LoRA-tuned encoder; the saved run reloads to the same test metrics, and they differ from
    those of the same run with the adapter's effect removed (the frozen encoder)."""
    from recsys_fewshot.evaluate import evaluate_run

    run = tmp_path / "run"
    saved = run_job(run, *common(small_ml100k, tiny_bert, tmp_path / "cache"), f"experiment={preset}", "peft=lora",
                    "peft.r=4", "optimizer.encoder_lr=0.05", "trainer.patience=3")
    assert (run / "encoder" / "adapter_config.json").is_file()
    if preset == "cold_items":
        assert saved["split"]["cold_items"] > 0
    else:  # every test row is a cold user's, served from the support
        assert saved["split"]["unseen_user_rows"] == saved["split"]["test"]
    again = evaluate_run(run)
    for name, value in saved["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name
    frozen = evaluate_run(run, ["peft.method=frozen"])  # the trained head over the untuned encoder
    assert any(abs(frozen["test"][k] - v) > 1e-6 for k, v in saved["test"].items() if k != "n")


@pytest.mark.slow
def test_a_run_saved_before_components_were_chosen_by_target_still_rescores(small_ml100k, tiny_bert, tmp_path):
    """Run folders written when dataset.kind/options, peft.method and logger.name chose the reader, the PEFT
    method and the tracker: their config.yaml maps those names to this project's classes. A `_target_` a run
    folder names is never trusted: the PEFT method comes from its name, and any class outside the project fails."""
    import copy

    import yaml

    from recsys_fewshot.evaluate import evaluate_run

    run = tmp_path / "run"
    saved = run_job(run, *common(small_ml100k, tiny_bert, tmp_path / "cache"), "peft=lora", "peft.r=4")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["peft"]["_target_"] == "recsys_fewshot.encoders.peft_wrap.Lora"
    old = copy.deepcopy(config)
    reader = old["dataset"].pop("reader")
    assert reader == {"_target_": "recsys_fewshot.data.sources.MovieLens100K"}
    old["dataset"] = {"kind": "ml100k", **old["dataset"], "options": {}}
    old["peft"] = {k: v for k, v in config["peft"].items() if k not in ("_target_", "top_layers")}
    old["logger"] = {k: v for k, v in config["logger"].items() if k != "_target_"}
    (run / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    again = evaluate_run(run)
    for name, value in saved["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name

    elsewhere = {**config, "peft": {**config["peft"], "_target_": "builtins.print"}}  # not read: the name is
    (run / "config.yaml").write_text(yaml.safe_dump(elsewhere, sort_keys=False))
    assert evaluate_run(run)["test"]["rmse"] == pytest.approx(saved["test"]["rmse"], abs=1e-6)
    for key, bad in (("dataset", {**config["dataset"], "reader": {"_target_": "os.system", "command": "true"}}),
                     ("peft", {**config["peft"], "method": "os.system"}), ("logger", {**config["logger"], "name": "x"})):
        (run / "config.yaml").write_text(yaml.safe_dump({**config, key: bad}, sort_keys=False))
        with pytest.raises(ValueError, match=rf"{run / 'config.yaml'}: ({key}\.reader\._target_='os\.system' is "
                                             rf"not one of the classes this project's own options put at "
                                             rf"{key}\.reader|{key}\.\w+='[\w.]+' is not an option of this project)"):
            evaluate_run(run)
