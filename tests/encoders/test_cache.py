"""The content-addressed embedding cache: hits, misses, keys, shard format, corruption, lazy imports."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save

from recsys_fewshot.encoders.cache import cache_folder, encode_cached, text_key
from recsys_fewshot.encoders.text_encoder import TextEncoder

TEXTS = ["Silver Harbor Action", "Paper Garden Comedy", "North Winter Drama", "Golden Stone Horror",
         "Blue Little Romance", "Hidden Broken Sci-Fi", "Café Quiet Drama"]
REPO = Path(__file__).resolve().parents[2]


def shards(cache: Path, encoder: TextEncoder) -> list[Path]:
    return sorted(cache_folder(cache, encoder).glob("*.safetensors"))


def test_second_call_is_all_hits(tiny_bert, tmp_path):
    enc = TextEncoder(str(tiny_bert), batch_size=4)
    first, stats = encode_cached(enc, TEXTS, tmp_path)
    assert stats["hits"] == 0 and stats["misses"] == len(TEXTS) and stats["forward_calls"] >= 2
    torch.testing.assert_close(first, enc.encode(TEXTS))
    again, stats = encode_cached(TextEncoder(str(tiny_bert), batch_size=4), TEXTS[::-1], tmp_path)
    assert stats["hits"] == len(TEXTS) and stats["misses"] == 0 and stats["forward_calls"] == 0
    assert torch.equal(again, first.flip(0))
    assert stats["seconds"] >= 0


def test_shard_format_and_keys(tiny_bert, tmp_path):
    enc = TextEncoder(str(tiny_bert))
    vectors, _ = encode_cached(enc, TEXTS[:3], tmp_path)
    folder = tmp_path / "embeddings" / enc.identity[:16]
    (shard,) = shards(tmp_path, enc)
    assert shard.parent == folder and not [p for p in folder.iterdir() if p.suffix != ".safetensors"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert shard.stat().st_mode & 0o777 == 0o666 & ~umask  # shareable like any file the user writes
    tensors = load_file(str(shard))
    assert tensors["keys"].dtype == torch.uint8 and tensors["keys"].shape == (3, 16)
    assert tensors["vectors"].dtype == torch.float32 and tensors["vectors"].shape == (3, 32)
    expected = hashlib.sha256((enc.identity + "\0" + TEXTS[1]).encode()).digest()[:16]
    assert text_key(enc.identity, TEXTS[1]) == expected
    row = [bytes(k.tolist()) for k in tensors["keys"]].index(expected)
    assert torch.equal(tensors["vectors"][row], vectors[1])


def test_only_new_texts_are_encoded(tiny_bert, tmp_path):
    enc = TextEncoder(str(tiny_bert))
    base, _ = encode_cached(enc, TEXTS[:-1], tmp_path)
    more, stats = encode_cached(enc, TEXTS + TEXTS[:2], tmp_path)  # one new text, and duplicates
    assert (stats["hits"], stats["misses"], stats["forward_calls"]) == (len(TEXTS) - 1, 1, 1)
    assert torch.equal(more[: len(TEXTS) - 1], base)
    assert torch.equal(more[len(TEXTS):], base[:2])
    torch.testing.assert_close(more[len(TEXTS) - 1], enc.encode([TEXTS[-1]])[0])
    assert len(shards(tmp_path, enc)) == 2


def test_duplicates_are_encoded_once_without_cache(tiny_bert):
    enc = TextEncoder(str(tiny_bert))
    vectors, stats = encode_cached(enc, ["b", "a", "b", "b"], None)
    assert (stats["hits"], stats["misses"]) == (0, 2)
    assert torch.equal(vectors[0], vectors[2]) and torch.equal(vectors[0], vectors[3])
    empty, stats = encode_cached(enc, [], None)
    assert empty.shape == (0, 32) and stats["forward_calls"] == 0


@pytest.mark.parametrize("change", [{"pooling": "cls"}, {"max_length": 16}, {"normalize": True}])
def test_settings_that_change_vectors_change_keys(tiny_bert, tmp_path, change):
    encode_cached(TextEncoder(str(tiny_bert)), TEXTS, tmp_path)
    other = TextEncoder(str(tiny_bert), **change)
    _, stats = encode_cached(other, TEXTS, tmp_path)
    assert stats["hits"] == 0 and stats["misses"] == len(TEXTS)


def test_corrupt_shard_is_ignored_and_replaced(tiny_bert, tmp_path):
    enc = TextEncoder(str(tiny_bert))
    good, _ = encode_cached(enc, TEXTS, tmp_path)
    (shard,) = shards(tmp_path, enc)
    shard.write_bytes(shard.read_bytes()[:100])  # truncated, as after a crash of a non-atomic writer
    with pytest.warns(RuntimeWarning, match=shard.name):
        again, stats = encode_cached(enc, TEXTS, tmp_path)
    assert stats["misses"] == len(TEXTS) and stats["hits"] == 0
    torch.testing.assert_close(again, good)
    assert shards(tmp_path, enc) == [shard]  # same texts -> same content-addressed name, now whole
    assert torch.equal(load_file(str(shard))["vectors"], again)


def test_corrupt_shard_is_removed_once_its_texts_are_rewritten(tiny_bert, tmp_path):
    enc = TextEncoder(str(tiny_bert))
    encode_cached(enc, TEXTS[:3], tmp_path)
    (shard,) = shards(tmp_path, enc)
    shard.write_bytes(b"\x00" * 8)
    with pytest.warns(RuntimeWarning, match=shard.name):
        _, stats = encode_cached(enc, TEXTS[:2], tmp_path)
    assert stats["misses"] == 2 and not shard.exists() and len(shards(tmp_path, enc)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bad shard is gone: no warning any more
        _, stats = encode_cached(enc, TEXTS[:3], tmp_path)
    assert (stats["hits"], stats["misses"]) == (2, 1)


def test_shard_of_the_wrong_shape_is_ignored(tiny_bert, tmp_path):
    from safetensors.torch import save_file

    enc = TextEncoder(str(tiny_bert))
    folder = cache_folder(tmp_path, enc)
    folder.mkdir(parents=True)
    keys = torch.tensor([list(text_key(enc.identity, TEXTS[0]))], dtype=torch.uint8)
    save_file({"keys": keys, "vectors": torch.zeros(1, 5)}, str(folder / "odd.safetensors"))
    with pytest.warns(RuntimeWarning, match=r"odd\.safetensors .*expected float32 \[1, 32\]"):
        vectors, stats = encode_cached(enc, TEXTS[:1], tmp_path)
    assert stats["misses"] == 1 and vectors.abs().sum() > 0


def test_warm_lookup_does_not_import_transformers(tiny_bert, tmp_path):
    encode_cached(TextEncoder(str(tiny_bert)), TEXTS, tmp_path)
    code = ("import sys; from pathlib import Path\n"
            "from recsys_fewshot.encoders.cache import encode_cached\n"
            "from recsys_fewshot.encoders.text_encoder import TextEncoder\n"
            f"v, s = encode_cached(TextEncoder({str(tiny_bert)!r}), {TEXTS!r}, Path({str(tmp_path)!r}))\n"
            "print(s['hits'], s['forward_calls'], tuple(v.shape), 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == [str(len(TEXTS)), "0", f"({len(TEXTS)},", "32)", "False"]


def test_unwritable_cache_warns_and_still_returns_vectors(tiny_bert, tmp_path):
    (tmp_path / "embeddings").write_text("not a folder")  # mkdir of the cache folder fails (as root, too)
    enc = TextEncoder(str(tiny_bert))
    with pytest.warns(RuntimeWarning, match="could not write to the embedding cache"):
        vectors, stats = encode_cached(enc, TEXTS[:2], tmp_path)
    assert stats["misses"] == 2
    torch.testing.assert_close(vectors, enc.encode(TEXTS[:2]))


# ---------------------------------------------------------------- shards checked on read
def zero_vectors(shard: Path) -> None:
    """Zero the vectors' bytes in place: same size, a valid file."""
    raw = bytearray(shard.read_bytes())
    length = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8:8 + length])["vectors"]["data_offsets"]
    raw[8 + length + start:8 + length + end] = bytes(end - start)
    shard.write_bytes(bytes(raw))


def random_bytes(shard: Path) -> None:
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))


def legacy(shard: Path) -> None:
    """The same tensors with no digest in the header (a shard written before shards carried one)."""
    shard.write_bytes(save(load_file(str(shard))))


DAMAGE = {"vectors zeroed in place": zero_vectors, "random bytes, same size": random_bytes,
          "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
          "no digest": legacy}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_shard_is_named_reencoded_and_replaced(tiny_bert, tmp_path, damage):
    enc = TextEncoder(str(tiny_bert))
    clean, _ = encode_cached(enc, TEXTS, tmp_path)
    (shard,) = shards(tmp_path, enc)
    size = shard.stat().st_size
    DAMAGE[damage](shard)
    with pytest.warns(RuntimeWarning, match=f"damaged embedding cache shard {shard}"):
        again, stats = encode_cached(enc, TEXTS, tmp_path)
    assert (stats["hits"], stats["misses"]) == (0, len(TEXTS))
    torch.testing.assert_close(again, clean)
    assert shards(tmp_path, enc) == [shard] and shard.stat().st_size == size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # replaced by a whole shard: no warning any more
        third, stats = encode_cached(enc, TEXTS, tmp_path)
    assert stats["hits"] == len(TEXTS) and torch.equal(third, again)


def test_shard_header_holds_the_digest_of_its_tensors(tiny_bert, tmp_path):
    from safetensors import safe_open

    from recsys_fewshot import cachefiles

    enc = TextEncoder(str(tiny_bert))
    encode_cached(enc, TEXTS[:3], tmp_path)
    (shard,) = shards(tmp_path, enc)
    with safe_open(str(shard), "pt") as fh:
        digest = fh.metadata()["digest"]
    tensors = load_file(str(shard))
    assert digest == cachefiles.digest_bytes(tensors["keys"].numpy().tobytes(), tensors["vectors"].numpy().tobytes())


def test_temp_files_of_killed_writers_are_swept(tiny_bert, tmp_path):
    from recsys_fewshot import cachefiles

    enc = TextEncoder(str(tiny_bert))
    encode_cached(enc, TEXTS[:2], tmp_path)
    folder = cache_folder(tmp_path, enc)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = cachefiles.writer_tag().split("h")[-1]
    killed, live = folder / f".0123456789abcdef-w{dead.pid}h{host}1234abcd.tmp", folder / (
        f".0123456789abcdef{cachefiles.writer_tag()}1234abcd.tmp")
    old = folder / ".0123456789abcdef-5678.tmp"  # a temp of the old naming: swept by age only
    for path in (killed, live, old):
        path.write_bytes(b"")  # a writer killed before it wrote anything
    os.utime(old, (0, 0))
    _, stats = encode_cached(enc, TEXTS[:2], tmp_path)
    assert stats["hits"] == 2 and not killed.exists() and not old.exists() and live.exists()
