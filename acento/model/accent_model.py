"""A trained model as one object: the network, its cell and class names, the feature settings and
the normalisation it was trained with, and the model file's checksum.

`AccentModel.load(path)` (also `acento.load`) reads a model file written by `train`; its methods go
from audio files, waveforms or log-mels to class probabilities, with the model file's own feature
parameters and normalisation statistics, never params.yaml's.  `predict`, `serve`, `evaluate`,
`score`, `ablate` and `bench` all classify through here; README.md ("Classifying recordings")
shows it from Python.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from acento.audio.decode import AudioError
from acento.audio.extract import extract_all
from acento.audio.logmel import Analysis, LogMel
from acento.config import (
    ConfigError,
    FeaturesConfig,
    NormaliseConfig,
    RNNConfig,
    stored_config,
    stored_features_config,
)
from acento.files import atomic_path
from acento.model.inference import predict_proba
from acento.model.inputs import Normaliser
from acento.model.network import AccentClassifier
from acento.paths import MODEL_FILE

if TYPE_CHECKING:  # an annotation only: classifying files needs neither h5py nor pandas
    from acento.features.cache import SplitData


FORMAT = "acento-model"


# 2: the cell is stored under "model", as params.yaml and eval.json name it (1 said "cell").
FORMAT_VERSION = 2


# 3: an ensemble, {"format", "version": 3, "members": [version-2 contents, ...]}; its probabilities are the
# members' mean (`make final-model`: one network per cross-validation fold).
ENSEMBLE_VERSION = 3


REQUIRED_KEYS = ("model", "n_mels", "rnn", "classes", "features", "normalise", "mean", "std", "state_dict")


# Feature settings that do not change a clip's log-mels (the cache's storage type only rounds them; the
# failure threshold only decides whether the stage goes on): a model and a cache may differ in these.
FEATURES_NOT_COMPARED = ("dtype", "max_failed_fraction")


def speaker_hash(speaker: str) -> str:
    """The form in which a model file lists a speaker it learned from: the first 16 hex digits of the
    SHA-256 of the Common Voice client_id (64 bits: a collision among a release's ~26,000 speakers has a
    probability of about 2e-11), so the file names no one."""
    return hashlib.sha256(speaker.encode()).hexdigest()[:16]

CHUNK_BATCHES = 4  # batches of files decoded, then classified together: bounds memory for any number of files


class ModelFileError(ValueError):
    """A model file that is missing, foreign, or not loadable into the network it describes."""


@dataclass(frozen=True)
class Prediction:
    """One clip's decision: `label`, the most probable class, and `probs`, class name -> probability
    (summing to 1, in the model's class order); for a file, `audio` says what was analysed (`seconds`,
    the recording's true length, `analysed_seconds`, `cropped`: `acento.audio.logmel.Analysis.about`)."""
    label: str
    probs: dict[str, float]
    audio: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        """{"label", "probs", and the `audio` fields} with probabilities rounded to 4 decimals: the JSON of
        `acento-predict --json` and of the service."""
        return {"label": self.label, "probs": {c: round(float(p), 4) for c, p in self.probs.items()}, **self.audio}


class AccentModel:
    """A trained accent classifier, ready to classify.

    network: the `AccentClassifier` (eval mode, on `device`); classes: class names, index = output;
    features: the `FeaturesConfig` its training cache was built with; normaliser: the `Normaliser`
    with the training split's statistics; sha256: hex digest of the model file ("" if not from a file);
    speaker_hashes: `speaker_hash` of every speaker whose clips trained it or chose its epoch (its
    training and dev splits; empty for a model file written before they were stored).
    An ensemble (`AccentModel.ensemble`) holds several (network, normaliser) `members` of one cell,
    class list and feature setting; its probabilities are their mean, and `network`/`normaliser` are
    its first member's.
    """

    def __init__(self, network: AccentClassifier, classes: Sequence[str], features: FeaturesConfig,
                 normaliser: Normaliser, *, sha256: str = "", path: Path | None = None,
                 device: torch.device | str = "cpu", batch_size: int = 64,
                 members: Sequence[tuple[AccentClassifier, Normaliser]] = (), speaker_hashes: Iterable[str] = ()):
        self.device = torch.device(device)
        self.members = [(net.to(self.device).eval(), norm) for net, norm in (members or [(network, normaliser)])]
        self.network, self.normaliser = self.members[0]
        self.classes, self.features = list(classes), features
        self.sha256, self.path, self.batch_size = sha256, path, batch_size
        self.speaker_hashes = frozenset(speaker_hashes)
        self._log_mel: LogMel | None = None

    @classmethod
    def ensemble(cls, models: Sequence["AccentModel"]) -> "AccentModel":
        """One model whose probabilities are the mean of `models`' (same cell, classes and features)."""
        first = models[0]
        for other in models[1:]:
            if (other.cell, other.classes, other.features) != (first.cell, first.classes, first.features):
                raise ModelFileError(f"{other.path or 'a member'}: another cell, class list or feature setting "
                                     f"than {first.path or 'the first member'}; an ensemble needs the same three")
        members = [member for model in models for member in model.members]
        return cls(first.network, first.classes, first.features, first.normaliser, device=first.device,
                   batch_size=first.batch_size, members=members,
                   speaker_hashes=frozenset().union(*(model.speaker_hashes for model in models)))

    @property
    def cell(self) -> str:
        """The recurrent cell, "lstm" or "gru" (params.yaml's `model`)."""
        return self.network.cell

    @property
    def log_mel(self) -> LogMel:
        """The feature extractor of this model's feature parameters (built on first use)."""
        if self._log_mel is None:
            self._log_mel = LogMel(self.features)
        return self._log_mel

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", batch_size: int = 64) -> "AccentModel":
        """The model of a file written by `train` (or an ensemble by `make final-model`), loaded with
        `weights_only=True` (no pickled code),
        on `device`, classifying `batch_size` clips at a time.

        A file that is missing, not an acento model, of another format version, or whose weights do
        not fit the network its settings describe raises ModelFileError (one line, saying what to do).
        """
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file (relative to {Path.cwd()}); train one with `dvc repro` "
                                 "in the checkout, or pass --model-file or set ACENTO_MODEL_FILE")
        data = path.read_bytes()
        try:
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for foreign files
            raise ModelFileError(f"{path}: not an acento model file ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not an acento model file (no '{FORMAT}' marker)")
        if ckpt.get("version") not in (FORMAT_VERSION, ENSEMBLE_VERSION):
            raise ModelFileError(f"{path}: model format version {ckpt.get('version')}, this acento reads "
                                 f"{FORMAT_VERSION} and {ENSEMBLE_VERSION}; retrain or use a matching release")
        contents = ckpt.get("members") if ckpt["version"] == ENSEMBLE_VERSION else [ckpt]
        if not isinstance(contents, list) or not contents:
            raise ModelFileError(f"{path}: an acento ensemble file without members; it is damaged, rebuild it "
                                 "(make final-model)")
        models = [cls._from_contents(path, member, device, batch_size) for member in contents]
        model = models[0] if len(models) == 1 and ckpt["version"] == FORMAT_VERSION else cls.ensemble(models)
        model.sha256, model.path = hashlib.sha256(data).hexdigest(), path
        return model

    @classmethod
    def _from_contents(cls, path: Path, ckpt: dict, device: torch.device | str, batch_size: int) -> "AccentModel":
        """The model of one network's contents (format version 2), checked key by key."""
        missing = [k for k in REQUIRED_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(REQUIRED_KEYS)
        if missing:
            raise ModelFileError(f"{path}: acento model file without {', '.join(missing)}; it is damaged or was "
                                 "not written by `train`, retrain it (dvc repro train)")
        try:
            features = stored_features_config(ckpt["features"])
            rnn = stored_config(RNNConfig, ckpt["rnn"], "rnn.")
            normalise = stored_config(NormaliseConfig, ckpt["normalise"], "normalise.")
        except (ConfigError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: impossible settings in the model file "
                                 f"({str(exc).removeprefix('params.yaml: ')}); the file is damaged "
                                 "or edited, retrain it (dvc repro train)") from None
        try:
            if ckpt["n_mels"] != features.n_mels:
                raise ValueError(f"n_mels {ckpt['n_mels']} for features of {features.n_mels} mel bands")
            network = AccentClassifier(ckpt["n_mels"], len(ckpt["classes"]), ckpt["model"], rnn)
            network.load_state_dict(ckpt["state_dict"])
            normaliser = Normaliser(normalise, ckpt["mean"].numpy(), ckpt["std"].numpy())
            speakers = [str(h) for h in ckpt.get("speaker_hashes", [])]
        except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path}: its weights or settings do not fit the network they describe "
                                 f"({first}); the file is damaged or edited, retrain it (dvc repro train)") from None
        bad = non_finite(network, normaliser)
        if bad:
            raise ModelFileError(f"{path}: {bad} not finite numbers (NaN or infinity): the model would score "
                                 "nothing; the file is damaged or its training diverged, retrain it (dvc repro train)")
        return cls(network, ckpt["classes"], features, normaliser, path=path, device=device, batch_size=batch_size,
                   speaker_hashes=speakers)

    def checkpoint(self) -> dict:
        """The model file's contents, in types `torch.load(weights_only=True)` accepts: the network's
        settings and weights, the class names, the feature parameters, the normalisation settings and
        the training split's per-mel mean and std; for an ensemble, those of each member."""
        contents = [self._contents(net, norm) for net, norm in self.members]
        if len(contents) == 1:
            return contents[0]
        return {"format": FORMAT, "version": ENSEMBLE_VERSION, "members": contents}

    def _contents(self, net: AccentClassifier, normaliser: Normaliser) -> dict:
        bad = non_finite(net, normaliser)
        if bad:
            raise ModelFileError(f"{bad} not finite numbers (NaN or infinity); no model file is written with them")
        return {"speaker_hashes": sorted(self.speaker_hashes),
                "format": FORMAT, "version": FORMAT_VERSION, "model": net.cell, "n_mels": self.features.n_mels,
                "rnn": dataclasses.asdict(net.cfg), "classes": list(self.classes),
                "features": dataclasses.asdict(self.features),
                "normalise": dataclasses.asdict(normaliser.cfg),
                "mean": torch.as_tensor(np.asarray(normaliser.mean, np.float32)),
                "std": torch.as_tensor(np.asarray(normaliser.std, np.float32)),
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}

    def save(self, path: str | Path) -> None:
        """Writes the model file atomically (nothing at `path` unless it is whole); the same model gives the same
        bytes, so `dvc.lock` does not change when a rerun trains the same weights."""
        # Through a file object: torch names the archive inside the file after the path it is given (here a
        # random temporary name), which would make two saves of the same weights differ byte for byte.
        with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as fh:
            torch.save(self.checkpoint(), fh)

    def check_features(self, classes: Sequence[str], features: FeaturesConfig, source: str) -> None:
        """ModelFileError (one line naming each difference) unless log-mels made with `features` for
        `classes` (a feature cache's, `source` naming it) are what this model was trained on: the same
        class list and every feature setting that changes a clip's log-mels (all but FEATURES_NOT_COMPARED)."""
        if list(classes) != self.classes:
            raise ModelFileError(f"{self.path or 'the model'}: trained on classes {self.classes}, {source} has "
                                 f"{list(classes)}; retrain (dvc repro) or use the matching model")
        mine, theirs = dataclasses.asdict(self.features), dataclasses.asdict(features)
        differ = [f"{k} {mine[k]!r} vs {theirs[k]!r}" for k in mine if k not in FEATURES_NOT_COMPARED and mine[k] != theirs[k]]
        if differ:
            raise ModelFileError(f"{self.path or 'the model'}: trained on log-mels of other feature settings than "
                                 f"{source}'s (features.{'; '.join(differ)}): its scores would mean nothing; rebuild "
                                 "the cache with the model's settings or retrain (dvc repro)")

    def describe(self) -> dict:
        """What the service's /health says about the model: cell, classes, feature and network settings."""
        return {"model": self.cell, "classes": list(self.classes), "features": dataclasses.asdict(self.features),
                "rnn": dataclasses.asdict(self.network.cfg), "members": len(self.members)}

    def predict_log_mels(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities [clips, classes] for log-mels [frames, n_mels] each, as `log_mel`
        computes them; batched by length, returned in input order."""
        if len(clips) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        lengths = np.array([len(c) for c in clips])
        return np.mean([predict_proba(net, clips.__getitem__, lengths, norm, self.batch_size, self.device)
                        for net, norm in self.members], axis=0)

    def predict_split(self, data: SplitData) -> np.ndarray:
        """Class probabilities [clips, classes] of a split of the feature cache, read a batch at a time."""
        return np.mean([predict_proba(net, data.clip, data.lengths, norm, self.batch_size, self.device)
                        for net, norm in self.members], axis=0)

    def predict_audio(self, audio: np.ndarray) -> np.ndarray:
        """Class probabilities [classes] of one mono waveform at `features.sample_rate` Hz (float,
        nominally within ±1); AudioError("silent_audio") if nothing but silence is left after trimming."""
        return self.predict_log_mels([self.log_mel(np.asarray(audio, np.float32))])[0]

    def prediction(self, probs: np.ndarray, audio: dict | None = None) -> Prediction:
        """The Prediction of one row of probabilities [classes] (and what was analysed, if from a file)."""
        return Prediction(self.classes[int(np.argmax(probs))], {c: float(p) for c, p in zip(self.classes, probs)},
                          dict(audio or {}))

    def classify(self, path: str | Path) -> Prediction:
        """The accent of one audio file (MP3, WAV, FLAC, OGG/Opus; any rate and channels).

        Raises AudioError (with `reason` and a message naming the file) if it cannot be used.
        """
        return self.classify_batch([path])[0]

    def classify_batch(self, paths: Sequence[str | Path], workers: int = 1) -> list[Prediction]:
        """One Prediction per file, in order; AudioError for the first file that cannot be used
        (`classify_files` reports each one instead).  workers: decoding processes."""
        out = []
        for _, result in self.classify_files(paths, workers):
            if isinstance(result, AudioError):
                raise result
            out.append(result)
        return out

    def classify_files(self, paths: Sequence[str | Path], workers: int = 1,
                       one_worker_hint: str = "workers=1") -> Iterator[tuple[Path, Prediction | AudioError]]:
        """(path, Prediction or AudioError) per file, in order, as they are done: worker processes
        decode ahead while this one classifies the clips already decoded, a few batches at a time."""
        paths = [Path(p) for p in paths]
        chunk: list[tuple[Path, Analysis | AudioError]] = []
        decoded = extract_all([str(p) for p in paths], self.features, workers, one_worker_hint=one_worker_hint)
        for path, result in zip(paths, decoded):
            chunk.append((path, result))
            if len(chunk) == CHUNK_BATCHES * self.batch_size:
                yield from self._flush(chunk)
                chunk = []
        yield from self._flush(chunk)

    def _flush(self, chunk: list[tuple[Path, Analysis | AudioError]]) -> Iterator[tuple[Path, Prediction | AudioError]]:
        probs = iter(self.predict_log_mels([r.frames for _, r in chunk if not isinstance(r, AudioError)]))
        for path, result in chunk:
            yield path, result if isinstance(result, AudioError) else self.prediction(next(probs), result.about())


def non_finite(network: torch.nn.Module, normaliser: Normaliser) -> str:
    """"" if every weight, buffer and normalisation statistic is a finite number, else which are not."""
    bad = [name for name, t in network.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    bad += [name for name in ("mean", "std") if not np.isfinite(np.asarray(getattr(normaliser, name), np.float64)).all()]
    if not bad:
        return ""
    return f"{len(bad)} tensor(s) ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) hold"


def load(path: str | Path = MODEL_FILE, device: torch.device | str = "cpu", batch_size: int = 64) -> AccentModel:
    """`AccentModel.load`: the trained model of a model file (default: the pipeline's, paths.MODEL_FILE)."""
    return AccentModel.load(path, device, batch_size)
