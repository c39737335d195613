"""Decoding is one function of the bytes, not of the file's name or where the bytes come from; every
way a file can hold no usable audio gets its own reason."""

import io
import os
import shutil
import socket
import struct
import subprocess
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acento.audio import mpeg
from acento.audio.decode import AudioError, audio_seconds, decode, not_a_file
from acento.audio.logmel import LogMel
from tests.helpers import params, tone

RATE = 16000


def mp3_bytes(seconds: float = 4.0, rate: int = 48000, seed: int = 0) -> bytes:
    """An MP3 as libsndfile (LAME) writes it: variable bitrate (a noisy first second), with an Info header."""
    y = tone(seconds, rate=rate, seed=seed)
    y[:rate] += 0.3 * np.random.default_rng(seed).standard_normal(rate).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, y, rate, format="MP3")
    return out.getvalue()


def without_length_tag(data: bytes) -> bytes:
    """The MP3 without its Xing/Info frame, as `lame -t` writes a VBR file."""
    pos = mpeg.id3v2_end(data)
    frame = mpeg.parse_header(data, pos)
    assert frame is not None and mpeg.has_length_tag(data, pos, frame)
    return data[:pos] + data[pos + frame.length:]


def id3_tag(body: bytes = b"", padding_outside: int = 0) -> bytes:
    """An ID3v2.3 tag holding `body` (size counts only it), then zero padding its size does not count."""
    size = len(body)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + synchsafe + body + b"\x00" * padding_outside


TITLE = b"TIT2" + struct.pack(">I", 6) + b"\x00\x00" + b"\x00hola!"


@pytest.fixture(scope="module")
def clean():
    return mp3_bytes()


# ---------------------------------------------------------------- the MPEG frame functions, with known answers
def test_a_header_is_parsed_with_its_known_length():
    # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, no padding, stereo: 144 * 128000 / 44100 = 417 bytes
    frame = mpeg.parse_header(b"\xff\xfb\x90\x64", 0)
    assert frame == mpeg.Frame(3, 3, 44100, 1152, 417, False, False)
    assert mpeg.parse_header(b"\xff\xfb\x92\x64", 0).length == 418  # padded
    assert mpeg.parse_header(b"\xff\xf3\x90\xc4", 0) == mpeg.Frame(2, 3, 22050, 576, 261, True, False)  # MPEG-2, 80 kbit/s
    for bad in (b"\xff\xfb\xf0\x64", b"\xff\xfb\x0c\x64", b"\xff\xeb\x90\x64", b"\xfe\xfb\x90\x64", b"\xff\xfb"):
        assert mpeg.parse_header(bad, 0) is None  # bad bitrate, bad rate, reserved version, no sync, short


def test_id3v2_tags_end_where_their_size_says():
    tag = id3_tag(TITLE)
    assert mpeg.id3v2_end(tag + b"xyz") == 10 + len(TITLE)
    assert mpeg.id3v2_end(tag + tag + b"xyz") == 2 * (10 + len(TITLE))  # two tags in a row
    assert mpeg.id3v2_end(b"ID3 this is not audio") == 0  # not a tag header
    assert mpeg.id3v2_end(b"\xff\xfb\x90\x64") == 0


def test_frames_are_counted_exactly(clean):
    pos = mpeg.id3v2_end(clean)
    frames, samples, constant = mpeg.count_frames(clean, pos)
    assert samples == frames * 1152 and not constant  # LAME's VBR
    with sf.SoundFile(io.BytesIO(clean)) as f:  # the Info header's count, less the encoder's delay and padding
        assert (frames - 1) * 1152 - 2 * 1152 < f.frames <= (frames - 1) * 1152
    assert mpeg.find_stream(b"\x00" * 4096 + clean) == 4096
    assert mpeg.find_stream(b"\xff\xfb\x90\x64" + b"\x00" * 5000) is None  # one sync word is not a stream
    noise = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    assert mpeg.find_stream(noise) is None  # ~4000 0xFF bytes, no run of three frames
    assert mpeg.find_stream(noise[:5000] + clean) == 5000


# ---------------------------------------------------------------- the same bytes, the same audio
@pytest.mark.parametrize("prefix", [b"", b"\x00" * 4096, id3_tag(TITLE, padding_outside=2048),
                                    id3_tag(TITLE) + b"\x00" * 300 + b"junk" * 50],
                         ids=["clean", "4 kB of zeros first", "ID3 and padding it does not count",
                              "ID3, zeros and junk"])
@pytest.mark.parametrize("name", ["clip.mp3", "clip.wav", "clip"])
def test_an_mp3_decodes_the_same_from_a_path_or_memory_whatever_precedes_it_or_its_name(
        tmp_path, clean, prefix, name):
    expected = decode(clean, RATE, "clean")
    path = tmp_path / name
    path.write_bytes(prefix + clean)
    for source in (str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        got = decode(source, RATE, name)
        np.testing.assert_array_equal(got.audio, expected.audio)
        assert got.seconds == expected.seconds == pytest.approx(4.0, abs=0.03)


def test_a_vbr_mp3_without_a_xing_header_is_read_whole_with_its_true_length(tmp_path, clean):
    data = without_length_tag(clean)
    with sf.SoundFile(io.BytesIO(data)) as f:  # what libsndfile alone says: an estimate from the first frame
        assert f.frames / f.samplerate < 2.0  # and it reads no further
    path = tmp_path / "vbr.mp3"
    path.write_bytes(data)
    assert audio_seconds(path) == pytest.approx(4.0, abs=0.06)
    whole = decode(str(path), RATE, "vbr.mp3")
    assert whole.seconds == pytest.approx(4.0, abs=0.06) and not whole.cropped
    assert len(whole.audio) / RATE == pytest.approx(whole.seconds, abs=1e-3)
    part = decode(data, RATE, "vbr.mp3", max_seconds=2.5)
    assert part.cropped and len(part.audio) == 2.5 * RATE and part.seconds == whole.seconds


def test_other_formats_keep_their_exact_lengths(tmp_path):
    for fmt, ext in (("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("AIFF", "aiff")):
        path = tmp_path / f"a.{ext}"
        sf.write(path, tone(1.25, rate=22050), 22050, format=fmt)
        assert audio_seconds(path) == pytest.approx(1.25, abs=1e-3), fmt
        assert len(decode(str(path), RATE, path.name).audio) == pytest.approx(1.25 * RATE, abs=2)


def test_decoding_a_long_recording_takes_memory_for_what_is_used_only(tmp_path):
    """The issue's 1-hour FLAC, scaled down: peak memory is the same for 30 s and 300 s files."""
    peaks = []
    for seconds in (30, 300):
        path = tmp_path / f"long{seconds}.flac"
        y = np.tile(tone(10.0, rate=44100, channels=2), (seconds // 10, 1))
        sf.write(path, y, 44100)
        del y
        tracemalloc.start()
        clip = decode(str(path), RATE, path.name, max_seconds=5.0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert clip.cropped and clip.seconds == pytest.approx(seconds)
    whole_300 = 300 * 44100 * 2 * 4  # bytes of the longer file decoded whole (float32 stereo)
    assert peaks[1] < 1.2 * peaks[0] + 1e6
    assert peaks[1] < whole_300 / 20


# ---------------------------------------------------------------- nothing to hear: the real reason
@pytest.mark.parametrize("data, reason, words", [
    (b"", "empty_audio", "empty file (0 bytes)"),
    (id3_tag(TITLE), "empty_audio", "nothing but an ID3 tag"),
    (id3_tag(TITLE, padding_outside=4096), "empty_audio", "nothing but an ID3 tag and padding"),
    (b"\x00" * 4096, "empty_audio", "nothing but zero bytes"),
], ids=["0 bytes", "ID3 tag only", "ID3 tag and padding", "zeros"])
def test_a_file_without_audio_is_empty_not_missing(tmp_path, data, reason, words):
    path = tmp_path / "clip.mp3"
    path.write_bytes(data)
    for source in (str(path), data):
        with pytest.raises(AudioError) as err:
            decode(source, RATE, "clip.mp3")
        assert err.value.reason == reason and words in str(err.value)


@pytest.mark.parametrize("audio, reason", [
    (tone(0.015, rate=RATE) * 3, "too_short"),                                       # a loud 15 ms tone
    (np.zeros(RATE, np.float32), "silent_audio"),                                     # digital silence
    (np.full(RATE, 0.25, np.float32), "silent_audio"),                                # a DC offset
    (1e-5 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32), "silent_audio"),  # dither
    (np.full(RATE, 0.25, np.float32) + 1e-5 * np.random.default_rng(1).standard_normal(RATE).astype(np.float32),
     "silent_audio"),                                                                  # offset and hiss
], ids=["15 ms tone", "zeros", "DC offset", "dither", "offset and hiss"])
def test_no_sound_or_too_little_of_it_is_never_analysed(audio, reason):
    with pytest.raises(AudioError) as err:
        LogMel(params().features)(audio.astype(np.float32))
    assert err.value.reason == reason


def test_an_unknown_container_is_unsupported_and_a_damaged_mp3_unreadable(tmp_path):
    m4a = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(range(256)) * 40
    with pytest.raises(AudioError) as err:
        decode(m4a, RATE, "voice.m4a")
    assert err.value.reason == "unsupported_format" and "voice.m4a" in str(err.value)
    with pytest.raises(AudioError) as err:
        decode(b"\xff\xfb" + b"garbage" * 100, RATE, "voice.MP3")
    assert err.value.reason == "unreadable_audio"


def test_constant_bitrate_mp3s_without_a_header_decode_as_libsndfile_alone_decodes_them(sample_clips):
    """The bundled sample's clips (CBR, no Xing/Info header): nothing is added, not a sample changes."""
    for path in sample_clips:
        data = path.read_bytes()
        pos = mpeg.id3v2_end(data)
        assert not mpeg.has_length_tag(data, pos, mpeg.parse_header(data, pos)) and mpeg.count_frames(data, pos)[2]
        alone, rate = sf.read(str(path), dtype="float32")
        got = decode(str(path), rate, path.name)
        np.testing.assert_array_equal(got.audio, alone)
        assert got.seconds == len(alone) / rate


@pytest.mark.parametrize("fmt", ["FLAC", "WAV"])
def test_an_id3_tag_before_other_formats_is_skipped_too(tmp_path, fmt):
    out = io.BytesIO()
    sf.write(out, tone(1.0, rate=RATE), RATE, format=fmt)
    expected = decode(out.getvalue(), RATE, "clean")
    got = decode(id3_tag(TITLE, padding_outside=100) + out.getvalue(), RATE, "tagged")
    np.testing.assert_array_equal(got.audio, expected.audio)


# ---------------------------------------------------------------- bounded by samples, whatever a header claims
def wav_with_header(rate: int, channels: int, frames: int = 800) -> bytes:
    """A small 16-bit WAV whose header says `rate` Hz and `channels` channels (as a damaged or hostile one may)."""
    out = io.BytesIO()
    sf.write(out, np.zeros((frames, channels), np.int16), 16000, format="WAV", subtype="PCM_16")
    data = bytearray(out.getvalue())
    struct.pack_into("<I", data, 24, rate)  # fmt chunk: sample rate, then bytes per second
    struct.pack_into("<I", data, 28, rate * channels * 2)
    return bytes(data)


@pytest.mark.parametrize("rate, channels, claim", [
    (2_000_000_000, 1, "1 channel(s) at 2000000000 Hz"),
    (500, 1, "1 channel(s) at 500 Hz"),
    (48000, 65, "65 channel(s) at 48000 Hz"),
], ids=["2 GHz", "500 Hz", "65 channels"])
def test_a_header_beyond_the_rate_or_channel_limits_is_refused_unread(rate, channels, claim):
    data = wav_with_header(rate, channels)
    for read in (lambda: decode(data, RATE, "odd.wav", 60.0), lambda: audio_seconds(data, "odd.wav")):
        with pytest.raises(AudioError) as err:
            read()
        assert err.value.reason == "unsupported_format"
        assert str(err.value).startswith(f"odd.wav: {claim}, beyond what acento reads (1000-384000 Hz, at most 64")
        assert "ffmpeg -i in.wav -ac 1" in str(err.value)


def test_the_limits_themselves_are_read():
    got = decode(wav_with_header(384_000, 64, frames=3840), RATE, "edge.wav")
    assert got.seconds == 0.01 and len(got.audio) == 160 and not got.audio.any()


def test_a_small_file_claiming_many_channels_at_a_high_rate_costs_memory_for_the_output_only(tmp_path):
    """An 8-channel 384 kHz FLAC, a pure tone on one channel and silence on the others: 10 s in under 2 MB.
    Decoded whole in one read it took 117 MiB (rate x channels x seconds x 4 bytes); now twice the 16 kHz
    output plus one 1 MiB block."""
    path = tmp_path / "wide.flac"
    y = np.zeros((384_000, 8), np.float32)
    y[:, 0] = 0.3 * np.sin(2 * np.pi * 500.0 * np.arange(384_000) / 384_000)
    with sf.SoundFile(path, "w", 384_000, 8, format="FLAC", subtype="PCM_16") as f:
        for _ in range(10):
            f.write(y)
    del y
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    clip = decode(str(path), RATE, path.name, max_seconds=10.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert clip.seconds == 10.0 and not clip.cropped and len(clip.audio) == 10 * RATE
    # the mono mix is the mean of the channels: one tone over eight channels is an eighth of its level
    assert np.sqrt(np.mean(clip.audio ** 2)) == pytest.approx(0.3 / np.sqrt(2) / 8, rel=0.01)
    output = 10 * RATE * 4
    assert peak < 2 * output + 2 * 2 ** 20, f"{peak / 2 ** 20:.1f} MiB"  # the whole read: 10*384000*8*4 = 117 MiB


# ---------------------------------------------------------------- streams whose header does not give their length
def streamed_flac(wav: Path, tool: str) -> bytes:
    """The FLAC an encoder writes to a pipe from a source of unknown length: STREAMINFO's sample count is 0."""
    if tool == "header zeroed":  # what a pipe leaves: total samples and MD5 unset, written here without a tool
        out = io.BytesIO()
        sf.write(out, sf.read(wav, dtype="int16")[0], RATE, format="FLAC", subtype="PCM_16")
        data = bytearray(out.getvalue())
        packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # rate, channels, bits, then 36 bits of samples
        data[18:26] = packed.to_bytes(8, "big")
        data[26:42] = bytes(16)
        return bytes(data)
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    raw = sf.read(wav, dtype="int16")[0].tobytes()  # raw samples on stdin: the encoder cannot know the length
    command = {"sox": ["sox", "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1", "-",
                       "-t", "flac", "-"],
               "ffmpeg": ["ffmpeg", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0",
                          "-f", "flac", "pipe:1"]}[tool]
    return subprocess.run(command, input=raw, capture_output=True, check=True).stdout


@pytest.mark.parametrize("tool", ["header zeroed", "sox", "ffmpeg"])
def test_a_flac_written_to_a_pipe_decodes_whole_with_its_length(tmp_path, tool):
    wav = tmp_path / "clip.wav"
    sf.write(wav, tone(2.5, rate=RATE, freq=300.0), RATE, subtype="PCM_16")
    data = streamed_flac(wav, tool)
    assert data[:4] == b"fLaC" and int.from_bytes(data[18:26], "big") & ((1 << 36) - 1) == 0  # length unknown
    path = tmp_path / "piped.flac"
    path.write_bytes(data)
    expected = decode(str(wav), RATE, "clip.wav")
    for source in (str(path), data):
        got = decode(source, RATE, "piped.flac")
        np.testing.assert_array_equal(got.audio, expected.audio)  # lossless: the same samples
        assert got.seconds == 2.5 and not got.cropped
    assert audio_seconds(path) == 2.5
    part = decode(data, RATE, "piped.flac", max_seconds=1.0)  # the rest is not decoded, so its length stays unknown
    assert len(part.audio) == RATE and part.cropped and part.seconds == 1.0


# ---------------------------------------------------------------- what is not a file is refused unopened
def test_links_to_nothing_loops_devices_sockets_and_folders_are_refused_and_a_fifo_is_not_opened(tmp_path):
    (tmp_path / "dangling.wav").symlink_to("gone.wav")
    (tmp_path / "loop1.wav").symlink_to("loop2.wav")
    (tmp_path / "loop2.wav").symlink_to("loop1.wav")
    (tmp_path / "folder.wav").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "fifo.wav")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.wav"))
        expected = {"dangling.wav": ("missing_file", "dangling.wav: a link to gone.wav, which does not exist"),
                    "loop1.wav": ("unreadable_audio", "loop1.wav: cannot be opened (Too many levels of symbolic "
                                                      "links)"),
                    "folder.wav": ("unsupported_format", "folder.wav: a link to a folder, not followed"),
                    "sock.wav": ("unsupported_format", "sock.wav: a socket, not an audio file"),
                    "null": ("unsupported_format", "null: a character device, not an audio file")}
        for name, (reason, words) in expected.items():
            path = "/dev/null" if name == "null" else tmp_path / name
            with pytest.raises(AudioError) as err:
                decode(str(path), RATE, name)
            assert (err.value.reason, str(err.value)[:len(words)]) == (reason, words)
        fifo = not_a_file(tmp_path / "fifo.wav", "fifo.wav")  # looked at, not opened: returns with no writer
        assert (fifo.reason, str(fifo)) == ("unsupported_format",
                                            "fifo.wav: a FIFO (named pipe), not an audio file; not read")
        assert not_a_file(tmp_path / "fifo.wav", "fifo.wav", allow_pipe=True) is None


def test_a_named_pipe_given_as_a_file_is_read_as_cat_reads_it(tmp_path):
    """`acento-predict <(curl ...)` gives a pipe: it is read whole (at most MAX_PIPE_BYTES), then decoded."""
    out = io.BytesIO()
    sf.write(out, tone(1.0, rate=RATE), RATE, format="WAV")
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(out.getvalue(),))
    writer.start()
    got = decode(str(fifo), RATE, "stream.wav")
    writer.join()
    np.testing.assert_array_equal(got.audio, decode(out.getvalue(), RATE, "memory").audio)
