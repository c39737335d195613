"""Decoding and log-mel features, shared by the `features` stage and `predict`.

Both must compute exactly the same features, so they share this one implementation, driven by the
feature parameters that the HDF5 cache and the model file both carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import librosa
import numpy as np
import soundfile as sf
import soxr
from threadpoolctl import threadpool_limits

from pipeline.config import FeaturesConfig
from pipeline.stage import StageError

LOG_FLOOR = 1e-10
FAILURE_REASONS = ("missing_file", "unreadable_audio", "empty_audio", "silent_audio")  # AudioError.reason


class AudioError(Exception):
    """A clip that cannot be used; `reason` is the key it is counted under in metrics."""

    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)  # both in args, so it pickles back from a worker process
        self.reason, self.message = reason, message

    def __str__(self) -> str:
        return self.message


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate`, whatever the file's rate, channel count or format."""
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing_file", f"{path}: no such file")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError("unreadable_audio", f"{path}: cannot decode ({exc})") from None
    if audio.size == 0:
        raise AudioError("empty_audio", f"{path}: no samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


class LogMel:
    """Log-mel spectrogram with the filterbank and window built once, not per clip."""

    def __init__(self, cfg: FeaturesConfig):
        self.cfg = cfg
        self.mel_basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                             fmin=cfg.fmin, fmax=cfg.fmax).astype(np.float32)
        self.max_samples = int(round(cfg.max_seconds * cfg.sample_rate))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """[frames, n_mels] float32 for a mono clip at the configured rate."""
        cfg = self.cfg
        if cfg.trim_silence:
            audio, _ = librosa.effects.trim(audio, top_db=cfg.trim_top_db, frame_length=cfg.win_length,
                                            hop_length=cfg.hop_length)
        audio = audio[: self.max_samples]
        if len(audio) < cfg.win_length or not np.any(audio):
            raise AudioError("silent_audio", "nothing but silence after trimming")
        spec = librosa.stft(audio, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                            window="hann", center=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = self.mel_basis @ power
        if cfg.log:
            mel = np.log(np.maximum(mel, LOG_FLOOR))
        return np.ascontiguousarray(mel.T, dtype=np.float32)

    def from_file(self, path: str | Path) -> np.ndarray:
        return self(load_audio(path, self.cfg.sample_rate))


# --------------------------------------------------------------------------- many clips in parallel

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


def extract_all(paths: list[str], cfg: FeaturesConfig, workers: int, for_cache: bool = False,
                one_worker_hint: str = "features.workers: 1 in params.yaml"
                ) -> Iterator[np.ndarray | CachedClip | AudioError]:
    """Features (or, `for_cache`, CachedClips) in input order; a bounded window of clips in flight.

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
