"""Stage `prepare`: from release TSVs to a labelled, filtered, speaker-disjoint manifest.

Accent identification is easy to fake: a model that recognises speakers scores well whenever a
speaker's clips fall on both sides of a split.  So the default split puts every `client_id` in
exactly one of train/dev/test; `data.split_by: clip` exists only to reproduce that inflated setup.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import soundfile as sf

from pipeline.commonvoice import SPANISH_PRESETS, read_durations, read_tsv, split_accents
from pipeline.config import DataConfig, Params
from pipeline.download import MANIFEST as RELEASE_MANIFEST
from pipeline.stage import StageError, atomic_path, run_stage, write_json

MANIFEST = Path("data/prepared/manifest.tsv")
METRICS = Path("metrics/data.json")
SPLITS = ("train", "dev", "test")
DROP_REASONS = ("malformed_row", "duplicate_clip", "down_voted", "no_accent", "unmapped_accent",
                "ambiguous_accent", "missing_file", "unknown_duration", "too_short", "too_long",
                "speaker_cap", "class_cap", "too_few_speakers")
COLUMNS = ["clip", "audio_path", "speaker", "accents", "label", "split", "duration"]


def classify(accents: list[str], accent_to_class: dict[str, str]) -> tuple[str | None, str | None]:
    """(class, None) for a usable row, else (None, drop reason)."""
    if not accents:
        return None, "no_accent"
    classes = {accent_to_class[a] for a in accents if a in accent_to_class}
    if not classes:
        return None, "unmapped_accent"
    if len(classes) > 1:
        return None, "ambiguous_accent"
    return classes.pop(), None


def _seeded_order(keys: pd.Series, seed: int, salt: str) -> pd.Series:
    """A deterministic pseudo-random rank per key, independent of row order and of other keys."""
    return pd.util.hash_pandas_object(keys.astype(str) + f"|{salt}|{seed}", index=False)


def cap_per_group(frame: pd.DataFrame, group: str, cap: int, seed: int) -> tuple[pd.DataFrame, int]:
    if cap <= 0:
        return frame, 0
    order = frame.assign(_rank=_seeded_order(frame["clip"], seed, group)).sort_values([group, "_rank"])
    kept = order.groupby(group, sort=False).head(cap).drop(columns="_rank")
    return frame.loc[frame.index.isin(kept.index)], len(frame) - len(kept)


def split_speakers(frame: pd.DataFrame, data: DataConfig, seed: int) -> dict[str, str]:
    """Assigns each speaker to one split, per class, so each split gets its share of clips.

    Speakers go largest first (ties in seeded random order) to the split furthest below its
    target, so a prolific speaker lands in train and dev/test still get several speakers.
    """
    fractions = {"train": data.split.train, "dev": data.split.dev, "test": data.split.test}
    counts = frame.groupby("speaker").agg(n=("clip", "size"), label=("label", lambda s: s.mode().iloc[0]))
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for label in sorted(counts["label"].unique()):
        speakers = counts[counts["label"] == label]
        order = sorted(speakers.index)
        rng.shuffle(order)
        order.sort(key=lambda s: -speakers.at[s, "n"])
        total = speakers["n"].sum()
        got = dict.fromkeys(SPLITS, 0)
        members: dict[str, list[str]] = {s: [] for s in SPLITS}
        for spk in order:
            target = max(SPLITS, key=lambda s: (fractions[s] * total - got[s]) / (fractions[s] * total))
            got[target] += speakers.at[spk, "n"]
            members[target].append(spk)
        for split in ("test", "dev"):  # every split gets a speaker when the class has enough of them
            if not members[split] and len(members["train"]) > 1:
                moved = min(members["train"], key=lambda s: speakers.at[s, "n"])
                members["train"].remove(moved)
                members[split].append(moved)
        for split, spks in members.items():
            assignment.update(dict.fromkeys(spks, split))
    return assignment


def split_clips(frame: pd.DataFrame, data: DataConfig, seed: int) -> pd.Series:
    """The original study's random clip split (speakers leak across splits): for comparison only."""
    rank = _seeded_order(frame["clip"], seed, "clip-split")
    pos = rank.groupby(frame["label"].values).rank(method="first").values - 1
    size = frame.groupby("label")["clip"].transform("size").values
    cut_train, cut_dev = data.split.train * size, (data.split.train + data.split.dev) * size
    return pd.Series(["train" if p < t else "dev" if p < d else "test" for p, t, d in
                      zip(pos, cut_train, cut_dev)], index=frame.index)


def prepare(params: Params, locale_dir: Path) -> tuple[pd.DataFrame, dict]:
    data, seed = params.data, params.train.seed
    dropped: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
    frames = []
    for name in data.tsvs:
        frame, malformed = read_tsv(locale_dir / name)
        dropped["malformed_row"] += malformed
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    before = len(rows)
    rows = rows.drop_duplicates(subset="path", keep="first")
    dropped["duplicate_clip"] += before - len(rows)

    down = pd.to_numeric(rows["down_votes"], errors="coerce").fillna(0)
    dropped["down_voted"] += int((down > data.max_down_votes).sum())
    rows = rows[down <= data.max_down_votes]

    accent_to_class = {a: cls for cls, accents in data.classes.items() for a in accents}
    known = set(SPANISH_PRESETS) | set(accent_to_class)
    parsed = [split_accents(a, known) for a in rows["accents"]]
    outcome = [classify(a, accent_to_class) for a in parsed]
    rows = rows.assign(accents=["|".join(a) for a in parsed], label=[c for c, _ in outcome])
    dropped.update(r for _, r in outcome if r)
    rows = rows[rows["label"].notna()]

    clips_dir = locale_dir / "clips"
    with os.scandir(clips_dir) as it:
        present = {e.name for e in it}
    exists = rows["path"].isin(present)
    dropped["missing_file"] += int((~exists).sum())
    rows = rows[exists]

    durations = read_durations(locale_dir)
    if durations is None:  # releases before 16.1: read each header (slow, but only once)
        durations = {}
        for clip in rows["path"]:
            try:
                info = sf.info(str(clips_dir / clip))
                durations[clip] = info.frames / info.samplerate
            except (sf.LibsndfileError, RuntimeError):
                pass
    seconds = rows["path"].map(durations)
    dropped["unknown_duration"] += int(seconds.isna().sum())
    dropped["too_short"] += int((seconds < data.min_seconds).sum())
    dropped["too_long"] += int((seconds > data.max_seconds).sum())
    rows = rows.assign(duration=seconds)[seconds.between(data.min_seconds, data.max_seconds)]

    rows = rows.rename(columns={"path": "clip", "client_id": "speaker"})
    rows, n = cap_per_group(rows, "speaker", data.max_clips_per_speaker, seed)
    dropped["speaker_cap"] += n
    rows, n = cap_per_group(rows, "label", data.max_clips_per_class, seed)
    dropped["class_cap"] += n

    speakers_per_class = rows.groupby("label")["speaker"].nunique()
    too_few = speakers_per_class[speakers_per_class < data.min_speakers]
    for label, n_spk in too_few.items():
        print(f"warning: class {label!r} has {n_spk} speaker(s), fewer than data.min_speakers="
              f"{data.min_speakers}: dropped", file=sys.stderr)
    dropped["too_few_speakers"] += int(rows["label"].isin(too_few.index).sum())
    rows = rows[~rows["label"].isin(too_few.index)]
    if rows["label"].nunique() < 2:
        raise StageError(f"{locale_dir}: fewer than two classes left after filtering (dropped: "
                         f"{dict((k, v) for k, v in dropped.items() if v)}); check data.classes and data.tsvs")

    if data.split_by == "speaker":
        rows = rows.assign(split=rows["speaker"].map(split_speakers(rows, data, seed)))
    else:
        rows = rows.assign(split=split_clips(rows, data, seed))
    rows = rows.assign(audio_path=[str(clips_dir / c) for c in rows["clip"]])
    rows = rows.sort_values(["split", "label", "speaker", "clip"])[COLUMNS].reset_index(drop=True)

    for label in sorted(rows["label"].unique()):
        missing = [s for s in SPLITS if not ((rows["label"] == label) & (rows["split"] == s)).any()]
        if missing:
            print(f"warning: class {label!r} has too few speakers to appear in {', '.join(missing)}",
                  file=sys.stderr)
    metrics = {
        "clips": {s: {c: int(n) for c, n in rows[rows["split"] == s]["label"].value_counts().sort_index().items()}
                  for s in SPLITS},
        "speakers": {s: {c: int(n) for c, n in rows[rows["split"] == s].groupby("label")["speaker"].nunique().items()}
                     for s in SPLITS},
        "dropped": dict(dropped),
    }
    return rows, metrics


def main(params: Params, args: argparse.Namespace) -> None:
    try:
        release = json.loads(Path(args.release).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{args.release}: not found; run the download stage first (dvc repro download)") from None
    rows, metrics = prepare(params, Path(release["root"]))
    with atomic_path(args.out) as tmp:
        rows.to_csv(tmp, sep="\t", index=False)
    write_json(args.metrics, metrics)
    totals = {s: sum(metrics["clips"][s].values()) for s in SPLITS}
    print(f"kept {len(rows)} clips ({', '.join(f'{s} {n}' for s, n in totals.items())}) of "
          f"{rows['speaker'].nunique()} speakers -> {args.out}; dropped: "
          f"{ {k: v for k, v in metrics['dropped'].items() if v} }")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", default=RELEASE_MANIFEST, help="manifest of the download stage")
    parser.add_argument("--out", default=MANIFEST, help=f"clip manifest to write (default: {MANIFEST})")
    parser.add_argument("--metrics", default=METRICS, help=f"metrics to write (default: {METRICS})")


if __name__ == "__main__":
    run_stage(__doc__.splitlines()[0], main, _arguments)
