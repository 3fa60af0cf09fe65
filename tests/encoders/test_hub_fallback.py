"""A hub model already in the Hugging Face cache loads when the hub cannot be reached (offline mode off), and
offline mode follows huggingface_hub (TRANSFORMERS_OFFLINE counts too). Network-free: the hub endpoint is a
closed local port, and each check runs in a fresh process (huggingface_hub reads these variables at import)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "someorg/tiny-bert"
REVISION = "0123456789abcdef0123456789abcdef01234567"
UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused at once

# Runs in the child: resolve the cached repo and an uncached one; calls to the hub API are recorded, and
# list_repo_files (which retries for ~25 s when the hub is down) fails at once as it would after its retries.
CHILD = f"""
import sys
from huggingface_hub import HfApi
from recsys_fewshot.encoders.text_encoder import EncoderError, TextEncoder, model_identity

calls = []
real_info = HfApi.model_info
def model_info(self, *args, **kwargs):
    calls.append("model_info")
    return real_info(self, *args, **kwargs)
def list_repo_files(self, *args, **kwargs):
    calls.append("list_repo_files")
    raise ConnectionError("hub unreachable")
HfApi.model_info, HfApi.list_repo_files = model_info, list_repo_files

try:
    enc = TextEncoder({REPO_ID!r})
    print("path", enc.path)
    print("dim", enc.dim)
    print("identity", model_identity(enc.path))
except EncoderError as err:
    print("error", err)
try:
    TextEncoder("someorg/not-cached")
except EncoderError as err:
    print("missing", err)
print("calls", ",".join(calls) or "none")
"""


def cache_repo(hf_home: Path, model: Path) -> Path:
    """`model` as huggingface_hub caches a downloaded repo: models--org--name/{{refs/main, snapshots/<rev>/}}."""
    root = hf_home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = shutil.copytree(model, root / "snapshots" / REVISION)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)
    return snapshot


def run_child(tmp_path: Path, **env_vars: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=UNREACHABLE, HF_HUB_DISABLE_TELEMETRY="1", **env_vars)
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def test_cached_model_loads_when_the_hub_is_unreachable(tiny_bert, tmp_path):
    from recsys_fewshot.encoders.text_encoder import model_identity

    snapshot = cache_repo(tmp_path / "hf", tiny_bert)
    got = run_child(tmp_path, HF_HUB_OFFLINE="0")
    assert "error" not in got, got["error"]
    assert Path(got["path"]) == snapshot and got["dim"] == "32"
    assert got["identity"] == model_identity(tiny_bert)
    # a model that is not cached still gets the actionable message
    assert got["missing"].startswith("encoder.name_or_path='someorg/not-cached' is not a local folder")
    assert "hf download someorg/not-cached" in got["missing"]
    assert "list_repo_files" not in got["calls"] and "model_info" in got["calls"]  # the hub was tried


def test_transformers_offline_alone_means_offline(tiny_bert, tmp_path):
    """TRANSFORMERS_OFFLINE=1 without HF_HUB_OFFLINE: huggingface_hub is offline, so are we (no hub call)."""
    snapshot = cache_repo(tmp_path / "hf", tiny_bert)
    got = run_child(tmp_path, TRANSFORMERS_OFFLINE="1")
    assert "error" not in got, got["error"]
    assert Path(got["path"]) == snapshot
    assert "TRANSFORMERS_OFFLINE=1" in got["missing"]
    assert got["calls"] == "none"
