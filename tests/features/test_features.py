import dataclasses
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from acento.audio.decode import AudioError, load_audio
from acento.audio.logmel import LogMel, mel_filterbank, trim_bounds
from acento.errors import StageError
from acento.features.build import build_cache
from acento.features.cache import FORMAT_VERSION, SplitData
from tests.helpers import params, tone


def manifest(tmp_path, specs):
    """specs: (split, label, seconds, rate, channels) per clip; writes WAV/MP3 files as they say."""
    rows = []
    for i, (split, label, seconds, rate, channels) in enumerate(specs):
        path = tmp_path / f"clip{i}.mp3"
        sf.write(path, tone(seconds, rate=rate, freq=200 + 50 * i, channels=channels, seed=i), rate, format="MP3")
        rows.append({"clip": path.name, "audio_path": str(path), "speaker": f"spk{i % 3}", "label": label,
                     "split": split})
    return pd.DataFrame(rows)


BASIC = [("train", "a", 1.0, 48000, 1), ("train", "b", 1.5, 48000, 1), ("dev", "a", 1.2, 32000, 1),
         ("test", "b", 1.1, 44100, 2), ("train", "a", 2.0, 32000, 1)]


@pytest.mark.parametrize("workers", [1, 2])
def test_layout_shapes_dtypes_and_offsets(tmp_path, workers):
    cfg = params().features
    out = tmp_path / "features.h5"
    metrics = build_cache(manifest(tmp_path, BASIC), cfg, out, workers)
    assert metrics["clips"] == {"train": 3, "dev": 1, "test": 1}
    with h5py.File(out) as h5:
        assert json.loads(h5.attrs["classes"]) == ["a", "b"]
        assert json.loads(h5.attrs["features"]) == dataclasses.asdict(cfg)
        assert (h5.attrs["format"], h5.attrs["version"], h5.attrs["folds"]) == ("acento-features", 3, 0)
        g = h5["clips"]
        assert g["frames"].dtype == np.float16 and g["frames"].shape[1] == cfg.n_mels
        lengths, offsets = g["lengths"][()], g["offsets"][()]
        assert offsets[0] == 0 and (offsets[1:] == np.cumsum(lengths)[:-1]).all()
        assert lengths.sum() == len(g["frames"]) == sum(metrics["frames"].values())
        # every clip once, in manifest order, with its label, speaker and split
        assert g["clips"].asstr()[()].tolist() == [f"clip{i}.mp3" for i in range(5)]
        assert g["labels"][()].tolist() == [0, 1, 0, 1, 0]
        assert g["split"].asstr()[()].tolist() == ["train", "train", "dev", "test", "train"]
        assert g["fold"][()].tolist() == [-1] * 5 and g["speakers"].asstr()[()].tolist()[3] == "spk0"
        # statistics groups: one per speaker and split (spk0 train and test, spk1 train, spk2 dev)
        assert len(h5["stats/frames"]) == 4 and h5["stats/frames"][()].sum() == lengths.sum()
        # ~100 frames per second of (trimmed) audio at hop 160 / 16 kHz
        assert 180 <= lengths[4] <= 201
    with SplitData(out, "train") as train, SplitData(out, "test") as test:
        assert train.clips.tolist() == ["clip0.mp3", "clip1.mp3", "clip4.mp3"] and train.labels.tolist() == [0, 1, 0]
        assert test.speakers.tolist() == ["spk0"] and not train.lazy


def test_normalisation_statistics_come_from_train_only(tmp_path):
    cfg = params(**{"features.dtype": "float32"}).features
    out = tmp_path / "features.h5"
    build_cache(manifest(tmp_path, BASIC), cfg, out, 1)
    with SplitData(out, "train") as data, SplitData(out, "dev") as dev:
        train = np.concatenate([data.clip(i) for i in range(len(data))])
        np.testing.assert_allclose(data.mean, train.mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(data.std, train.std(0), rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(dev.mean, data.mean)  # every split of a fold carries its training statistics
    with h5py.File(out) as h5:
        everything = h5["clips/frames"][()]
    assert not np.allclose(data.mean, everything.mean(0), atol=1e-3)


# five test folds of one speaker each (two clips), as prepare writes them: fold, and the folds each speaker
# is a dev speaker for (bit f of dev_folds)
FOLDS = [(speaker, fold, dev_folds) for speaker, fold, dev_folds in
         (("s0", 0, 0b00010), ("s1", 1, 0b00100), ("s2", 2, 0b01000), ("s3", 3, 0b10000), ("s4", 4, 0b00001))]


def fold_manifest(tmp_path):
    rows = []
    for i, (speaker, fold, dev_folds) in enumerate(FOLDS * 2):
        path = tmp_path / f"f{i}.wav"
        sf.write(path, tone(0.5 + 0.1 * i, rate=16000, freq=200 + 90 * i, seed=i), 16000)
        rows.append({"clip": path.name, "audio_path": str(path), "speaker": speaker, "label": "ab"[i % 2],
                     "split": "", "fold": fold, "dev_folds": dev_folds})
    return pd.DataFrame(rows)


def test_one_cache_serves_every_fold_with_that_folds_training_statistics(tmp_path, monkeypatch):
    cfg = params(**{"features.dtype": "float32"}).features
    frame = fold_manifest(tmp_path)
    out = tmp_path / "features.h5"
    metrics = build_cache(frame, cfg, out, 1)
    assert metrics["clips"] == {f"fold{k}": 2 for k in range(5)}
    direct = {row.clip: LogMel(cfg).from_file(row.audio_path) for row in frame.itertuples()}
    for fold in range(5):
        speakers = {split: {s for s, f, d in FOLDS if (f == fold if split == "test" else
                                                         (d >> fold) & 1 if split == "dev" else
                                                         f != fold and not (d >> fold) & 1)}
                    for split in ("train", "dev", "test")}
        for lazy in (False, True):
            monkeypatch.setenv("ACENTO_IN_MEMORY_BYTES", "1" if lazy else str(1 << 30))
            for split in ("train", "dev", "test"):
                with SplitData(out, split, fold) as data:
                    assert data.lazy == lazy
                    expected = frame[frame["speaker"].isin(speakers[split])]["clip"].tolist()
                    assert data.clips.tolist() == expected, (fold, split)  # in manifest order
                    for i, clip in enumerate(data.clips):
                        np.testing.assert_allclose(data.clip(i), direct[clip], rtol=1e-5, atol=1e-5)
                    train = np.concatenate([direct[c] for c in frame[frame["speaker"].isin(speakers["train"])]["clip"]])
                    np.testing.assert_allclose(data.mean, train.mean(0), rtol=1e-4, atol=1e-4)
                    np.testing.assert_allclose(data.std, train.std(0), rtol=1e-3, atol=1e-3)
    # a learning curve: training speakers left out of the train split and of its statistics
    with SplitData(out, "train", 0, drop_speakers={"s2"}) as data:
        assert set(data.speakers) == {"s1", "s3"}  # fold 0: s0 test, s4 dev, s1-s3 train
        kept = np.concatenate([direct[c] for c in frame[frame["speaker"].isin({"s1", "s3"})]["clip"]])
        np.testing.assert_allclose(data.mean, kept.mean(0), rtol=1e-4, atol=1e-4)


def test_the_unlabelled_pool_is_cached_apart_from_every_fold_with_its_own_statistics(tmp_path):
    cfg = params(**{"features.dtype": "float32"}).features
    labelled = fold_manifest(tmp_path)
    pool = []
    for i in range(3):
        path = tmp_path / f"p{i}.wav"
        sf.write(path, tone(0.6 + 0.2 * i, rate=16000, freq=900 + 70 * i, seed=50 + i), 16000)
        pool.append({"clip": path.name, "audio_path": str(path), "speaker": f"u{i % 2}", "label": "",
                     "split": "pool", "fold": -1, "dev_folds": 0})
    frame = pd.concat([labelled, pd.DataFrame(pool)], ignore_index=True)
    with_pool, without = tmp_path / "with.h5", tmp_path / "without.h5"
    metrics = build_cache(frame, cfg, with_pool, 1)
    build_cache(labelled, cfg, without, 1)
    assert metrics["clips"] == {**{f"fold{k}": 2 for k in range(5)}, "pool": 3}
    for fold in range(5):
        for split in ("train", "dev", "test"):  # every fold's splits as without the pool
            with SplitData(with_pool, split, fold) as a, SplitData(without, split, fold) as b:
                assert a.clips.tolist() == b.clips.tolist() and a.classes == b.classes == ["a", "b"]
                np.testing.assert_array_equal(a.mean, b.mean)
        with SplitData(with_pool, "pool", fold) as data:
            assert data.clips.tolist() == ["p0.wav", "p1.wav", "p2.wav"] and (data.labels == -1).all()
            direct = np.concatenate([LogMel(cfg).from_file(tmp_path / c) for c in data.clips])
            np.testing.assert_allclose(data.mean, direct.mean(0), rtol=1e-4, atol=1e-4)
    with pytest.raises(StageError, match="the pool is empty"):
        SplitData(without, "pool", 0)


def test_a_fold_the_cache_lacks_or_an_old_cache_is_one_line_to_rebuild(tmp_path):
    out = tmp_path / "features.h5"
    build_cache(fold_manifest(tmp_path), params().features, out, 1)
    with pytest.raises(StageError, match=r"a cache of 5 cross-validation folds: it has no fold 5; set data.fold to "
                                         r"0 .. 4"):
        SplitData(out, "test", 5)
    with pytest.raises(StageError, match=r"5 cross-validation folds: give the test fold \(data.fold\)"):
        SplitData(out, "test")
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as h5:  # format 1: one group per split, the training statistics as attributes
        for split in ("train", "dev", "test"):
            h5.create_group(split)
        h5.attrs.update({"classes": "[]", "features": "{}", "mean": np.zeros(2), "std": np.ones(2)})
    with pytest.raises(StageError) as err:
        SplitData(old, "train")
    assert str(err.value) == (f"{old}: a feature cache of an older format (this version reads format {FORMAT_VERSION}); "
                              "rebuild: dvc repro --force features")


def test_features_match_a_direct_computation(tmp_path):
    cfg = params(**{"features.dtype": "float32"}).features
    frame = manifest(tmp_path, BASIC)
    build_cache(frame, cfg, tmp_path / "f.h5", 1)
    direct = LogMel(cfg).from_file(frame.audio_path[3])
    with SplitData(tmp_path / "f.h5", "test") as test:
        np.testing.assert_allclose(test.clip(0), direct, rtol=1e-5, atol=1e-5)


def test_corrupt_empty_and_missing_clips_are_skipped_and_counted(tmp_path):
    frame = manifest(tmp_path, BASIC * 8)
    (tmp_path / "corrupt.mp3").write_bytes(b"ID3 this is not audio" * 50)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    bad = pd.DataFrame([{"clip": n, "audio_path": str(tmp_path / n), "speaker": "x", "label": "a", "split": "train"}
                        for n in ("corrupt.mp3", "empty.wav", "missing.mp3", "silent.wav")])
    metrics = build_cache(pd.concat([frame, bad]), params(**{"features.max_failed_fraction": 0.2}).features,
                          tmp_path / "f.h5", 2)
    assert metrics["failed"] == {"missing_file": 1, "unsupported_format": 0, "unreadable_audio": 1, "empty_audio": 1,
                                 "too_short": 0, "silent_audio": 1}
    assert sum(metrics["clips"].values()) == len(frame)
    assert metrics["failed_clips"] == {"missing_file": ["missing.mp3"], "unreadable_audio": ["corrupt.mp3"],
                                       "empty_audio": ["empty.wav"], "silent_audio": ["silent.wav"]}


def test_too_many_failures_stop_the_stage_and_leave_no_output(tmp_path):
    frame = manifest(tmp_path, BASIC)
    frame.loc[1:2, "audio_path"] = str(tmp_path / "missing.mp3")
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    frame.loc[3, "audio_path"] = str(tmp_path / "silent.wav")
    with pytest.raises(StageError, match=r"3 of 5 clips failed \(missing_file 2, silent_audio 1\), more than "
                                         r"features.max_failed_fraction=0.05; e.g. .*missing.mp3: no such file; "
                                         r".*missing.mp3: no such file; .*silent.wav: no sound"):
        build_cache(frame, params().features, tmp_path / "f.h5", 1)
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".f.h5*")) == []


def test_interrupted_run_leaves_no_half_written_file(tmp_path, monkeypatch):
    import acento.features.cache as cache

    calls = {"n": 0}
    real_add = cache.CacheWriter.add

    def add_then_die(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_add(self, *args, **kwargs)

    monkeypatch.setattr(cache.CacheWriter, "add", add_then_die)
    out = tmp_path / "features.h5"
    out.write_bytes(b"previous complete output")
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest(tmp_path, BASIC), params().features, out, 1)
    assert out.read_bytes() == b"previous complete output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_any_rate_and_channel_count_is_resampled_to_mono(tmp_path):
    for rate, channels in ((32000, 1), (44100, 2), (48000, 1), (8000, 2)):
        path = tmp_path / f"x{rate}.wav"
        sf.write(path, tone(0.5, rate=rate, channels=channels), rate)
        y = load_audio(path, 16000)
        assert y.ndim == 1 and y.dtype == np.float32 and abs(len(y) - 8000) <= 1


def test_missing_file_reason(tmp_path):
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "nope.mp3", 16000)
    assert err.value.reason == "missing_file"


def test_power_features_and_crop(tmp_path):
    cfg = params(**{"features.log": False, "features.max_seconds": 0.5, "features.trim_silence": False}).features
    feats = LogMel(cfg)(tone(2.0, rate=16000))
    assert feats.shape == (51, cfg.n_mels) and (feats >= 0).all()


def _crash(path):
    import os
    os._exit(1)  # what a segfault in a C decoder looks like to the pool


def test_a_crashing_decoder_process_is_a_clear_error(tmp_path, monkeypatch):
    import acento.audio.extract as audio

    monkeypatch.setattr(audio, "_extract_for_cache", _crash)
    with pytest.raises(StageError, match="a decoding process died"):
        build_cache(manifest(tmp_path, BASIC), params().features, tmp_path / "f.h5", 2)
    assert list(tmp_path.glob("*.h5")) == []


def test_a_pure_tone_lands_in_the_mel_band_centred_on_its_frequency():
    import librosa

    cfg = params(**{"features.trim_silence": False}).features
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    for freq in (440.0, 1000.0, 3150.0):
        t = np.arange(16000) / 16000
        feats = LogMel(cfg)((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
        assert feats.shape == (101, cfg.n_mels)  # 1 s at hop 160 with centred frames
        assert int(feats[5:-5].mean(0).argmax()) == int(np.abs(centres - freq).argmin())


def test_log_mel_matches_librosa_melspectrogram_computed_directly(tmp_path):
    import librosa

    cfg = params(**{"features.trim_silence": False}).features
    audio = tone(1.3, rate=16000, freq=523.0, seed=3)
    expected = librosa.feature.melspectrogram(
        y=audio, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, power=2.0, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    expected = np.log(np.maximum(expected, 1e-10)).T
    got = LogMel(cfg)(audio)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_log_mel_and_trimming_match_librosa_on_real_clips(sample_clips):
    """Known answer: librosa's filterbank, `effects.trim` and `feature.melspectrogram` with the project's
    parameters, on MP3 clips of the sample at both of its rates."""
    import librosa

    cfg = params().features
    assert {sf.info(str(p)).samplerate for p in sample_clips} == {16000, 32000, 48000}
    np.testing.assert_allclose(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax),
                               librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                                   fmin=cfg.fmin, fmax=cfg.fmax), rtol=1e-5, atol=1e-9)
    extractor = LogMel(cfg)
    for path in sample_clips:
        audio = load_audio(path, cfg.sample_rate)
        _, (start, end) = librosa.effects.trim(audio, top_db=cfg.trim_top_db, frame_length=cfg.win_length,
                                               hop_length=cfg.hop_length)
        assert 0 < start < end < len(audio)  # the sample's clips have silence at both ends
        assert trim_bounds(audio, cfg.trim_top_db, cfg.win_length, cfg.hop_length) == (start, end), path.name
        expected = librosa.feature.melspectrogram(
            y=audio[start:end][:extractor.max_samples], sr=cfg.sample_rate, n_fft=cfg.n_fft,
            hop_length=cfg.hop_length, win_length=cfg.win_length, window="hann", center=True, power=2.0,
            n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        expected = np.log(np.maximum(expected, 1e-10)).T
        got = extractor(audio)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-3, path.name


def test_trimming_finds_a_tone_between_silences_and_keeps_an_all_quiet_clip_out():
    cfg = params().features
    rate, hop = cfg.sample_rate, cfg.hop_length
    audio = np.concatenate([np.zeros(rate // 2), tone(1.0, rate=rate), np.zeros(rate // 2)]).astype(np.float32)
    start, end = trim_bounds(audio, cfg.trim_top_db, cfg.win_length, hop)
    # the first loud frame is the last whose window (centred, win_length wide) still starts in silence
    assert abs(start - rate // 2) <= cfg.win_length and abs(end - 3 * rate // 2) <= cfg.win_length
    assert start % hop == 0 and end % hop == 0
    with pytest.raises(AudioError, match="silence"):
        LogMel(cfg)(np.zeros(rate, np.float32))


@pytest.mark.parametrize("bad, message", [(np.inf, "peak inf"), (np.nan, "peak nan"), (1e30, "peak 1e\\+30")])
def test_non_finite_or_huge_samples_are_refused_not_passed_to_the_model(tmp_path, bad, message):
    audio = tone(1.0, rate=16000)
    audio[4000] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=message) as err:
        LogMel(params().features).from_file(path)
    assert err.value.reason == "unreadable_audio"
