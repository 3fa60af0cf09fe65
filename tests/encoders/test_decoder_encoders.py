"""Decoder language models as item encoders: tiny random Llama, Qwen2 and Gemma 3 folders (real configs, real
byte-level BPE tokenizers trained in conftest) loaded through the real `from_pretrained`; last-token pooling
under right padding; the template and its truncation; centring; the cache keys; the presets; the real
SmolLM2 when scripts/fetch_llm.py has installed it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from recsys_fewshot.encoders import text_encoder
from recsys_fewshot.encoders.cache import cache_folder, encode_cached
from recsys_fewshot.encoders.text_encoder import (
    FETCH_SCRIPTS,
    MODELS_ENV,
    EncoderError,
    TextEncoder,
    model_identity,
    models_root,
    parse_template,
    resolve_model_path,
)

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Toy Story (1995) Animation, Children's, Comedy", "Heat (1995)", "a quiet harbor at night",
         "GoldenEye (1995) Action, Adventure, Thriller", "café society", "north",
         "the long winter of the iron kings and their distant cousins, a story told over forty years of war"]
TEMPLATE = 'This item: "{text}". In one word, it means:'
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def pad_freely(monkeypatch):
    """Batches of `batch_size` texts whatever their lengths, so short texts really get padded."""
    monkeypatch.setattr(text_encoder, "CPU_PAD_BUDGET", None)


@pytest.fixture(params=["llama", "qwen2", "gemma3"])
def decoder(request) -> Path:
    return request.getfixturevalue(f"tiny_{request.param}")


def last_hidden(path: Path, text: str) -> torch.Tensor:
    """The last token's final hidden state of one text, from an unpadded forward pass of the causal LM itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True).eval()
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]


@pytest.mark.usefixtures("one_thread")
def test_each_decoder_pools_its_last_token_alike_batched_and_alone(decoder, pad_freely):
    """Right padding: in one padded batch each text's vector is its last real token's hidden state, the same as
    encoded alone and as the causal LM's own last hidden state (Gemma 3's sliding window included: the longest
    text is longer than its 16-token window)."""
    batched = TextEncoder(str(decoder), pooling="last", batch_size=64, normalize=False)
    vectors = batched.encode(TEXTS)
    assert batched.forward_calls == 1 and vectors.shape == (len(TEXTS), 64) == (len(TEXTS), batched.dim)
    lengths = batched._tokenize(TEXTS)[1]
    assert lengths.max() > 16 and lengths.min() < lengths.max() - 10  # real padding in that batch
    alone = TextEncoder(str(decoder), pooling="last", batch_size=1, normalize=False)
    torch.testing.assert_close(vectors, alone.encode(TEXTS), atol=1e-5, rtol=1e-4)
    assert alone.forward_calls == len(TEXTS)
    for row in (1, len(TEXTS) - 1):
        torch.testing.assert_close(vectors[row], last_hidden(decoder, TEXTS[row]), atol=1e-5, rtol=1e-4)
    assert torch.cdist(vectors, vectors).triu(1)[torch.ones(len(TEXTS), len(TEXTS)).triu(1).bool()].min() > 1e-3
    kind = json.loads((decoder / "config.json").read_text())["model_type"]
    model, _ = batched.load()
    assert type(model).__name__ == {"llama": "LlamaModel", "qwen2": "Qwen2Model", "gemma3_text": "Gemma3TextModel"}[kind]


@pytest.mark.usefixtures("one_thread")
def test_the_template_changes_the_vectors_and_the_cache_key(tiny_llama, tmp_path):
    plain = TextEncoder(str(tiny_llama), pooling="last", normalize=True)
    prompted = TextEncoder(str(tiny_llama), pooling="last", normalize=True, template=TEMPLATE)
    assert prompted.render(["Heat (1995)"]) == ['This item: "Heat (1995)". In one word, it means:']
    a, b = plain.encode(TEXTS), prompted.encode(TEXTS)
    assert (a - b).norm(dim=1).min() > 1e-2
    # the template encoder reads exactly the rendered text (nothing here is truncated)
    torch.testing.assert_close(b, plain.encode(prompted.render(TEXTS)), atol=1e-5, rtol=1e-4)
    assert plain.identity != prompted.identity
    assert TextEncoder(str(tiny_llama), pooling="last", normalize=True, template=TEMPLATE + " ").identity != \
        prompted.identity
    # the default template keys the cache as before templates existed: sentence encoders keep their cached vectors
    before = hashlib.sha256("\0".join([model_identity(tiny_llama), "last", "128", "True", "float32"]).encode())
    assert plain.identity == before.hexdigest()
    cache = tmp_path / "cache"
    first, stats = encode_cached(prompted, TEXTS, cache)
    assert stats["misses"] == len(TEXTS) and torch.equal(first, b)
    _, stats = encode_cached(plain, TEXTS, cache)
    assert stats["hits"] == 0 and cache_folder(cache, plain) != cache_folder(cache, prompted)
    again, stats = encode_cached(TextEncoder(str(tiny_llama), pooling="last", normalize=True, template=TEMPLATE),
                                 TEXTS, cache)
    assert stats["hits"] == len(TEXTS) and stats["forward_calls"] == 0 and torch.equal(again, first)


def test_a_long_text_loses_its_own_last_tokens_never_the_template(tiny_qwen2, tiny_gemma3):
    for path in (tiny_qwen2, tiny_gemma3):
        enc = TextEncoder(str(path), pooling="last", max_length=24, template=TEMPLATE)
        _, tokenizer = enc.load()
        long_text = TEXTS[-1] + " " + TEXTS[-1]
        full = tokenizer(enc.render([long_text])[0])["input_ids"]
        head = tokenizer(enc.render([""])[0].split('"')[0] + '"')["input_ids"]  # special tokens + 'This item: "'
        tail = tokenizer(TEMPLATE.split("{text}")[1], add_special_tokens=False)["input_ids"]  # '". In one word, ...'
        flat, lengths = enc._tokenize([long_text, "north"])
        cut = flat[:24].tolist()
        assert len(full) > 24 and lengths.tolist() == [24, len(tokenizer(enc.render(["north"])[0])["input_ids"])]
        assert cut[:len(head)] == head and cut[-len(tail):] == tail
        assert cut[len(head):-len(tail)] == full[len(head):24 - len(tail)]  # the text's first tokens, in order
        with pytest.raises(EncoderError, match=r"encoder.template=.*encoder.max_length=8 tokens"):
            TextEncoder(str(path), pooling="last", max_length=8, template=TEMPLATE).encode([long_text])


@pytest.mark.parametrize("bad", ["{title}", "no field here", "{text} and {text}", "{text!r}", "{text:>9}", "{",
                                 "{}"])
def test_a_template_without_exactly_one_text_field_is_refused(tiny_llama, bad):
    with pytest.raises(ValueError, match=r"encoder.template="):
        TextEncoder(str(tiny_llama), template=bad)


def test_literal_braces_in_a_template():
    assert parse_template("{{{text}}} is") == ("{", "} is")
    assert parse_template("{text}") == ("", "")


@pytest.mark.usefixtures("one_thread")
def test_center_subtracts_the_catalogue_mean_after_the_cache(tiny_qwen2, tmp_path):
    """center=true: the cache holds each text's own (uncentred) vector; each catalogue is centred on its own
    mean, then normalised."""
    raw = TextEncoder(str(tiny_qwen2), pooling="last", normalize=False).encode(TEXTS)
    centred = TextEncoder(str(tiny_qwen2), pooling="last", normalize=False, center=True)
    vectors, _ = encode_cached(centred, TEXTS, None)
    torch.testing.assert_close(vectors, raw - raw.mean(0), atol=1e-5, rtol=1e-4)
    assert vectors.mean(0).abs().max() < 1e-5 < raw.mean(0).abs().max()
    cache = tmp_path / "cache"
    unit = TextEncoder(str(tiny_qwen2), pooling="last", normalize=True, center=True)
    first, stats = encode_cached(unit, TEXTS, cache)
    torch.testing.assert_close(first, torch.nn.functional.normalize(raw - raw.mean(0), dim=1), atol=1e-5, rtol=1e-4)
    assert stats["misses"] == len(TEXTS)
    assert unit.identity not in {TextEncoder(str(tiny_qwen2), pooling="last", normalize=n).identity for n in (0, 1)}
    subset, stats = encode_cached(unit, TEXTS[:3], cache)  # another catalogue: its own mean, from cached vectors
    assert stats["hits"] == 3 and stats["forward_calls"] == 0
    torch.testing.assert_close(subset, torch.nn.functional.normalize(raw[:3] - raw[:3].mean(0), dim=1),
                               atol=1e-5, rtol=1e-4)
    # the centred cosines are no longer dominated by the direction every vector shares
    off = ~torch.eye(len(TEXTS), dtype=torch.bool)
    assert (first @ first.T)[off].mean() < (torch.nn.functional.normalize(raw, dim=1) @
                                             torch.nn.functional.normalize(raw, dim=1).T)[off].mean()


def test_presets_name_the_fetched_models_and_the_fetch_script():
    for name, repo_id in [("gemma3-270m", "google/gemma-3-270m"), ("smollm2-135m", SMOLLM2)]:
        preset = yaml.safe_load((REPO / "conf" / "encoder" / f"{name}.yaml").read_text())
        assert preset["name_or_path"] == repo_id and preset["pooling"] == "last"
        parse_template(preset["template"])  # one {text} field
        assert FETCH_SCRIPTS[repo_id] == f"python scripts/fetch_llm.py {name}"


def test_the_hub_ids_resolve_under_the_models_root_else_name_the_fetch_script(tiny_llama, tmp_path, monkeypatch):
    import huggingface_hub.constants

    copy = shutil.copytree(tiny_llama, tmp_path / "models" / SMOLLM2)
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "models"))
    assert resolve_model_path(SMOLLM2) == copy
    assert TextEncoder(SMOLLM2, pooling="last").encode(["Heat (1995)"]).shape == (1, 64)
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EncoderError, match="python scripts/fetch_llm.py gemma3-270m"):
        resolve_model_path("google/gemma-3-270m")


def test_only_safetensors_weights_are_loaded(tiny_llama, tmp_path):
    """A folder whose weights are a pickle (pytorch_model.bin) is refused, not unpickled."""
    from transformers import AutoModelForCausalLM

    folder = shutil.copytree(tiny_llama, tmp_path / "pickled", ignore=shutil.ignore_patterns("*.safetensors"))
    state = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(EncoderError, match=f"cannot load the encoder from {folder}"):
        TextEncoder(str(folder), pooling="last").encode(["Heat (1995)"])


@pytest.mark.slow
def test_a_decoder_gives_the_ease_head_its_item_vectors_through_the_cli(tiny_llama, tmp_path):
    """python -m recsys_fewshot.train with a tiny Llama as the encoder (last-token pooling, a template given on
    the command line, centring) and head=ease reading the text vectors (head.text_weight): the run encodes every
    item once, a second run reads them all from the cache."""
    from fakes import write_ml100k
    from test_train_cli import cli

    write_ml100k(tmp_path / "data" / "ml-100k", n_users=80, n_items=40, n_per_user=15, seed=3)
    cache = tmp_path / "cache"
    args = [f"dataset.root={tmp_path / 'data'}", f"cache_dir={cache}", "logger=none", "trainer.progress=false",
            "head=ease", "task=ranking", "head.text_weight=10", "eval.ks=[5,10]", f"encoder.name_or_path={tiny_llama}",
            "encoder.pooling=last", f"encoder.template='{TEMPLATE}'", "encoder.center=true"]
    for run in ("first", "second"):
        proc = cli(*args, f"hydra.run.dir={tmp_path / run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("first", "second"))
    assert first["encoder"]["path"] == str(tiny_llama) and first["encoder"]["misses"] == 40
    assert second["encoder"]["hits"] == 40 and second["encoder"]["misses"] == 0
    assert first["epochs"] == 0 and 0 < first["test"]["ndcg@10"] <= 1
    assert second["test"]["ndcg@10"] == pytest.approx(first["test"]["ndcg@10"], abs=1e-9)
    config = yaml.safe_load((tmp_path / "first" / ".hydra" / "config.yaml").read_text())
    assert config["encoder"]["template"] == TEMPLATE and config["encoder"]["center"] is True
    (folder,) = (cache / "embeddings").glob("*/")
    assert folder.name == TextEncoder(str(tiny_llama), pooling="last", max_length=config["encoder"]["max_length"],
                                      normalize=True, template=TEMPLATE, center=True).identity[:16]


@pytest.mark.slow
def test_the_real_smollm2_encodes_from_the_models_root():
    """The SmolLM2-135M-Instruct copy scripts/fetch_llm.py converts, read through the models root."""
    folder = models_root() / SMOLLM2
    if not (folder / "config.json").is_file():
        pytest.skip(f"no {folder}: run `python scripts/fetch_llm.py smollm2-135m` (or `make llm`) to install it")
    enc = TextEncoder(SMOLLM2, pooling="last", max_length=64, normalize=True, template=TEMPLATE, center=True)
    assert enc.path == folder and enc.dim == 576
    vectors, _ = encode_cached(enc, TEXTS, None)
    assert vectors.shape == (len(TEXTS), 576) and torch.isfinite(vectors).all()
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(len(TEXTS)))
    alone = TextEncoder(SMOLLM2, pooling="last", batch_size=1, normalize=False, template=TEMPLATE).encode(TEXTS[:3])
    batched = TextEncoder(SMOLLM2, pooling="last", batch_size=8, normalize=False, template=TEMPLATE).encode(TEXTS[:3])
    torch.testing.assert_close(batched, alone, atol=1e-3, rtol=1e-4)
