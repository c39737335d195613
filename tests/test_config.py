import dataclasses

import pytest
import yaml

from acento.config import ConfigError, apply_overrides, load_params, parse_params
from tests.helpers import ROOT, params


def raw_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_project_params_load_as_written():
    p = load_params(ROOT / "params.yaml")
    # every value of the file, and nothing else, reaches the typed parameters
    assert dataclasses.asdict(p) == raw_params()
    assert set(p.data.classes) == {"norte", "sur", "mexico", "caribe", "andino", "rioplatense", "chileno"}
    assert p.data.classes["mexico"] == ["México"]
    # a float key written as an integer in YAML becomes a float
    assert type(parse_params({**raw_params(), "features": {**raw_params()["features"], "fmax": 8000}}).features.fmax) \
        is float


def test_overrides_leave_their_input_as_it_was():
    raw = raw_params()
    before = yaml.safe_dump(raw)
    changed = apply_overrides(raw, {"model": "gru", "rnn.hidden_size": 7})
    assert (changed["model"], changed["rnn"]["hidden_size"]) == ("gru", 7)
    assert yaml.safe_dump(raw) == before
    with pytest.raises(ConfigError, match="override 'rnn.nope': no such key"):
        apply_overrides(raw, {"rnn.nope": 1})
    with pytest.raises(ConfigError, match="override 'nope.x': no section 'nope'"):
        apply_overrides(raw, {"nope.x": 1})


@pytest.mark.parametrize("dotted, value, message", [
    ("model", "transformer", "'model' is 'transformer'; allowed: lstm, gru"),
    ("train.lr", "fast", "'train.lr' must be float"),
    ("train.epochs", 0, "'train.epochs' is 0; it must be >= 1"),
    ("train.early_stopping_patience", -1, "'train.early_stopping_patience' is -1; it must be >= 0"),
    ("data.split_by", "random", "'data.split_by' is 'random'; allowed: speaker, clip"),
    ("rnn.pooling", "min", "'rnn.pooling' is 'min'; allowed: last, mean, attention"),
    ("features.dtype", "int8", "'features.dtype'"),
    ("data.split.test", 0.5, "must sum to 1"),
    ("features.win_length", 4096, "'features.win_length' (4096) must be <= 'features.n_fft'"),
    ("features.fmax", 9000.0, "fmin < fmax <= sample_rate/2"),
    ("rnn.head_hidden", [64, "x"], "'rnn.head_hidden[1]' must be int"),
    ("data.sha256", "abc", "'data.sha256' must be 64 hex digits"),
    ("train.seed", -1, "'train.seed' is -1; it must be >= 0"),
    ("data.seed", -5, "'data.seed' is -5; it must be >= 0"),
    ("data.tsvs", [], "'data.tsvs' must list at least 1 item(s)"),
    ("rnn.head_hidden", [64, -1], "'rnn.head_hidden[1]' is -1; it must be >= 1"),
    ("runtime.device", "tpu", "'runtime.device' is 'tpu'; allowed: auto, cpu, cuda"),
    ("train.dev_speakers", "test", "'train.dev_speakers' is 'test'; allowed: select, train"),
    # values of the right type that make no sense with the others
    ("features.n_mels", 300, "'features.n_mels' is 300; an FFT of 'features.n_fft' 512 points has 257 frequency "
                             "bins, so at most 257 mel bands"),
    ("features.n_mels", 200, "'features.n_mels' is 200, but mel band 5 (from 0) holds no FFT bin (one every "
                             "31.25 Hz with 'features.n_fft' 512)"),
    ("features.hop_length", 401, "'features.hop_length' (401) must be <= 'features.win_length' (400): a longer "
                                 "hop skips the samples between windows"),
    ("features.max_seconds", 0.02, "'features.max_seconds' is 0.02; a crop shorter than one analysis window "
                                   "(25 ms: 'features.win_length' 400 at 16000 Hz) leaves every clip one frame"),
    ("train.specaugment.freq_width", 64, "'train.specaugment.freq_width' is 64; it must be below 'features.n_mels' "
                                         "(64)"),
    ("train.augment.freq_shift", 64, "'train.augment.freq_shift' is 64; it must be below 'features.n_mels' (64)"),
    ("train.ema", 1.0, "'train.ema' is 1.0; it must be < 1"),
    ("train.label_smoothing", 1.0, "'train.label_smoothing' is 1.0; it must be < 1"),
    ("rnn.dropout", 1.0, "'rnn.dropout' is 1.0; it must be < 1"),
    ("rnn.head_dropout", 1.0, "'rnn.head_dropout' is 1.0; it must be < 1"),
    ("rnn.dropout", -0.5, "'rnn.dropout' is -0.5; it must be >= 0 and < 1"),
])
def test_bad_values_fail_with_one_line_naming_the_key(dotted, value, message):
    with pytest.raises(ConfigError) as err:
        params(**{dotted: value})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("needs", [{"train.schedule": "plateau"}, {"train.early_stopping_patience": 5}])
def test_training_on_the_dev_speakers_refuses_what_would_read_the_dev_split(needs):
    with pytest.raises(ConfigError, match=r"'train.dev_speakers' is 'train' \(no dev split") as err:
        params(**{"train.dev_speakers": "train", **needs})
    assert "\n" not in str(err.value)
    params(**{"train.dev_speakers": "train"})  # the defaults (cosine, never stop) need no dev split


def test_every_key_is_required_so_params_yaml_is_the_one_source_of_values():
    raw = raw_params()
    del raw["rnn"]["dropout"]
    with pytest.raises(ConfigError, match=r"missing key 'rnn.dropout'"):
        parse_params(raw)


def test_a_class_yaml_reads_as_no_name_is_refused():
    raw = raw_params()
    raw["data"]["classes"][None] = raw["data"]["classes"].pop(next(iter(raw["data"]["classes"])))
    with pytest.raises(ConfigError, match="has an empty name"):
        parse_params(raw)


def test_unknown_key_is_named_with_the_allowed_ones():
    raw = raw_params()
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'; allowed under 'train': seed"):
        parse_params(raw)


def test_accent_in_two_classes_is_refused():
    raw = raw_params()
    raw["data"]["classes"]["mexico"].append(raw["data"]["classes"]["norte"][0])
    with pytest.raises(ConfigError, match="is in both"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [lstm\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_int_is_accepted_for_float_but_bool_is_not_an_int():
    assert params(**{"train.lr": 1}).train.lr == 1.0
    with pytest.raises(ConfigError, match="'train.epochs' must be int"):
        params(**{"train.epochs": True})


def test_the_largest_sensible_values_pass():
    """The checks above refuse only what makes no sense: their limits themselves are accepted."""
    params(**{"features.n_mels": 184, "features.hop_length": 400, "features.max_seconds": 0.025,
              "train.specaugment.freq_width": 63, "train.augment.freq_shift": 63, "train.ema": 0.999,
              "rnn.dropout": 0.9})
    params(**{"train.specaugment.freq_masks": 0, "train.specaugment.freq_width": 64})  # no masks: any width


@pytest.mark.parametrize("accent, message", [
    (None, "'data.classes.mexico[1]' is empty (YAML reads null, ~ and \"\" as no text)"),
    ("", "'data.classes.mexico[1]' is empty"),
    (" \u200b\ufeff ", "'data.classes.mexico[1]' is empty"),
    ("México|Caribe", "'data.classes.mexico[1]' ('México|Caribe') holds '|', which separates accents"),
    ("Me\u0301xico ", "accent 'México' is twice in 'data.classes.mexico' (compared without format characters and "
                      "surrounding spaces, in Unicode NFC)"),
])
def test_an_accent_string_that_cannot_match_or_repeats_one_is_refused(accent, message):
    raw = raw_params()
    raw["data"]["classes"]["mexico"].append(accent)
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_accent_typed_another_way_in_another_class_is_refused():
    raw = raw_params()
    raw["data"]["classes"]["sur"].append("\u200bMe\u0301xico")
    with pytest.raises(ConfigError, match="accent 'México' is in both 'data.classes.sur' and 'data.classes.mexico'"):
        parse_params(raw)


def test_canonical_accents():
    from acento.config import canonical_accent

    assert canonical_accent("Me\u0301xico") == "México" == canonical_accent("\u00a0México\u200d\n")
    assert canonical_accent("Mé\u00adxi\u2060co") == "México"  # soft hyphen, word joiner
    assert canonical_accent("méxico") == "méxico"  # case is kept: the presets are compared exactly
    assert canonical_accent("Castilla  y León") == "Castilla  y León"  # inner spaces are the text's
