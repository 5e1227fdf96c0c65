"""Download a file and unpack an archive without ever leaving a half-done result.

* :func:`download` streams to a temporary file beside the target, hashing as it
  goes, and renames it into place only when the transfer is complete and the
  checksum matches. Anything else deletes the temporary file.
* :func:`extract_zip` refuses any member that would land outside the target
  (absolute paths, ``..`` components, symbolic links) before writing a byte,
  extracts into a temporary folder, and renames it into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from collabkit.errors import CollabkitError

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
CHUNK = 1 << 20


class DownloadError(CollabkitError, OSError):
    """A download failed, was cut short, or did not match its checksum."""


class UnsafeArchiveError(CollabkitError, ValueError):
    """An archive member would be written outside the extraction folder."""


def fetch_text(url: str, timeout: float = TIMEOUT_S) -> str:
    """A small text resource (such as a published ``.md5`` file)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read(1 << 16).decode("utf-8", errors="replace")
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        raise DownloadError(f"cannot fetch {url}: {getattr(exc, 'reason', exc)}") from exc


def parse_md5(text: str) -> str:
    """The hex digest in an ``md5sum`` or BSD ``MD5 (file) = digest`` line."""
    for token in text.replace("=", " ").split():
        token = token.strip().lower()
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
            return token
    raise DownloadError(f"no MD5 digest found in {text[:80]!r}")


def download(url: str, target: Path, md5: str, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Fetch ``url`` to ``target``, checking its MD5 (hex) before it appears there.

    Raises:
        DownloadError: the host cannot be reached, the transfer stops short of
            its announced length, or the checksum does not match. No file is
            left at ``target`` or beside it in any of these cases.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=None if progress else True)
                    with bar:
                        received = 0
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(f"download of {url} failed: {reason}") from exc
            if total is not None and received != total:
                raise DownloadError(f"download of {url} stopped at {received:,} of {total:,} bytes")
        got = digest.hexdigest()
        if got != md5.lower():
            raise DownloadError(
                f"checksum mismatch for {url}: expected MD5 {md5.lower()}, got {got}; the file was deleted"
            )
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    mode = info.external_attr >> 16
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"archive member {name!r} climbs out of the target with '..'; refusing to extract")
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"archive member {name!r} is a symbolic link; refusing to extract")


def extract_zip(archive: Path, target: Path) -> Path:
    """Unpack ``archive`` into the folder ``target`` (replacing it), safely and all at once."""
    target = Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                for info in members:
                    zf.extract(info, staging)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a valid zip archive: {exc}") from exc
    return target
