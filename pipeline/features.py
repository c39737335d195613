"""Stage `features`: decode every clip once and cache its log-mel spectrogram in HDF5.

Decoding MP3 and computing mel spectrograms every epoch would dominate training time, so it is
done here, once, in parallel worker processes feeding a single writer (`pipeline.cache` owns the
file's layout).  A clip's features do not depend on its split: the cache holds each clip once with
its fold, and serves every `data.fold` (which `train` and `evaluate` read, not this stage).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.audio import FAILURE_REASONS, AudioError, extract_all
from pipeline.cache import CacheWriter
from pipeline.config import FeaturesConfig, Params
from pipeline.errors import StageError
from pipeline.manifest import SPLITS, read_manifest
from pipeline.paths import CLIP_MANIFEST, FEATURE_CACHE, FEATURES_METRICS
from pipeline.runtime import resolve_count
from pipeline.stage import atomic_path, progress, run_stage, write_json


LISTED_FAILURES = 20  # failed clips named per reason in the metrics


def build_cache(manifest: pd.DataFrame, cfg: FeaturesConfig, out: Path, workers: int) -> dict:
    """Writes the cache of `manifest`'s clips to `out` atomically, every clip once and in manifest order;
    returns the stage metrics.

    manifest: rows with `audio_path`, `label`, `speaker`, `clip`, and `split`, or `fold` and `dev_folds`
    when cross-validated (`pipeline.manifest`; a frame without `fold` is a manifest of one split);
    classes are its sorted labels.  workers: decoding processes (1 = in this process).  The metrics
    count clips and frames per part (each test fold "fold<k>", or each split), seconds of audio kept,
    failed clips by reason (`failed`) and the first LISTED_FAILURES of each reason by name
    (`failed_clips`: {reason: [clip]}).  Normalisation statistics are not fixed here: the cache keeps
    per-speaker sums, and the training split of each fold sums its own (`pipeline.cache`).
    """
    if "fold" not in manifest.columns:
        manifest = manifest.assign(fold=-1, dev_folds=0)
    manifest = manifest.assign(split=np.where(manifest["fold"] >= 0, "", manifest["split"]))
    classes = sorted(manifest["label"].unique())
    class_index = {c: i for i, c in enumerate(classes)}
    failed: Counter[str] = Counter(dict.fromkeys(FAILURE_REASONS, 0))
    parts = [f"fold{k}" for k in range(int(manifest["fold"].max()) + 1)] if (manifest["fold"] >= 0).any() \
        else list(SPLITS)
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


def run(params: Params, args: argparse.Namespace) -> None:
    manifest = read_manifest(args.manifest)
    metrics = build_cache(manifest, params.features, Path(args.out), resolve_count(params.runtime.workers))
    write_json(args.metrics, metrics)
    print(f"{sum(metrics['clips'].values())} clips, {metrics['seconds_of_audio']:.0f} s of audio -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default=CLIP_MANIFEST, help=f"clip manifest (default: {CLIP_MANIFEST})")
    parser.add_argument("--out", default=FEATURE_CACHE, help=f"HDF5 cache to write (default: {FEATURE_CACHE})")
    parser.add_argument("--metrics", default=FEATURES_METRICS,
                        help=f"metrics to write (default: {FEATURES_METRICS})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
