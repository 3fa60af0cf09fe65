"""Built-in data sets fetched into the data root: each file downloaded once, its checksum checked, then put in place.

A reader that can fetch its files declares them as `RemoteFile`s and installs them with `fetch` (through
`sources.Download`). The download itself is pooch's (`pooch.retrieve`): it streams into a temporary file
beside the destination and moves it into place only when the checksum matches, so an interrupted or corrupt
download never leaves a file that looks complete, and the next run starts it again from scratch. What this
module adds is the layout (archives unpacked into the data set's folder, atomically), the offline message
that names each file to fetch and where it goes, and errors that name the file, its address and the folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence
from urllib.parse import urlparse

from recsys_fewshot.data.recdata import DataError

log = logging.getLogger("recsys_fewshot.data")

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "RECSYS_FEWSHOT_OFFLINE")
DOWNLOADS = ".downloads"  # under the data root: archives while they are unpacked, then deleted


def offline() -> bool:
    """Whether downloads are off (HF_HUB_OFFLINE or RECSYS_FEWSHOT_OFFLINE set to a true value)."""
    flags = (os.environ.get(v, "").strip().lower() for v in OFFLINE_FLAGS)
    return any(f not in ("", "0", "false", "no", "off") for f in flags)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set's release.

    `known_hash` is pooch's notation, ``"md5:<hex>"`` or ``"sha256:<hex>"``: the checksum the publisher gives
    (or one taken from a well-kept mirror's registry). `provides` names the files, relative to the data set's
    folder, that this download puts there: when all exist, nothing is fetched. An `archive` (.zip, .tar.gz,
    .tgz) is unpacked and only its `provides` members are kept, after dropping the leading folder `strip`.
    """

    url: str
    known_hash: str
    provides: tuple[str, ...] = ()
    archive: bool = False
    strip: str = ""
    fname: Optional[str] = None  # the download's file name; default: the last part of the URL's path

    def __post_init__(self) -> None:
        algorithm = self.known_hash.partition(":")[0]
        if ":" not in self.known_hash or algorithm not in ("md5", "sha1", "sha256"):
            raise ValueError(f"{self.url}: known_hash must read 'md5:<hex>' or 'sha256:<hex>', got {self.known_hash!r}")

    @property
    def name(self) -> str:
        return self.fname or PurePosixPath(urlparse(self.url).path).name

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.provides or (self.name,)


def missing(files: Sequence[RemoteFile], target: Path) -> list[RemoteFile]:
    return [f for f in files if not all((target / p).is_file() for p in f.outputs)]


def how_to_install(title: str, files: Sequence[RemoteFile], root: Path, target: Path) -> str:
    """The message of an offline or failed fetch: each file, its address, and where it goes."""
    steps = []
    for f in files:
        if f.archive:
            inner = f" (its folder {f.strip}/ becomes {target.name}/)" if f.strip else ""
            steps.append(f"  {f.url}: unpack into {target if not f.strip else root}{inner}, for "
                         f"{', '.join(f.outputs)}")
        else:
            steps.append(f"  {f.url}: save as {target / f.name}")
    return (f"{title}: {len(files)} file(s) missing under {target}. Fetch them where the internet is reachable "
            f"(or unset HF_HUB_OFFLINE / RECSYS_FEWSHOT_OFFLINE to download them here):\n" + "\n".join(steps)
            + "\nor set RECSYS_FEWSHOT_DATA / dataset.root to a folder that already holds them.")


def fetch(title: str, folder: str, files: Sequence[RemoteFile], root: Path) -> Path:
    """``root/folder`` with every file of `files` in it, downloading and checking the missing ones first."""
    root = Path(root)
    target = root / folder
    todo = missing(files, target)
    if not todo:
        return target
    if offline():
        raise DataError(how_to_install(title, todo, root, target))
    try:
        import pooch
    except ImportError as err:  # a declared dependency; only a broken install lacks it
        raise DataError(f"{title}: downloading needs the pooch package (pip install pooch)") from err
    import requests

    for f in todo:
        downloads = root / DOWNLOADS
        log.info("%s: downloading %s into %s", title, f.url, target)
        try:
            path = Path(pooch.retrieve(f.url, known_hash=f.known_hash, fname=f.name, path=downloads,
                                       progressbar=False))
        except ValueError as err:  # pooch: the checksum does not match (the temporary file is already deleted)
            raise DataError(f"{title}: {f.name} from {f.url} failed its checksum ({err}); nothing was kept. "
                            f"If the publisher changed the file, fetch it by hand and check it.") from err
        except (OSError, requests.exceptions.RequestException) as err:
            raise DataError(f"{title}: downloading {f.url} failed ({err}).\n"
                            + how_to_install(title, [f], root, target)) from err
        try:
            _place(f, path, target)
        finally:
            path.unlink(missing_ok=True)  # archives are unpacked (plain files were moved): no second copy
    return target


def _place(f: RemoteFile, path: Path, target: Path) -> None:
    """Move a checked download (or the members `f.provides` of a checked archive) into `target`, each by rename."""
    target.mkdir(parents=True, exist_ok=True)
    if not f.archive:
        os.replace(path, target / f.name)
        return
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-unpack-"))
    try:
        _unpack(path, tmp, f.url)
        base = tmp / f.strip if f.strip else tmp
        absent = [p for p in f.provides if not (base / p).is_file()]
        if absent:
            raise DataError(f"{f.url}: the archive holds no {', '.join(absent)}"
                            + (f" under {f.strip}/" if f.strip else ""))
        for p in f.provides:
            (target / p).parent.mkdir(parents=True, exist_ok=True)
            os.replace(base / p, target / p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack(path: Path, into: Path, url: str) -> None:
    """A zip or tar archive extracted into `into`; a member that would land outside it is refused."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not (into / member).resolve().is_relative_to(into.resolve()):
                    raise DataError(f"{url}: unsafe path {member!r} in the archive")
            archive.extractall(into)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            archive.extractall(into, filter="data")  # refuses absolute paths, '..', and links out of `into`
    else:
        raise DataError(f"{url}: the download is neither a zip nor a tar archive")


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """``"<algorithm>:<hex>"`` of a file, read in chunks (for registering a new release's files)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"{algorithm}:{digest.hexdigest()}"
