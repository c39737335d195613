"""Stage `features`: decode every clip once and cache its log-mel spectrogram in HDF5.

Decoding MP3 and computing mel spectrograms every epoch would dominate training time, so it is
done here, once, in parallel worker processes feeding a single writer.  Each split's frames are one
chunked `[frames, n_mels]` dataset with per-clip offsets and lengths (no dataset per clip), which
makes reading a training batch a handful of contiguous slices.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline.audio import AudioError, LogMel
from pipeline.config import FeaturesConfig, Params
from pipeline.prepare import MANIFEST, SPLITS
from pipeline.stage import StageError, atomic_path, run_stage, write_json

CACHE = Path("data/features/features.h5")
METRICS = Path("metrics/features.json")
FLUSH_FRAMES = 1 << 16  # frames buffered per split before a write (4 MB of float16 at 64 mels)
CHUNK_ROWS = 4096       # HDF5 chunk height: a 5 s clip spans one or two chunks

_extractor: LogMel | None = None


def _init_worker(cfg: FeaturesConfig) -> None:
    global _extractor
    _extractor = LogMel(cfg)
    # Parallelism comes from the processes. A multi-threaded BLAS on these small matrix products
    # only adds synchronisation: measured 5x slower per clip with 2 threads on 2 busy cores.
    threadpool_limits(1, user_api="blas")


class CachedClip(NamedTuple):
    frames: np.ndarray    # [frames, n_mels] in the cache's storage type
    total: np.ndarray     # per-mel sum of the float32 features
    total_sq: np.ndarray  # per-mel sum of squares


def _extract(path: str) -> np.ndarray | AudioError:
    """Runs in a worker; returns the error instead of raising so one bad clip stops nothing."""
    assert _extractor is not None
    try:
        return _extractor.from_file(path)
    except AudioError as exc:
        return exc


def _extract_for_cache(path: str) -> CachedClip | AudioError:
    """Also does the per-clip share of the writer's work (statistics, storage type) in the worker,
    so the single writer stays light and the workers scale."""
    feats = _extract(path)
    if isinstance(feats, AudioError):
        return feats
    assert _extractor is not None
    return CachedClip(feats.astype(_extractor.cfg.dtype), feats.sum(axis=0, dtype=np.float64),
                      np.square(feats, dtype=np.float64).sum(axis=0))


def extract_all(paths: list[str], cfg: FeaturesConfig, workers: int, for_cache: bool = False
                ) -> Iterator[np.ndarray | CachedClip | AudioError]:
    """Features (or, `for_cache`, CachedClips) in input order; a bounded window of clips in flight."""
    fn = _extract_for_cache if for_cache else _extract
    if workers <= 1:
        global _extractor
        _extractor = LogMel(cfg)
        with threadpool_limits(1, user_api="blas"):
            yield from map(fn, paths)
        return
    window = workers * 32
    chunk = 8
    try:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
            pending = []
            for start in range(0, len(paths), window):
                # keep two windows in flight: the workers never wait for the writer
                pending.append(pool.map(fn, paths[start:start + window], chunksize=chunk))
                if len(pending) == 2:
                    yield from pending.pop(0)
            for results in pending:
                yield from results
    except BrokenProcessPool:
        # A decoder crashing in C (not an exception) takes its process down; say how to find the clip.
        raise StageError("a decoding process died (a crash inside libsndfile or soxr on some clip); run "
                         "with one worker (features.workers: 1, or --workers 1) to find the clip") from None


class SplitWriter:
    """Appends clips of one split to its datasets; buffers frames to write in large blocks."""

    def __init__(self, group: h5py.Group, n_mels: int, dtype: str):
        self.frames = group.create_dataset("frames", shape=(0, n_mels), maxshape=(None, n_mels), dtype=dtype,
                                           chunks=(CHUNK_ROWS, n_mels))
        self.group, self.buffer, self.buffered, self.written = group, [], 0, 0
        self.lengths: list[int] = []
        self.labels: list[int] = []
        self.speakers: list[str] = []
        self.clips: list[str] = []

    def add(self, feats: np.ndarray, label: int, speaker: str, clip: str) -> None:
        self.buffer.append(feats)
        self.buffered += len(feats)
        self.lengths.append(len(feats))
        self.labels.append(label)
        self.speakers.append(speaker)
        self.clips.append(clip)
        if self.buffered >= FLUSH_FRAMES:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        block = np.concatenate(self.buffer)
        self.frames.resize(self.written + len(block), axis=0)
        self.frames[self.written:] = block
        self.written += len(block)
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        lengths = np.asarray(self.lengths, dtype=np.int64)
        self.group.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
                                  if len(lengths) else np.zeros(0, np.int64))
        self.group.create_dataset("lengths", data=lengths.astype(np.int32))
        self.group.create_dataset("labels", data=np.asarray(self.labels, dtype=np.int16))
        str_type = h5py.string_dtype()
        self.group.create_dataset("speakers", data=np.asarray(self.speakers, dtype=object), dtype=str_type)
        self.group.create_dataset("clips", data=np.asarray(self.clips, dtype=object), dtype=str_type)


def build_cache(manifest: pd.DataFrame, cfg: FeaturesConfig, out: Path, workers: int) -> dict:
    """Writes the cache atomically and returns the stage metrics."""
    classes = sorted(manifest["label"].unique())
    class_index = {c: i for i, c in enumerate(classes)}
    failed: Counter[str] = Counter({"missing_file": 0, "unreadable_audio": 0, "empty_audio": 0, "silent_audio": 0})
    clips = dict.fromkeys(SPLITS, 0)
    frames = dict.fromkeys(SPLITS, 0)
    total = np.zeros(cfg.n_mels, np.float64)
    total_sq = np.zeros(cfg.n_mels, np.float64)
    manifest = manifest.assign(_order=manifest["split"].map({s: i for i, s in enumerate(SPLITS)}))
    manifest = manifest.sort_values("_order", kind="stable")
    examples: list[str] = []
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as h5:
        writers = {s: SplitWriter(h5.create_group(s), cfg.n_mels, cfg.dtype) for s in SPLITS}
        results = extract_all(manifest["audio_path"].tolist(), cfg, workers, for_cache=True)
        rows = manifest[["label", "speaker", "clip", "split"]].itertuples(index=False)
        for row, result in tqdm(zip(rows, results), total=len(manifest), desc="features", unit="clip"):
            if isinstance(result, AudioError):
                failed[result.reason] += 1
                if len(examples) < 5:
                    examples.append(str(result))
                continue
            writers[row.split].add(result.frames, class_index[row.label], row.speaker, row.clip)
            clips[row.split] += 1
            frames[row.split] += len(result.frames)
            if row.split == "train":
                total += result.total
                total_sq += result.total_sq
        n_failed = sum(failed.values())
        if len(manifest) and n_failed / len(manifest) > cfg.max_failed_fraction:
            raise StageError(f"{n_failed} of {len(manifest)} clips failed ({dict(failed)}), more than "
                             f"features.max_failed_fraction={cfg.max_failed_fraction}; e.g. {examples[0]}")
        if frames["train"] == 0:
            raise StageError("no training clip could be read; check the manifest's audio paths")
        for writer in writers.values():
            writer.close()
        mean = total / frames["train"]
        std = np.sqrt(np.maximum(total_sq / frames["train"] - mean ** 2, 1e-8))
        h5.attrs["features"] = json.dumps(dataclasses.asdict(cfg))
        h5.attrs["classes"] = json.dumps(classes)
        h5.attrs["mean"] = mean.astype(np.float32)
        h5.attrs["std"] = std.astype(np.float32)
    seconds = sum(frames.values()) * cfg.hop_length / cfg.sample_rate
    if examples:
        print(f"skipped {n_failed} clip(s), e.g. {examples[0]}")
    return {"clips": clips, "frames": frames, "seconds_of_audio": round(seconds, 2), "failed": dict(failed)}


def resolve_workers(workers: int) -> int:
    return workers or len(os.sched_getaffinity(0))


def main(params: Params, args: argparse.Namespace) -> None:
    try:
        manifest = pd.read_csv(args.manifest, sep="\t", dtype={"speaker": str, "clip": str})
    except FileNotFoundError:
        raise StageError(f"{args.manifest}: not found; run the prepare stage first (dvc repro prepare)") from None
    cfg = params.features
    metrics = build_cache(manifest, cfg, Path(args.out), resolve_workers(cfg.workers))
    write_json(args.metrics, metrics)
    print(f"{sum(metrics['clips'].values())} clips, {metrics['seconds_of_audio']:.0f} s of audio -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default=MANIFEST, help=f"clip manifest (default: {MANIFEST})")
    parser.add_argument("--out", default=CACHE, help=f"HDF5 cache to write (default: {CACHE})")
    parser.add_argument("--metrics", default=METRICS, help=f"metrics to write (default: {METRICS})")


if __name__ == "__main__":
    run_stage(__doc__.splitlines()[0], main, _arguments)
