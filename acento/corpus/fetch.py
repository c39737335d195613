"""Generic fetching of large files: a resumable, retried HTTP download with an optional sha256
check, and safe extraction of tar members.  Nothing here knows Common Voice (that is `download`, the
stage); like lhotse's `resumable_download` and `safe_extract`, these are the parts any recipe needs.

Checksums: a file this code downloaded and found to match is remembered (size, mtime, sha256 in a
`<file>.sha256.json` beside it) so a 50 GB archive is not re-hashed on every run; a downloaded file
that fails the check is removed, to be fetched again, while a user's own file never is.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from acento.console import progress
from acento.errors import StageError

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in CHUNK blocks (with a progress bar on a terminal)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh, progress(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"sha256 {path.name}", leave=False) as bar:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def file_stamp(path: Path) -> dict:
    """Size and mtime: what says a file has not changed since it was last hashed."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _record_path(download_path: Path) -> Path:
    return download_path.with_name(download_path.name + ".sha256.json")


def _record_verified(download_path: Path, sha256: str) -> None:
    """Remembers that this exact file (size, mtime) hashed to `sha256`, so later runs need not re-hash it."""
    _record_path(download_path).write_text(json.dumps({**file_stamp(download_path), "sha256": sha256.lower()}))


def _verified_before(path: Path, sha256: str) -> bool:
    """Whether a download was already hashed to `sha256` and has not changed since: hashing a 50 GB
    archive on every `dvc repro` would make the always-run stage slow."""
    try:
        return json.loads(_record_path(path).read_text()) == {**file_stamp(path), "sha256": sha256.lower()}
    except (OSError, ValueError):
        return False


def remove_download(path: Path) -> None:
    """Deletes a bad file this stage downloaded, so that the next run fetches it again."""
    path.unlink(missing_ok=True)
    _record_path(path).unlink(missing_ok=True)


def verify_sha256(path: Path, expected: str, *, downloaded: bool = False) -> None:
    """Checks `path` against data.sha256; a bad download is removed, a user's own archive never is."""
    if not expected or (downloaded and _verified_before(path, expected)):
        return
    if sha256_of(path) == expected.lower():
        if downloaded:
            _record_verified(path, expected)
        return
    if downloaded:
        remove_download(path)
        raise StageError(f"{path}: sha256 does not match data.sha256 ({expected}); the download was removed, "
                         "check data.source and data.sha256, then run again to download it again")
    raise StageError(f"{path}: sha256 does not match data.sha256 ({expected}); check data.source and data.sha256")


def download_path(url: str, dest_dir: Path) -> Path:
    """Where `url` is saved: named by a hash of the whole URL, so `.../v16/download` and
    `.../v17/download` never share a file, with the URL's last segment kept for people to read."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "release.tar.gz"
    return dest_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def _origin(url: urllib.parse.SplitResult) -> tuple:
    """Scheme, host and port: a redirect that changes any of them leaves the origin (a bad port too)."""
    try:
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:
        port = url.netloc
    return url.scheme, (url.hostname or "").lower(), port


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects as `requests` does for the token: it goes to the origin only (urllib would copy
    it to any host), and never follows https to http, where the download and token could be read."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if old.scheme == "https" and new.scheme != "https":
            raise StageError(f"{req.full_url}: redirected to {newurl}, which is not https; refused, "
                             "check data.source")
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and _origin(old) != _origin(new):
            redirected.remove_header("Authorization")
        return redirected


def download(url: str, dest_dir: Path, *, token_env: str = "", sha256: str = "", retries: int = 5,
             timeout: float = 30.0, backoff: float = 1.0) -> Path:
    """Fetches `url` into `dest_dir`, resuming a `.part` file with HTTP Range; renames it when whole.

    A file fetched by an earlier run is reused, but still checked against `sha256` when one is set.
    """
    final = download_path(url, dest_dir)
    name, part = final.name, dest_dir / (final.name + ".part")
    if final.exists():
        verify_sha256(final, sha256, downloaded=True)
        return final
    dest_dir.mkdir(parents=True, exist_ok=True)
    headers = {"User-Agent": "acento"}
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise StageError(f"data.token_env names ${token_env}, which is not set; export it with your API token")
        headers["Authorization"] = f"Bearer {token}"
    opener = urllib.request.build_opener(_RedirectHandler)

    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
        try:
            with opener.open(request, timeout=timeout) as resp:
                if have and resp.status != 206:  # server ignored Range: start again
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as out, progress(
                        total=total, initial=have, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                if total is not None and part.stat().st_size < total:
                    raise ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to fetch: the part is already whole
                break
            if exc.code < 500 and exc.code != 429:
                raise StageError(f"{url}: HTTP {exc.code} {exc.reason}"
                                 + ("; check the token in $" + token_env if exc.code in (401, 403) else "")) from None
            error: Exception = exc
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            error = exc
        attempt += 1
        if attempt > retries:
            raise StageError(f"{url}: download failed after {retries} retries ({error}); run again to resume "
                             f"from {part}")
        time.sleep(backoff * 2 ** (attempt - 1))
    os.replace(part, final)
    verify_sha256(final, sha256, downloaded=True)  # a mismatch removes it, to be fetched again
    return final


class ProgressReader:
    """File wrapper that advances a progress bar by compressed bytes read."""

    def __init__(self, fh, bar):
        self.fh, self.bar = fh, bar

    def read(self, n: int = -1) -> bytes:
        block = self.fh.read(n)
        self.bar.update(len(block))
        return block


def _unsafe_link(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why a link member would point outside `dest` (None if it does not); the check tarfile's `data`
    filter makes, for Pythons without it."""
    if member.linkname.startswith("/") or PurePosixPath(member.linkname).is_absolute():
        return "link to an absolute path"
    base = os.path.dirname(member.name) if member.issym() else ""
    target = os.path.realpath(os.path.join(dest, base, member.linkname))
    if os.path.commonpath([target, dest]) != dest:
        return "link pointing outside the destination"
    return None


def _own_checks(member: tarfile.TarInfo, dest: str) -> str | None:
    """What `tarfile.data_filter` refuses, for Pythons before 3.10.12 / 3.11.4 that lack it.

    Setuid bits and owners need no check here: without the filter, members are extracted with
    `set_attrs=False`, so no mode or owner from the archive is applied.
    """
    target = os.path.realpath(os.path.join(dest, member.name))
    if os.path.commonpath([target, dest]) != dest:
        return "path outside the destination"
    if member.ischr() or member.isblk() or member.isfifo():
        return "special file"
    if member.issym() or member.islnk():
        return _unsafe_link(member, dest)
    return None


def check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    """Refuses absolute names, `..` components, links out of `dest` and special files."""
    name = PurePosixPath(member.name)
    problem = "absolute path" if name.is_absolute() or member.name.startswith("/") else \
        "'..' component" if ".." in name.parts else None
    if problem is None and hasattr(tarfile, "data_filter"):
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            problem = str(exc)
    elif problem is None:
        problem = _own_checks(member, os.path.realpath(dest))
    if problem:
        raise StageError(f"{archive}: unsafe member {member.name!r} refused ({problem}); nothing was extracted")


def extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Extracts with tarfile's `data` filter where this Python has it; otherwise without modes or owners."""
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, dest, filter="data")
    else:
        tar.extract(member, dest, set_attrs=False)
