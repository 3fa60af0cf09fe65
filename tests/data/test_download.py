"""The built-in data sets' fetch: real downloads (pooch over HTTP from a server on localhost), checksums, layout."""

import functools
import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from recsys_fewshot.data.download import RemoteFile, fetch
from recsys_fewshot.data.recdata import DataError


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """(folder served over HTTP on localhost, its base URL, the paths requested); downloads switched on."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RECSYS_FEWSHOT_OFFLINE", raising=False)
    folder = tmp_path / "www"
    folder.mkdir()
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()
    server.server_close()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()  # noqa: S324


def a_zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_archive_and_plain_file_installed_once_and_checked(served, tmp_path):
    www, base, requested = served
    payload = a_zip({"ml-1m/ratings.dat": "1::1193::5::978300760\n", "ml-1m/README": "x", "other/skip.txt": "y"})
    (www / "ml-1m.zip").write_bytes(payload)
    (www / "items.jsonl").write_text('{"id": 1}\n')
    files = [RemoteFile(f"{base}/ml-1m.zip", md5(payload), provides=("ratings.dat",), archive=True, strip="ml-1m"),
             RemoteFile(f"{base}/items.jsonl", md5(b'{"id": 1}\n'))]
    root = tmp_path / "data"
    target = fetch("Test set", "ml-1m", files, root)
    assert target == root / "ml-1m"
    assert (target / "ratings.dat").read_text() == "1::1193::5::978300760\n"
    assert (target / "items.jsonl").read_text() == '{"id": 1}\n'
    assert not (target / "README").exists() and not (target / "skip.txt").exists()  # only what is provided
    assert sorted(p.name for p in root.iterdir()) == [".downloads", "ml-1m"]
    assert list((root / ".downloads").iterdir()) == []  # the archive is not kept beside its members
    assert len(requested) == 2
    fetch("Test set", "ml-1m", files, root)  # present: nothing fetched again
    assert len(requested) == 2


def test_checksum_mismatch_refused_and_nothing_kept(served, tmp_path):
    www, base, _ = served
    (www / "ratings.csv").write_text("tampered\n")
    root = tmp_path / "data"
    files = [RemoteFile(f"{base}/ratings.csv", md5(b"the real file\n"))]
    with pytest.raises(DataError, match=r"ratings\.csv .*failed its checksum"):
        fetch("Test set", "set", files, root)
    assert not (root / "set" / "ratings.csv").exists()
    assert list((root / ".downloads").iterdir()) == []  # no partial or corrupt file left to look complete


def test_missing_remote_file_names_url_and_destination(served, tmp_path):
    _, base, _ = served
    files = [RemoteFile(f"{base}/absent.zip", "md5:" + "0" * 32, provides=("a.dat",), archive=True)]
    with pytest.raises(DataError) as err:
        fetch("Test set", "set", files, tmp_path / "data")
    assert f"{base}/absent.zip" in str(err.value) and str(tmp_path / "data" / "set") in str(err.value)


def test_archive_without_the_promised_member_refused(served, tmp_path):
    www, base, _ = served
    payload = a_zip({"set/other.dat": "1\n"})
    (www / "set.zip").write_bytes(payload)
    files = [RemoteFile(f"{base}/set.zip", md5(payload), provides=("ratings.dat",), archive=True, strip="set")]
    with pytest.raises(DataError, match=r"holds no ratings\.dat under set/"):
        fetch("Test set", "set", files, tmp_path / "data")
    assert not (tmp_path / "data" / "set" / "ratings.dat").exists()


def test_offline_names_every_missing_file_and_where_it_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FEWSHOT_OFFLINE", "1")
    root = tmp_path / "data"
    (root / "set").mkdir(parents=True)
    (root / "set" / "have.csv").write_text("x\n")
    files = [RemoteFile("https://example.org/have.csv", "md5:" + "0" * 32),
             RemoteFile("https://example.org/a.zip", "md5:" + "1" * 32, provides=("a.dat",), archive=True),
             RemoteFile("https://example.org/b.json.gz", "sha256:" + "2" * 64)]
    with pytest.raises(DataError) as err:
        fetch("Test set", "set", files, root)
    message = str(err.value)
    assert "2 file(s) missing" in message and "have.csv" not in message
    assert "https://example.org/a.zip" in message and "a.dat" in message
    assert str(root / "set" / "b.json.gz") in message


def test_bad_hash_notation_refused():
    with pytest.raises(ValueError, match="known_hash"):
        RemoteFile("https://example.org/x.zip", "deadbeef")
