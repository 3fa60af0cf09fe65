"""peft=prompt and peft=prefix take num_virtual_tokens positions in front of every text: encoder.max_length plus
them must fit the model's position embeddings, else the tower fails at once naming both keys and the limit
(instead of "The expanded size of the tensor (132) must match the existing size (128)" inside BERT)."""

from __future__ import annotations

import re

import pytest
import torch

from recsys_fewshot.encoders import peft_wrap
from recsys_fewshot.encoders.trainable import build_tower

LONG = " ".join(["story"] * 300)  # far more tokens than the tiny model's 128 positions
TEXTS = [LONG, "short", "a film about paper gardens"]
KNOBS = {"num_virtual_tokens": 4, "projection": False, "r": 2, "alpha": 4, "dropout": 0.0}

pytestmark = pytest.mark.usefixtures("one_thread")


def tower(path, method, max_length, **kwargs):
    from recsys_fewshot.encoders.spec import EncoderSpec

    spec = EncoderSpec(str(path), pooling="mean", max_length=max_length, normalize=True, batch_size=8)
    return build_tower(spec, TEXTS, method=peft_wrap.method_of(method, KNOBS), device="cpu", **kwargs)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_virtual_tokens_shift_the_text_positions(tiny_bert, method):
    """Why prefix counts too: BERT numbers the text's positions after the key/value prefix (checked on the model)."""
    from transformers import AutoModel

    model = peft_wrap.method_of(method, KNOBS).wrap(AutoModel.from_pretrained(str(tiny_bert)))
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.full((1, 124), 2000), attention_mask=torch.ones(1, 124, dtype=torch.long))
        with pytest.raises(RuntimeError, match="expanded size"):
            model(input_ids=torch.full((1, 125), 2000), attention_mask=torch.ones(1, 125, dtype=torch.long))


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_max_length_at_the_limit_names_both_keys_and_the_limit(tiny_bert, method):
    with pytest.raises(ValueError) as err:
        tower(tiny_bert, method, 128)
    message = str(err.value)
    assert re.search(r"encoder\.max_length=128 \+ peft\.num_virtual_tokens=4 = 132 positions exceed the "
                     r"model's limit of 128 \(max_position_embeddings=128 in .*config\.json\)", message), message
    assert f"peft={method}" in message and "encoder.max_length to at most 124" in message


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_max_length_leaving_room_encodes_long_texts(tiny_bert, method):
    t = tower(tiny_bert, method, 124)
    t.eval()
    out = t(torch.arange(len(TEXTS)))
    assert out.shape == (len(TEXTS), 32) and torch.isfinite(out).all()
    t.train()
    out = t(torch.tensor([0, 1]))  # training pass too (gradients through the virtual tokens)
    out.sum().backward()


def test_other_methods_keep_the_whole_limit(tiny_bert):
    t = tower(tiny_bert, "lora", 128)
    t.eval()
    assert t(torch.arange(len(TEXTS))).shape == (len(TEXTS), 32)


def test_saved_prompt_adapter_is_checked_when_loaded(tiny_bert, tmp_path):
    """Evaluation rebuilds the tower from the run's adapter: its virtual tokens count as well."""
    folder = tower(tiny_bert, "prompt", 100).save(tmp_path / "encoder")
    assert tower(tiny_bert, "prompt", 124, adapter=folder).method == "prompt"
    with pytest.raises(ValueError, match=r"encoder\.max_length=126 \+ peft\.num_virtual_tokens=4 \(of the "
                                         r"trained encoder in .*encoder\) = 130 positions exceed"):
        tower(tiny_bert, "prompt", 126, adapter=folder)
