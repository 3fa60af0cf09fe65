"""Joint training: every `peft=` option trains exactly its parameters; the text tower; joint beats frozen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from inprocess import compose, stages

# the encoder parameters each method may train (names as `named_parameters` gives them)
TRAINABLE = {
    "lora": r"\.lora_[AB]\.",
    "adalora": r"\.lora_[ABE]\.",
    "ia3": r"\.ia3_l\.",
    "prefix": r"^prompt_encoder\.",
    "prompt": r"^prompt_encoder\.",
    "bitfit": r"(?<!^pooler\.dense\.)bias$",
    "full": r"^(?!pooler\.)",
}
# a key bias adds the same score to every key of a query: softmax cancels it, its gradient is 0
ZERO_GRADIENT = r"attention\.self\.key\.bias$"

pytestmark = pytest.mark.usefixtures("one_thread")


def base(small_ml100k: Path, encoder: Path, cache: Path, *extra: str) -> list[str]:
    return [f"dataset.root={small_ml100k}", f"encoder.name_or_path={encoder}", f"cache_dir={cache}", "logger=none",
            "trainer.progress=false", "trainer.cpu=true", *extra]


@pytest.mark.parametrize("method", list(TRAINABLE))
def test_each_method_trains_only_its_parameters(method, small_ml100k, tiny_bert, tmp_path):
    s = stages(*base(small_ml100k, tiny_bert, tmp_path / "cache", f"peft={method}", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=3", "optimizer.encoder_lr=0.01"))
    encoder = s.text.encoder
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    names = [n for n, _ in encoder.named_parameters()]
    assert trainable == {n for n in names if re.search(TRAINABLE[method], n)}, method
    assert not any(n.startswith(("pooler.", "base_model.model.pooler.")) for n in trainable)
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in s.model.named_parameters() if not n.startswith("items.text.")}
    s.train()
    after = dict(encoder.named_parameters())
    moved = {n for n in names if not torch.equal(before[n], after[n].detach())}
    assert moved <= trainable, f"frozen weights moved: {sorted(moved - trainable)[:5]}"
    assert {n for n in trainable - moved if not re.search(ZERO_GRADIENT, n)} == set(), sorted(trainable - moved)
    head_after = dict(s.model.named_parameters())
    assert not torch.equal(head_before["items.proj.weight"], head_after["items.proj.weight"].detach())


def test_tower_reproduces_frozen_vectors_and_encodes_each_item_once(small_ml100k, tiny_bert, tmp_path):
    """Identity-initialised adapters give exactly the cached frozen vectors; a batch encodes its distinct items
    only; evaluation encodes the catalogue once and reuses it until the tower trains again."""
    s = stages(*base(small_ml100k, tiny_bert, tmp_path / "cache", "peft=lora"))
    tower, n = s.text, s.data.n_items
    tower.eval()
    assert torch.allclose(tower(torch.arange(n)), s.features, atol=1e-5)
    calls = tower.encoded_texts
    s.model.score_candidates(torch.arange(5), torch.arange(n))
    s.model(torch.tensor([1, 2]), torch.tensor([3, 4]))
    assert tower.encoded_texts == calls  # served from the catalogue pass
    tower.train()
    before = tower.encoded_texts
    out = tower(torch.tensor([7, 3, 7, 7, 3]))
    assert tower.encoded_texts - before == 2 and torch.equal(out[0], out[2]) and out.requires_grad
    tower.eval()
    tower(torch.tensor([0]))
    assert tower.encoded_texts - before == 2 + n  # a fresh catalogue after training


def test_bf16_autocast_reaches_the_encoder_on_cpu(small_ml100k, tiny_bert, tmp_path):
    s = stages(*base(small_ml100k, tiny_bert, tmp_path / "cache", "peft=lora", "trainer.mixed_precision=bf16",
                     "trainer.max_epochs=1", "trainer.limit_train_batches=2"))
    seen = []  # the output dtype of the encoder's linear layers (its LayerNorms stay float32 under autocast)
    for module in s.text.encoder.modules():
        if type(module) is torch.nn.Linear:
            module.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    result = s.train()
    assert torch.bfloat16 in seen
    assert result.history[0]["train/loss"] == result.history[0]["train/loss"]  # not NaN


def test_knobs_belong_to_their_method():
    from recsys_fewshot import build
    from recsys_fewshot.encoders import peft_wrap

    with pytest.raises(Exception, match="peft.r|Key 'r'"):
        compose("peft=frozen", "peft.r=4")
    assert compose("peft=lora", "peft.r=4").peft.r == 4
    assert build.peft_method(compose("peft=lora", "peft.r=4")).r == 4
    for method in ("frozen", "lora", "adalora", "ia3", "prefix", "prompt", "bitfit", "full"):
        built = build.peft_method(compose(f"peft={method}"))  # peft._target_ names the class; peft.method its name
        assert compose(f"peft={method}").peft.method == method == built.name
        assert type(built) is peft_wrap.METHODS[method] and built.trains_encoder == (method != "frozen")


def test_peft_method_only_records_the_name_target_chooses():
    from recsys_fewshot import build, settings

    cfg = compose("peft=lora", "peft.method=frozen")
    for check in (lambda: build.peft_method(cfg), lambda: settings.check_settings(cfg)):
        with pytest.raises(ValueError, match=r"peft\.method='frozen': peft\._target_=.*Lora is peft=lora; .*"
                                             r"choose another with peft=frozen"):
            check()


def test_top_layers_is_a_knob_of_the_methods_peft_can_restrict_to_some_layers():
    """LoRA and AdaLoRA take peft.top_layers (peft's layers_to_transform); for the others it fails at composition,
    the hint naming the methods that have it. The declaration must agree with the installed peft."""
    import dataclasses

    import peft
    from hydra.errors import ConfigCompositionException

    from recsys_fewshot.encoders import peft_wrap
    from recsys_fewshot.registry import failure_hints

    configs = {"lora": peft.LoraConfig, "adalora": peft.AdaLoraConfig, "ia3": peft.IA3Config,
               "prefix": peft.PrefixTuningConfig, "prompt": peft.PromptTuningConfig}
    for name, cls in peft_wrap.METHODS.items():
        has_knob = "top_layers" in {f.name for f in dataclasses.fields(cls)}
        restricts = name in configs and "layers_to_transform" in {f.name for f in dataclasses.fields(configs[name])}
        assert has_knob == restricts, name
    assert compose("peft=adalora", "peft.top_layers=1").peft.top_layers == 1
    for method in ("ia3", "prefix", "frozen"):
        bad = [f"peft={method}", "peft.top_layers=1"]
        with pytest.raises(ConfigCompositionException):
            compose(*bad)
        (hint,) = failure_hints(bad)
        assert hint.startswith(f"peft.top_layers: peft={method} has no key 'top_layers'") and \
            hint.endswith("methods with top_layers: lora, adalora"), hint
    from recsys_fewshot import settings

    with pytest.raises(ValueError, match=r"peft\.top_layers=-1: expected an integer >= 0"):
        settings.check_settings(compose("peft=lora", "peft.top_layers=-1"))


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_top_layers_puts_adapters_in_the_last_layers_only(method, tiny_bert):
    from transformers import AutoModel

    from recsys_fewshot.encoders import peft_wrap

    def adapted_layers(top: int) -> set[int]:
        m = peft_wrap.method_of(method, {"top_layers": top}).wrap(AutoModel.from_pretrained(tiny_bert), total_steps=10)
        return {int(re.search(r"\.layer\.(\d+)\.", n).group(1)) for n, p in m.named_parameters()
                if p.requires_grad and ".lora_" in n}

    assert adapted_layers(0) == {0, 1}  # the tiny BERT has 2 layers (config.json: num_hidden_layers)
    assert adapted_layers(1) == {1}
    assert adapted_layers(2) == {0, 1}
    with pytest.raises(ValueError, match=r"peft\.top_layers=3: the model has 2 layers"):
        adapted_layers(3)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt", "full"])
def test_the_same_method_trains_a_causal_lm(method, tmp_path):
    """kind=CAUSAL_LM: peft's causal-LM model (logits and loss), only the method's parameters train, and what it
    trained saves and loads back to the same logits."""
    from recsys_fewshot.encoders import peft_wrap

    chosen = peft_wrap.method_of(method, {"num_virtual_tokens": 3, "r": 2, "top_layers": 1})
    model = chosen.wrap(tiny_llama(), peft_wrap.ModelKind.CAUSAL_LM, total_steps=10)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(re.search({"lora": r"layers\.2\..*\.lora_[AB]\.", "ia3": r"\.ia3_l\.",
                                        "prompt": r"^prompt_encoder\.", "full": r"^(model|lm_head)\."}[method], n)
                             for n in trainable), sorted(trainable)[:4]
    if method != "full":
        assert model.peft_config["default"].task_type == "CAUSAL_LM"
    ids = torch.randint(3, 64, (2, 7))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)  # trained weights differ from the base model's
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    chosen.save(model, tmp_path / "trained")
    reloaded, loaded = peft_wrap.load(tiny_llama(), tmp_path / "trained")
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)
    assert type(loaded) is type(chosen) and loaded.name == method


def test_a_saved_method_json_loads_by_its_name_only(tiny_bert, tmp_path):
    """method.json names a method of this project; loading maps that name to its class and never imports a
    class a run folder names."""
    import json

    from transformers import AutoModel

    from recsys_fewshot.encoders import peft_wrap

    folder = tmp_path / "encoder"
    model = peft_wrap.Lora(r=2).wrap(AutoModel.from_pretrained(tiny_bert))
    peft_wrap.save(model, "lora", folder)  # a name works as well as the method itself (earlier callers)
    assert json.loads((folder / "method.json").read_text())["method"] == "lora"
    _, method = peft_wrap.load(AutoModel.from_pretrained(tiny_bert), folder)
    assert isinstance(method, peft_wrap.Lora)
    for bad in ("os.system", "recsys_fewshot.encoders.peft_wrap.Lora", "mlp"):
        (folder / "method.json").write_text(json.dumps({"method": bad}))
        with pytest.raises(ValueError, match=r"method\.json: .* is not a PEFT method of this project; expected one "
                                             r"of frozen, bitfit, full, lora, adalora, ia3, prefix, prompt"):
            peft_wrap.load(AutoModel.from_pretrained(tiny_bert), folder)


def no_signal_bert(tiny_bert: Path, folder: Path) -> Path:
    """The tiny BERT with every attention value projection zeroed: each token's state then depends on that
    token alone, so the [CLS] vector is the same for every text. Frozen, it tells items apart not at all."""
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(str(tiny_bert))
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.self.value.weight.zero_()
            layer.attention.self.value.bias.zero_()
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_joint_training_beats_frozen_when_frozen_vectors_carry_no_signal(small_ml100k, tiny_bert, tmp_path):
    """Ratings follow user-genre affinity and the genre is in the item text. Items are text only
    (head.item_id=false). Frozen, the encoder gives every item the same vector (checked), so the frozen
    model can only learn biases; LoRA on the value projections can route the text into [CLS]."""
    from inprocess import run_job

    encoder = no_signal_bert(tiny_bert, tmp_path / "no-signal-bert")
    common = base(small_ml100k, encoder, tmp_path / "cache", "encoder.pooling=cls", "head.item_id=false",
                  "head.user_history=false", "trainer.max_epochs=8", "trainer.batch_size=64", "optimizer.lr=0.02",
                  "optimizer.encoder_lr=0.005", "trainer.patience=8")
    frozen = run_job(tmp_path / "frozen", *common, "peft=frozen")
    vectors = stages(*common, "peft=frozen").features
    assert torch.equal(vectors, vectors[:1].expand_as(vectors))  # no signal, by construction
    joint = run_job(tmp_path / "lora", *common, "peft=lora", "peft.alpha=64", "peft.dropout=0")
    assert joint["test"]["auc"] > frozen["test"]["auc"] + 0.15, (joint["test"], frozen["test"])
    assert joint["test"]["rmse"] < frozen["test"]["rmse"] - 0.1, (joint["test"], frozen["test"])
    assert joint["training"]["encoder_parameters"]["trainable"] > 0


@pytest.mark.slow
def test_warm_frozen_run_imports_neither_transformers_nor_peft(small_ml100k, tiny_bert, tmp_path):
    """peft=frozen stays the cheap default: with its vectors cached, a run never loads the joint-training stack."""
    import subprocess
    import sys

    from inprocess import REPO

    overrides = base(small_ml100k, tiny_bert, tmp_path / "cache", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    stages(*overrides[:-1])  # fills the embedding cache
    code = ("import runpy, sys\n"
            "try:\n    runpy.run_module('recsys_fewshot.train', run_name='__main__')\n"
            "finally:\n    print('LOADED', sorted(m for m in ('transformers', 'peft') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code, *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout, proc.stdout[-500:]


def test_adapters_a_pattern_puts_on_the_unused_pooler_are_frozen(small_ml100k, tiny_bert, tmp_path):
    s = stages(*base(small_ml100k, tiny_bert, tmp_path / "cache", "peft=lora",
                     "peft.target_modules=[query,key,value,dense]", "trainer.max_epochs=1"))
    names = [n for n, _ in s.text.encoder.named_parameters()]
    trainable = {n for n, p in s.text.encoder.named_parameters() if p.requires_grad}
    assert any("pooler.dense.lora_A" in n for n in names)  # "dense" matched the pooler too ...
    assert not any("pooler" in n for n in trainable)  # ... but nothing there trains (DDP would fail on it)
    assert any("output.dense.lora_A" in n for n in trainable)


def test_adalora_saves_the_weights_in_memory_whatever_its_last_rank_pattern(tiny_bert, tmp_path):
    """Early stopping restores an earlier epoch's weights while AdaLoRA's rank_pattern is the last step's:
    the saved adapter must still score exactly like the model in memory."""
    from transformers import AutoModel, AutoTokenizer

    from recsys_fewshot.encoders import peft_wrap

    from recsys_fewshot import build

    adalora = build.peft_method(compose("peft=adalora"))
    torch.manual_seed(0)
    model = adalora.wrap(AutoModel.from_pretrained(tiny_bert), total_steps=10)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.normal_(std=0.5)  # every rank live in memory
    pattern = {}
    for name, param in model.base_model.model.named_parameters():
        if ".lora_E." in name:
            keep = [True] * param.shape[0]
            keep[0] = False  # the last step's pattern prunes rank 0, which the weights in memory still use
            pattern[name] = keep
    config = model.peft_config[model.active_adapter]
    config.rank_pattern = pattern
    model.eval()
    batch = AutoTokenizer.from_pretrained(tiny_bert)(["a small test", "another one"], return_tensors="pt",
                                                     padding=True)
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    adalora.save(model, tmp_path / "encoder")
    assert config.rank_pattern == pattern  # left as it was for training to go on
    reloaded, method = peft_wrap.load(AutoModel.from_pretrained(tiny_bert), tmp_path / "encoder")
    reloaded.eval()
    with torch.no_grad():
        got = reloaded(**batch).last_hidden_state
    assert method.name == "adalora" and torch.allclose(got, expected, atol=1e-5)
