"""Download code against a real HTTP server on 127.0.0.1 serving a tar.gz of generated audio."""

from __future__ import annotations

import hashlib
import http.server
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_prepare
from speaker_data.download import ARCHIVE_NAME, extract_archive, fetch_archive
from speaker_data.errors import DataError
from speaker_data.synthetic import SyntheticConfig, generate_corpus


class _ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path, with optional Range support and a cut-off."""

    server: _ArchiveServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        if self.path.endswith("/missing.tar.gz"):
            self.send_error(404)
            return
        data, wanted = server.payload, self.headers.get("Range")
        start = 0
        if wanted and server.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                server.log.append((wanted, 416, 0))
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:  # announce everything, send part, hang up
            body, server.cut_after = body[: server.cut_after], None
        # Logged before sending: the client may start its next request as soon as it has read.
        server.log.append((wanted, 206 if start else 200, len(body)))
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ArchiveServer(http.server.ThreadingHTTPServer):
    payload: bytes = b""
    honour_range = True
    cut_after: int | None = None
    log: list[tuple[str | None, int, int]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/resources/31/{ARCHIVE_NAME}"


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A tiny train-clean-5.tar.gz in LibriSpeech layout, made by the generator."""
    root = tmp_path_factory.mktemp("archive")
    config = SyntheticConfig(
        seed=11, n_speakers=2, utts_per_speaker=3, min_seconds=0.3, max_seconds=0.4
    )
    generate_corpus(config, root / "src")
    with tarfile.open(root / ARCHIVE_NAME, "w:gz") as tar:
        tar.add(root / "src/LibriSpeech", arcname="LibriSpeech")
    return (root / ARCHIVE_NAME).read_bytes()


@pytest.fixture
def server(archive_bytes: bytes) -> Iterator[_ArchiveServer]:
    httpd = _ArchiveServer(("127.0.0.1", 0), _ArchiveHandler)
    httpd.payload, httpd.log = archive_bytes, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _quiet(message: str) -> None:
    pass


def test_download_verify_extract_then_reuse(server: _ArchiveServer, tmp_path: Path) -> None:
    sha = _sha256(server.payload)
    archive = fetch_archive(server.url, tmp_path, sha, None, log=_quiet)
    assert archive.path == tmp_path / ARCHIVE_NAME and archive.sha256 == sha
    assert archive.md5 == hashlib.md5(server.payload).hexdigest()
    assert not (tmp_path / f"{ARCHIVE_NAME}.part").exists()
    root = extract_archive(archive, tmp_path, log=_quiet)
    assert len(list((root / "LibriSpeech/train-clean-5").rglob("*.flac"))) == 6
    # A second run reuses both the verified archive and the extraction: no request at all.
    again = fetch_archive(server.url, tmp_path, sha, None, log=_quiet)
    assert extract_archive(again, tmp_path, log=_quiet) == root
    assert len(server.log) == 1


def test_md5_alone_is_checked_too(server: _ArchiveServer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="md5 is"):
        fetch_archive(server.url, tmp_path, None, "0" * 32, log=_quiet)


def test_wrong_checksum_is_refused_and_the_bytes_are_kept(
    server: _ArchiveServer, tmp_path: Path
) -> None:
    part = tmp_path / f"{ARCHIVE_NAME}.part"
    with pytest.raises(DataError) as refused:
        fetch_archive(server.url, tmp_path, "0" * 64, None, log=_quiet)
    message = str(refused.value)
    assert str(part) in message and _sha256(server.payload) in message and "0" * 64 in message
    assert not (tmp_path / ARCHIVE_NAME).exists()
    assert part.read_bytes() == server.payload
    # With the right checksum the kept bytes are verified without downloading them again.
    archive = fetch_archive(server.url, tmp_path, _sha256(server.payload), None, log=_quiet)
    assert archive.path.read_bytes() == server.payload
    assert server.log[-1] == (f"bytes={len(server.payload)}-", 416, 0)


def test_interrupted_download_resumes_where_it_stopped(
    server: _ArchiveServer, tmp_path: Path
) -> None:
    cut = len(server.payload) // 3
    server.cut_after = cut
    with pytest.raises(DataError, match=f"interrupted after {cut} bytes"):
        fetch_archive(server.url, tmp_path, _sha256(server.payload), None, log=_quiet)
    part = tmp_path / f"{ARCHIVE_NAME}.part"
    assert part.stat().st_size == cut and not (tmp_path / ARCHIVE_NAME).exists()
    archive = fetch_archive(server.url, tmp_path, _sha256(server.payload), None, log=_quiet)
    assert archive.path.read_bytes() == server.payload
    assert server.log == [(None, 200, cut), (f"bytes={cut}-", 206, len(server.payload) - cut)]


def test_server_without_range_support_restarts_from_zero(
    server: _ArchiveServer, tmp_path: Path
) -> None:
    (tmp_path / f"{ARCHIVE_NAME}.part").write_bytes(server.payload[:100])
    server.honour_range = False
    archive = fetch_archive(server.url, tmp_path, _sha256(server.payload), None, log=_quiet)
    assert archive.path.read_bytes() == server.payload
    assert server.log == [("bytes=100-", 200, len(server.payload))]


def test_http_error_and_unreadable_archive_are_named(
    server: _ArchiveServer, tmp_path: Path
) -> None:
    missing = server.url.replace(ARCHIVE_NAME, "missing.tar.gz")
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_archive(missing, tmp_path / "a", "0" * 64, None, log=_quiet)
    server.payload = b"this is not a tar.gz archive"
    archive = fetch_archive(server.url, tmp_path / "b", _sha256(server.payload), None, log=_quiet)
    with pytest.raises(DataError, match=f"{archive.path}: unreadable archive"):
        extract_archive(archive, tmp_path / "b", log=_quiet)
    assert not (tmp_path / "b/LibriSpeech").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ARCHIVE_NAME]


def test_prepare_command_downloads_and_records_the_archive(
    server: _ArchiveServer, tmp_path: Path
) -> None:
    sha = _sha256(server.payload)
    download_dir, out = tmp_path / "download", tmp_path / "prepared"
    base = ["--source", "minilibrispeech", "--download-dir", str(download_dir), "--url", server.url]
    bad = run_prepare(*base, "--sha256", "f" * 64, "--out", str(out))
    assert bad.returncode == 1 and "sha256 is" in bad.stderr and not out.exists()
    run = run_prepare(*base, "--sha256", sha, "--out", str(out))
    assert run.returncode == 0, run.stderr
    summary = json.loads((out / "prepared.json").read_text())
    assert summary["archive"]["sha256"] == sha and summary["archive"]["url"] == server.url
    assert summary["data_root"] == str(download_dir.resolve())
    assert summary["counts"] == {"train": 2, "valid": 2, "test": 2}
    assert len(server.log) == 2  # the refused download was kept and verified again, not refetched
