"""Decoding and log-mel features, shared by the `features` stage, `predict` and `serve`.

All must compute exactly the same features, so they share this one implementation, driven by the
feature parameters that the HDF5 cache and the model file both carry.  It needs only numpy,
libsndfile and soxr: the STFT, the Slaney mel filterbank and the silence trimming are written here
(they reproduce librosa's `feature.melspectrogram` and `effects.trim` with their default settings;
tests/test_features.py checks them against librosa), so predicting one clip does not pay
librosa's import of numba and scipy (~3 s on two cores).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import soundfile as sf
import soxr
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

from pipeline import mpeg
from pipeline.config import FeaturesConfig
from pipeline.errors import StageError

LOG_FLOOR = 1e-10
# Float files nominally hold +-1; far beyond, squares overflow float32 in the trimming and the power.
MAX_SAMPLE = 1e6
TRIM_AMIN = 1e-10  # power floor of the trimming's dB scale (librosa's amplitude_to_db amin 1e-5, squared)
# A clip whose level (RMS around its mean, so a DC offset is no sound) is below this holds no speech:
# digital silence, an offset, dither or hiss.  Common Voice speech sits around -20 to -30 dBFS.
SILENCE_DBFS = -60.0
# Decoding reads at most this much of a recording (silence trimming looks no further); the rest is
# never decoded, so a long file costs no more memory than a short one.  Training clips are far shorter.
DECODE_SECONDS = 60.0
FAILURE_REASONS = ("missing_file", "unsupported_format", "unreadable_audio", "empty_audio", "too_short",
                   "silent_audio")  # AudioError.reason
# Names of formats libsndfile reads: a file so named that it cannot read is damaged, not unsupported
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".aifc", ".au", ".caf",
                  ".w64", ".rf64", ".wv")
# Containers libsndfile recognises by their first bytes: no MPEG stream is looked for in them.
CONTAINER_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b".snd", b"caff", b"wvpk",
                   b"riff", b"MAC ", b"ajkg")


_NONZERO = re.compile(rb"[^\x00]")


class AudioError(Exception):
    """A clip that cannot be used; `reason` is the key it is counted under in metrics."""

    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)  # both in args, so it pickles back from a worker process
        self.reason, self.message = reason, message

    def __str__(self) -> str:
        return self.message

    def report(self) -> str:
        """The reason and the message, as `predict --json` and `serve` report a file that failed."""
        return f"{self.reason}: {self.message}"


class Decoded(NamedTuple):
    audio: np.ndarray  # mono float32 at the requested rate
    seconds: float     # duration of the whole source, cropped or not (exact: see `open_audio`)
    cropped: bool      # True when the source was longer than `max_seconds` and only its start was read


class _Stream:
    """A read-only file object over `head` followed by data[start:] (bytes or an mmap), for libsndfile."""

    def __init__(self, data, start: int = 0, head: bytes = b""):
        self.data, self.start, self.head, self.pos = data, start, head, 0
        self.size = len(head) + len(data) - start

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, (0, self.pos, self.size)[whence] + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = max(0, self.size - self.pos) if n < 0 else max(0, min(n, self.size - self.pos))
        out = self.head[self.pos:self.pos + n]
        if len(out) < n:
            at = self.start + self.pos + len(out) - len(self.head)
            out += self.data[at:at + n - len(out)]
        self.pos += len(out)
        return out

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)


@contextlib.contextmanager
def _source_bytes(source: str | Path | bytes | BinaryIO, name: str) -> Iterator[Any]:
    """The bytes of `source`: as given, read from a file object, or a file memory-mapped (not read)."""
    if isinstance(source, (bytes, bytearray)):
        yield source
        return
    if hasattr(source, "read"):
        yield source.read()  # type: ignore[union-attr]
        return
    try:
        fh = open(source, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise AudioError("missing_file", f"{name}: no such file") from None
    except OSError as exc:
        raise AudioError("unreadable_audio", f"{name}: cannot be opened ({exc.strerror})") from None
    with fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            yield fh.read()  # a pipe, or nothing (mmap refuses an empty file)
            return
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield mapped
        finally:
            mapped.close()


def audio_stream(data, name: str) -> _Stream:
    """The audio in `data` as libsndfile can open it, whatever the file's name or what precedes it.

    ID3v2 tags are skipped, with any padding or junk after them that their size does not count; in a
    file that is no container libsndfile knows by its first bytes, the first run of MPEG frames is
    looked for.  A variable-bitrate MPEG stream without a Xing/Info header gets one holding its exact
    frame count (every frame header is read), so libsndfile neither stops early nor reports a length
    estimated from the first frame's bitrate; a constant-bitrate one is left as it is (its size gives
    its length, and mpg123 then keeps its first 529 samples as it always did).
    AudioError("empty_audio") for a file with no bytes, or nothing but tags and padding.
    """
    if len(data) == 0:
        raise AudioError("empty_audio", f"{name}: empty file (0 bytes), no audio")
    start = mpeg.id3v2_end(data)
    if start:  # zero padding a tag's size does not count
        found = _NONZERO.search(data, start)
        if found is None:
            padded = " and padding" if start < len(data) else ""
            raise AudioError("empty_audio", f"{name}: no audio (nothing but an ID3 tag{padded})")
        start = found.start()
    if bytes(data[start:start + 4]) in CONTAINER_MAGIC:
        return _Stream(data, start)
    pos = start if mpeg.is_stream_at(data, start) else mpeg.find_stream(data, start)
    if pos is None:
        rest = bytes(data[start:start + mpeg.SEARCH_BYTES])
        if len(data) - start <= mpeg.SEARCH_BYTES and not rest.strip(b"\0"):
            raise AudioError("empty_audio", f"{name}: no audio (nothing but zero bytes)")
        return _Stream(data, start)  # libsndfile says what it makes of it
    if mpeg.has_length_tag(data, pos, mpeg.parse_header(data, pos)):
        return _Stream(data, pos)
    frames, _, constant = mpeg.count_frames(data, pos)
    if constant:  # every frame has the first one's bitrate: libsndfile's length from the file size is right
        return _Stream(data, pos)
    return _Stream(data, pos, mpeg.xing_frame(data, pos, frames))


def _libsndfile_error(exc: Exception, name: str) -> AudioError:
    why = getattr(exc, "error_string", None) or str(exc)  # libsndfile's reason, without its name for the source
    if "Format not recognised" in why and Path(name).suffix.lower() not in AUDIO_SUFFIXES:
        return AudioError("unsupported_format", f"{name}: not an audio format acento reads (WAV, FLAC, MP3, "
                                                "OGG Vorbis/Opus, AIFF, ...); convert it, e.g. `ffmpeg -i "
                                                "in.m4a out.flac`")
    return AudioError("unreadable_audio", f"{name}: not readable as audio ({why})")


def audio_seconds(source: str | Path | bytes | BinaryIO, name: str | None = None) -> float:
    """The true duration in seconds of a recording (from its frame count: MPEG frames counted one by
    one when there is no Xing/Info header), without decoding it; AudioError if it is not usable."""
    name = str(source) if name is None else name
    with _source_bytes(source, name) as data:
        try:
            with sf.SoundFile(audio_stream(data, name)) as f:
                return f.frames / f.samplerate
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise _libsndfile_error(exc, name) from None


def decode(source: str | Path | bytes | BinaryIO, sample_rate: int, name: str,
           max_seconds: float | None = None) -> Decoded:
    """Mono float32 at `sample_rate`, whatever the format, rate or channel count of `source` (a path,
    bytes, or a binary file object such as an upload held in memory): the same bytes decode the same
    way, whatever the file is called.  `name` is only used in messages.  With `max_seconds`, no more
    than that much is decoded (libsndfile reads blocks: memory does not grow with the file's length);
    `seconds` is still the whole recording's true length."""
    with _source_bytes(source, name) as data:
        stream = audio_stream(data, name)
        try:
            with sf.SoundFile(stream) as f:
                rate, total = f.samplerate, f.frames
                limit = -1 if max_seconds is None else int(max_seconds * rate)
                wanted = limit if 0 <= limit < total else total
                audio = f.read(wanted, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise _libsndfile_error(exc, name) from None
    if len(audio) < wanted:  # the stream ended before its stated length: what was read is its length
        total = len(audio)
    if audio.size == 0:
        raise AudioError("empty_audio", f"{name}: no audio samples")
    peak = float(np.abs(audio).max())
    if not peak <= MAX_SAMPLE:  # a float file can hold NaN, infinity or anything; they would poison a batch
        raise AudioError("unreadable_audio", f"{name}: samples that are not finite or far beyond +-1 "
                                             f"(peak {peak:g}, more than {MAX_SAMPLE:g})")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return Decoded(np.ascontiguousarray(mono, dtype=np.float32), total / rate, len(audio) < total)


def load_audio(path: str | Path, sample_rate: int, max_seconds: float | None = DECODE_SECONDS) -> np.ndarray:
    """Mono float32 at `sample_rate` from a file, at most its first `max_seconds` (None: all of it)."""
    return decode(str(path), sample_rate, str(path), max_seconds).audio


# --------------------------------------------------------------------------- log-mel, as librosa computes it
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


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32: triangles on the Slaney mel scale, each scaled to unit area
    (norm="slaney"), as `librosa.filters.mel` builds them by default."""
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # Hz, band i spans i..i+2
    width = np.diff(edges)
    ramps = edges[:, None] - bin_hz[None, :]
    rising, falling = -ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


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
