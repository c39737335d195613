import argparse
import hashlib
import io
import json
import tarfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from acento.corpus.fetch import download, download_path
from acento.corpus.release import extract_release, find_locale_dir, resolve_source
from acento.errors import StageError
from pipeline.download import run as download_run
from tests.helpers import SAMPLE, balanced_rows, make_release, params

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Server:
    """A loopback HTTP server with Range support that can cut its first response short, or answer
    every path but /final with a redirect to `redirect`."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None, status: int = 200,
                 redirect: str | None = None):
        self.payload, self.cut, self.status, self.requests = payload, cut_first_at, status, []
        self.redirect = redirect
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(dict(self.headers))
                if server.redirect and self.path != "/final":
                    self.send_response(302)
                    self.send_header("Location", server.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
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
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.base}/cv-corpus-test-es.tar.gz"
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
    part = download_path(server.url, tmp_path)
    part.with_name(part.name + ".part").write_bytes(PAYLOAD[:1000])
    assert download(server.url, tmp_path, backoff=0).read_bytes() == PAYLOAD
    assert server.requests[0]["Range"] == "bytes=1000-"


def test_checksum_mismatch_leaves_no_file_at_the_final_path(tmp_path, serve):
    server = serve(PAYLOAD)
    with pytest.raises(StageError, match="sha256 does not match data.sha256.*the download was removed"):
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


def test_token_is_sent_to_the_origin_host_only_across_redirects(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("CV_TOKEN", "s3cret")
    other = serve(PAYLOAD)  # "localhost" and 127.0.0.1: two host names, both loopback
    origin = serve(b"", redirect=other.base.replace("127.0.0.1", "localhost") + "/final")
    assert download(origin.url, tmp_path, token_env="CV_TOKEN", backoff=0).read_bytes() == PAYLOAD
    assert origin.requests[0]["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in other.requests[0], "the token must not reach another host"

    same = serve(PAYLOAD)
    same.redirect = same.base + "/final"
    download(same.url, tmp_path / "same", token_env="CV_TOKEN", backoff=0)
    assert [r["Authorization"] for r in same.requests] == ["Bearer s3cret"] * 2


def test_redirect_from_https_to_http_is_refused():
    from acento.corpus.fetch import _RedirectHandler

    request = urllib.request.Request("https://127.0.0.1/cv.tar.gz", headers={"Authorization": "Bearer s3cret"})
    with pytest.raises(StageError, match=r"redirected to http://127\.0\.0\.1/cv\.tar\.gz, which is not https"):
        _RedirectHandler().redirect_request(request, None, 302, "Found", {}, "http://127.0.0.1/cv.tar.gz")
    elsewhere = _RedirectHandler().redirect_request(request, None, 302, "Found", {}, "https://localhost/cv.tar.gz")
    assert not elsewhere.has_header("Authorization")


def test_cached_download_is_still_checked_against_sha256(tmp_path, serve, monkeypatch):
    server = serve(PAYLOAD)
    path = download(server.url, tmp_path, backoff=0)
    with pytest.raises(StageError, match="sha256 does not match data.sha256.*the download was removed"):
        download(server.url, tmp_path, backoff=0, sha256="0" * 64)
    assert not path.exists()
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert download(server.url, tmp_path, backoff=0, sha256=good).read_bytes() == PAYLOAD
    monkeypatch.setattr("acento.corpus.fetch.sha256_of", lambda p: pytest.fail("a verified download was re-hashed"))
    assert download(server.url, tmp_path, backoff=0, sha256=good) == path


def test_urls_with_the_same_last_segment_do_not_share_a_download(tmp_path, serve):
    v16, v17 = serve(b"release 16" * 1000), serve(b"release 17" * 1000)
    assert download(v16.base + "/v16/download", tmp_path, backoff=0).read_bytes() == v16.payload
    assert download(v17.base + "/v17/download", tmp_path, backoff=0).read_bytes() == v17.payload


def test_extraction_marker_is_checked_against_sha256(tmp_path, monkeypatch):
    archive, raw = tmp_path / "cv.tar.gz", tmp_path / "raw"
    archive.write_bytes(SAMPLE.read_bytes())
    locale = extract_release(archive, raw, "es")
    with pytest.raises(StageError, match="sha256 does not match data.sha256"):
        extract_release(archive, raw, "es", "0" * 64)
    assert archive.exists(), "a user's own archive is never removed"
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert extract_release(archive, raw, "es", good) == locale
    monkeypatch.setattr("acento.corpus.fetch.sha256_of", lambda p: pytest.fail("a verified archive was re-hashed"))
    assert extract_release(archive, raw, "es", good) == locale


def test_a_download_that_is_not_an_archive_is_removed_and_fetched_again(tmp_path, serve):
    server = serve(b"<html><body>Please log in</body></html>\n" * 20)
    p = params(**{"data.source": server.url, "data.raw_dir": str(tmp_path / "raw")})
    with pytest.raises(StageError, match="not a readable tar archive.*the download was removed"):
        resolve_source(p)
    assert not download_path(server.url, tmp_path / "raw" / "downloads").exists()
    server.payload = SAMPLE.read_bytes()
    assert (resolve_source(p) / "validated.tsv").exists()
    assert len(server.requests) == 2


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
    assert download_path(server.url, tmp_path / "raw" / "downloads").exists()


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
            if kind in ("file", "setuid"):
                data = b"evil"
                info.size, info.mode = len(data), 0o4755 if kind == "setuid" else 0o644
                tar.addfile(info, io.BytesIO(data))
            elif kind in ("fifo", "chr"):
                info.type = tarfile.FIFOTYPE if kind == "fifo" else tarfile.CHRTYPE
                tar.addfile(info)
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


@pytest.mark.parametrize("members, needle", [
    ([("cv/es/validated.tsv", "file", None), ("cv/es/../../../evil.txt", "file", None)], "'..' component"),
    ([("cv/es/validated.tsv", "file", None), ("/tmp/acento-evil.txt", "file", None)], "absolute path"),
    ([("cv/es/clips/link", "symlink", "../../../../../evil.txt")], "outside the destination"),
    ([("cv/es/clips/link", "symlink", "/etc/passwd")], "link to an absolute path"),
    ([("cv/es/clips/up", "symlink", "../.."), ("cv/es/clips/up/x", "symlink", "../..")], "outside the destination"),
    ([("cv/es/clips/hard", "hardlink", "/etc/passwd")], "link to an absolute path"),
    ([("cv/es/clips/hard", "hardlink", "cv/../../evil.txt")], "outside the destination"),
    ([("cv/es/clips/pipe", "fifo", None)], "special file"),
    ([("cv/es/clips/tty", "chr", None)], "special file"),
])
def test_without_tarfile_data_filter_own_checks_refuse_malicious_archives(tmp_path, monkeypatch, members, needle):
    monkeypatch.delattr(tarfile, "data_filter")  # Python before 3.10.12 / 3.11.4
    monkeypatch.delattr(tarfile, "FilterError")
    archive = _archive(tmp_path / "evil.tar.gz", members)
    raw = tmp_path / "sandbox" / "raw"
    with pytest.raises(StageError, match="unsafe member") as err:
        extract_release(archive, raw, "es")
    assert needle in str(err.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sandbox" / "evil.txt").exists()
    assert list(raw.iterdir()) == [], "no half-extracted release left behind"


def test_without_tarfile_data_filter_good_archives_extract_without_setuid(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.delattr(tarfile, "FilterError")
    locale = extract_release(SAMPLE, tmp_path / "raw", "es")
    assert (locale / "validated.tsv").exists() and len(list((locale / "clips").iterdir())) > 300
    archive = _archive(tmp_path / "suid.tar.gz", [("cv/es/clips/run", "setuid", None)])
    run = extract_release(archive, tmp_path / "raw2", "es") / "clips" / "run"
    assert run.read_bytes() == b"evil" and not run.stat().st_mode & 0o6000


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
    assert bad.exists(), "a user's own archive is never removed"
