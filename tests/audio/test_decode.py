"""Decoding is one function of the bytes, not of the file's name or where the bytes come from; every
way a file can hold no usable audio gets its own reason."""

import io
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from acento.audio import mpeg
from acento.audio.decode import AudioError, audio_seconds, decode
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
