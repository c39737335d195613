"""Decoding and log-mel features, shared by the `features` stage and `predict`.

Both must compute exactly the same features, so they share this one implementation, driven by the
feature parameters that the HDF5 cache and the model file both carry.
"""

from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr

from pipeline.config import FeaturesConfig

LOG_FLOOR = 1e-10


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


def features_config(stored: str | dict) -> FeaturesConfig:
    """Rebuilds the feature parameters stored (as JSON) in the cache or a model file."""
    values = json.loads(stored) if isinstance(stored, str) else stored
    return FeaturesConfig(**values)
