"""A model file is checked as params.yaml is, never scores log-mels of other settings, never holds or
gives non-finite numbers, and knows the speakers it learned from (issue #34)."""

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from acento.features.build import build_cache
from acento.features.cache import SplitData
from acento.model.accent_model import AccentModel, ModelFileError, speaker_hash
from acento.training.trainer import train
from pipeline.evaluate import main as evaluate_main
from tests.helpers import params, params_file, tiny, tone, untrained_model


def edited(path, tmp_path, edit):
    """A copy of model file `path` with `edit(contents)` applied, as a user or a bad disk could."""
    contents = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    edit(contents)
    out = tmp_path / "edited.pt"
    torch.save(contents, out)
    return out


@pytest.mark.parametrize("key, value, message", [
    ("hop_length", 0, "'features.hop_length' is 0; it must be >= 1"),
    ("n_fft", 1 << 30, "'features.n_fft' is 1073741824; it must be <= 65536"),
    ("win_length", 4096, "'features.win_length' (4096) must be <= 'features.n_fft' (512)"),
    ("log", "yes", "'features.log' must be bool, got 'yes'"),
])
def test_impossible_feature_settings_in_a_model_file_are_one_line(tmp_path, key, value, message):
    model = untrained_model(tmp_path / "m.pt")
    bad = edited(model, tmp_path, lambda c: c["features"].update({key: value}))
    with pytest.raises(ModelFileError) as err:
        AccentModel.load(bad)
    assert str(err.value) == (f"{bad}: impossible settings in the model file ({message}); the file is "
                              "damaged or edited, retrain it (dvc repro train)")


def test_n_mels_that_disagree_with_the_feature_settings_are_refused(tmp_path):
    bad = edited(untrained_model(tmp_path / "m.pt"), tmp_path, lambda c: c.update(n_mels=40))
    with pytest.raises(ModelFileError, match=r"\(n_mels 40 for features of 64 mel bands\)"):
        AccentModel.load(bad)


def test_non_finite_weights_are_never_loaded_nor_written(tmp_path):
    model = untrained_model(tmp_path / "m.pt")
    first = next(iter(torch.load(model, weights_only=True)["state_dict"]))
    bad = edited(model, tmp_path, lambda c: c["state_dict"][first].view(-1).__setitem__(0, float("nan")))
    with pytest.raises(ModelFileError) as err:
        AccentModel.load(bad)
    assert str(err.value) == (f"{bad}: 1 tensor(s) ({first}) hold not finite numbers (NaN or infinity): the model "
                              "would score nothing; the file is damaged or its training diverged, retrain it "
                              "(dvc repro train)")
    stats = edited(model, tmp_path, lambda c: c.update(std=torch.full_like(c["std"], float("inf"))))
    with pytest.raises(ModelFileError, match=r"1 tensor\(s\) \(std\) hold not finite"):
        AccentModel.load(stats)
    loaded = AccentModel.load(model)
    with torch.no_grad():
        next(loaded.network.parameters()).fill_(float("nan"))
    with pytest.raises(ModelFileError, match=r"no model file is written with them"):
        loaded.save(tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def tone_cache(folder, features_overrides=None, n=12):
    """A cache of `n` tone clips of classes high/low (the conftest cache's classes), 2 clips a speaker."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = "low" if i % 2 else "high"
        path = folder / f"c{i}.wav"
        sf.write(path, tone(0.6, rate=16000, freq=(250 if label == "low" else 900) + 7 * i, seed=i), 16000)
        rows.append({"clip": path.name, "audio_path": str(path), "speaker": f"s{i // 2}", "label": label,
                     "split": "train" if i < n - 4 else "dev" if i < n - 2 else "test"})
    out = folder / "features.h5"
    build_cache(pd.DataFrame(rows), params(**(features_overrides or {})).features, out, 1)
    return out


@pytest.mark.parametrize("override, difference", [
    ({"features.log": False}, "features.log True vs False"),
    ({"features.fmax": 6000.0}, "features.fmax 8000.0 vs 6000.0"),
    ({"features.n_mels": 40}, "features.n_mels 64 vs 40"),
])
def test_evaluate_refuses_a_cache_of_other_feature_settings_than_the_models(trained_model, tmp_path, capsys,
                                                                            override, difference):
    cache = tone_cache(tmp_path / "other", override)
    code = evaluate_main(["--params", str(params_file(tmp_path)), "--model-file", str(trained_model),
                          "--cache", str(cache), "--metrics", str(tmp_path / "eval.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"trained on log-mels of other feature settings than the feature cache {cache}'s ({difference})" in err
    assert not (tmp_path / "eval.json").exists()


def test_storage_type_is_not_a_difference(trained_model, tmp_path):
    cache = tone_cache(tmp_path / "f32", {"features.dtype": "float32"})
    with SplitData(cache, "test") as test:
        AccentModel.load(trained_model).check_features(test.classes, test.feature_config, "it")


def test_training_stops_on_a_non_finite_loss_and_writes_no_model(tmp_path):
    cache = tone_cache(tmp_path / "c")
    out = tmp_path / "model.pt"
    with pytest.raises(Exception) as err:  # lr 1e30: Adam's first step sends the weights past float32
        train(params(**tiny(epochs=3, **{"train.lr": 1e30, "train.grad_clip": 0.0})), cache, out, tmp_path / "live")
    assert str(err.value).startswith("training stopped at epoch 1: the loss is nan (not a finite number)")
    assert "Lower train.lr (now 1e+30) or set train.grad_clip > 0 (now 0)" in str(err.value)
    assert not out.exists()


def test_a_trained_model_lists_its_training_and_dev_speakers_hashed(trained_model, cache):
    model = AccentModel.load(trained_model)
    heard = set()
    for split in ("train", "dev"):
        with SplitData(cache, split) as data:
            heard |= {speaker_hash(s) for s in data.speakers}
    with SplitData(cache, "test") as test:
        unseen = {speaker_hash(s) for s in test.speakers}
    assert model.speaker_hashes == heard and len(heard) == 15 and not heard & unseen
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in heard)
    assert "s0" not in trained_model.read_bytes().decode("latin-1")  # hashes, not the ids
    assert speaker_hash("s0") == "ec18eac8d758b1eb"  # the first 16 hex digits of sha256(b"s0")


def test_an_ensemble_heard_every_members_speakers(tmp_path):
    a, b = (AccentModel.load(untrained_model(tmp_path / f"{n}.pt")) for n in "ab")
    a.speaker_hashes, b.speaker_hashes = frozenset({"1" * 16}), frozenset({"2" * 16})
    both = AccentModel.ensemble([a, b])
    both.save(tmp_path / "e.pt")
    assert AccentModel.load(tmp_path / "e.pt").speaker_hashes == {"1" * 16, "2" * 16}
    assert np.isfinite(both.predict_log_mels([np.zeros((20, 64), np.float32)])).all()


def test_dev_speakers_that_chose_the_epoch_count_as_heard(tmp_path):
    cache = tone_cache(tmp_path / "c")
    out = tmp_path / "model.pt"
    train(params(**tiny(epochs=1, **{"train.dev_speakers": "select"})), cache, out, tmp_path / "live")
    assert AccentModel.load(out).speaker_hashes == {speaker_hash(f"s{i}") for i in range(5)}  # s5: test


@pytest.mark.parametrize("section, key, value, message", [
    ("rnn", "hidden_size", 0, "'rnn.hidden_size' is 0; it must be >= 1"),
    ("rnn", "pooling", "sum", "'rnn.pooling' is 'sum'; allowed: last, mean, attention, stats, max"),
    ("normalise", "global_stats", 1, "'normalise.global_stats' must be bool, got 1"),
])
def test_impossible_network_settings_in_a_model_file_are_one_line(tmp_path, section, key, value, message):
    bad = edited(untrained_model(tmp_path / "m.pt"), tmp_path, lambda c: c[section].update({key: value}))
    with pytest.raises(ModelFileError) as err:
        AccentModel.load(bad)
    assert str(err.value) == (f"{bad}: impossible settings in the model file ({message}); the file is "
                              "damaged or edited, retrain it (dvc repro train)")


def test_finite_weights_that_score_nan_are_not_evaluated(trained_model, cache, tmp_path, capsys):
    """std 1e-44 is finite, but dividing by it overflows: the scores, not the file, show it."""
    bad = edited(trained_model, tmp_path, lambda c: c.update(std=torch.full_like(c["std"], 1e-44)))
    code = evaluate_main(["--params", str(params_file(tmp_path)), "--model-file", str(bad), "--cache", str(cache),
                          "--metrics", str(tmp_path / "eval.json"), "--predictions", str(tmp_path / "p.csv"),
                          "--confusion", str(tmp_path / "c.json"), "--png", str(tmp_path / "c.png"),
                          "--timing", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (f"error: {bad}: its scores of the test split are not finite numbers (NaN or "
                                         "infinity): the file is damaged or its training diverged; retrain it "
                                         "(dvc repro train)")
    assert not list(tmp_path.glob("*.json")) and not (tmp_path / "p.csv").exists()
