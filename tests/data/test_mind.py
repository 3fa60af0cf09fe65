"""MIND-small (dataset=mind_small) on news.tsv / behaviors.tsv written as the release writes them (tabs, no header,
entity JSON, 12-hour times, N1-1 N2-0 impressions): known answers, bad lines named, the offline message, the
download's layout, one CLI run."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from raw_formats import mind_behavior_line, mind_news_line, planted_mind, write_mind_part
from recsys_fewshot.data import mind
from recsys_fewshot.data.download import RemoteFile
from recsys_fewshot.data.recdata import TEST, TRAIN, DataError
from recsys_fewshot.data.text import render_texts

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "{title}. {abstract} Category: {category}. Subcategory: {subcategory}."


def seconds(text: str) -> int:
    return int(datetime.strptime(text, "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=timezone.utc).timestamp())


@pytest.fixture()
def logs(tmp_path) -> Path:
    folder = tmp_path / "mind-small"
    write_mind_part(folder / "train", [mind_news_line("N1", "sports", "football_nfl", "Title One", "Abs one."),
                                       mind_news_line("N2", "news", "newspolitics", "Title Two", "")],
                    [mind_behavior_line(1, "U1", "11/11/2019 9:05:58 AM", ["N1", "N2"], [("N2", 1), ("N3", 0)]),
                     mind_behavior_line(2, "U2", "11/11/2019 1:00:00 PM", [], [("N1", 0), ("N2", 1)])])
    write_mind_part(folder / "dev", [mind_news_line("N2", "news", "newsworld", "Another title", "x"),
                                     mind_news_line("N3", "lifestyle", "lifestyleroyals", "Título Três",
                                                    "Résumé.")],
                    [mind_behavior_line(3, "U1", "11/15/2019 8:55:22 AM", ["N1", "N2", "N3"], [("N1", 0), ("N9", 1)])])
    return folder


def test_history_and_impressions_known_answers(logs):
    data = mind.read_mind(logs)
    assert data.user_raw_ids().tolist() == ["U1", "U2"]
    assert data.item_raw_ids().tolist() == ["N1", "N2", "N3", "N9"]  # train news, dev's new news, then unknown N9
    inter = data.interactions
    rows = list(zip(data.user_raw_ids()[inter["user"]], data.item_raw_ids()[inter["item"]], inter["label"],
                    inter["timestamp"], data.folds["given"]))
    t1, t2, t3 = seconds("11/11/2019 9:05:58 AM"), seconds("11/11/2019 1:00:00 PM"), seconds("11/15/2019 8:55:22 AM")
    assert t2 - t1 == 3 * 3600 + 54 * 60 + 2  # 1 PM is 13:00
    assert rows == [("U1", "N1", 1, -1, TRAIN), ("U1", "N2", 1, -1, TRAIN), ("U1", "N3", 1, -1, TRAIN),  # history
                    ("U1", "N2", 1, t1, TRAIN), ("U1", "N3", 0, t1, TRAIN), ("U2", "N1", 0, t2, TRAIN),
                    ("U2", "N2", 1, t2, TRAIN), ("U1", "N1", 0, t3, TEST), ("U1", "N9", 1, t3, TEST)]
    assert inter["rating"].isna().all()
    assert render_texts(data.items, TEMPLATE) == [
        "Title One. Abs one. Category: sports. Subcategory: football_nfl.",
        "Title Two. Category: news. Subcategory: newspolitics.",  # the first news.tsv line of N2 wins
        "Título Três. Résumé. Category: lifestyle. Subcategory: lifestyleroyals.", ""]


@pytest.mark.parametrize("part,file,line,message", [
    ("train", "news.tsv", "N7\tnews\tx\tTitle\tAbstract\turl\t[]", r"train/news.tsv line 3: expected 8 tab-separated"),
    ("dev", "behaviors.tsv", "4\tU1\t2019-11-15 08:55\t\tN1-0",
     r"dev/behaviors.tsv: column 'time' line 2: expected a time like"),
    ("train", "behaviors.tsv", "4\tU1\t11/11/2019 9:05:58 AM\tN1\tN1-1 N2-x",
     r"train/behaviors.tsv: column 'impressions' line 3: malformed token 'N2-x'"),
    ("train", "behaviors.tsv", "4\tU1\t11/11/2019 9:05:58 AM\tN1\t", r"column 'impressions' line 3: no news shown"),
])
def test_bad_lines_named(logs, part, file, line, message):
    path = logs / part / file
    path.write_bytes(path.read_bytes() + line.encode() + b"\n")
    with pytest.raises(DataError, match=message) as err:
        mind.read_mind(logs)
    assert str(path) in str(err.value)


def test_offline_message_names_both_zips_and_their_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        mind.Mind().check(tmp_path / "mind-small")
    text = str(err.value)
    for part, name in (("train", "MINDsmall_train.zip"), ("dev", "MINDsmall_dev.zip")):
        assert f"https://mind201910small.blob.core.windows.net/release/{name}: unpack into " \
               f"{tmp_path / 'mind-small' / part}, for behaviors.tsv, news.tsv" in text


def test_the_download_unpacks_each_log_into_its_folder(logs, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RECSYS_FEWSHOT_OFFLINE", raising=False)
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    local = {}
    for part, real in mind.FILES.items():
        name = f"MINDsmall_{part}.zip"
        with zipfile.ZipFile(www / name, "w") as archive:  # the release's layout: the files at the top level
            for member in ("behaviors.tsv", "news.tsv"):
                archive.write(logs / part / member, member)
            archive.writestr("entity_embedding.vec", "Q1\t0.1\n")
        digest = "md5:" + hashlib.md5((www / name).read_bytes()).hexdigest()
        local[part] = RemoteFile(f"http://127.0.0.1:{server.server_address[1]}/{name}", digest,
                                 provides=real.provides, archive=real.archive, strip=real.strip)
    monkeypatch.setattr(mind, "FILES", local)
    try:
        target = mind.Mind.download.install(tmp_path / "root")
    finally:
        server.shutdown()
        server.server_close()
    assert target == tmp_path / "root" / "mind-small"
    assert sorted(p.name for p in (target / "dev").iterdir()) == ["behaviors.tsv", "news.tsv"]
    assert mind.read_mind(target).interactions.equals(mind.read_mind(logs).interactions)


@pytest.mark.slow
def test_cli_trains_ctr_on_mind(tmp_path):
    planted_mind(tmp_path / "data" / "mind-small")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "RECSYS_FEWSHOT_OFFLINE": "1"}
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "recsys_fewshot.train", "dataset=mind_small", "split=given",
                           f"dataset.root={tmp_path / 'data'}", "encoder=none", "trainer.max_epochs=1", "logger=none",
                           "trainer.progress=false", f"hydra.run.dir={run}", f"cache_dir={tmp_path / 'cache'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "mind-small" and metrics["task"] == "ctr"
    assert metrics["split"]["test"] == 120 * 5  # the dev log's impressions, 5 news each
    assert 0.0 <= metrics["test"]["auc"] <= 1.0 and np.isfinite(metrics["test"]["logloss"])
