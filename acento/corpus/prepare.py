"""From a release's TSVs to the clip manifest: labelled, filtered, every drop counted by reason.

`labelled_clips` reads the TSV records (`acento.corpus.records`), maps accents to classes (compared in
their canonical form, `acento.config.canonical_accent`, naming every configured accent that matches no
row), keeps one class per speaker and drops what cannot be used; `prepare` then caps clips per speaker and
per class and assigns every speaker to one test fold (`acento.corpus.splits`).  The `prepare` stage
(pipeline/prepare.py) writes the result; `acento-score` reads any other labelled release with
`labelled_clips`, as the stage does.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from acento.audio.decode import AudioError, audio_seconds
from acento.config import DataConfig, canonical_accent
from acento.corpus.manifest import COLUMNS, POOL, SPLITS
from acento.corpus.records import (
    SPANISH_PRESETS,
    read_durations,
    read_tsv,
    split_accents,
)
from acento.corpus.splits import (
    assign_folds,
    cap_per_group,
    split_clips,
    split_speakers,
)
from acento.errors import StageError

DROP_REASONS = ("malformed_row", "duplicate_clip", "down_voted", "no_accent", "unmapped_accent",
                "ambiguous_accent", "missing_file", "unknown_duration", "too_short", "too_long",
                "speaker_other_accent", "speaker_cap", "class_cap", "too_few_speakers")

# Why a clip with no usable accent (no_accent, unmapped_accent) stays out of the unlabelled pool.
POOL_DROP_REASONS = ("missing_file", "unknown_duration", "too_short", "too_long", "labelled_speaker", "speaker_cap",
                     "pool_cap")


def accent_class(accents: list[str], accent_to_class: dict[str, str]) -> tuple[str | None, str | None]:
    """(class, None) for a row whose accents map to one class, else (None, drop reason)."""
    if not accents:
        return None, "no_accent"
    classes = {accent_to_class[a] for a in accents if a in accent_to_class}
    if not classes:
        return None, "unmapped_accent"
    if len(classes) > 1:
        return None, "ambiguous_accent"
    return classes.pop(), None


def read_rows(locale_dir: Path, tsvs: list[str], dropped: Counter[str]) -> pd.DataFrame:
    """The listed TSVs' rows as text; a clip listed twice is kept once (its first row)."""
    frames = []
    for name in tsvs:
        frame, malformed = read_tsv(locale_dir / name)
        dropped["malformed_row"] += malformed
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    before = len(rows)
    rows = rows.drop_duplicates(subset="path", keep="first")
    dropped["duplicate_clip"] += before - len(rows)
    return rows


def drop_down_voted(rows: pd.DataFrame, max_down_votes: int, dropped: Counter[str]) -> pd.DataFrame:
    down = pd.to_numeric(rows["down_votes"], errors="coerce").fillna(0)
    dropped["down_voted"] += int((down > max_down_votes).sum())
    return rows[down <= max_down_votes]


def parse_accents(fields: pd.Series, classes: dict[str, list[str]]) -> list[list[str]]:
    """Each `accents` field as its canonical accents (`split_accents`; presets and the classes' accents
    with commas matched whole), parsed once per distinct field."""
    known = set(SPANISH_PRESETS) | {a for accents in classes.values() for a in accents}
    parsed = {field: split_accents(field, known) for field in fields.unique()}
    return [parsed[field] for field in fields]


def warn_unmatched(classes: dict[str, list[str]], fields: pd.Series, tsvs: list[str]) -> None:
    """One warning line for each class of `classes` whose accents match no row of `fields` (the TSVs'
    `accents`), and for each other accent of a class that matches none: a misspelt accent string would
    otherwise leave its clips out, or its class out of the model, without a word."""
    present = {a for accents in parse_accents(pd.Series(fields.unique()), classes) for a in accents}
    where = f"no row of {', '.join(tsvs)}"
    for cls, accents in classes.items():
        missing = [a for a in accents if canonical_accent(a) not in present]
        if len(missing) == len(accents):
            print(f"warning: class {cls!r} matches {where}: none of its accents ({', '.join(map(repr, accents))}) "
                  f"is there; check data.classes.{cls} against the release's accents", file=sys.stderr)
            continue
        for accent in missing:
            print(f"warning: accent {accent!r} of data.classes.{cls} matches {where}; check its spelling "
                  "against the release's accents", file=sys.stderr)


def label_rows(rows: pd.DataFrame, classes: dict[str, list[str]],
               dropped: Counter[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parses `accents` (`parse_accents`); returns the rows that map to exactly one class (with `label`) and
    the rows of no accent or of accents that map to no class (the unlabelled ones, `label` None).  Every
    row of neither frame, and of the second, is counted in `dropped` by reason (they leave the labelled set)."""
    accent_to_class = {canonical_accent(a): cls for cls, accents in classes.items() for a in accents}
    parsed = parse_accents(rows["accents"], classes)
    outcome = [accent_class(a, accent_to_class) for a in parsed]
    rows = rows.assign(accents=["|".join(a) for a in parsed], label=[c for c, _ in outcome])
    dropped.update(r for _, r in outcome if r)
    reasons = pd.Series([r for _, r in outcome], index=rows.index, dtype=object)
    return rows[rows["label"].notna()], rows[reasons.isin(["no_accent", "unmapped_accent"])]


def clip_files(clips_dir: Path) -> set[str]:
    """The names in the release's clips/ folder (read once: a full release has ~1.5 million)."""
    with os.scandir(clips_dir) as it:
        return {e.name for e in it}


def drop_missing_files(rows: pd.DataFrame, present: set[str], dropped: Counter[str]) -> pd.DataFrame:
    exists = rows["path"].isin(present)
    dropped["missing_file"] += int((~exists).sum())
    return rows[exists]


def clip_seconds(locale_dir: Path, clips: pd.Series) -> pd.Series:
    """Duration of each clip in seconds (NaN where unknown), from clip_durations.tsv when the release
    has it, else from each file's exact frame count (releases before 16.1: slow, but only once; an
    MP3's header estimate can be several times off, so MPEG frames are counted)."""
    durations = read_durations(locale_dir)
    if durations is None:
        durations = {}
        for clip in clips:
            try:
                durations[clip] = audio_seconds(locale_dir / "clips" / clip)
            except AudioError:
                pass
    return clips.map(durations)


def filter_durations(rows: pd.DataFrame, seconds: pd.Series, data: DataConfig, dropped: Counter[str]) -> pd.DataFrame:
    dropped["unknown_duration"] += int(seconds.isna().sum())
    dropped["too_short"] += int((seconds < data.min_seconds).sum())
    dropped["too_long"] += int((seconds > data.max_seconds).sum())
    return rows.assign(duration=seconds)[seconds.between(data.min_seconds, data.max_seconds)]


def one_class_per_speaker(rows: pd.DataFrame, dropped: Counter[str]) -> pd.DataFrame:
    """Keeps each speaker in one class: a speaker whose clips map to two or more classes keeps the clips of
    the class most of them map to, and the others are dropped as `speaker_other_accent`; a speaker with a tie
    for the most clips has no class, and every clip of it is dropped so.  Warns once with the counts.

    Without this, such a speaker counted as a speaker of each class (so a class could pass
    data.min_speakers with speakers of another one) and its voice sat on both sides of the class boundary."""
    per_class = rows.groupby(["speaker", "label"]).size().reset_index(name="clips")
    top = per_class[per_class["clips"] == per_class.groupby("speaker")["clips"].transform("max")]
    majority = top.drop_duplicates("speaker", keep=False).set_index("speaker")["label"]  # ties: none
    keep = rows["label"].eq(rows["speaker"].map(majority))
    mixed = pd.Index(per_class.loc[per_class["speaker"].duplicated(), "speaker"].unique())
    if len(mixed):
        print(f"warning: {len(mixed)} speaker(s) have clips of two or more classes: each keeps its majority class "
              f"({(~mixed.isin(majority.index)).sum()} tied, dropped whole); {int((~keep).sum())} clip(s) dropped "
              "as speaker_other_accent", file=sys.stderr)
    dropped["speaker_other_accent"] += int((~keep).sum())
    return rows[keep]


def drop_small_classes(rows: pd.DataFrame, min_speakers: int, dropped: Counter[str]) -> pd.DataFrame:
    speakers_per_class = rows.groupby("label")["speaker"].nunique()
    too_few = speakers_per_class[speakers_per_class < min_speakers]
    for label, n_spk in too_few.items():
        print(f"warning: class {label!r} has {n_spk} speaker(s), fewer than data.min_speakers="
              f"{min_speakers}: dropped", file=sys.stderr)
    dropped["too_few_speakers"] += int(rows["label"].isin(too_few.index).sum())
    return rows[~rows["label"].isin(too_few.index)]


def split_metrics(rows: pd.DataFrame, dropped: Counter[str]) -> dict:
    """Clips and speakers per class in each part of the manifest: each test fold ("fold0", "fold1", ...)
    when cross-validated (fold f's training and dev speakers are the other folds'), else each split;
    and the dropped rows by reason.  Warns about a class missing from a part."""
    part = part_names(rows)
    folds = int(rows["fold"].max()) + 1 if len(rows) else 0
    parts = [f"fold{k}" for k in range(folds)] if folds > 0 else list(SPLITS)
    for label in sorted(rows["label"].unique()):
        missing = [p for p in parts if not ((rows["label"] == label) & (part == p)).any()]
        if missing:
            print(f"warning: class {label!r} has too few speakers to appear in {', '.join(missing)}",
                  file=sys.stderr)
    return {
        "clips": {p: {c: int(n) for c, n in rows[part == p]["label"].value_counts().sort_index().items()}
                  for p in parts},
        "speakers": {p: {c: int(n) for c, n in rows[part == p].groupby("label")["speaker"].nunique().items()}
                     for p in parts},
        "dropped": dict(dropped),
    }


def part_names(rows: pd.DataFrame) -> pd.Series:
    """Each row's part for the metrics: "fold<k>" for a cross-validated clip, else its split."""
    return pd.Series(np.where(rows["fold"] >= 0, "fold" + rows["fold"].astype(str), rows["split"]),
                     index=rows.index)


def release_clips(data: DataConfig, locale_dir: Path, unlabelled: bool = False) \
        -> tuple[pd.DataFrame, pd.DataFrame, Counter[str], Counter[str]]:
    """The release's labelled clips and (`unlabelled`) its clips without a usable accent, both through the
    same row filters (down votes, present file, known duration within data.min/max_seconds), before any cap
    or split: `labelled_clips` and `unlabelled_clips` in one reading of the TSVs.  Returns the labelled rows,
    the unlabelled rows (label None; empty unless `unlabelled`), the labelled set's drops by reason (every
    DROP_REASONS key) and the unlabelled rows' drops (every POOL_DROP_REASONS key, the later steps' at 0)."""
    dropped: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
    pool_dropped: Counter[str] = Counter({r: 0 for r in POOL_DROP_REASONS})
    rows = read_rows(locale_dir, data.tsvs, dropped)
    warn_unmatched(data.classes, rows["accents"], data.tsvs)
    rows = drop_down_voted(rows, data.max_down_votes, dropped)
    rows, pool = label_rows(rows, data.classes, dropped)
    if not unlabelled:
        pool = pool.iloc[:0]
    clips_dir = locale_dir / "clips"
    present = clip_files(clips_dir)
    rows = drop_missing_files(rows, present, dropped)
    pool = drop_missing_files(pool, present, pool_dropped)
    seconds = clip_seconds(locale_dir, pd.concat([rows["path"], pool["path"]]))
    rows = filter_durations(rows, seconds[rows.index], data, dropped)
    pool = filter_durations(pool, seconds[pool.index], data, pool_dropped)
    columns = {"path": "clip", "client_id": "speaker"}
    rows = one_class_per_speaker(rows.rename(columns=columns), dropped)
    pool = pool.rename(columns=columns)
    return (rows.assign(audio_path=[str(clips_dir / c) for c in rows["clip"]]),
            pool.assign(audio_path=[str(clips_dir / c) for c in pool["clip"]]), dropped, pool_dropped)


def labelled_clips(data: DataConfig, locale_dir: Path) -> tuple[pd.DataFrame, Counter[str]]:
    """The clips of the release at `locale_dir` that map to one class of `data.classes` and pass the
    row filters (down votes, present file, known duration within data.min/max_seconds), each speaker in
    one class (`one_class_per_speaker`), before any cap or split; also what `score` classifies.  Warns
    (stderr) about each configured accent that matches no row (`warn_unmatched`).

    Returns rows with clip, audio_path, speaker, accents, label, duration (seconds), and the rows
    dropped by reason (every DROP_REASONS key, the later steps' at 0).
    """
    rows, _, dropped, _ = release_clips(data, locale_dir)
    return rows, dropped


def unlabelled_clips(data: DataConfig, locale_dir: Path) -> tuple[pd.DataFrame, Counter[str]]:
    """The clips of the release at `locale_dir` whose speakers gave no accent, or only accents of no class of
    `data.classes`, through the same row filters as `labelled_clips`, less every clip of a speaker who has a
    labelled clip (counted as labelled_speaker): the speakers a curator would label (`acento-propose`).
    Returns rows with clip, audio_path, speaker, accents, duration (seconds), and the drops by reason
    (POOL_DROP_REASONS; the caps' at 0)."""
    rows, pool, _, pool_dropped = release_clips(data, locale_dir, unlabelled=True)
    return drop_labelled_speakers(pool, set(rows["speaker"]), pool_dropped), pool_dropped


def drop_labelled_speakers(pool: pd.DataFrame, speakers: set[str], dropped: Counter[str]) -> pd.DataFrame:
    heard = pool["speaker"].isin(speakers)
    dropped["labelled_speaker"] += int(heard.sum())
    return pool[~heard]


def cap_pool(pool: pd.DataFrame, max_clips: int, seed: int, dropped: Counter[str]) -> pd.DataFrame:
    """At most `max_clips` clips of whole speakers, drawn in a seeded random order of speakers (a speaker
    that would pass the budget is left out, and the next ones tried); the others counted as pool_cap."""
    counts = pool.groupby("speaker").size()
    order = counts.index[np.random.default_rng(seed).permutation(len(counts))]
    kept, total = [], 0
    for speaker in order:
        if total + counts[speaker] <= max_clips:
            kept.append(speaker)
            total += int(counts[speaker])
    keep = pool["speaker"].isin(kept)
    dropped["pool_cap"] += int((~keep).sum())
    return pool[keep]


def pool_metrics(pool: pd.DataFrame, dropped: Counter[str]) -> dict:
    """The unlabelled pool's clips, speakers and seconds, and what stayed out of it by reason."""
    return {"clips": len(pool), "speakers": int(pool["speaker"].nunique()),
            "seconds": round(float(pool["duration"].sum()), 1), "dropped": dict(dropped)}


def prepare(data: DataConfig, locale_dir: Path) -> tuple[pd.DataFrame, dict]:
    """The clip manifest of the release at `locale_dir`, and the stage metrics.

    Each step drops rows and counts them by reason (DROP_REASONS), so no row is lost unexplained.
    Returns a frame with manifest.COLUMNS (duration in seconds; split in SPLITS, or fold and
    dev_folds when cross-validated: `acento.corpus.manifest`) and {"clips": {part: {class: n}}, "speakers":
    {part: {class: n}}, "dropped": {reason: n}}, a part being a split or a test fold (`split_metrics`).
    """
    rows, pool, dropped, pool_dropped = release_clips(data, locale_dir, unlabelled=data.unlabelled_clips > 0)
    empty = [c for c in data.classes if c not in set(rows["label"])]
    if empty:
        raise StageError(f"{locale_dir}: no clip left for class(es) {', '.join(empty)} of data.classes (their accents "
                         "match no row, see the warnings above, or the filters dropped every one: "
                         f"{ {k: v for k, v in dropped.items() if v} }); correct their accents or remove the class(es)")
    rows, dropped["speaker_cap"] = cap_per_group(rows, "speaker", data.max_clips_per_speaker, data.seed)
    rows, dropped["class_cap"] = cap_per_group(rows, "label", data.max_clips_per_class, data.seed)
    rows = drop_small_classes(rows, data.min_speakers, dropped)
    if rows["label"].nunique() < 2:
        raise StageError(f"{locale_dir}: fewer than two classes left after filtering (dropped: "
                         f"{dict((k, v) for k, v in dropped.items() if v)}); check data.classes and data.tsvs")
    if data.split_by == "clip":
        rows = rows.assign(split=split_clips(rows, data), fold=-1, dev_folds=0)
    elif data.folds >= 2:
        fold, dev_folds = assign_folds(rows, data)
        rows = rows.assign(split="", fold=fold, dev_folds=dev_folds)
    else:
        rows = rows.assign(split=rows["speaker"].map(split_speakers(rows, data)), fold=-1, dev_folds=0)
    # The pool holds no speaker of the manifest's labelled clips (of any fold), so no test speaker is ever
    # pretrained or self-trained on; then the per-speaker cap, then data.unlabelled_clips.
    pool = drop_labelled_speakers(pool, set(rows["speaker"]), pool_dropped)
    pool, pool_dropped["speaker_cap"] = cap_per_group(pool, "speaker", data.max_clips_per_speaker, data.seed)
    pool = cap_pool(pool, data.unlabelled_clips, data.seed, pool_dropped)
    metrics = {**split_metrics(rows, dropped), "pool": pool_metrics(pool, pool_dropped)}
    pool = pool.assign(label="", split=POOL, fold=-1, dev_folds=0)
    # Within each split of any fold, clips stay in this order (label, speaker, clip), as the cache keeps it.
    rows = rows.sort_values(["split", "label", "speaker", "clip"])[COLUMNS]
    rows = pd.concat([rows, pool.sort_values(["speaker", "clip"])[COLUMNS]], ignore_index=True)
    return rows, metrics
