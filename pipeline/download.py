"""Stage `download`: find, fetch or unpack a Common Voice release and describe it in a small manifest.

The release itself (tens of GB of clips) never becomes a DVC output: DVC would hash and copy it on
every `dvc status`.  The stage's output is `data/release.json` (where the locale folder is, file
counts, TSV checksums).  It runs on every `dvc repro` (`always_changed`), re-reads only the TSVs when nothing
changed, and the stages after it rerun only when the manifest's content changes.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pipeline.commonvoice import count_lines
from pipeline.config import Params
from pipeline.paths import RELEASE_MANIFEST
from pipeline.stage import StageError, run_stage, write_json

MARKER = ".acento-extracted.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CHUNK = 1 << 20


# --------------------------------------------------------------------------- finding a release

def find_locale_dir(folder: Path, locale: str) -> Path:
    """The folder holding `validated.tsv` and `clips/`: `folder` itself or one below it."""
    if not folder.is_dir():
        raise StageError(f"data.source: {folder} is not a folder")
    candidates = [folder] + sorted(p for p in folder.glob("*") if p.is_dir()) + \
        sorted(p for p in folder.glob("*/*") if p.is_dir())
    found = [p for p in candidates if (p / "validated.tsv").is_file() and (p / "clips").is_dir()]
    if len(found) > 1:
        preferred = [p for p in found if p.name == locale]
        if len(preferred) == 1:
            return preferred[0]
        raise StageError(f"data.source: {folder} holds several releases ({', '.join(map(str, found))}); "
                         "point data.source at one of them")
    if not found:
        raise StageError(f"data.source: no Common Voice release under {folder} (looked for a folder with "
                         "validated.tsv and clips/ up to two levels down)")
    return found[0]


# --------------------------------------------------------------------------- downloading

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                      desc=f"sha256 {path.name}", leave=False) as bar:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    if expected and _sha256(path) != expected.lower():
        raise StageError(f"{path}: sha256 does not match data.sha256 ({expected}); the file was removed, "
                         "check the URL or the checksum and run again")


def download(url: str, dest_dir: Path, *, token_env: str = "", sha256: str = "", retries: int = 5,
             timeout: float = 30.0, backoff: float = 1.0) -> Path:
    """Fetches `url` into `dest_dir`, resuming a `.part` file with HTTP Range; renames it when whole."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "release.tar.gz"
    final, part = dest_dir / name, dest_dir / (name + ".part")
    if final.exists():
        return final
    dest_dir.mkdir(parents=True, exist_ok=True)
    headers = {"User-Agent": "acento"}
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise StageError(f"data.token_env names ${token_env}, which is not set; export it with your API token")
        headers["Authorization"] = f"Bearer {token}"

    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                if have and resp.status != 206:  # server ignored Range: start again
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as out, tqdm(
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
    if sha256:
        try:
            verify_sha256(part, sha256)
        except StageError:
            part.unlink(missing_ok=True)
            raise StageError(f"{url}: sha256 of the download does not match data.sha256 ({sha256}); "
                             "the partial file was removed, check the URL or the checksum") from None
    os.replace(part, final)
    return final


# --------------------------------------------------------------------------- extracting

class _ProgressReader:
    """File wrapper that advances a progress bar by compressed bytes read."""

    def __init__(self, fh, bar: tqdm):
        self.fh, self.bar = fh, bar

    def read(self, n: int = -1) -> bytes:
        block = self.fh.read(n)
        self.bar.update(len(block))
        return block


def _archive_key(archive: Path) -> dict:
    stat = archive.stat()
    return {"archive": archive.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    """Refuses absolute names, `..` components, links out of `dest` and special files."""
    name = PurePosixPath(member.name)
    problem = "absolute path" if name.is_absolute() or member.name.startswith("/") else \
        "'..' component" if ".." in name.parts else None
    if problem is None:
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            problem = str(exc)
    if problem:
        raise StageError(f"{archive}: unsafe member {member.name!r} refused ({problem}); nothing was extracted")


def extract_release(archive: Path, raw_dir: Path, locale: str, sha256: str = "") -> Path:
    """Safely extracts only `<release>/<locale>/` from a Common Voice archive into `raw_dir`.

    Every member is checked (`check_member`, then tarfile's `data` filter on extraction); one bad
    member refuses the whole archive, and the temporary extraction folder is removed, so nothing is
    left half-written and nothing is written outside `raw_dir`.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    for marker in raw_dir.glob(f"*/{locale}/{MARKER}"):
        if json.loads(marker.read_text()) == _archive_key(archive):
            return marker.parent
    if sha256:
        verify_sha256(archive, sha256)
    tmp = Path(os.path.realpath(raw_dir)) / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    found: Path | None = None
    try:
        with open(archive, "rb") as raw, tqdm(total=archive.stat().st_size, unit="B", unit_scale=True,
                                              desc=f"extract {archive.name}") as bar:
            try:
                with tarfile.open(fileobj=_ProgressReader(raw, bar), mode="r|*") as tar:
                    for member in tar:
                        check_member(member, tmp, archive)
                        parts = Path(member.name).parts
                        if len(parts) >= 2 and parts[1] == locale:
                            tar.extract(member, tmp, filter="data")
                            found = tmp / parts[0] / parts[1]
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise StageError(f"{archive}: not a readable tar archive ({exc}); download it again") from None
        if found is None:
            raise StageError(f"{archive}: holds no '<release>/{locale}/' folder; check data.locale")
        target = raw_dir / found.parent.name / locale
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found, target)
        (target / MARKER).write_text(json.dumps(_archive_key(archive)))
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the stage

def resolve_source(params: Params) -> Path:
    data = params.data
    source, raw_dir = data.source, Path(data.raw_dir)
    if source.startswith(("http://", "https://")):
        archive = download(source, raw_dir / "downloads", token_env=data.token_env, sha256=data.sha256)
        return extract_release(archive, raw_dir, data.locale)
    if "://" in source:
        raise StageError(f"data.source: unsupported URL scheme in {source!r}; use http(s), a .tar.gz or a folder")
    path = Path(source).expanduser()
    if not path.exists():
        raise StageError(f"data.source: {path} does not exist; set it to a Common Voice .tar.gz, "
                         "an extracted release folder, or an http(s) URL")
    if path.is_dir():
        return find_locale_dir(path, data.locale)
    if path.name.endswith(ARCHIVE_SUFFIXES):
        return extract_release(path, raw_dir, data.locale, data.sha256)
    raise StageError(f"data.source: {path} is neither a folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive")


def describe_release(locale_dir: Path) -> dict:
    """What later stages need, and what should make them rerun when it changes."""
    tsvs = {}
    for tsv in sorted(locale_dir.glob("*.tsv")):
        lines, md5 = count_lines(tsv, hashlib.md5())
        tsvs[tsv.name] = {"rows": max(lines - 1, 0), "md5": md5}
    with os.scandir(locale_dir / "clips") as it:
        clips = sum(1 for entry in it if entry.is_file())
    try:
        root = locale_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        root = locale_dir.resolve()
    return {"release": locale_dir.parent.name, "locale": locale_dir.name, "root": str(root),
            "clips": clips, "tsvs": tsvs}


def run(params: Params, args: argparse.Namespace) -> None:
    locale_dir = resolve_source(params)
    manifest = describe_release(locale_dir)
    write_json(args.out, manifest)
    print(f"release {manifest['release']}/{manifest['locale']}: {manifest['clips']} clips, "
          f"{len(manifest['tsvs'])} TSVs at {manifest['root']} -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=RELEASE_MANIFEST,
                        help=f"manifest to write (default: {RELEASE_MANIFEST})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
