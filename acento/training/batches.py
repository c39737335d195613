"""From a split of the feature cache to length-bucketed, normalised, padded batches.

Bucketing matters for recurrent models: a batch costs as many RNN steps as its longest clip, so
clips of similar length are batched together and padding (which packed sequences then skip) stays
small.  Normalisation uses the per-mel statistics of the training split (of the fold), which
`cache.SplitData` sums from the cache.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from acento.config import AugmentConfig, NormaliseConfig, SpecAugmentConfig

if TYPE_CHECKING:  # an annotation only: `predict` batches clips without h5py and pandas (cache, manifest)
    from acento.features.cache import SplitData


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


def _resample_axis(x: np.ndarray, axis: int, n_out: int, factor: float) -> np.ndarray:
    """Linear interpolation of `x` along `axis` at positions i * factor, i < n_out (edges repeated)."""
    positions = np.minimum(np.arange(n_out) * factor, x.shape[axis] - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    frac = (positions - low).astype(np.float32)
    a, b = np.take(x, low, axis=axis), np.take(x, high, axis=axis)
    shape = [1, 1]
    shape[axis] = n_out
    return a + (b - a) * frac.reshape(shape)


def augment_clip(x: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A randomly varied copy of one clip's log-mels [frames, n_mels] (frames may change, mels not).

    crop: a random window of at least `crop` of the frames; time_stretch: speed change by resampling
    the frame axis; freq_warp: the mel axis stretched about its low end (a vocal-tract-length-like
    change of the voice); freq_shift: the spectrum moved up or down a few bands.  These vary what a
    speaker's voice and pace look like while keeping the segments that carry an accent.
    """
    frames, mels = x.shape
    if cfg.crop < 1.0 and frames > 2:
        keep = int(rng.integers(max(2, int(np.ceil(cfg.crop * frames))), frames + 1))
        start = int(rng.integers(0, frames - keep + 1))
        x = x[start:start + keep]
    if cfg.time_stretch > 0:
        factor = float(rng.uniform(1 - cfg.time_stretch, 1 + cfg.time_stretch))
        x = _resample_axis(x, 0, max(2, int(round(len(x) / factor))), factor)
    if cfg.freq_warp > 0:
        x = _resample_axis(x, 1, mels, float(rng.uniform(1 - cfg.freq_warp, 1 + cfg.freq_warp)))
    if cfg.freq_shift > 0:
        shift = int(rng.integers(-cfg.freq_shift, cfg.freq_shift + 1))
        x = np.take(x, np.clip(np.arange(mels) - shift, 0, mels - 1), axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def augments(cfg: AugmentConfig) -> bool:
    return cfg.crop < 1.0 or cfg.time_stretch > 0 or cfg.freq_warp > 0 or cfg.freq_shift > 0


def iterate(data: SplitData, batches: list[np.ndarray], normalise: Normaliser,
            augment: tuple[AugmentConfig, SpecAugmentConfig] | None = None,
            rng: np.random.Generator | None = None) -> Iterator[Batch]:
    """The batches of `data` given by `batches` (clip positions), augmented when `augment` (and
    `rng`) are given, then normalised and padded."""
    for index in batches:
        clips = data.clips_at(index)
        if augment is not None and augments(augment[0]):
            clips = [augment_clip(c, augment[0], rng) for c in clips]
        batch = collate(clips, data.labels[index], index, normalise)
        if augment is not None and (augment[1].freq_masks or augment[1].time_masks):
            for row, length in enumerate(batch.lengths.tolist()):
                spec_augment(batch.features[row, :length].numpy(), augment[1], rng)
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
