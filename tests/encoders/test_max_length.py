"""encoder.max_length beyond the model's position embeddings fails at once with the key, value and limit
(instead of a shape error inside the forward pass)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from recsys_fewshot.encoders.text_encoder import TextEncoder

LONG = " ".join(["story"] * 300)  # far more tokens than the tiny model's 128 positions


def test_tiny_bert_limit_is_its_position_embeddings(tiny_bert):
    assert json.loads((tiny_bert / "config.json").read_text())["max_position_embeddings"] == 128


def test_max_length_above_the_limit_names_key_value_and_limit(tiny_bert):
    with pytest.raises(ValueError) as err:
        TextEncoder(str(tiny_bert), max_length=129)
    message = str(err.value)
    assert re.search(r"encoder\.max_length=129 exceeds the model's limit of 128 tokens", message), message
    assert "max_position_embeddings=128" in message and "config.json" in message


def test_max_length_at_the_limit_encodes_long_texts(tiny_bert):
    enc = TextEncoder(str(tiny_bert), max_length=128, device="cpu")
    out = enc.encode([LONG, "short"])
    assert out.shape == (2, 32) and torch.isfinite(out).all()


def test_roberta_style_limit_leaves_out_the_padding_offset(tmp_path):
    """RoBERTa numbers positions from pad_token_id + 1: 20 positions hold 18 tokens (checked on the model)."""
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16, max_position_embeddings=20, pad_token_id=1)
    config.save_pretrained(str(tmp_path))
    model = RobertaModel(config).eval()
    ids = torch.full((1, 18), 5)
    assert model(input_ids=ids).last_hidden_state.shape == (1, 18, 8)
    with pytest.raises((IndexError, RuntimeError)):
        model(input_ids=torch.full((1, 19), 5))

    assert TextEncoder(str(tmp_path), max_length=18, device="cpu").max_length == 18  # reads config.json only
    with pytest.raises(ValueError, match=r"encoder\.max_length=19 exceeds the model's limit of 18 tokens"):
        TextEncoder(str(tmp_path), max_length=19, device="cpu")
