"""Reading Common Voice TSVs and parsing their `accents` field, across releases.

Column sets differ by release (16.x, 17.0+ adds `sentence_id`/`sentence_domain`, before ~v8 the
column was `accent`), sentences contain `"`, and several accents are joined with `|` from v21 but
with `,` up to v20, where the preset names themselves contain commas.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from acento.config import canonical_accent
from acento.errors import StageError

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
    comma boundary is taken whole; anything else runs to the next comma and is free text.  The field and
    the known presets are compared in their canonical form (`canonical_accent`: NFC, no format characters,
    no surrounding spaces), and the accents are returned in it.
    """
    field = canonical_accent(field)
    if not field:
        return []
    if "|" in field:
        return [a for a in map(canonical_accent, field.split("|")) if a]
    presets = sorted({canonical_accent(k) for k in known} - {""}, key=len, reverse=True)
    accents, i = [], 0
    while i < len(field):
        while i < len(field) and (field[i] == "," or field[i].isspace()):
            i += 1
        for preset in presets:
            end = i + len(preset)
            while end < len(field) and field[end].isspace():  # spaces before the next comma
                end += 1
            if field.startswith(preset, i) and (end == len(field) or field[end] == ","):
                accents.append(preset)
                i = end + 1
                break
        else:
            end = field.find(",", i)
            end = len(field) if end < 0 else end
            if canonical_accent(field[i:end]):
                accents.append(canonical_accent(field[i:end]))
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


def parse_tsv(text: str) -> tuple[list[str], list[list[str]], int]:
    """Splits a tab-separated table (no quoting, as Common Voice writes it) into its header and
    records; returns (header, records, malformed), each record as many fields as the header.

    Records end at LF or CRLF only (a lone CR, U+2028 and the like stay inside their field); blank
    lines between records are not records.  A line with too few fields is a record whose text held
    line feeds: it is rejoined with the lines after it (their line feeds kept) when together they make
    exactly one record's fields, and otherwise the pieces count as one malformed record.  A line with
    too many fields (a TAB inside a field) is one malformed record.  So each record of the file is
    either returned or counted once in `malformed`: a record never becomes two.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last record; it does not start an empty one
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        return [], [], 0
    header = lines[0].split("\t")
    width = len(header)
    records: list[list[str]] = []
    malformed = 0
    i = 1
    while i < len(lines):
        fields = lines[i].split("\t")
        i += 1
        if len(fields) == 1 and fields[0] == "":
            continue  # a blank line between records
        if len(fields) > width:
            malformed += 1
            continue
        # too few fields: the record goes on after a line feed inside a field (a sentence's, usually)
        while len(fields) < width and i < len(lines) and len(lines[i].split("\t")) < width:
            more = lines[i].split("\t")
            fields[-1] += "\n" + more[0]
            fields += more[1:]
            i += 1
        if len(fields) == width:
            records.append(fields)
        else:
            malformed += 1
    return header, records, malformed


def read_tsv(path: Path) -> tuple[pd.DataFrame, int]:
    """Reads one release TSV as strings (parse_tsv's rules); returns the frame and the number of
    malformed records it held (each counted once, never turned into rows)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # not read_text: it turns a lone CR into LF
    except FileNotFoundError:
        raise StageError(f"{path}: not found; check data.tsvs against the release's files") from None
    except UnicodeDecodeError as exc:
        raise StageError(f"{path}: cannot be read as a Common Voice TSV (not UTF-8: {exc})") from None
    header, records, malformed = parse_tsv(text)
    if not header:
        raise StageError(f"{path}: empty; a Common Voice TSV starts with a header line (client_id, path, ...)")
    if len(set(header)) != len(header):
        raise StageError(f"{path}: a column name appears twice in the header ({', '.join(header)})")
    frame = pd.DataFrame(records, columns=header, dtype=str)
    if "accents" not in frame.columns and "accent" in frame.columns:
        frame = frame.rename(columns={"accent": "accents"})
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise StageError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}")
    if "down_votes" not in frame.columns:
        frame["down_votes"] = "0"
    return frame, malformed


def read_durations(locale_dir: Path) -> dict[str, float] | None:
    """Clip durations in seconds from `clip_durations.tsv` (16.1+), or None for older releases."""
    path = locale_dir / "clip_durations.tsv"
    if not path.exists():
        return None
    header, records, _ = parse_tsv(path.read_bytes().decode("utf-8-sig"))
    if header[:2] != ["clip", "duration[ms]"]:
        raise StageError(f"{path}: expected columns 'clip' and 'duration[ms]', found {', '.join(header)}")
    ms = pd.to_numeric(pd.Series([r[1] for r in records], dtype=str), errors="coerce")
    return dict(zip((r[0] for r in records), ms / 1000.0))
