"""Named datasets: downloads from a local HTTP server, checksums, safe extraction, the reload cache."""

import dataclasses
import hashlib
import io
import logging
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from collabkit import DatasetNotFoundError, datasets
from collabkit.cli import main
from collabkit.fetch import DownloadError, UnsafeArchiveError, extract_zip

LICENSE = "This data set may be used for research only; do not redistribute it."


def ml_100k_zip(n_users=5, n_items=6, extra_members=()) -> bytes:
    """A tiny archive in the real ml-100k layout: every user rates every item."""
    lines = [f"{u}\t{i}\t{1 + (u * i) % 5}\t88125{u}{i}" for u in range(1, n_users + 1) for i in range(1, n_items + 1)]
    genres = [f"{name}|{k}" for k, name in enumerate(["unknown", "Action", "Comedy"])]
    items = [f"{i}|Film {i} (199{i % 10})|01-Jan-1995||http://x|0|{i % 2}|{(i + 1) % 2}" for i in range(1, n_items + 1)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "\n".join(lines) + "\n")
        zf.writestr("ml-100k/u.item", ("\n".join(items) + "\n").encode("latin-1"))
        zf.writestr("ml-100k/u.genre", "\n".join(genres) + "\n\n")
        zf.writestr("ml-100k/README", f"SUMMARY & USAGE LICENSE\n=======================\n\n{LICENSE}\n\n"
                    "CITATION\n========\n\nHarper and Konstan, 2015.\n")
        for name, data in extra_members:
            zf.writestr(name, data)
    return buf.getvalue()


class Server:
    """Serves ``files`` on 127.0.0.1; a path in ``cut_short`` announces more bytes than it sends."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_short: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) * (2 if self.path in outer.cut_short else 1)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLABKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COLLABKIT_DATA_DIR", raising=False)
    return tmp_path / "home"


def serve_ml_100k(server, monkeypatch, data: bytes, md5: str | None = "auto", path="/ml-100k.zip"):
    server.files[path] = data
    md5 = hashlib.md5(data).hexdigest() if md5 == "auto" else md5
    entry = dataclasses.replace(datasets.REGISTRY["ml-100k"], url=server.url + path, md5=md5)
    monkeypatch.setitem(datasets.REGISTRY, "ml-100k", entry)
    return entry


def files_under(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_end_to_end_parses_and_shows_the_license(server, home, monkeypatch, caplog):
    serve_ml_100k(server, monkeypatch, ml_100k_zip())
    with caplog.at_level(logging.WARNING, logger="collabkit.datasets"):
        data = datasets.load_dataset("ml-100k")
    assert (len(data.ratings), data.ratings["user"].nunique(), data.ratings["movie"].nunique()) == (30, 5, 6)
    assert data.titles[3] == "Film 3 (1993)" and data.genres[1] == "Action"
    assert LICENSE in caplog.text and "README" in caplog.text and "Harper" not in caplog.text
    assert datasets.cached_folder("ml-100k") == home / "datasets" / "ml-100k" / "ml-100k"
    server.files.clear()  # a second load needs no server
    assert len(datasets.load_dataset("ml-100k").ratings) == 30


def test_a_published_md5_file_is_used_when_no_checksum_is_pinned(server, home, monkeypatch):
    data = ml_100k_zip()
    serve_ml_100k(server, monkeypatch, data, md5=None)
    server.files["/ml-100k.zip.md5"] = f"MD5 (ml-100k.zip) = {hashlib.md5(data).hexdigest()}\n".encode()
    assert len(datasets.load_dataset("ml-100k").ratings) == 30


def test_a_checksum_mismatch_leaves_no_files(server, home, monkeypatch):
    serve_ml_100k(server, monkeypatch, ml_100k_zip(), md5="0" * 32)
    with pytest.raises(DownloadError, match="checksum mismatch.*expected MD5 0{32}.*collabkit datasets download ml-100k"):
        datasets.load_dataset("ml-100k")
    assert files_under(home) == []


def test_an_interrupted_transfer_leaves_nothing_half_written(server, home, monkeypatch):
    serve_ml_100k(server, monkeypatch, ml_100k_zip())
    server.cut_short.add("/ml-100k.zip")
    with pytest.raises(DownloadError, match="ml-100k.zip"):
        datasets.load_dataset("ml-100k")
    assert files_under(home) == []


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/collabkit-evil.txt", "ml-100k/../../evil.txt"])
def test_zip_slip_members_are_refused(server, home, monkeypatch, member, tmp_path):
    # where a naive extraction would write the member: as given if absolute, else joined to the extraction folder
    # (the staging folder sits beside the target, home/datasets/ml-100k, so both give the same place)
    escaped = Path(member) if member.startswith("/") else Path(os.path.normpath(home / "datasets" / "ml-100k" / member))
    assert not escaped.is_relative_to(home / "datasets" / "ml-100k")  # the member really would escape
    escaped.unlink(missing_ok=True)  # a stale file from an earlier run would make the check below meaningless
    serve_ml_100k(server, monkeypatch, ml_100k_zip(extra_members=[(member, "pwned")]))
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        datasets.load_dataset("ml-100k")
    assert files_under(home) == [] and not (tmp_path / "evil.txt").exists()
    assert not escaped.exists(), escaped


def test_symlink_members_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("ml-100k/link")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    (tmp_path / "a.zip").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_zip(tmp_path / "a.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_offline_names_the_url_and_the_manual_route(home, monkeypatch):
    from planted import unused_port

    entry = dataclasses.replace(datasets.REGISTRY["ml-1m"], url=f"http://127.0.0.1:{unused_port()}/ml-1m.zip")
    monkeypatch.setitem(datasets.REGISTRY, "ml-1m", entry)
    with pytest.raises(DownloadError) as err:
        datasets.load_dataset("ml-1m")
    message = str(err.value)
    assert entry.url in message and "collabkit datasets add ml-1m" in message and "--data-dir" in message
    with pytest.raises(DatasetNotFoundError, match="collabkit datasets download ml-1m"):
        datasets.load_dataset("ml-1m", download=False)


def test_add_local_archive_or_folder(home, tmp_path, monkeypatch):
    data = ml_100k_zip(n_users=3)
    monkeypatch.setitem(datasets.REGISTRY, "ml-100k",
                        dataclasses.replace(datasets.REGISTRY["ml-100k"], md5=hashlib.md5(data).hexdigest()))
    (tmp_path / "ml-100k.zip").write_bytes(data)
    datasets.add_local("ml-100k", tmp_path / "ml-100k.zip")
    assert len(datasets.load_dataset("ml-100k", download=False).ratings) == 18
    (tmp_path / "bad.zip").write_bytes(ml_100k_zip(n_users=4))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        datasets.add_local("ml-100k", tmp_path / "bad.zip")
    extract_zip(tmp_path / "bad.zip", tmp_path / "mine")
    datasets.add_local("ml-100k", tmp_path / "mine")
    assert len(datasets.load_dataset("ml-100k", download=False).ratings) == 24


def test_the_reload_cache_follows_its_source(home, tmp_path, monkeypatch):
    extract_zip_bytes = ml_100k_zip()
    (tmp_path / "src.zip").write_bytes(extract_zip_bytes)
    folder = extract_zip(tmp_path / "src.zip", tmp_path / "data") / "ml-100k"
    first = datasets.load_dataset("ml-100k", data_dir=folder)
    caches = list((home / "cache").glob("ml-100k-*.npz"))
    assert len(first.ratings) == 30 and len(caches) == 1
    written = caches[0].stat().st_mtime_ns

    def no_parsing(folder):
        raise AssertionError(f"parsed the text files of {folder} although the reload cache is current")

    with monkeypatch.context() as patch:  # a cache hit never reaches the text parser
        patch.setattr(datasets, "_parse_ml_100k", no_parsing)
        again = datasets.load_dataset("ml-100k", data_dir=folder)
    assert again.ratings.equals(first.ratings)
    assert caches[0].stat().st_mtime_ns == written  # read, not rewritten
    with open(folder / "u.data", "a") as fh:
        fh.write("6\t1\t5\t881250949\n")
    changed = datasets.load_dataset("ml-100k", data_dir=folder)
    assert len(changed.ratings) == 31 and changed.ratings["user"].nunique() == 6


def test_license_sections_of_the_real_readmes(ml100k_dir):
    assert "may not redistribute the data without separate" in datasets.license_text(ml100k_dir).replace("\n", " ")
    small = datasets.license_text(datasets.bundled_path())
    assert "The user may redistribute the data set" in small and "Citation" not in small


def test_real_data_parses_to_its_known_counts(ml100k_dir):
    small = datasets.load_dataset("ml-latest-small")
    r = small.ratings
    assert (len(r), r["userId"].nunique(), r["movieId"].nunique(), len(small.titles)) == (100836, 610, 9724, 9742)
    big = datasets.load_dataset("ml-100k", data_dir=ml100k_dir)
    r = big.ratings
    assert (len(r), r["user"].nunique(), r["movie"].nunique(), len(big.titles)) == (100000, 943, 1682, 1682)
    assert big.titles[543] == "Misérables, Les (1995)"


def test_datasets_commands(server, home, monkeypatch, capsys, caplog):
    serve_ml_100k(server, monkeypatch, ml_100k_zip())
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in datasets.REGISTRY:
        assert name in out
    assert "bundled" in out and "no redistribution" in out
    assert main(["datasets", "info", "ml-25m"]) == 0
    assert "6b51fb2759a8657d3bfcbfc42b592ada" in capsys.readouterr().out
    with caplog.at_level(logging.WARNING, logger="collabkit.datasets"):
        assert main(["datasets", "download", "ml-100k"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "research use only" in out and str(home) in out and LICENSE in out
    assert (out + captured.err + caplog.text).count(LICENSE) == 1  # printed by the command, not logged as well
    assert main(["datasets", "info", "nope"]) == 1
    assert "unknown dataset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a zip at all"], ids=["cut", "junk"])
def test_a_damaged_reload_cache_is_rebuilt_with_a_warning(home, tmp_path, caplog, damage):
    (tmp_path / "src.zip").write_bytes(ml_100k_zip())
    folder = extract_zip(tmp_path / "src.zip", tmp_path / "data") / "ml-100k"
    first = datasets.load_dataset("ml-100k", data_dir=folder)
    (cache,) = (home / "cache").glob("ml-100k-*.npz")
    cache.write_bytes(damage(cache.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="collabkit.datasets"):
        again = datasets.load_dataset("ml-100k", data_dir=folder)
    assert again.ratings.equals(first.ratings)
    assert any("is unreadable" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    with np.load(cache, allow_pickle=False) as z:  # rewritten whole
        assert "fingerprint" in z
