"""The Slaney mel scale and filterbank, as librosa builds them by default, in numpy alone.

Apart from `acento.audio.logmel` so that the parameter checks (`acento.config.check_features`) can ask
whether a filterbank has an empty band without importing the decoders.
"""

from __future__ import annotations

import numpy as np

# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_MEL_HZ_STEP = 200.0 / 3


_MEL_LOG_HZ = 1000.0


_MEL_LOG_START = _MEL_LOG_HZ / _MEL_HZ_STEP


_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MEL_LOG_START + np.log(np.maximum(hz, _MEL_LOG_HZ) / _MEL_LOG_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_LOG_HZ, log_part, hz / _MEL_HZ_STEP)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MEL_LOG_HZ * np.exp(_MEL_LOG_STEP * (np.maximum(mel, _MEL_LOG_START) - _MEL_LOG_START))
    return np.where(mel >= _MEL_LOG_START, log_part, mel * _MEL_HZ_STEP)


def mel_edges(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """(the FFT bins' frequencies [n_fft // 2 + 1], the bands' edges [n_mels + 2]) in Hz: band i rises from
    edge i to edge i + 1 and falls to edge i + 2."""
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    return bin_hz, mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32: triangles on the Slaney mel scale, each scaled to unit area
    (norm="slaney"), as `librosa.filters.mel` builds them by default."""
    bin_hz, edges = mel_edges(sample_rate, n_fft, n_mels, fmin, fmax)
    width = np.diff(edges)
    ramps = edges[:, None] - bin_hz[None, :]
    rising, falling = -ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def empty_mel_band(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> int | None:
    """The first band (0-based) of `mel_filterbank(...)` whose weights are all zero (no FFT bin strictly
    inside its triangle: too many bands for the FFT's resolution), or None; without building the
    filterbank (n_mels x bins), so any settings cost O(n_mels + bins)."""
    bin_hz, edges = mel_edges(sample_rate, n_fft, n_mels, fmin, fmax)
    inside = np.searchsorted(bin_hz, edges[2:], side="left") - np.searchsorted(bin_hz, edges[:-2], side="right")
    empty = np.flatnonzero(inside <= 0)
    return int(empty[0]) if empty.size else None
