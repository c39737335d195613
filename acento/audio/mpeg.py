"""Where an MPEG audio stream (MP3) starts in a file, and how long it really is, from its frame headers.

libsndfile decodes MP3 (through mpg123) but finds the stream only when it starts the file or follows
an ID3v2 tag directly, and it takes the length from a Xing/Info header or, without one, from the file
size and the first frame's bitrate (3-5x off for VBR files written by `lame -t`), and reads no further
than that length.  These functions, on bytes already in memory or memory-mapped, find the first real
frame after any tags, padding or junk, count the frames exactly, and build the Xing header that lets
libsndfile know the true length.  Frame header layout: ISO/IEC 11172-3 and 13818-3.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# kbit/s by [MPEG-1?][layer][index]; index 0 (free format) and 15 are not accepted
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


CONFIRM_FRAMES = 3  # consecutive consistent frames that make a sync word a stream, not chance bytes


SEARCH_BYTES = 1 << 20  # how far past the tags the first frame is looked for


class Frame(NamedTuple):
    version: int      # header bits: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer: int        # 1, 2 or 3
    sample_rate: int  # Hz
    samples: int      # samples per channel in the frame (384, 1152 or 576)
    length: int       # bytes, header included
    mono: bool
    crc: bool         # a 16-bit CRC follows the header

    def same_stream(self, other: "Frame") -> bool:
        return (self.version, self.layer, self.sample_rate) == (other.version, other.layer, other.sample_rate)


def parse_header(data, pos: int) -> Frame | None:
    """The frame whose 4-byte header starts at `pos` of `data` (bytes-like), or None if none does."""
    if pos + 4 > len(data):
        return None
    b0, b1, b2, b3 = data[pos], data[pos + 1], data[pos + 2], data[pos + 3]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 3
    if b0 != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer_bits == 0 or rate_index == 3 \
            or bitrate_index in (0, 15):
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    padding = (b2 >> 1) & 1
    if layer == 1:
        samples, length = 384, (12 * bitrate // rate + padding) * 4
    else:
        samples = 1152 if (layer == 2 or mpeg1) else 576
        length = samples // 8 * bitrate // rate + padding
    return Frame(version, layer, rate, samples, length, b3 >> 6 == 3, not b1 & 1)


def id3v2_end(data, pos: int = 0) -> int:
    """The offset just past the ID3v2 tags that start at `pos` (several may follow each other), or `pos`."""
    while len(data) >= pos + 10 and bytes(data[pos:pos + 3]) == b"ID3":
        version, flags, size_bytes = data[pos + 3], data[pos + 5], bytes(data[pos + 6:pos + 10])
        if version not in (2, 3, 4) or flags & 0x0F or any(b & 0x80 for b in size_bytes):
            break  # not an ID3v2.2-2.4 header (version, flags, synchsafe size): not a tag
        size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
        footer = 10 if data[pos + 5] & 0x10 else 0
        pos += 10 + size + footer
    return min(pos, len(data))


def is_stream_at(data, pos: int, confirm: int = CONFIRM_FRAMES) -> Frame | None:
    """The first frame at `pos` if `confirm` frames of one stream follow each other there (fewer when
    the data ends exactly after the last), else None."""
    first = frame = parse_header(data, pos)
    for _ in range(confirm - 1):
        if frame is None or (frame is not first and not frame.same_stream(first)):
            return None
        pos += frame.length
        if pos == len(data):
            return first
        frame = parse_header(data, pos)
    return first if frame is not None and frame.same_stream(first) else None


def find_stream(data, start: int = 0, search: int = SEARCH_BYTES) -> int | None:
    """Offset of the first MPEG audio frame at or after `start` (within `search` bytes) that begins
    a run of consistent frames, or None.  `data`: bytes, bytearray or mmap (searched without copying)."""
    end = min(len(data), start + search)
    pos = data.find(b"\xff", start, end)
    while pos >= 0:
        if is_stream_at(data, pos):
            return pos
        pos = data.find(b"\xff", pos + 1, end)
    return None


def side_info_offset(frame: Frame) -> int:
    """Bytes from the frame's start to where a Xing/Info tag sits (after the header, CRC and side info)."""
    side = (17 if frame.mono else 32) if frame.version == 3 else (9 if frame.mono else 17)
    return 4 + (2 if frame.crc else 0) + side


def has_length_tag(data, pos: int, frame: Frame) -> bool:
    """Whether the frame at `pos` is a Xing/Info or VBRI header frame, which carries the stream's length."""
    at = pos + side_info_offset(frame)
    return bytes(data[at:at + 4]) in (b"Xing", b"Info") or bytes(data[pos + 36:pos + 40]) == b"VBRI"


def count_frames(data, pos: int) -> tuple[int, int, bool]:
    """(frames, samples per channel, constant bitrate?) of the stream whose first frame is at `pos`:
    every frame header is read, up to the first byte that does not start a frame of the same stream (an
    ID3v1 or APE tag, the end of the data).  Exact for any bitrate mode; no audio is decoded."""
    first = parse_header(data, pos)
    frames = samples = 0
    bitrates = set()
    frame = first
    while frame is not None and frame.same_stream(first) and pos + frame.length <= len(data):
        frames += 1
        samples += frame.samples
        bitrates.add(data[pos + 2] >> 4)
        pos += frame.length
        frame = parse_header(data, pos)
    return frames, samples, len(bitrates) <= 1


def xing_frame(data, pos: int, frames: int) -> bytes:
    """A Xing header frame to put before the stream whose first frame is at `pos`: a silent frame
    shaped like that one (no CRC), holding only the number of audio frames that follow.  Decoders read
    the length from it and play no audio for it."""
    header = bytearray(data[pos:pos + 4])
    header[1] |= 1  # no CRC
    header[2] &= 0xFD  # no padding
    for bitrate_index in range(1, 15):  # the lowest bitrate whose frame holds the tag
        header[2] = (header[2] & 0x0F) | (bitrate_index << 4)
        frame = parse_header(bytes(header), 0)
        assert frame is not None
        at = side_info_offset(frame)
        if frame.length >= at + 12:
            break
    body = bytearray(frame.length)
    body[:4] = header
    body[at:at + 12] = b"Xing" + struct.pack(">II", 1, frames)  # flags: only the frame count
    return bytes(body)
