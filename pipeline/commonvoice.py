"""Reading Common Voice TSVs and parsing their `accents` field, across releases.

Column sets differ by release (16.x, 17.0+ adds `sentence_id`/`sentence_domain`, before ~v8 the
column was `accent`), sentences contain `"`, and several accents are joined with `|` from v21 but
with `,` up to v20, where the preset names themselves contain commas.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline.errors import StageError

SPANISH_PRESETS = (
    "España: Norte peninsular (Asturias, Castilla y León, Cantabria, País Vasco, Navarra, Aragón, "
    "La Rioja, Guadalajara, Cuenca)",
    "España: Centro-Sur peninsular (Madrid, Toledo, Castilla-La Mancha)",
    "España: Sur peninsular (Andalucia, Extremadura, Murcia)",
    "España: Islas Canarias",
    "México",
    "América central",
    "Caribe: Cuba, Venezuela, Puerto Rico, República Dominicana, Panamá, Colombia caribeña, "
    "México caribeño, Costa del golfo de México",
    "Andino-Pacífico: Colombia, Perú, Ecuador, oeste de Bolivia y Venezuela andina",
    "Rioplatense: Argentina, Uruguay, este de Bolivia, Paraguay",
    "Chileno: Chile, Cuyo",
    "Español de Filipinas",
)

REQUIRED_COLUMNS = ("client_id", "path", "accents")


def split_accents(field: str, known: Iterable[str] = SPANISH_PRESETS) -> list[str]:
    """Splits an `accents` field into accents, matching known presets before splitting on commas.

    `|` (v21+) is unambiguous.  For `,` (up to v20) the longest known preset starting at each
    comma boundary is taken whole; anything else runs to the next comma and is free text.
    """
    field = field.strip()
    if not field:
        return []
    if "|" in field:
        return [a.strip() for a in field.split("|") if a.strip()]
    presets = sorted({k.strip() for k in known if k.strip()}, key=len, reverse=True)
    accents, i = [], 0
    while i < len(field):
        while i < len(field) and field[i] in ", ":
            i += 1
        for preset in presets:
            end = i + len(preset)
            if field.startswith(preset, i) and (end == len(field) or field[end] == ","):
                accents.append(preset)
                i = end + 1
                break
        else:
            end = field.find(",", i)
            end = len(field) if end < 0 else end
            if field[i:end].strip():
                accents.append(field[i:end].strip())
            i = end + 1
    return accents


def count_lines(path: Path, digest=None) -> tuple[int, str]:
    """Newlines in a file read in 1 MiB blocks, and the hex digest of its bytes when a hashlib
    object is given (else "")."""
    lines = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
            if digest is not None:
                digest.update(block)
    return lines, digest.hexdigest() if digest is not None else ""


def read_tsv(path: Path) -> tuple[pd.DataFrame, int]:
    """Reads one release TSV as strings; returns the frame and the number of malformed lines skipped."""
    try:
        lines, _ = count_lines(path)
        frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                            na_filter=False, on_bad_lines="skip", encoding="utf-8")
    except FileNotFoundError:
        raise StageError(f"{path}: not found; check data.tsvs against the release's files") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StageError(f"{path}: cannot be read as a Common Voice TSV ({exc})") from None
    if "accents" not in frame.columns and "accent" in frame.columns:
        frame = frame.rename(columns={"accent": "accents"})
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise StageError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}")
    if "down_votes" not in frame.columns:
        frame["down_votes"] = "0"
    malformed = max(lines - 1 - len(frame), 0)
    return frame, malformed


def read_durations(locale_dir: Path) -> dict[str, float] | None:
    """Clip durations in seconds from `clip_durations.tsv` (16.1+), or None for older releases."""
    path = locale_dir / "clip_durations.tsv"
    if not path.exists():
        return None
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype={"clip": str}, keep_default_na=False,
                        on_bad_lines="skip")
    if list(frame.columns[:2]) != ["clip", "duration[ms]"]:
        raise StageError(f"{path}: expected columns 'clip' and 'duration[ms]', found {', '.join(frame.columns)}")
    ms = pd.to_numeric(frame["duration[ms]"], errors="coerce")
    return dict(zip(frame["clip"], ms / 1000.0))
