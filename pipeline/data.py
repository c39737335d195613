"""Reading the HDF5 feature cache into length-bucketed, normalised, padded batches.

Bucketing matters for recurrent models: a batch costs as many RNN steps as its longest clip, so
clips of similar length are batched together and padding (which packed sequences then skip) stays
small.  Normalisation uses the per-mel statistics of the training split stored in the cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.config import FeaturesConfig, SpecAugmentConfig
from pipeline.audio import features_config

IN_MEMORY_BYTES = 4 << 30  # a split smaller than this is read into memory once


@dataclass
class Batch:
    features: torch.Tensor  # [batch, time, n_mels], zero (the training mean) beyond each length
    lengths: torch.Tensor   # [batch] int64, on the CPU as pack_padded_sequence wants
    labels: torch.Tensor    # [batch] int64
    index: np.ndarray       # positions of these clips in the split


class SplitData:
    """One split of the cache: frames as one array (or a lazily read HDF5 dataset) plus clip tables."""

    def __init__(self, path: str | Path, split: str):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; run the features stage first (dvc repro features)") from None
        group = self._file[split]
        frames = group["frames"]
        self.frames = frames[()] if frames.size * frames.dtype.itemsize <= IN_MEMORY_BYTES else frames
        self.offsets = group["offsets"][()]
        self.lengths = group["lengths"][()].astype(np.int64)
        self.labels = group["labels"][()].astype(np.int64)
        self.speakers = group["speakers"].asstr()[()]
        self.clips = group["clips"].asstr()[()]
        self.classes: list[str] = json.loads(self._file.attrs["classes"])
        self.feature_config: FeaturesConfig = features_config(self._file.attrs["features"])
        self.mean = np.asarray(self._file.attrs["mean"], np.float32)
        self.std = np.asarray(self._file.attrs["std"], np.float32)

    def __len__(self) -> int:
        return len(self.lengths)

    def clip(self, i: int) -> np.ndarray:
        start = self.offsets[i]
        return np.asarray(self.frames[start:start + self.lengths[i]], dtype=np.float32)


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucketing: bool = True, pool_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches; with bucketing, each pool of `pool_batches` batches is sorted by length first."""
    order = rng.permutation(len(lengths))
    if bucketing:
        pool = batch_size * pool_batches
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, -(-len(order) // pool)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sequential_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation order: sorted by length (little padding), every clip once."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def spec_augment(x: np.ndarray, cfg: SpecAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Frequency and time masks set to 0, which is the training mean after normalisation."""
    frames, mels = x.shape
    for _ in range(cfg.freq_masks):
        width = int(rng.integers(0, cfg.freq_width + 1))
        start = int(rng.integers(0, max(1, mels - width)))
        x[:, start:start + width] = 0.0
    for _ in range(cfg.time_masks):
        width = int(rng.integers(0, min(cfg.time_width, frames // 5) + 1))
        start = int(rng.integers(0, max(1, frames - width)))
        x[start:start + width] = 0.0
    return x


def collate(clips: list[np.ndarray], labels: np.ndarray, index: np.ndarray, mean: np.ndarray,
            std: np.ndarray) -> Batch:
    """Normalises and pads clips (padding is 0, the normalised mean) into one batch."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    out = np.zeros((len(clips), int(lengths.max()), clips[0].shape[1]), dtype=np.float32)
    for row, clip in enumerate(clips):
        out[row, :len(clip)] = (clip - mean) / std
    return Batch(torch.from_numpy(out), torch.from_numpy(lengths), torch.from_numpy(np.asarray(labels)), index)


def iterate(data: SplitData, batches: list[np.ndarray], augment: SpecAugmentConfig | None = None,
            rng: np.random.Generator | None = None) -> Iterator[Batch]:
    for index in batches:
        clips = [data.clip(i) for i in index]
        batch = collate(clips, data.labels[index], index, data.mean, data.std)
        if augment is not None and rng is not None and (augment.freq_masks or augment.time_masks):
            for row, length in enumerate(batch.lengths.tolist()):
                spec_augment(batch.features[row, :length].numpy(), augment, rng)
        yield batch
