"""`python -m recsys_fewshot.serve`: the real server in a subprocess over a real run folder trained on tiny data,
queried over HTTP. Its answers are `load_run(...)`'s, to the last bit of every score; unknown ids, bad fields and
runs it cannot serve are refused by name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_recommend import trained  # noqa: F401  (the module-scoped trained run folder)

pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded(trained):  # noqa: F811
    import recsys_fewshot

    return recsys_fewshot.load_run(trained)


@pytest.fixture(scope="module")
def server(trained):  # noqa: F811
    """The server on a free port (port=0: the start line names it); yields (base url, process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "recsys_fewshot.serve", f"run_dir={trained}", "port=0",
                             "threads=1", "trainer.cpu=true"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    lines, base = [], None
    try:
        deadline = time.monotonic() + 60
        while base is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:  # the process ended
                break
            lines.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)$", line.strip())
            base = found.group(1) if found else None
        assert base is not None and proc.poll() is None, "no start line:\n" + "".join(lines)
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # keep draining it
        while time.monotonic() < deadline:  # the socket listens once uvicorn's loop runs
            try:
                get(base + "/health")
                break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.05)
        yield base, proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> dict:
    status, answer = call(url)
    assert status == 200, answer
    return answer


def as_frame(answer: dict) -> pd.DataFrame:
    return pd.DataFrame(answer["items"], columns=["item_id", "score", "rank"])


def test_health_names_the_run(server, loaded, trained):  # noqa: F811
    base, _, _ = server
    health = get(base + "/health")
    assert health["run_dir"] == str(trained.resolve()) and health["task"] == "rating"
    assert health["head"] == "recsys_fewshot.models.heads.MF"
    assert (health["users"], health["items"]) == (120, 50) == (len(loaded.user_ids), len(loaded.item_ids))


@pytest.mark.slow
def test_recommend_is_load_runs_answer_exactly(server, loaded):
    base, _, _ = server
    for user, k in (("7", 20), ("1", 5), ("120", 1), ("33", 50)):
        answer = get(f"{base}/recommend?user_id={user}&k={k}")
        want = loaded.recommend([user], k=k)
        got = as_frame(answer)
        assert answer["user_id"] == user and len(got) == len(want) > 0
        assert got["item_id"].tolist() == want["item_id"].tolist()
        assert got["rank"].tolist() == want["rank"].tolist() == list(range(1, len(want) + 1))
        assert np.array_equal(got["score"].to_numpy(np.float32), want["score"].to_numpy())  # bit for bit
        status, posted = call(f"{base}/recommend", {"user_id": int(user), "k": k})  # JSON numbers are ids too
        assert status == 200 and posted == answer
    everything = get(f"{base}/recommend?user_id=7&k=50&exclude_known=false")
    assert len(everything["items"]) == 50  # the known items come back when asked for


@pytest.mark.slow
def test_score_and_similar_are_load_runs_answers(server, loaded):
    base, _, _ = server
    pairs = [["7", "3"], ["1", "50"], ["7", "3"], ["120", "1"]]
    status, answer = call(f"{base}/score", {"pairs": pairs})
    assert status == 200
    want = loaded.score(pd.DataFrame(pairs, columns=["user_id", "item_id"]))
    assert [[s["user_id"], s["item_id"]] for s in answer["scores"]] == pairs
    assert np.array_equal(np.float32([s["score"] for s in answer["scores"]]), want["score"].to_numpy(np.float32))

    similar = get(f"{base}/similar?item_id=2&k=4&vectors=text")
    want = loaded.similar_items(["2"], k=4, vectors="text")
    assert [s["item_id"] for s in similar["items"]] == want["similar_id"].tolist()
    assert np.array_equal(np.float32([s["score"] for s in similar["items"]]), want["score"].to_numpy())


@pytest.mark.slow
@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend?user_id=nobody&k=3", None, 404, "user id 'nobody' not in the run's data"),
    ("/recommend", {"user_id": "ghost"}, 404, "user id 'ghost' not in the run's data"),
    ("/similar?item_id=9999", None, 404, "item id '9999' not in the run's data"),
    ("/score", {"pairs": [["1", "2"], ["x", "2"], ["y", "3"]]}, 404, "user ids 'x', 'y' not in the run's data"),
    ("/score", {"pairs": [["1", "77"]]}, 404, "item id '77' not in the run's data"),
    ("/recommend?user_id=1&k=0", None, 422, "k=0: expected a whole number >= 1"),
    ("/recommend?user_id=1&k=ten", None, 422, "k=ten: expected a whole number >= 1"),
    ("/recommend", {"user_id": "1", "k": 2.5}, 422, "k=2.5: expected a whole number >= 1"),
    ("/recommend?k=3", None, 422, "user_id: required"),
    ("/recommend?user_id=1&exclude_known=maybe", None, 422, "exclude_known=maybe: expected true, false or all"),
    ("/similar?item_id=1&vectors=id", None, 422, "vectors=id: expected model or text"),
    ("/score", {"pairs": [["1"]]}, 422, "pairs[0]: expected [user_id, item_id]"),
    ("/score", {"pairs": [["1", "2"], ["3", {"id": 4}]]}, 422, "pairs[1][1]={'id': 4}: expected one id"),
    ("/score", {"pair": []}, 422, "pairs: expected a non-empty list"),
    ("/recommends?user_id=1", None, 404, "GET /recommends: not found (offered: GET /health"),
])
def test_unknown_ids_and_bad_fields_are_named(server, path, body, status, message):
    base, _, _ = server
    got, answer = call(base + path, body)
    assert got == status and message in answer["error"], answer


@pytest.mark.slow
def test_a_body_that_is_not_json_is_refused(server):
    base, _, _ = server
    request = urllib.request.Request(base + "/recommend", data=b'{"user_id": 7,', method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 400 and "body: not JSON" in json.loads(err.value.read())["error"]


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_users_list(server, loaded):
    """Eight clients at once: the model is shared (its user histories are set per call), no answer mixes users."""
    base, _, _ = server
    users = [str(u) for u in range(1, 41)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda u: get(f"{base}/recommend?user_id={u}&k=10"), users))
    want = loaded.recommend(users, k=10).groupby("user_id", sort=False)["item_id"].apply(list)
    for user, answer in zip(users, answers):
        assert answer["user_id"] == user and [i["item_id"] for i in answer["items"]] == want[user]


def _history_rows(loaded, user: str) -> list[dict]:
    rows = loaded.run.split.train
    mine = rows[rows["user"] == loaded.user_ids.get_loc(user)]
    return [{"item_id": loaded.item_ids[i], "rating": float(r)} for i, r in zip(mine["item"], mine["rating"])]


@pytest.mark.slow
def test_history_form_is_load_runs_answer(server, loaded):
    base, _, _ = server
    history = _history_rows(loaded, "7")
    status, answer = call(f"{base}/recommend", {"history": history, "k": 5})
    assert status == 200, answer
    frame = pd.DataFrame({"user_id": "new", "item_id": [h["item_id"] for h in history],
                          "rating": np.float32([h["rating"] for h in history])})
    want = loaded.recommend(history=frame, k=5)
    assert [i["item_id"] for i in answer["items"]] == want["item_id"].tolist()
    assert np.array_equal(np.float32([i["score"] for i in answer["items"]]), want["score"].to_numpy(np.float32))
    status, answer = call(f"{base}/recommend", {"history": [{"item_id": "9999"}]})
    assert status == 404 and "item id '9999'" in answer["error"]


@pytest.mark.slow
def test_the_server_stops_cleanly_on_sigterm(server):
    """The last test of the module's server: it ends it."""
    _, proc, lines = server
    proc.terminate()
    assert proc.wait(20) == 0
    time.sleep(0.1)  # the last line through the reading thread
    assert lines[-1].strip() == "serve: stopped (SIGTERM)" and "Traceback" not in "".join(lines), lines


# --- refusals at start: one line, exit status 1, no traceback ------------------------------------------
def _fails(capsys, *args: str) -> str:
    from recsys_fewshot.serve import main

    assert main(list(args)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("serve: ") and err.count("\n") == 1, err
    return err


def test_missing_and_foreign_run_folders_are_refused(tmp_path, capsys):
    assert "no such folder" in _fails(capsys, f"run_dir={tmp_path / 'missing'}", "port=0")
    assert "no config.yaml or .hydra/config.yaml" in _fails(capsys, f"run_dir={tmp_path}", "port=0")
    assert "port=http: expected a whole number" in _fails(capsys, f"run_dir={tmp_path}", "port=http")
    assert "threads=0: expected a whole number >= 1" in _fails(capsys, f"run_dir={tmp_path}", "threads=0")


def test_without_the_serve_extra_the_message_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` does when it is not installed
    assert "pip install -e '.[serve]'" in _fails(capsys, f"run_dir={tmp_path}")


@pytest.mark.slow
def test_a_head_that_scores_pairs_only_is_refused(loaded, capsys, monkeypatch):
    from recsys_fewshot import serving
    from recsys_fewshot.models.capabilities import Capabilities

    monkeypatch.setattr(loaded, "capabilities", Capabilities(full_ranking=False))  # a prompt head's declaration
    monkeypatch.setattr(serving, "load_run", lambda run_dir, overrides: loaded)
    assert "scores (user, item) pairs only" in _fails(capsys, "run_dir=anything", "port=0")


def test_an_address_in_use_is_named(capsys):
    from recsys_fewshot.serve import ServeError, listen

    taken = listen("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(ServeError, match=r"host=127\.0\.0\.1 port=\d+: Address already in use"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


@pytest.mark.slow
def test_a_model_that_fails_answers_500_with_the_reason(loaded):
    """A NaN in the weights: the ranking's own check stops it, and the answer is JSON naming what happened."""
    import torch

    import uvicorn

    from recsys_fewshot.serve import create_app, listen

    bias = loaded.run.model.user_bias.weight
    row = loaded.user_ids.get_loc("9")
    saved = bias[row].clone()
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(loaded), log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()  # in this process, so the test can reach the weights; no signal handlers off the main thread
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        while not server.started:
            time.sleep(0.02)
        with torch.no_grad():
            bias[row] = float("nan")
        status, answer = call(f"{base}/recommend?user_id=9&k=3")
        assert status == 500
        assert answer["error"].startswith("FloatingPointError: the model (MF) scored 50 (user, item) pairs"), answer
        assert call(f"{base}/recommend?user_id=10&k=3")[0] == 200  # the other users are still served
    finally:
        with torch.no_grad():
            bias[row] = saved
        server.should_exit = True
        thread.join(10)
