"""Decoding any audio file to a mono float32 waveform at one sample rate, bounded in samples.

libsndfile reads the formats (MP3 included); damaged or truncated MPEG streams are framed first
(`acento.audio.mpeg`); soxr resamples.  Every failure is an `AudioError` whose `reason` is the key it is
counted under in the metrics (FAILURE_REASONS).  The feature cache, the model and every app decode here.

Memory is bounded by what is kept, not by what a header claims: a header beyond MAX_CHANNELS channels or
outside MIN_RATE..MAX_RATE Hz is refused before anything is read, and the audio is read in blocks of
BLOCK_SAMPLES samples, each mixed down to mono and resampled as it arrives.  Decoding `max_seconds` holds
about 2 x max_seconds x sample_rate x 4 bytes (the output, while it is joined) plus one block (1 MiB):
under 10 MiB for the 60 s at 16 kHz that every app decodes, for any rate or channel count.
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


# Headers beyond these are refused (`unsupported_format`): studio recorders stop at 384 kHz, speech needs
# 16 kHz, and 64 channels is 7th-order ambisonics; a small file can claim far more (a silent FLAC or Ogg
# compresses to almost nothing), and resampling from an absurd rate would cost without end.
MIN_RATE, MAX_RATE = 1000, 384_000  # Hz
MAX_CHANNELS = 64


BLOCK_SAMPLES = 1 << 18  # samples (of all channels together) read at a time: 1 MiB of float32


UNKNOWN_FRAMES = 2 ** 63 - 1  # libsndfile's frame count of a stream whose header does not give it (SF_COUNT_MAX)


MAX_PIPE_BYTES = 256 * 2 ** 20  # read from a pipe (`acento-predict <(...)`) at most; a file is memory-mapped


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


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def not_a_file(path: str | Path, name: str, allow_pipe: bool = False) -> AudioError | None:
    """Why `path` is no file to decode, as the AudioError to report, or None for a regular file (or a link
    to one; a FIFO too with `allow_pipe`).  Only looked at, never opened, so a FIFO cannot block: missing or
    a link to nothing (`missing_file`), a loop of links or no permission (`unreadable_audio`), a folder,
    a device, a socket or a FIFO (`unsupported_format`)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return AudioError("missing_file", f"{name}: a link to {os.readlink(path)}, which does not exist")
        return AudioError("missing_file", f"{name}: no such file")
    except OSError as exc:  # ELOOP: a loop of links; EACCES; ENAMETOOLONG
        return AudioError("unreadable_audio", f"{name}: cannot be opened ({exc.strerror})")
    if stat.S_ISREG(mode) or (allow_pipe and stat.S_ISFIFO(mode)):
        return None
    if stat.S_ISDIR(mode) and os.path.islink(path):
        return AudioError("unsupported_format", f"{name}: a link to a folder, not followed; give the folder itself")
    return AudioError("unsupported_format", f"{name}: {_kind(mode)}, not an audio file; not read")


@contextlib.contextmanager
def _source_bytes(source: str | Path | bytes | BinaryIO, name: str) -> Iterator[Any]:
    """The bytes of `source`: as given, read from a file object or a pipe (at most MAX_PIPE_BYTES), or a
    file memory-mapped (not read).  A path that is a folder, device or socket is refused unopened; a FIFO
    is opened as `cat` opens it (waiting for its writer: `<(...)` in a shell)."""
    if isinstance(source, (bytes, bytearray)):
        yield source
        return
    if hasattr(source, "read"):
        yield source.read()  # type: ignore[union-attr]
        return
    problem = not_a_file(source, name, allow_pipe=True)
    if problem:
        raise problem
    try:
        fh = open(source, "rb")
    except FileNotFoundError:
        raise AudioError("missing_file", f"{name}: no such file") from None
    except OSError as exc:
        raise AudioError("unreadable_audio", f"{name}: cannot be opened ({exc.strerror})") from None
    with fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:  # a pipe, or nothing (mmap refuses an empty file)
            data = fh.read(MAX_PIPE_BYTES + 1)
            if len(data) > MAX_PIPE_BYTES:
                raise AudioError("unreadable_audio", f"{name}: more than {MAX_PIPE_BYTES >> 20} MiB from a pipe; "
                                                     "save it to a file and give that")
            yield data
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


class _Sequential(sf.SoundFile):
    """A SoundFile read front to back only.  soundfile seeks after every read to keep its own count of
    the position; libsndfile cannot seek in a FLAC stream whose header does not give its length (as an
    encoder writing to a pipe leaves it), though it reads it to the end."""

    def seekable(self) -> bool:
        return False


@contextlib.contextmanager
def _open(stream: _Stream, name: str) -> Iterator[_Sequential]:
    """The opened stream; AudioError for what libsndfile cannot open and for a rate or channel count
    beyond MIN_RATE..MAX_RATE Hz and MAX_CHANNELS (refused before anything is decoded)."""
    try:
        f = _Sequential(stream)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise _libsndfile_error(exc, name) from None
    with f:
        if not MIN_RATE <= f.samplerate <= MAX_RATE or not 1 <= f.channels <= MAX_CHANNELS:
            raise AudioError("unsupported_format",
                             f"{name}: {f.channels} channel(s) at {f.samplerate} Hz, beyond what acento reads "
                             f"({MIN_RATE}-{MAX_RATE} Hz, at most {MAX_CHANNELS} channels); a damaged header, or "
                             "convert it, e.g. `ffmpeg -i in.wav -ac 1 -ar 48000 out.flac`")
        try:
            yield f
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise _libsndfile_error(exc, name) from None


def _blocks(f: sf.SoundFile, frames: int | None) -> Iterator[np.ndarray]:
    """float32 [n, channels] blocks of at most BLOCK_SAMPLES samples, from the start up to `frames`
    frames or the end of the stream (None: the end, whatever the header says)."""
    step = max(1, BLOCK_SAMPLES // f.channels)
    while frames is None or frames > 0:
        wanted = step if frames is None else min(step, frames)
        block = f.read(wanted, dtype="float32", always_2d=True)
        if len(block):
            yield block
        if len(block) < wanted:  # the end of the stream
            return
        if frames is not None:
            frames -= wanted


def _known_frames(f: sf.SoundFile) -> int | None:
    return None if f.frames >= UNKNOWN_FRAMES else f.frames


def audio_seconds(source: str | Path | bytes | BinaryIO, name: str | None = None) -> float:
    """The true duration in seconds of a recording (from its frame count: MPEG frames counted one by
    one when there is no Xing/Info header), without decoding it, except a stream whose header does not
    give its length (a FLAC written to a pipe): that one is decoded, a block at a time, and its samples
    counted.  AudioError if it is not usable."""
    name = str(source) if name is None else name
    with _source_bytes(source, name) as data, _open(audio_stream(data, name), name) as f:
        frames = _known_frames(f)
        if frames is None:
            frames = sum(len(block) for block in _blocks(f, None))
        return frames / f.samplerate


def decode(source: str | Path | bytes | BinaryIO, sample_rate: int, name: str,
           max_seconds: float | None = None) -> Decoded:
    """Mono float32 at `sample_rate` Hz, whatever the format, rate or channel count of `source` (a path,
    bytes, or a binary file object such as an upload held in memory): the same bytes decode the same
    way, whatever the file is called.  `name` is only used in messages.  With `max_seconds`, no more
    than that much is decoded, and `seconds` is still the whole recording's true length (for a stream
    whose header does not give its length, as a FLAC written to a pipe, only what was decoded: at least
    `max_seconds` when `cropped`).

    Memory: the source's blocks (BLOCK_SAMPLES samples of all channels, 1 MiB) are mixed down
    and resampled as they are read, so the peak is about twice the output (max_seconds x sample_rate x 4
    bytes) plus one block, whatever the source's rate, channels or length.
    AudioError: missing or not a file, unsupported or damaged format, a rate or channel count beyond
    MIN_RATE..MAX_RATE Hz and MAX_CHANNELS, no samples, or samples not finite or beyond +-MAX_SAMPLE."""
    with _source_bytes(source, name) as data, _open(audio_stream(data, name), name) as f:
        rate, channels, total = f.samplerate, f.channels, _known_frames(f)
        limit = None if max_seconds is None else int(max_seconds * rate)
        wanted = limit if total is None else total if limit is None else min(limit, total)
        resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") \
            if rate != sample_rate else None
        parts, read = [], 0
        for block in _blocks(f, wanted):
            peak = max(float(block.max()), -float(block.min()))  # NaN if any is NaN; no copy of the block
            if not peak <= MAX_SAMPLE:  # a float file can hold NaN, infinity or anything; they would poison a batch
                raise AudioError("unreadable_audio", f"{name}: samples that are not finite or far beyond +-1 "
                                                     f"(peak {peak:g}, more than {MAX_SAMPLE:g})")
            mono = block.mean(axis=1) if channels > 1 else block[:, 0]
            parts.append(resampler.resample_chunk(mono) if resampler else mono)
            read += len(block)
        more = total is None and read == wanted and len(f.read(1, dtype="float32")) > 0
    if read == 0:
        raise AudioError("empty_audio", f"{name}: no audio samples")
    if resampler:
        parts.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    if total is None or read < wanted:  # no stated length, or the stream ended before it: what was read is its length
        total = read
    audio = np.concatenate(parts) if len(parts) > 1 else np.ascontiguousarray(parts[0], dtype=np.float32)
    return Decoded(audio, total / rate, read < total or more)


def load_audio(path: str | Path, sample_rate: int, max_seconds: float | None = DECODE_SECONDS) -> np.ndarray:
    """Mono float32 at `sample_rate` from a file, at most its first `max_seconds` (None: all of it)."""
    return decode(str(path), sample_rate, str(path), max_seconds).audio
