"""The model fingerprint hashes every byte of the weights: a folder re-saved in place with changed middle layers
(e.g. a LoRA merged into query/value) is a new model for the embedding cache; the sha256 memo in the cache
keeps warm runs from re-reading the weights, and never outlives a change of the file."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch

from recsys_fewshot.encoders import text_encoder
from recsys_fewshot.encoders.cache import encode_cached
from recsys_fewshot.encoders.text_encoder import DIGESTS_FILE, TextEncoder, file_digests, model_identity

TEXTS = ["Silver Harbor Action", "Paper Garden Comedy", "North Winter Drama", "Golden Stone Horror"]
MIB = 1 << 20
CHANGED = "encoder.layer.0.attention.self.query.weight"  # an early layer: neither first nor last MiB of the file


@pytest.fixture(scope="module")
def layered_bert(tmp_path_factory) -> Path:
    """A tiny BERT with enough layers behind layer 0 that layer 0 lies outside the file's first and last MiB."""
    from conftest import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("layered") / "model", hidden=64, layers=10)


@pytest.fixture
def model(layered_bert, tmp_path) -> Path:
    """A private copy (tests rewrite it), its files dated an hour back as a model downloaded earlier."""
    copy = shutil.copytree(layered_bert, tmp_path / "model")
    old = time.time() - 3600
    for file in copy.iterdir():
        os.utime(file, (old, old))
    return copy


@pytest.fixture
def memoise_at_once(monkeypatch):
    """Memoise digests of files changed just now too (normally they must be 2 s old: a coarse timestamp
    could otherwise miss a second change within the same tick); ctime is as fresh as the copy."""
    monkeypatch.setattr(text_encoder, "_RACY_NS", -1)


def byte_range(file: Path, name: str) -> tuple[int, int]:
    """Where tensor `name` lies in a safetensors file (absolute offsets)."""
    raw = file.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8:8 + header_len])[name]["data_offsets"]
    return 8 + header_len + begin, 8 + header_len + end


def resave_with_changed_layer(folder: Path) -> None:
    """Re-save the model in place with layer 0's query weight changed (a rank-4 update, as a merged LoRA)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder))
    torch.manual_seed(0)
    with torch.no_grad():
        w = model.encoder.layer[0].attention.self.query.weight
        w += 0.5 * torch.randn(w.shape[0], 4) @ torch.randn(4, w.shape[1])
    model.save_pretrained(str(folder))


def test_the_changed_tensor_is_in_the_middle_of_the_file(model):
    file = model / "model.safetensors"
    begin, end = byte_range(file, CHANGED)
    assert MIB < begin and end < file.stat().st_size - MIB  # a head+tail fingerprint cannot see it


@pytest.mark.usefixtures("memoise_at_once")
def test_weights_changed_in_place_are_a_cache_miss(model, tmp_path):
    cache = tmp_path / "cache"
    old, stats = encode_cached(TextEncoder(str(model)), TEXTS, cache)
    assert stats["misses"] == len(TEXTS)
    _, stats = encode_cached(TextEncoder(str(model)), TEXTS, cache)
    assert stats["hits"] == len(TEXTS) and stats["forward_calls"] == 0  # unchanged model: all hits
    before = model_identity(model)

    resave_with_changed_layer(model)
    vectors, stats = encode_cached(TextEncoder(str(model)), TEXTS, cache)
    assert stats["hits"] == 0 and stats["misses"] == len(TEXTS)
    assert model_identity(model) != before
    fresh = TextEncoder(str(model)).encode(TEXTS)
    torch.testing.assert_close(vectors, fresh)
    assert not torch.allclose(vectors, old, atol=1e-3)  # the new model's vectors, not the cached old ones
    _, stats = encode_cached(TextEncoder(str(model)), TEXTS, cache)
    assert stats["hits"] == len(TEXTS)


@pytest.mark.usefixtures("memoise_at_once")
def test_warm_run_reads_digests_from_the_memo(model, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    encode_cached(TextEncoder(str(model)), TEXTS, cache)
    memo = json.loads((cache / "embeddings" / DIGESTS_FILE).read_text())
    weights = str((model / "model.safetensors").resolve())
    assert memo["version"] == 1 and len(memo["files"][weights]["sha256"]) == 64

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(text_encoder, "sha256_file", no_hashing)
    _, stats = encode_cached(TextEncoder(str(model)), TEXTS, cache)
    assert stats["hits"] == len(TEXTS)


@pytest.mark.usefixtures("memoise_at_once")
def test_rewrite_keeping_size_and_mtime_is_still_seen(model, tmp_path):
    """`cp -p`/`rsync -a` style: same size, the old mtime put back. The ctime still changes."""
    memo = tmp_path / DIGESTS_FILE
    file = model / "model.safetensors"
    first = model_identity(model, memo)
    stat = file.stat()
    resave_with_changed_layer(model)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file.stat().st_size == stat.st_size and file.stat().st_mtime_ns == stat.st_mtime_ns
    assert model_identity(model, memo) != first
    assert model_identity(model, memo) == model_identity(model)


def test_files_changed_just_now_are_not_memoised(model, tmp_path):
    memo = tmp_path / DIGESTS_FILE
    file = model / "model.safetensors"
    file.write_bytes(file.read_bytes())  # same content, mtime and ctime now
    assert file_digests([file], memo) == file_digests([file])
    entries = json.loads(memo.read_text())["files"] if memo.exists() else {}
    assert str(file.resolve()) not in entries


@pytest.mark.usefixtures("memoise_at_once")
def test_corrupt_or_stale_memo_is_ignored(model, tmp_path):
    memo = tmp_path / DIGESTS_FILE
    expected = model_identity(model)
    memo.write_text("{not json")
    assert model_identity(model, memo) == expected
    assert json.loads(memo.read_text())["version"] == 1  # rewritten whole
    files = json.loads(memo.read_text())["files"]
    for entry in files.values():
        entry["sha256"] = "0" * 64  # a digest that does not match: only used while the stat matches...
    files["/no/such/file"] = {"stat": [1, 2, 3, 4, 5], "sha256": "0" * 64}
    memo.write_text(json.dumps({"version": 1, "files": files}))
    assert model_identity(model, memo) != expected  # ...which shows the memo is what a warm run reads
    for file in model.iterdir():
        os.utime(file)  # any change of the stat: hashed again
    assert model_identity(model, memo) == expected
    assert "/no/such/file" not in json.loads(memo.read_text())["files"]  # entries of gone files are dropped


def test_unwritable_memo_location_still_gives_the_identity(model, tmp_path):
    (tmp_path / "embeddings").write_text("a file, not a folder")
    assert model_identity(model, tmp_path / "embeddings" / DIGESTS_FILE) == model_identity(model)
