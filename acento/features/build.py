"""Building the HDF5 feature cache: every clip of a manifest decoded once (in worker processes), its
log-mels written by one writer (`acento.features.cache` owns the file's layout), failures counted by reason.

The `features` stage (pipeline/features.py) calls `build_cache`; cross-validation and the benchmarks
build caches the same way.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from acento.audio.decode import FAILURE_REASONS, AudioError
from acento.audio.extract import extract_all
from acento.config import FeaturesConfig
from acento.console import progress
from acento.corpus.manifest import POOL, SPLITS
from acento.errors import StageError
from acento.features.cache import UNLABELLED, CacheWriter
from acento.files import atomic_path

LISTED_FAILURES = 20  # failed clips named per reason in the metrics


def build_cache(manifest: pd.DataFrame, cfg: FeaturesConfig, out: Path, workers: int) -> dict:
    """Writes the cache of `manifest`'s clips to `out` atomically, every clip once and in manifest order;
    returns the stage metrics.

    manifest: rows with `audio_path`, `label`, `speaker`, `clip`, and `split`, or `fold` and `dev_folds`
    when cross-validated (`acento.corpus.manifest`; a frame without `fold` is a manifest of one split);
    classes are its sorted labels; rows of split "pool" (label "") are the unlabelled pool, cached with
    label UNLABELLED (-1) and counted as part "pool".  workers: decoding processes (1 = in this process).  The metrics
    count clips and frames per part (each test fold "fold<k>", or each split), seconds of audio kept,
    failed clips by reason (`failed`) and the first LISTED_FAILURES of each reason by name
    (`failed_clips`: {reason: [clip]}).  Normalisation statistics are not fixed here: the cache keeps
    per-speaker sums, and the training split of each fold sums its own (`acento.features.cache`).
    """
    if "fold" not in manifest.columns:
        manifest = manifest.assign(fold=-1, dev_folds=0)
    manifest = manifest.assign(split=np.where(manifest["fold"] >= 0, "", manifest["split"]))
    pooled = manifest["split"] == POOL
    classes = sorted(manifest.loc[~pooled, "label"].unique())
    class_index = {c: i for i, c in enumerate(classes)} | {"": UNLABELLED}
    failed: Counter[str] = Counter(dict.fromkeys(FAILURE_REASONS, 0))
    parts = [f"fold{k}" for k in range(int(manifest["fold"].max()) + 1)] if (manifest["fold"] >= 0).any() \
        else list(SPLITS)
    parts += [POOL] if pooled.any() else []
    clips, frames = dict.fromkeys(parts, 0), dict.fromkeys(parts, 0)
    failed_clips: dict[str, list[str]] = {r: [] for r in FAILURE_REASONS}  # at most LISTED_FAILURES each
    examples: list[str] = []
    with atomic_path(out, suffix=".h5") as tmp, CacheWriter(tmp, cfg.n_mels, cfg.dtype) as cache:
        results = extract_all(manifest["audio_path"].tolist(), cfg, workers, for_cache=True)
        rows = manifest[["label", "speaker", "clip", "split", "fold", "dev_folds"]].itertuples(index=False)
        for row, result in progress(zip(rows, results), total=len(manifest), desc="features", unit="clip"):
            if isinstance(result, AudioError):
                failed[result.reason] += 1
                if len(failed_clips[result.reason]) < LISTED_FAILURES:
                    failed_clips[result.reason].append(row.clip)
                if len(examples) < 3:
                    examples.append(str(result))
                continue
            cache.add(result.frames, class_index[row.label], row.speaker, row.clip, split=row.split,
                      fold=int(row.fold), dev_folds=int(row.dev_folds), total=result.total, total_sq=result.total_sq)
            part = f"fold{row.fold}" if row.fold >= 0 else row.split
            clips[part] += 1
            frames[part] += len(result.frames)
        n_failed = sum(failed.values())
        if len(manifest) and n_failed / len(manifest) > cfg.max_failed_fraction:
            raise StageError(f"{n_failed} of {len(manifest)} clips failed ({_counts(failed)}), more than "
                             f"features.max_failed_fraction={cfg.max_failed_fraction}; e.g. {'; '.join(examples)}")
        if sum(clips.values()) == 0:
            raise StageError("no clip could be read; check the manifest's audio paths")
        cache.finish(classes, cfg)
    seconds = sum(frames.values()) * cfg.hop_length / cfg.sample_rate
    if examples:
        print(f"skipped {n_failed} clip(s) ({_counts(failed)}), listed by reason in the metrics' failed_clips; "
              f"e.g. {examples[0]}")
    return {"clips": clips, "frames": frames, "seconds_of_audio": round(seconds, 2), "failed": dict(failed),
            "failed_clips": {r: c for r, c in failed_clips.items() if c}}


def _counts(failed: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in failed.items() if n)
