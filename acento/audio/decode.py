"""Decoding any audio file to a mono float32 waveform at one sample rate, bounded in seconds.

libsndfile reads the formats (MP3 included); damaged or truncated MPEG streams are framed first
(`acento.audio.mpeg`); soxr resamples.  Every failure is an `AudioError` whose `reason` is the key it is
counted under in the metrics (FAILURE_REASONS).  The feature cache, the model and every app decode here.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from acento.audio import mpeg

# Float files nominally hold +-1; far beyond, squares overflow float32 in the trimming and the power.
MAX_SAMPLE = 1e6


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
