"""Typed view of `params.yaml`, validated once at load.

Every stage reads its parameters through `load_params()`, so a typo in `params.yaml` or a
`dvc exp run -S` override fails before any work starts, with one line naming the key.  The
dataclasses hold no defaults: `params.yaml` is the one place where a value is written down, and a
missing key is an error rather than a silent fallback to a second, possibly different, value.

One module of ~420 lines on purpose: its dataclasses mirror params.yaml section by section, so it reads
top to bottom beside that file; the original study's network presets are in `acento.model.presets`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from acento.audio.melscale import empty_mel_band

PARAMS_FILE = Path("params.yaml")


CELLS = ("lstm", "gru")  # the recurrent cells compared (params.yaml `model`)




class ConfigError(ValueError):
    """A bad value in params.yaml; its message is one line naming the key."""


def canonical_accent(text: str) -> str:
    """An accent string as it is compared, in data.classes and in the TSVs alike: Unicode NFC (a decomposed
    "México" equals the composed one), format characters (category Cf: zero-width spaces and joiners,
    byte-order marks, soft hyphens, direction marks) removed, surrounding whitespace stripped.  Case is
    kept: Common Voice's accents are its preset texts, compared exactly."""
    composed = unicodedata.normalize("NFC", text)
    return "".join(c for c in composed if unicodedata.category(c) != "Cf").strip()


def _check(*, choices: tuple | None = None, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, max_exclusive: bool = False, min_items: int = 0) -> dict:
    """Field metadata: allowed values, bounds (for a list: of each item) and a list's minimum length."""
    return {"choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive,
            "max_exclusive": max_exclusive, "min_items": min_items}


@dataclass(frozen=True)
class SplitConfig:
    train: float = field(metadata=_check(min=0, max=1, min_exclusive=True))
    dev: float = field(metadata=_check(min=0, max=1, min_exclusive=True))
    test: float = field(metadata=_check(min=0, max=1, min_exclusive=True))


@dataclass(frozen=True)
class DataConfig:
    source: str
    classes: dict[str, list[str]]
    sha256: str
    token_env: str
    locale: str
    raw_dir: str
    tsvs: list[str] = field(metadata=_check(min_items=1))
    max_down_votes: int = field(metadata=_check(min=0))
    min_seconds: float = field(metadata=_check(min=0))
    max_seconds: float = field(metadata=_check(min=0, min_exclusive=True))
    max_clips_per_speaker: int = field(metadata=_check(min=0))
    max_clips_per_class: int = field(metadata=_check(min=0))
    unlabelled_clips: int = field(metadata=_check(min=0))
    split_by: str = field(metadata=_check(choices=("speaker", "clip")))
    split: SplitConfig
    folds: int = field(metadata=_check(min=0))
    fold: int = field(metadata=_check(min=0))
    min_speakers: int = field(metadata=_check(min=1))
    seed: int = field(metadata=_check(min=0))


@dataclass(frozen=True)
class FeaturesConfig:
    sample_rate: int = field(metadata=_check(min=1000))
    n_fft: int = field(metadata=_check(min=16))
    win_length: int = field(metadata=_check(min=16))
    hop_length: int = field(metadata=_check(min=1))
    n_mels: int = field(metadata=_check(min=1))
    fmin: float = field(metadata=_check(min=0))
    fmax: float = field(metadata=_check(min=0, min_exclusive=True))
    log: bool
    trim_silence: bool
    trim_top_db: float = field(metadata=_check(min=0, min_exclusive=True))
    max_seconds: float = field(metadata=_check(min=0, min_exclusive=True))
    dtype: str = field(metadata=_check(choices=("float16", "float32")))
    max_failed_fraction: float = field(metadata=_check(min=0, max=1))


@dataclass(frozen=True)
class RNNConfig:
    hidden_size: int = field(metadata=_check(min=1))
    num_layers: int = field(metadata=_check(min=1))
    bidirectional: bool
    dropout: float = field(metadata=_check(min=0, max=1, max_exclusive=True))  # 1: every input zeroed
    pooling: str = field(metadata=_check(choices=("last", "mean", "attention", "stats", "max")))
    frontend: str = field(metadata=_check(choices=("none", "conv")))
    frontend_channels: int = field(metadata=_check(min=1))
    frontend_stride: int = field(metadata=_check(choices=(1, 2, 4, 8)))
    frontend_kernel: int = field(metadata=_check(min=1))
    head_hidden: list[int] = field(metadata=_check(min=1))
    head_dropout: float = field(metadata=_check(min=0, max=1, max_exclusive=True))


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = field(metadata=_check(min=0))
    freq_width: int = field(metadata=_check(min=0))
    time_masks: int = field(metadata=_check(min=0))
    time_width: int = field(metadata=_check(min=0))


@dataclass(frozen=True)
class AugmentConfig:
    time_stretch: float = field(metadata=_check(min=0, max=0.5))
    freq_warp: float = field(metadata=_check(min=0, max=0.5))
    freq_shift: int = field(metadata=_check(min=0))
    crop: float = field(metadata=_check(min=0, max=1, min_exclusive=True))


@dataclass(frozen=True)
class AdversaryConfig:
    weight: float = field(metadata=_check(min=0))
    ramp_epochs: int = field(metadata=_check(min=0))
    hidden: int = field(metadata=_check(min=1))


@dataclass(frozen=True)
class NormaliseConfig:
    global_stats: bool
    utterance_mean: bool
    utterance_std: bool


@dataclass(frozen=True)
class TrainConfig:
    seed: int = field(metadata=_check(min=0))
    epochs: int = field(metadata=_check(min=1))
    batch_size: int = field(metadata=_check(min=1))
    batch_frames: int = field(metadata=_check(min=0))
    warmup_epochs: int = field(metadata=_check(min=0))
    bucketing: bool
    optimizer: str = field(metadata=_check(choices=("adam", "adamw")))
    lr: float = field(metadata=_check(min=0, min_exclusive=True))
    weight_decay: float = field(metadata=_check(min=0))
    schedule: str = field(metadata=_check(choices=("plateau", "plateau_loss", "cosine", "constant")))
    lr_factor: float = field(metadata=_check(min=0, max=1, min_exclusive=True))
    lr_patience: int = field(metadata=_check(min=0))
    early_stopping_patience: int = field(metadata=_check(min=0))
    grad_clip: float = field(metadata=_check(min=0))
    class_weights: bool
    label_smoothing: float = field(metadata=_check(min=0, max=1, max_exclusive=True))  # 1: uniform targets
    ema: float = field(metadata=_check(min=0, max=1, max_exclusive=True))  # 1: the initial weights forever
    dev_speakers: str = field(metadata=_check(choices=("select", "train")))
    init: str = field(metadata=_check(choices=("scratch", "pretrained")))
    self_train: float = field(metadata=_check(min=0, max=1))  # 0: off
    specaugment: SpecAugmentConfig
    augment: AugmentConfig
    adversary: AdversaryConfig


@dataclass(frozen=True)
class PretrainConfig:
    objective: str = field(metadata=_check(choices=("masked", "apc")))
    epochs: int = field(metadata=_check(min=0))
    batch_size: int = field(metadata=_check(min=1))
    lr: float = field(metadata=_check(min=0, min_exclusive=True))
    mask_share: float = field(metadata=_check(min=0, max=1, min_exclusive=True, max_exclusive=True))
    mask_span: int = field(metadata=_check(min=1))
    apc_shift: int = field(metadata=_check(min=1))
    seed: int = field(metadata=_check(min=0))


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how fast the work runs, never what it computes: no stage lists these in its params
    deps, so changing one reruns nothing.  Shared by features, train, evaluate and bench."""
    workers: int = field(metadata=_check(min=0))
    device: str = field(metadata=_check(choices=("auto", "cpu", "cuda")))
    num_threads: int = field(metadata=_check(min=0))
    inference_batch_size: int = field(metadata=_check(min=1))


@dataclass(frozen=True)
class Params:
    model: str = field(metadata=_check(choices=CELLS))
    data: DataConfig
    features: FeaturesConfig
    normalise: NormaliseConfig
    rnn: RNNConfig
    train: TrainConfig
    pretrain: PretrainConfig
    runtime: RuntimeConfig


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Converts a YAML value to the annotated type, or raises ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            names = ", ".join(f.name for f in dataclasses.fields(tp))
            raise ConfigError(f"params.yaml: '{key}' must be a mapping of {names}")
        return _build(tp, value, key + ".")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"params.yaml: '{key}' must be a list of {_type_name(item)}, got {value!r}")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"params.yaml: '{key}' must be a mapping, got {value!r}")
        return {_convert(k, key_tp, key): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and value is None:
        return ""
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"params.yaml: '{key}' must be {_type_name(tp)}, got {value!r}")
    return value


def _validate_range(value: Any, meta: dict, key: str) -> None:
    if isinstance(value, list):
        if len(value) < meta.get("min_items", 0):
            raise ConfigError(f"params.yaml: '{key}' must list at least {meta['min_items']} item(s)")
        for i, item in enumerate(value):
            _validate_range(item, {**meta, "min_items": 0}, f"{key}[{i}]")
        return
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    if choices is not None and value not in choices:
        raise ConfigError(f"params.yaml: '{key}' is {value!r}; allowed: {', '.join(map(str, choices))}")
    below = "<" if meta.get("max_exclusive") else "<="
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        op = ">" if meta.get("min_exclusive") else ">="
        bound = f" and {below} {hi}" if hi is not None else ""
        raise ConfigError(f"params.yaml: '{key}' is {value!r}; it must be {op} {lo}{bound}")
    if hi is not None and (value > hi or (meta.get("max_exclusive") and value == hi)):
        raise ConfigError(f"params.yaml: '{key}' is {value!r}; it must be {below} {hi}")


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"params.yaml: unknown key '{prefix}{unknown[0]}'; allowed under "
                          f"'{prefix.rstrip('.') or 'top level'}': {', '.join(known)}")
    values = {}
    for name, f in known.items():
        key = prefix + name
        if name not in raw:
            raise ConfigError(f"params.yaml: missing key '{key}'; every key is required (see the "
                              "project's params.yaml for its meaning and usual value)")
        values[name] = _convert(raw[name], hints[name], key)
        _validate_range(values[name], f.metadata, key)
    return cls(**values)


def _cross_check(p: Params) -> None:
    split = p.data.split
    if abs(split.train + split.dev + split.test - 1.0) > 1e-6:
        raise ConfigError("params.yaml: 'data.split' fractions train + dev + test must sum to 1, got "
                          f"{split.train + split.dev + split.test:g}")
    if p.train.warmup_epochs and (p.train.schedule not in ("cosine", "constant")
                                  or p.train.warmup_epochs >= p.train.epochs):
        raise ConfigError(f"params.yaml: 'train.warmup_epochs' {p.train.warmup_epochs} needs 'train.schedule' cosine "
                          f"or constant (is {p.train.schedule}) and fewer than 'train.epochs' ({p.train.epochs})")
    if not p.data.classes or len(p.data.classes) < 2:
        raise ConfigError("params.yaml: 'data.classes' must map at least two class names to lists of accents")
    seen: dict[str, str] = {}
    for cls, accents in p.data.classes.items():
        if not cls.strip():
            raise ConfigError("params.yaml: a class in 'data.classes' has an empty name (YAML reads a bare "
                              "`null:` or `~:` key as no name); quote it or rename it")
        if not accents:
            raise ConfigError(f"params.yaml: 'data.classes.{cls}' lists no accents")
        for i, accent in enumerate(accents):
            key, text = f"data.classes.{cls}[{i}]", canonical_accent(accent)
            if not text:
                raise ConfigError(f"params.yaml: '{key}' is empty (YAML reads null, ~ and \"\" as no text); write "
                                  "the accent as the release's TSVs do, or remove it")
            if "|" in text:
                raise ConfigError(f"params.yaml: '{key}' ({accent!r}) holds '|', which separates accents in the "
                                  "TSVs; list each accent as an item of its own")
            if text in seen:
                where = "twice in" if seen[text] == cls else f"in both 'data.classes.{seen[text]}' and"
                raise ConfigError(f"params.yaml: accent {text!r} is {where} 'data.classes.{cls}' (compared "
                                  "without format characters and surrounding spaces, in Unicode NFC); give it "
                                  "one class, once")
            seen[text] = cls
    if p.data.folds >= 2 and p.data.fold >= p.data.folds:
        raise ConfigError(f"params.yaml: 'data.fold' is {p.data.fold}; with data.folds = {p.data.folds} it must be "
                          f"0 to {p.data.folds - 1}")
    if p.data.folds >= 2 and p.data.split_by != "speaker":
        raise ConfigError("params.yaml: 'data.split_by' is 'clip', which needs 'data.folds' 0 (folds are groups of "
                          "speakers); set data.folds: 0 for the random clip split")
    if p.data.min_seconds >= p.data.max_seconds:
        raise ConfigError("params.yaml: 'data.min_seconds' must be below 'data.max_seconds'")
    t = p.train
    if t.dev_speakers == "train" and (t.schedule not in ("cosine", "constant") or t.early_stopping_patience):
        raise ConfigError(f"params.yaml: 'train.dev_speakers' is 'train' (no dev split: the last epoch is kept), "
                          f"which needs 'train.schedule' cosine or constant (is {t.schedule}) and "
                          f"'train.early_stopping_patience' 0 (is {t.early_stopping_patience}): "
                          "both read the dev split")
    if p.pretrain.objective == "apc" and p.rnn.bidirectional:
        raise ConfigError("params.yaml: 'pretrain.objective' is 'apc' (predicting future frames), which needs "
                          "'rnn.bidirectional' false: a backward direction reads the frames it is to predict; use "
                          "'masked' for bidirectional networks")
    if p.train.init == "pretrained" and p.pretrain.epochs == 0:
        raise ConfigError("params.yaml: 'train.init' is 'pretrained' but 'pretrain.epochs' is 0 (no encoder is "
                          "pretrained); set pretrain.epochs > 0 (and data.unlabelled_clips > 0), or train.init: scratch")
    if p.train.self_train and p.data.unlabelled_clips == 0:
        raise ConfigError(f"params.yaml: 'train.self_train' is {p.train.self_train:g} (self-training on the unlabelled "
                          "pool) but 'data.unlabelled_clips' is 0 (no pool); set data.unlabelled_clips > 0, or "
                          "train.self_train: 0")
    if p.rnn.frontend_kernel % 2 == 0:
        raise ConfigError(f"params.yaml: 'rnn.frontend_kernel' is {p.rnn.frontend_kernel}; it must be odd "
                          "(centred convolutions keep ceil(frames / stride) frames)")
    check_features(p.features)
    n_mels, masks = p.features.n_mels, p.train.specaugment
    if masks.freq_masks and masks.freq_width >= n_mels:
        raise ConfigError(f"params.yaml: 'train.specaugment.freq_width' is {masks.freq_width}; it must be below "
                          f"'features.n_mels' ({n_mels}), or a mask could hide every band")
    if p.train.augment.freq_shift >= n_mels:
        raise ConfigError(f"params.yaml: 'train.augment.freq_shift' is {p.train.augment.freq_shift}; it must be "
                          f"below 'features.n_mels' ({n_mels}), or a shift could move the whole spectrum out")
    if p.data.sha256 and (len(p.data.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in p.data.sha256)):
        raise ConfigError("params.yaml: 'data.sha256' must be 64 hex digits, or empty to skip the check")


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """A copy of `raw` (params.yaml as loaded) with dotted keys replaced, as `dvc exp run -S key=value`
    does; `raw` is left as it was.  A key that params.yaml does not have is an error, as it is for DVC."""
    raw = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"params.yaml: override '{dotted}': no section '{key}'")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"params.yaml: override '{dotted}': no such key")
        node[leaf] = value
    return raw


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml: the file must hold a mapping of sections (model, data, features, ...)")
    params = _build(Params, raw)
    _cross_check(params)
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run the stages from the project root, where params.yaml lives") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw)


def stored_features_config(stored: str | dict) -> FeaturesConfig:
    """The feature parameters stored (as JSON or a dict) in the cache or a model file, checked as
    params.yaml's are (`check_features`): ConfigError (one line naming the key) for a value params.yaml
    would refuse, e.g. an edited file's `hop_length: 0` or an n_fft that would allocate gigabytes."""
    values = dict(json.loads(stored) if isinstance(stored, str) else stored)
    values.pop("workers", None)  # stored by caches and models made before it moved to runtime.workers
    features = _build(FeaturesConfig, values, "features.")
    check_features(features)
    return features


def stored_config(cls: type, stored: dict, prefix: str) -> Any:
    """A section of params.yaml stored in a model file (e.g. RNNConfig under "rnn."), checked as params.yaml's
    is: ConfigError (one line naming the key) for a missing, unknown, mistyped or out-of-range value."""
    if not isinstance(stored, dict):
        raise ConfigError(f"params.yaml: '{prefix.rstrip('.')}' must be a mapping")
    return _build(cls, stored, prefix)


# Bounds of the feature settings that keep one clip's analysis within memory: an FFT of 65,536 points is
# 4 s at 16 kHz, far beyond speech analysis (25 ms windows); 384 kHz is the highest rate audio interfaces use.
MAX_N_FFT = 1 << 16
MAX_SAMPLE_RATE = 384_000


def check_features(f: FeaturesConfig) -> None:
    """ConfigError (one line naming the key) unless the feature settings make sense together: besides the
    bounds, a window within the FFT, a hop within the window (a longer one skips samples), one window within
    `max_seconds` (shorter crops make every clip one frame), fmin < fmax <= the Nyquist frequency, and every
    mel band holding an FFT bin (`empty_mel_band`)."""
    if f.sample_rate > MAX_SAMPLE_RATE:
        raise ConfigError(f"params.yaml: 'features.sample_rate' is {f.sample_rate}; it must be <= {MAX_SAMPLE_RATE}")
    if f.n_fft > MAX_N_FFT:
        raise ConfigError(f"params.yaml: 'features.n_fft' is {f.n_fft}; it must be <= {MAX_N_FFT}")
    if f.win_length > f.n_fft:
        raise ConfigError(f"params.yaml: 'features.win_length' ({f.win_length}) must be <= "
                          f"'features.n_fft' ({f.n_fft})")
    if f.fmax > f.sample_rate / 2 or f.fmin >= f.fmax:
        raise ConfigError(f"params.yaml: 'features.fmin'/'features.fmax' must satisfy fmin < fmax <= "
                          f"sample_rate/2 = {f.sample_rate / 2:g}")
    if f.hop_length > f.win_length:
        raise ConfigError(f"params.yaml: 'features.hop_length' ({f.hop_length}) must be <= 'features.win_length' "
                          f"({f.win_length}): a longer hop skips the samples between windows")
    if f.max_seconds * f.sample_rate < f.win_length:
        raise ConfigError(f"params.yaml: 'features.max_seconds' is {f.max_seconds:g}; a crop shorter than one "
                          f"analysis window ({1000 * f.win_length / f.sample_rate:g} ms: 'features.win_length' "
                          f"{f.win_length} at {f.sample_rate} Hz) leaves every clip one frame")
    bins = f.n_fft // 2 + 1
    if f.n_mels > bins:
        raise ConfigError(f"params.yaml: 'features.n_mels' is {f.n_mels}; an FFT of 'features.n_fft' {f.n_fft} "
                          f"points has {bins} frequency bins, so at most {bins} mel bands")
    empty = empty_mel_band(f.sample_rate, f.n_fft, f.n_mels, f.fmin, f.fmax)
    if empty is not None:
        raise ConfigError(f"params.yaml: 'features.n_mels' is {f.n_mels}, but mel band {empty} (from 0) holds no "
                          f"FFT bin (one every {f.sample_rate / f.n_fft:g} Hz with 'features.n_fft' {f.n_fft}): lower "
                          "n_mels, or raise n_fft or the fmin..fmax range")

