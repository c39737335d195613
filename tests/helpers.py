"""Small Common Voice-shaped releases built in a temporary folder, for fast tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from acento.config import Params, apply_overrides, parse_params
from acento.corpus.records import SPANISH_PRESETS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "cv-corpus-sample-es.tar.gz"
NORTE, CENTRO, SUR = SPANISH_PRESETS[0], SPANISH_PRESETS[1], SPANISH_PRESETS[2]
MEXICO, CARIBE = SPANISH_PRESETS[4], SPANISH_PRESETS[6]
HEADER_16 = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "variant",
             "locale", "segment"]
HEADER_17 = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
             "gender", "accents", "variant", "locale", "segment"]


def speaker_id(n: int) -> str:
    return hashlib.sha512(f"test-speaker-{n}".encode()).hexdigest()


def tone(seconds: float, rate: int = 48000, freq: float = 440.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    y = (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


def write_tsv(path: Path, header: list[str], rows: list[dict]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(r.get(c, "")) for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_release(root: Path, rows: list[dict], *, header: list[str] = HEADER_16, durations: bool = True,
                 audio: bool = True, tsv: str = "validated.tsv") -> Path:
    """A locale folder `root/cv-corpus-test/es` with the rows' clips (MP3 tones of `seconds`)."""
    locale = root / "cv-corpus-test" / "es"
    (locale / "clips").mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        row.setdefault("up_votes", 2)
        row.setdefault("down_votes", 0)
        row.setdefault("sentence", "Una frase.")
        row.setdefault("locale", "es")
        if audio and not row.get("_no_file"):
            freq = 300 + 40 * (i % 10)
            sf.write(locale / "clips" / row["path"], tone(row.get("seconds", 1.5), freq=freq, seed=i), 48000,
                     format="MP3")
    write_tsv(locale / tsv, header, rows)
    if durations:
        write_tsv(locale / "clip_durations.tsv", ["clip", "duration[ms]"],
                  [{"clip": r["path"], "duration[ms]": int(r.get("seconds", 1.5) * 1000)} for r in rows])
    return locale


def balanced_rows(speakers_per_class: int = 6, clips_per_speaker: int = 3, seconds: float = 1.5) -> list[dict]:
    rows = []
    for n in range(2 * speakers_per_class):
        accent = NORTE if n % 2 == 0 else MEXICO
        for k in range(clips_per_speaker):
            rows.append({"client_id": speaker_id(n), "path": f"common_voice_es_{n:03d}{k:02d}.mp3",
                         "accents": accent, "seconds": seconds})
    return rows


def raw_params(**overrides) -> dict:
    """The project's params.yaml as a dict, with dotted overrides applied."""
    return apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")), overrides)


def params(**overrides) -> Params:
    """The project's params.yaml with dotted overrides, e.g. params(**{"data.min_seconds": 0.5})."""
    return parse_params(raw_params(**overrides))


def params_file(folder: Path, **overrides) -> Path:
    """A params.yaml in `folder` with dotted overrides, for running a stage's command line."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params(**overrides), allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def untrained_model(path: Path, cell: str = "lstm", seed: int = 0) -> Path:
    """A seeded, untrained, small model file with params.yaml's classes and feature settings, at `path`:
    for what needs a model of the sample's classes rather than a good one."""
    import dataclasses

    import torch

    from acento.model.accent_model import AccentModel
    from acento.model.network import AccentClassifier
    from acento.model.inputs import Normaliser

    p = params()
    torch.manual_seed(seed)
    rnn = dataclasses.replace(p.rnn, hidden_size=8, num_layers=1, frontend_channels=8)
    network = AccentClassifier(p.features.n_mels, len(p.data.classes), cell, rnn)
    n_mels = p.features.n_mels
    normaliser = Normaliser(p.normalise, np.zeros(n_mels, np.float32), np.ones(n_mels, np.float32))
    AccentModel(network, sorted(p.data.classes), p.features, normaliser).save(path)
    return path


def load_script(name: str):
    """The module of scripts/NAME.py (scripts are not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tiny(epochs: int = 1, **more) -> dict:
    """The tests' training settings, in one place: a network of 8 units in one layer (seconds per run on
    one thread), batches of 4, `epochs` epochs; `more` adds or overrides params.yaml keys."""
    return {"train.epochs": epochs, "rnn.hidden_size": 8, "rnn.num_layers": 1, "rnn.frontend_channels": 8,
            "train.batch_size": 4, "runtime.num_threads": 1, **more}
