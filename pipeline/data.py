"""From a split of the feature cache to length-bucketed, normalised, padded batches.

Bucketing matters for recurrent models: a batch costs as many RNN steps as its longest clip, so
clips of similar length are batched together and padding (which packed sequences then skip) stays
small.  Normalisation uses the per-mel statistics of the training split stored in the cache.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from pipeline.config import SpecAugmentConfig

if TYPE_CHECKING:  # an annotation only: `predict` batches clips without h5py and pandas (cache, manifest)
    from pipeline.cache import SplitData

T = TypeVar("T")


@dataclass
class Batch:
    features: torch.Tensor  # [batch, time, n_mels], zero (the training mean) beyond each length
    lengths: torch.Tensor   # [batch] int64, on the CPU as pack_padded_sequence wants
    labels: torch.Tensor    # [batch] int64
    index: np.ndarray       # positions of these clips in the split


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
    """The batches of `data` given by `batches` (clip positions), normalised, padded, augmented if asked."""
    for index in batches:
        clips = data.clips_at(index)
        batch = collate(clips, data.labels[index], index, data.mean, data.std)
        if augment is not None and rng is not None and (augment.freq_masks or augment.time_masks):
            for row, length in enumerate(batch.lengths.tolist()):
                spec_augment(batch.features[row, :length].numpy(), augment, rng)
        yield batch


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yields `items` in order while a background thread produces up to `depth` of them ahead.

    Reading a batch from a lazily read cache and collating it happen off the training thread, so
    the accelerator does not wait for the disk.  One producer thread keeps the order (and the seeded
    augmentation) exactly as without prefetching; an exception in the producer is raised here.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
            buffer.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put((done, exc))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
