"""Log-mel spectrograms: the STFT, the Slaney mel filterbank and silence trimming in numpy.

They reproduce librosa's `feature.melspectrogram` and `effects.trim` with their default settings
(tests/audio/test_logmel.py checks them against librosa), so classifying one clip does not pay librosa's
import of numba and scipy (~3 s on two cores).  The cache, the model file and every app compute
features here, driven by the feature parameters the cache and the model file both carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from acento.audio.decode import DECODE_SECONDS, AudioError, decode
from acento.audio.melscale import mel_filterbank
from acento.config import FeaturesConfig

LOG_FLOOR = 1e-10


TRIM_AMIN = 1e-10  # power floor of the trimming's dB scale (librosa's amplitude_to_db amin 1e-5, squared)


# A clip whose level (RMS around its mean, so a DC offset is no sound) is below this holds no speech:
# digital silence, an offset, dither or hiss.  Common Voice speech sits around -20 to -30 dBFS.
SILENCE_DBFS = -60.0


# --------------------------------------------------------------------------- log-mel, as librosa computes it
def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """[n_fft] float64: a periodic Hann window of `win_length` samples, centred in zeros (librosa's
    `get_window("hann", fftbins=True)` padded to n_fft)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left))


def centred_frames(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """[1 + len(audio) // hop_length, frame_length] view: frame t is centred on sample t * hop_length,
    the signal zero-padded by frame_length // 2 at both ends (librosa's center=True, pad_mode="constant")."""
    return sliding_window_view(np.pad(audio, frame_length // 2), frame_length)[::hop_length]


def power_spectrogram(audio: np.ndarray, window: np.ndarray, hop_length: int) -> np.ndarray:
    """[frames, n_fft // 2 + 1] float32 |STFT|^2 with centred frames; n_fft = len(window).
    The FFT runs in float64 (as librosa's, whose float64 window promotes the frames)."""
    spec = np.fft.rfft(centred_frames(audio, len(window), hop_length) * window, axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


def trim_bounds(audio: np.ndarray, top_db: float, frame_length: int, hop_length: int) -> tuple[int, int]:
    """[start, end) in samples of `audio` without its leading and trailing silence, by the rule of
    `librosa.effects.trim`: a centred frame is silent when its RMS is more than `top_db` below the
    loudest frame's.  Computed in the same order and precision, so the bounds agree to the sample."""
    frames = centred_frames(audio, frame_length, hop_length).T  # [frame_length, frames]: librosa's layout
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=0))
    db = 10.0 * np.log10(np.maximum(TRIM_AMIN, np.square(rms))) - 10.0 * np.log10(max(TRIM_AMIN, rms.max() ** 2))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * hop_length, min(len(audio), (int(loud[-1]) + 1) * hop_length)


class LogMel:
    """Log-mel spectrogram with the filterbank and window built once, not per clip."""

    def __init__(self, cfg: FeaturesConfig):
        self.cfg = cfg
        self.mel_basis_t = np.ascontiguousarray(
            mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).T)  # [bins, n_mels]
        self.window = hann_window(cfg.win_length, cfg.n_fft)
        self.max_samples = int(round(cfg.max_seconds * cfg.sample_rate))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """[frames, n_mels] float32 for a mono clip at the configured rate: silence trimmed, cropped
        to `max_seconds`, one frame per hop_length samples (plus one)."""
        cfg = self.cfg
        window_ms = 1000 * cfg.win_length / cfg.sample_rate
        if len(audio) < cfg.win_length:
            raise AudioError("too_short", f"{1000 * len(audio) / cfg.sample_rate:.0f} ms long, shorter than one "
                                          f"analysis window ({window_ms:.0f} ms)")
        level = 20 * np.log10(max(float(np.std(audio, dtype=np.float64)), 1e-12))
        if level < SILENCE_DBFS:
            raise AudioError("silent_audio", f"no sound (level {max(level, -240):.0f} dBFS, below "
                                             f"{SILENCE_DBFS:g}: silence, a DC offset or hiss)")
        if cfg.trim_silence:
            start, end = trim_bounds(audio, cfg.trim_top_db, cfg.win_length, cfg.hop_length)
            audio = audio[start:end]
            if len(audio) < cfg.win_length:
                raise AudioError("too_short", f"its sound lasts {1000 * len(audio) / cfg.sample_rate:.0f} ms, "
                                              f"shorter than one analysis window ({window_ms:.0f} ms)")
        audio = audio[: self.max_samples]
        mel = power_spectrogram(audio, self.window, cfg.hop_length) @ self.mel_basis_t
        if cfg.log:
            mel = np.log(np.maximum(mel, LOG_FLOOR))
        return np.ascontiguousarray(mel, dtype=np.float32)

    def from_file(self, path: str | Path) -> np.ndarray:
        """[frames, n_mels] of a file (its first DECODE_SECONDS); AudioError naming the file if unusable."""
        return self.analyse(str(path), str(path)).frames

    def analyse(self, source: str | Path | bytes | BinaryIO, name: str,
                max_seconds: float = DECODE_SECONDS) -> "Analysis":
        """Decodes at most `max_seconds` of `source` and computes its log-mels; AudioError naming it."""
        clip = decode(source, self.cfg.sample_rate, name, max_seconds)
        try:
            frames = self(clip.audio)
        except AudioError as exc:
            raise AudioError(exc.reason, f"{name}: {exc}") from None
        hop = self.cfg.hop_length / self.cfg.sample_rate
        return Analysis(frames, clip.seconds, len(clip.audio) / self.cfg.sample_rate, len(frames) * hop, clip.cropped)


class Analysis(NamedTuple):
    """A recording's log-mels and what they cover."""
    frames: np.ndarray        # [frames, n_mels] float32
    seconds: float            # the recording's true length
    decoded_seconds: float    # how much of it was decoded (all, or its first `max_seconds`)
    analysed_seconds: float   # what the features cover: silence trimmed, cropped to features.max_seconds
    cropped: bool             # True when only the first `max_seconds` were decoded

    def about(self) -> dict:
        """The fields `predict --json` and the service report for a classified recording."""
        return {"seconds": round(self.seconds, 2), "analysed_seconds": round(self.analysed_seconds, 2),
                "cropped": self.cropped}
