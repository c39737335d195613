"""The clip manifest: `prepare` writes it, `features` (and `bench`) read it.

One row per kept clip: `clip` (file name in the release's clips/), `audio_path`, `speaker`
(Common Voice client_id), `accents` (parsed, `|`-joined), `label` (class name), `split` (one of
SPLITS) and `duration` (seconds, from the release).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import StageError
from pipeline.stage import atomic_path

SPLITS = ("train", "dev", "test")
COLUMNS = ["clip", "audio_path", "speaker", "accents", "label", "split", "duration"]


def write_manifest(rows: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        rows[COLUMNS].to_csv(tmp, sep="\t", index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Every column as text (a class or clip named "NA", "None" or "nan" stays that string), but
    `duration` as seconds."""
    try:
        rows = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the prepare stage first (dvc repro prepare)") from None
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise StageError(f"{path}: not a clip manifest (no column {', '.join(missing)}); rerun `dvc repro prepare`")
    return rows.assign(duration=pd.to_numeric(rows["duration"], errors="coerce"))
