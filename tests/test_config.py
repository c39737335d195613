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
