"""The clip manifest: `prepare` writes it, `features` (and `bench`) read it.

One row per kept clip: `clip` (file name in the release's clips/), `audio_path`, `speaker`
(Common Voice client_id), `accents` (parsed, `|`-joined), `label` (class name), `duration` (seconds,
from the release), and where the clip goes:
- cross-validated (data.folds >= 2): `fold`, the test fold of the clip's speaker (0 .. folds-1), and
  `dev_folds`, a bitmask whose bit f is set when the speaker is a dev speaker while fold f is the test
  fold; `split` is empty.  Which clips are train, dev and test for a given `data.fold` is decided at
  train and evaluate time from these two columns (`split_of`), so the manifest and the feature cache
  serve every fold.
- one split (data.folds 0 or 1, or data.split_by: clip): `split`, one of SPLITS; `fold` is -1 and
  `dev_folds` 0.
- the unlabelled pool (`data.unlabelled_clips`), after the labelled clips: `split` POOL, `label` "", `fold`
  -1, `dev_folds` 0.  Its speakers have no labelled clip in the manifest, so they are in no fold: a pool
  clip is never any fold's train, dev or test clip (`split_of` gives it POOL for every fold).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from acento.errors import StageError
from acento.files import atomic_path

SPLITS = ("train", "dev", "test")
POOL = "pool"  # the split of the unlabelled pool's clips: label "", fold -1, dev_folds 0 (data.unlabelled_clips)


COLUMNS = ["clip", "audio_path", "speaker", "accents", "label", "split", "fold", "dev_folds", "duration"]


MAX_FOLDS = 63  # bits of `dev_folds` (int64)


def split_of(split: np.ndarray, fold: np.ndarray, dev_folds: np.ndarray, test_fold: int) -> np.ndarray:
    """Each clip's split (one of SPLITS) when fold `test_fold` is the test fold: the `split` column for
    a clip of one split (fold -1), else test when `fold` is `test_fold`, dev when bit `test_fold` of
    `dev_folds` is set, train otherwise.  Arrays of one value per clip; returns str values."""
    fold, dev_folds = np.asarray(fold, np.int64), np.asarray(dev_folds, np.int64)
    crossval = np.where(fold == test_fold, "test",
                        np.where((dev_folds >> np.int64(test_fold)) & 1 == 1, "dev", "train"))
    return np.where(fold < 0, np.asarray(split, dtype=object), crossval.astype(object)).astype(str)


def write_manifest(rows: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        rows[COLUMNS].to_csv(tmp, sep="\t", index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Every column as text (a class or clip named "NA", "None" or "nan" stays that string), but
    `duration` as seconds and `fold`, `dev_folds` as integers."""
    try:
        rows = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the prepare stage first (dvc repro prepare)") from None
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise StageError(f"{path}: not a clip manifest (no column {', '.join(missing)}); rerun `dvc repro prepare`")
    ints = {c: pd.to_numeric(rows[c], errors="coerce") for c in ("fold", "dev_folds")}
    for column, values in ints.items():
        if values.isna().any():
            row = int(np.flatnonzero(values.isna())[0]) + 2  # 1-based, after the header line
            raise StageError(f"{path}: line {row}: '{column}' is {rows[column].iloc[row - 2]!r}, not an integer; "
                             "rerun `dvc repro prepare`")
    return rows.assign(duration=pd.to_numeric(rows["duration"], errors="coerce"),
                       **{c: v.astype(np.int64) for c, v in ints.items()})
