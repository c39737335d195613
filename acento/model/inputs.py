"""The network's input from log-mels: normalisation, padding into batches, evaluation order.

The same at training, evaluation and inference: the model file carries the normaliser's settings and
the training split's statistics, and every app classifies through `collate`.  Training builds the same
input on its device, batched (`acento.training.batches`), checked against this per-clip version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from acento.config import NormaliseConfig


@dataclass
class Batch:
    features: torch.Tensor  # [batch, time, n_mels], zero (the training mean) beyond each length
    lengths: torch.Tensor   # [batch] int64, on the CPU as pack_padded_sequence wants
    labels: torch.Tensor    # [batch] int64
    index: np.ndarray       # positions of these clips in the split


def sequential_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation order: sorted by length (little padding), every clip once."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass(frozen=True)
class Normaliser:
    """Log-mels [frames, n_mels] -> the network's input, the same at training and inference.

    First the training split's per-mel statistics (`global_stats`), then each clip's own per-mel
    mean (`utterance_mean`) and std (`utterance_std`): a clip's mean log-mel spectrum carries the
    microphone, the level and much of the voice, which identify a speaker more than an accent.
    """
    cfg: NormaliseConfig
    mean: np.ndarray  # [n_mels] of the training split
    std: np.ndarray   # [n_mels]

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        x = (clip - self.mean) / self.std if self.cfg.global_stats else clip.astype(np.float32, copy=True)
        if self.cfg.utterance_mean:
            x = x - x.mean(axis=0, keepdims=True)
        if self.cfg.utterance_std:
            x = x / np.maximum(x.std(axis=0, keepdims=True), 1e-5)
        return x.astype(np.float32, copy=False)


def collate(clips: list[np.ndarray], labels: np.ndarray, index: np.ndarray, normalise: Normaliser) -> Batch:
    """Normalises and pads clips (padding is 0, the normalised mean) into one batch."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    out = np.zeros((len(clips), int(lengths.max()), clips[0].shape[1]), dtype=np.float32)
    for row, clip in enumerate(clips):
        out[row, :len(clip)] = normalise(clip)
    return Batch(torch.from_numpy(out), torch.from_numpy(lengths), torch.from_numpy(np.asarray(labels)), index)
