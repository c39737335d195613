"""Log-mels of many clips at once: a pool of worker processes, each with its own `LogMel`, results in
input order and a bounded window of clips in flight; one bad clip is returned as its `AudioError`, never
raised, so it stops nothing.  Used by the feature cache, `acento-predict` and the model's `classify`.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from acento.audio.decode import AudioError
from acento.audio.logmel import Analysis, LogMel
from acento.config import FeaturesConfig
from acento.errors import StageError
from acento.runtime import die_with_parent

_extractor: LogMel | None = None


def _init_worker(cfg: FeaturesConfig) -> None:
    global _extractor
    die_with_parent()  # a killed features, predict or score must not leave its decoders running
    _extractor = LogMel(cfg)
    # Parallelism comes from the processes. A multi-threaded BLAS on these small matrix products
    # only adds synchronisation: measured 5x slower per clip with 2 threads on 2 busy cores.
    threadpool_limits(1, user_api="blas")


class CachedClip(NamedTuple):
    frames: np.ndarray    # [frames, n_mels] in the cache's storage type
    total: np.ndarray     # per-mel sum of the float32 features
    total_sq: np.ndarray  # per-mel sum of squares


def _extract(path: str) -> Analysis | AudioError:
    """Runs in a worker; returns the error instead of raising so one bad clip stops nothing."""
    assert _extractor is not None
    try:
        return _extractor.analyse(path, path)
    except AudioError as exc:
        return exc


def _extract_for_cache(path: str) -> CachedClip | AudioError:
    """Also does the per-clip share of the writer's work (statistics, storage type) in the worker,
    so the single writer stays light and the workers scale."""
    result = _extract(path)
    if isinstance(result, AudioError):
        return result
    assert _extractor is not None
    feats = result.frames
    return CachedClip(feats.astype(_extractor.cfg.dtype), feats.sum(axis=0, dtype=np.float64),
                      np.square(feats, dtype=np.float64).sum(axis=0))


def extract_all(paths: list[str], cfg: FeaturesConfig, workers: int, for_cache: bool = False,
                one_worker_hint: str = "runtime.workers: 1 in params.yaml"
                ) -> Iterator[Analysis | CachedClip | AudioError]:
    """Analyses (or, `for_cache`, CachedClips) in input order; a bounded window of clips in flight.

    `one_worker_hint` says how the caller's user runs with one worker, should a decoder crash.
    """
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
                         f"again with one worker ({one_worker_hint}) to find the clip") from None
