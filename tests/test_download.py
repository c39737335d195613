import argparse
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.download import download, extract_release, find_locale_dir, run as download_run, resolve_source
from pipeline.stage import StageError
from tests.helpers import SAMPLE, balanced_rows, make_release, params

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Server:
    """A loopback HTTP server with Range support that can cut its first response short."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None, status: int = 200):
        self.payload, self.cut, self.status, self.requests = payload, cut_first_at, status, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(dict(self.headers))
                if server.status != 200:
                    self.send_error(server.status)
                    return
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if "Range" in self.headers else 0
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[:server.cut], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cv-corpus-test-es.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(*args, **kwargs):
        servers.append(Server(*args, **kwargs))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def test_interrupted_download_is_resumed_with_range(tmp_path, serve):
    server = serve(PAYLOAD, cut_first_at=300_000)
    path = download(server.url, tmp_path, backoff=0, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert path.read_bytes() == PAYLOAD
    assert "Range" not in server.requests[0] and server.requests[1]["Range"] == "bytes=300000-"
    assert not (tmp_path / (path.name + ".part")).exists()


def test_part_file_left_by_an_earlier_run_is_resumed(tmp_path, serve):
    server = serve(PAYLOAD)
    (tmp_path / "cv-corpus-test-es.tar.gz.part").write_bytes(PAYLOAD[:1000])
    assert download(server.url, tmp_path, backoff=0).read_bytes() == PAYLOAD
    assert server.requests[0]["Range"] == "bytes=1000-"


def test_checksum_mismatch_leaves_no_file_at_the_final_path(tmp_path, serve):
    server = serve(PAYLOAD)
    with pytest.raises(StageError, match="sha256 of the download does not match"):
        download(server.url, tmp_path, backoff=0, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_token_is_sent_as_bearer_from_the_named_variable(tmp_path, serve, monkeypatch):
    server = serve(PAYLOAD)
    monkeypatch.setenv("CV_TOKEN", "s3cret")
    download(server.url, tmp_path, token_env="CV_TOKEN", backoff=0)
    assert server.requests[0]["Authorization"] == "Bearer s3cret"
    monkeypatch.delenv("CV_TOKEN")
    with pytest.raises(StageError, match=r"\$CV_TOKEN, which is not set"):
        download(server.url, tmp_path / "again", token_env="CV_TOKEN")


def test_client_errors_are_not_retried_and_are_named(tmp_path, serve):
    server = serve(PAYLOAD, status=403)
    with pytest.raises(StageError, match="HTTP 403"):
        download(server.url, tmp_path, backoff=0)
    assert len(server.requests) == 1


def test_server_errors_are_retried_then_reported(tmp_path, serve):
    server = serve(PAYLOAD, status=503)
    with pytest.raises(StageError, match="download failed after 2 retries"):
        download(server.url, tmp_path, backoff=0, retries=2)
    assert len(server.requests) == 3


def test_url_source_through_the_stage(tmp_path, serve, monkeypatch):
    server = serve(SAMPLE.read_bytes())
    monkeypatch.chdir(tmp_path)
    p = params(**{"data.source": server.url, "data.raw_dir": str(tmp_path / "raw")})
    download_run(p, argparse.Namespace(out=tmp_path / "release.json"))
    manifest = json.loads((tmp_path / "release.json").read_text())
    assert manifest["locale"] == "es" and manifest["clips"] > 300
    assert "validated.tsv" in manifest["tsvs"]
    assert (tmp_path / "raw" / "downloads" / "cv-corpus-test-es.tar.gz").exists()


def test_folder_source_is_used_in_place_from_a_parent(tmp_path):
    locale = make_release(tmp_path / "cv", balanced_rows(2, 1), audio=False)
    (locale / "clips" / "x.mp3").write_bytes(b"")
    p = params(**{"data.source": str(tmp_path / "cv"), "data.raw_dir": str(tmp_path / "raw")})
    assert resolve_source(p) == locale
    assert not (tmp_path / "raw").exists()


def test_folder_without_a_release_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="no Common Voice release under"):
        find_locale_dir(tmp_path, "es")


def test_archive_source_extracts_only_the_locale_once(tmp_path):
    raw = tmp_path / "raw"
    locale = extract_release(SAMPLE, raw, "es")
    assert (locale / "validated.tsv").exists() and len(list((locale / "clips").iterdir())) > 300
    stamp = (locale / "validated.tsv").stat().st_mtime_ns
    assert extract_release(SAMPLE, raw, "es") == locale
    assert (locale / "validated.tsv").stat().st_mtime_ns == stamp, "a second run must not re-extract"
    with pytest.raises(StageError, match="holds no '<release>/fr/' folder"):
        extract_release(SAMPLE, raw, "fr")


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = b"evil"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = target
                tar.addfile(info)
    return path


@pytest.mark.parametrize("members, needle", [
    ([("cv/es/validated.tsv", "file", None), ("cv/es/../../../evil.txt", "file", None)], "'..' component"),
    ([("cv/es/validated.tsv", "file", None), ("/tmp/acento-evil.txt", "file", None)], "absolute path"),
    ([("cv/es/clips/link", "symlink", "../../../../../evil.txt")], "cv/es/clips/link"),
    ([("cv/es/clips/hard", "hardlink", "/etc/passwd")], "cv/es/clips/hard"),
])
def test_malicious_archives_are_refused_and_nothing_is_written(tmp_path, members, needle):
    archive = _archive(tmp_path / "evil.tar.gz", members)
    raw = tmp_path / "sandbox" / "raw"
    with pytest.raises(StageError, match="unsafe member") as err:
        extract_release(archive, raw, "es")
    assert needle in str(err.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sandbox" / "evil.txt").exists()
    assert list(raw.iterdir()) == [], "no half-extracted release left behind"


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        resolve_source(params(**{"data.source": str(tmp_path / "nope.tar.gz")}))
    (tmp_path / "clips.zip").write_bytes(b"PK")
    with pytest.raises(StageError, match="neither a folder nor"):
        resolve_source(params(**{"data.source": str(tmp_path / "clips.zip")}))
    with pytest.raises(StageError, match="unsupported URL scheme"):
        resolve_source(params(**{"data.source": "ftp://example.org/cv.tar.gz"}))


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "cv.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(StageError, match="not a readable tar archive"):
        extract_release(bad, tmp_path / "raw", "es")
