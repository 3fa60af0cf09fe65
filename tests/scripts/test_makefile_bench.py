"""`make bench` passes --peers-python once `make peers-venv` (its first recipe line) has built the peers' venv,
on the first call too: the check runs in the recipe's shell, after that line, on the venv's install marker.
Stubs stand in for every program: PYTHON "builds" the venv (bin/pip, bin/python), PY prints its arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def stub(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)
    return path


def make_bench(tmp_path: Path, fake_python: Path) -> subprocess.CompletedProcess:
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    (venv / ".installed").touch()  # the project's venv is "installed": newer than pyproject.toml
    os.utime(venv / ".installed", (4e9, 4e9))
    py = stub(tmp_path / "bin" / "py", 'echo "BENCH ARGS: $*"')
    return subprocess.run(["make", "--no-print-directory", "bench", f"VENV={venv}", f"PY={py}",
                           f"PYTHON={fake_python}", f"PEERS_VENV={tmp_path / 'peers'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_first_make_bench_uses_the_peers_venv_it_just_built(tmp_path):
    # `$(PYTHON) -m venv DIR`: a venv whose pip installs nothing
    fake_python = stub(tmp_path / "bin" / "python", 'mkdir -p "$3/bin"; printf "#!/bin/sh\\n" > "$3/bin/pip"; '
                       'cp "$3/bin/pip" "$3/bin/python"; chmod +x "$3/bin/pip" "$3/bin/python"')
    proc = make_bench(tmp_path, fake_python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "peers" / ".installed").is_file()
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH ARGS:"))
    assert f"--peers-python {tmp_path / 'peers' / 'bin' / 'python'}" in line, proc.stdout


def test_make_bench_skips_a_half_built_peers_venv(tmp_path):
    # an earlier attempt left bin/python, and this one's pip install fails again: no marker, no --peers-python
    stub(tmp_path / "peers" / "bin" / "python", "exit 1")
    fake_python = stub(tmp_path / "bin" / "python", 'mkdir -p "$3/bin"; printf "#!/bin/sh\\nexit 1\\n" > "$3/bin/pip"; '
                       'cp "$3/bin/pip" "$3/bin/python"; chmod +x "$3/bin/pip" "$3/bin/python"')
    proc = make_bench(tmp_path, fake_python)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # `-$(MAKE) peers-venv`: its failure is ignored
    assert (tmp_path / "peers" / "bin" / "python").is_file() and not (tmp_path / "peers" / ".installed").exists()
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH ARGS:"))
    assert "--peers-python" not in line
