"""Stage `features`: decode every clip once and cache its log-mel spectrogram in HDF5.

Decoding MP3 and computing mel spectrograms every epoch would dominate training time, so it is
done here, once, in parallel worker processes feeding a single writer (`pipeline.cache` owns the
file's layout).
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
    """Writes the cache of `manifest`'s clips to `out` atomically; returns the stage metrics.

    manifest: rows with `audio_path`, `label`, `speaker`, `clip`, `split`; classes are its sorted
    labels.  workers: decoding processes (1 = in this process).  The metrics count clips and
    frames per split, seconds of audio kept, failed clips by reason (`failed`) and the first
    LISTED_FAILURES of each reason by name (`failed_clips`: {reason: [clip]}).  Normalisation statistics
    (per-mel mean and std) come from the training split only.
    """
    classes = sorted(manifest["label"].unique())
    class_index = {c: i for i, c in enumerate(classes)}
    failed: Counter[str] = Counter(dict.fromkeys(FAILURE_REASONS, 0))
    clips = dict.fromkeys(SPLITS, 0)
    frames = dict.fromkeys(SPLITS, 0)
    total = np.zeros(cfg.n_mels, np.float64)
    total_sq = np.zeros(cfg.n_mels, np.float64)
    manifest = manifest.assign(_order=manifest["split"].map({s: i for i, s in enumerate(SPLITS)}))
    manifest = manifest.sort_values("_order", kind="stable")
    failed_clips: dict[str, list[str]] = {r: [] for r in FAILURE_REASONS}  # at most LISTED_FAILURES each
    examples: list[str] = []
    with atomic_path(out, suffix=".h5") as tmp, CacheWriter(tmp, cfg.n_mels, cfg.dtype) as cache:
        results = extract_all(manifest["audio_path"].tolist(), cfg, workers, for_cache=True)
        rows = manifest[["label", "speaker", "clip", "split"]].itertuples(index=False)
        for row, result in progress(zip(rows, results), total=len(manifest), desc="features", unit="clip"):
            if isinstance(result, AudioError):
                failed[result.reason] += 1
                if len(failed_clips[result.reason]) < LISTED_FAILURES:
                    failed_clips[result.reason].append(row.clip)
                if len(examples) < 3:
                    examples.append(str(result))
                continue
            cache.add(row.split, result.frames, class_index[row.label], row.speaker, row.clip)
            clips[row.split] += 1
            frames[row.split] += len(result.frames)
            if row.split == "train":
                total += result.total
                total_sq += result.total_sq
        n_failed = sum(failed.values())
        if len(manifest) and n_failed / len(manifest) > cfg.max_failed_fraction:
            raise StageError(f"{n_failed} of {len(manifest)} clips failed ({_counts(failed)}), more than "
                             f"features.max_failed_fraction={cfg.max_failed_fraction}; e.g. {'; '.join(examples)}")
        if frames["train"] == 0:
            raise StageError("no training clip could be read; check the manifest's audio paths")
        mean = total / frames["train"]
        std = np.sqrt(np.maximum(total_sq / frames["train"] - mean ** 2, 1e-8))
        cache.finish(classes, cfg, mean, std)
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
