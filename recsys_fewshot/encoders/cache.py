"""Content-addressed cache of frozen text vectors (safetensors shards).

Layout: ``<cache_dir>/embeddings/<encoder.identity[:16]>/<sha256>.safetensors``; each shard holds
``keys`` (uint8 ``[n, 16]``: the first 16 bytes of sha256(identity + "\\0" + text)) and ``vectors``
(float32 ``[n, dim]``), and in its header the digest of both tensors' bytes (`cachefiles.digest_bytes`),
checked on every read. A run looks every text up across the shards, encodes only the missing
(distinct) texts and writes them as one new shard, atomically. A shard that fails its check (edited in place,
truncated, unreadable, or written before shards carried a digest) is named in a warning, its texts are encoded
again and it is replaced; temp files of killed writers are swept (`cachefiles.sweep`). Shards are never modified, so
concurrent runs can share a cache. A fully warm lookup never loads the model (nor imports
``transformers``). ``<cache_dir>/embeddings/file_digests.json`` memoises the sha256 of the model's files
(the identity hashes them in full; see :func:`~recsys_fewshot.encoders.text_encoder.file_digests`).
The shards hold each text's own vector; a catalogue-wide step (``encoder.center``: subtracting the mean of
the texts asked for) is applied after the lookup, by the encoder's ``finish``, so one cached text serves
every catalogue it appears in.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from recsys_fewshot import cachefiles
from recsys_fewshot.encoders.text_encoder import DIGESTS_FILE, TextEncoder

KEY_BYTES = 16
DIGEST_KEY = "digest"  # the shard header's metadata entry: digest of keys then vectors bytes


def text_key(identity: str, text: str) -> bytes:
    """Cache key of one text under one encoder identity."""
    return hashlib.sha256(f"{identity}\0{text}".encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]


def cache_folder(cache_dir: Path, encoder: TextEncoder) -> Path:
    """Where the shards of this encoder (model + settings) live."""
    return Path(cache_dir) / "embeddings" / encoder.identity[:16]


def _tensor_digest(keys: torch.Tensor, vectors: torch.Tensor, algorithm: str | None = None) -> str:
    return cachefiles.digest_bytes(keys.contiguous().numpy().data, vectors.contiguous().numpy().data,
                                   algorithm=algorithm)


def _header_metadata(raw: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's JSON header ({} when it has none)."""
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + length]).get("__metadata__") or {}


def _read_shard(file: Path, dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(keys, vectors) of a shard, or None (with a warning) when it is unreadable, malformed or fails its
    digest."""
    try:
        raw = file.read_bytes()
        tensors = load(raw)
        keys, vectors = tensors["keys"], tensors["vectors"]
        digest = _header_metadata(raw).get(DIGEST_KEY)
        problem = None
        if keys.dtype != torch.uint8 or keys.dim() != 2 or keys.shape[1] != KEY_BYTES:
            problem = f"keys is {keys.dtype} {list(keys.shape)}, expected uint8 [n, {KEY_BYTES}]"
        elif vectors.dtype != torch.float32 or list(vectors.shape) != [keys.shape[0], dim]:
            problem = f"vectors is {vectors.dtype} {list(vectors.shape)}, expected float32 [{keys.shape[0]}, {dim}]"
        elif digest is None:
            problem = "it carries no digest: written by an older version"
        elif not cachefiles.matches(digest, lambda algorithm: _tensor_digest(keys, vectors, algorithm)):
            problem = "its vectors do not match the digest written with them: edited in place"
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        warnings.warn(f"ignoring damaged embedding cache shard {file} ({problem}); "
                      "its texts are encoded again and it is replaced", RuntimeWarning, stacklevel=3)
        return None
    return keys, vectors


def _write_shard(folder: Path, keys: torch.Tensor, vectors: torch.Tensor) -> Path:
    """Write one shard atomically (temp file in the same folder, then os.replace); its name is its key hash,
    its header holds the digest of its tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    keys, vectors = keys.contiguous(), vectors.contiguous()
    final = folder / f"{hashlib.sha256(keys.numpy().tobytes()).hexdigest()}.safetensors"
    tmp = folder / f".{final.stem[:16]}{cachefiles.writer_tag()}{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as fh:  # open() honours the umask (safetensors' save_file writes 0600 files)
            fh.write(save({"keys": keys, "vectors": vectors},
                          metadata={DIGEST_KEY: _tensor_digest(keys, vectors)}))
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def encode_cached(encoder: TextEncoder, texts: list[str],
                  cache_dir: Path | None) -> tuple[torch.Tensor, dict]:
    """Vectors of `texts` (``[n, dim]`` float32, input order), reusing and extending the cache.

    Returns the vectors and ``{"hits", "misses", "forward_calls", "seconds"}``, where hits/misses count
    distinct texts (found in the cache / encoded now). ``cache_dir=None``: no cache, distinct texts
    are encoded once. The encoder's ``finish`` (if it has one: centring) is applied to the rows returned,
    `texts` being the catalogue.
    """
    start, calls_before = time.perf_counter(), encoder.forward_calls
    memoise = getattr(encoder, "memoise_digests", None)
    if cache_dir is not None and callable(memoise):  # warm runs skip re-hashing the model's weights
        memoise(Path(cache_dir) / "embeddings" / DIGESTS_FILE)
    distinct = list(dict.fromkeys(texts))
    position = {text: i for i, text in enumerate(distinct)}
    vectors = torch.empty(len(distinct), encoder.dim)
    found = torch.zeros(len(distinct), dtype=torch.bool)
    folder = None if cache_dir is None else cache_folder(cache_dir, encoder)
    keys = [text_key(encoder.identity, t) for t in distinct] if folder is not None else []
    bad_shards: list[Path] = []
    if folder is not None and folder.is_dir():
        cachefiles.sweep(folder.glob(".*.tmp"))  # leftovers of writers killed before their rename
    if folder is not None and folder.is_dir() and distinct:
        wanted = {key: i for i, key in enumerate(keys)}
        for file in sorted(folder.glob("*.safetensors")):
            shard = _read_shard(file, encoder.dim)
            if shard is None:
                bad_shards.append(file)
                continue
            shard_keys, shard_vectors = shard
            raw = shard_keys.numpy().tobytes()
            pairs = [(wanted.pop(raw[row * KEY_BYTES:(row + 1) * KEY_BYTES], None), row)
                     for row in range(shard_keys.shape[0])]
            pairs = [(i, row) for i, row in pairs if i is not None]
            if pairs:
                ours, theirs = (list(column) for column in zip(*pairs))
                vectors[ours] = shard_vectors[theirs]
                found[ours] = True
    missing = (~found).nonzero().flatten().tolist()
    written = None
    if missing:
        vectors[missing] = encoder.encode([distinct[i] for i in missing])
        if folder is not None:
            new_keys = torch.frombuffer(bytearray(b"".join(keys[i] for i in missing)), dtype=torch.uint8)
            try:
                written = _write_shard(folder, new_keys.view(len(missing), KEY_BYTES), vectors[missing])
            except OSError as err:  # e.g. a read-only or full disk: the vectors are still good
                warnings.warn(f"could not write to the embedding cache {folder}: {err}", RuntimeWarning,
                              stacklevel=2)
    for file in bad_shards:  # its texts are in the new shard now (or were found elsewhere)
        if file == written:  # same texts, same name: already replaced by a good copy
            continue
        try:
            file.unlink()
        except OSError:
            pass  # e.g. a read-only cache: it is ignored again next time
    out = vectors[[position[t] for t in texts]] if texts else torch.zeros(0, encoder.dim)
    finish = getattr(encoder, "finish", None)
    if callable(finish):
        out = finish(out)
    stats = {"hits": len(distinct) - len(missing), "misses": len(missing),
             "forward_calls": encoder.forward_calls - calls_before,
             "seconds": time.perf_counter() - start}
    return out, stats
