"""A Common Voice release on disk: found in a folder, unpacked from an archive (safely), or downloaded
first (`acento.corpus.fetch`), and described in a small manifest (TSV row counts and checksums).

The `download` stage (pipeline/download.py) writes that manifest; `acento-score` and the tools reuse
`extract_release` and `find_locale_dir` to read other releases the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from acento.config import Params
from acento.console import progress
from acento.corpus.fetch import (
    ProgressReader,
    check_member,
    download,
    extract_member,
    file_stamp,
    remove_download,
    verify_sha256,
)
from acento.corpus.records import count_lines
from acento.errors import StageError

MARKER = ".acento-extracted.json"


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


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


def _archive_key(archive: Path) -> dict:
    return {"archive": archive.name, **file_stamp(archive)}


def _already_extracted(archive: Path, raw_dir: Path, locale: str, sha256: str, downloaded: bool) -> Path | None:
    """The locale folder an earlier run extracted from this very archive (same name, size, mtime).

    With data.sha256 set, the marker must also record that this archive matched it; an older marker
    without it costs one hash of the archive, then records it, so later runs stay cheap.
    """
    key = _archive_key(archive)
    for marker in raw_dir.glob(f"*/{locale}/{MARKER}"):
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(recorded, dict) or {k: recorded.get(k) for k in key} != key:
            continue
        if sha256 and recorded.get("sha256") != sha256.lower():
            verify_sha256(archive, sha256, downloaded=downloaded)
            marker.write_text(json.dumps({**key, "sha256": sha256.lower()}))
        return marker.parent
    return None


def _unreadable(archive: Path, exc: BaseException, downloaded: bool) -> StageError:
    if downloaded:
        remove_download(archive)
        return StageError(f"{archive}: not a readable tar archive ({exc}); the download was removed, check "
                          "data.source and data.token_env, then run again to download it again")
    return StageError(f"{archive}: not a readable tar archive ({exc}); download it again")


def extract_release(archive: Path, raw_dir: Path, locale: str, sha256: str = "", *,
                    downloaded: bool = False) -> Path:
    """Safely extracts only `<release>/<locale>/` from a Common Voice archive into `raw_dir`.

    Every member is checked (`check_member`, then tarfile's `data` filter on extraction); one bad
    member refuses the whole archive, and the temporary extraction folder is removed, so nothing is
    left half-written and nothing is written outside `raw_dir`.  `downloaded` says the archive is this
    stage's own download: one that fails the checksum or cannot be read is removed, to be fetched again.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    done = _already_extracted(archive, raw_dir, locale, sha256, downloaded)
    if done is not None:
        return done
    verify_sha256(archive, sha256, downloaded=downloaded)
    tmp = Path(os.path.realpath(raw_dir)) / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    found: Path | None = None
    try:
        with open(archive, "rb") as raw, progress(total=archive.stat().st_size, unit="B", unit_scale=True,
                                                  desc=f"extract {archive.name}") as bar:
            try:
                with tarfile.open(fileobj=ProgressReader(raw, bar), mode="r|*") as tar:
                    for member in tar:
                        check_member(member, tmp, archive)
                        parts = Path(member.name).parts
                        if len(parts) >= 2 and parts[1] == locale:
                            extract_member(tar, member, tmp)
                            found = tmp / parts[0] / parts[1]
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise _unreadable(archive, exc, downloaded) from None
            except OSError as exc:  # may be the disk, not the archive: never remove the download for it
                raise StageError(f"{archive}: could not be extracted into {raw_dir} ({exc}); check the archive "
                                 "and the free space, then run again") from None
        if found is None:
            raise StageError(f"{archive}: holds no '<release>/{locale}/' folder; check data.locale")
        target = raw_dir / found.parent.name / locale
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found, target)
        (target / MARKER).write_text(json.dumps({**_archive_key(archive),
                                                 **({"sha256": sha256.lower()} if sha256 else {})}))
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_source(params: Params) -> Path:
    data = params.data
    source, raw_dir = data.source, Path(data.raw_dir)
    if source.startswith(("http://", "https://")):
        archive = download(source, raw_dir / "downloads", token_env=data.token_env, sha256=data.sha256)
        return extract_release(archive, raw_dir, data.locale, data.sha256, downloaded=True)
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
