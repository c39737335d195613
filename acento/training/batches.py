"""Training batches built on the training device, whole batches at a time.

Per epoch, the host draws every clip's augmentation at once (`draw_epoch`: crop, time stretch, mel warp,
mel shift, SpecAugment masks, as numpy arrays from the run's seeded generator) and cuts the epoch into
length-bucketed batches (`bucketed_batches`, or `frame_batches` by a budget of padded frames, as lhotse's
dynamic bucketing and SpeechBrain's dynamic batching do).  The plan goes to the device once per epoch;
each batch is then a few gathers and element-wise operations on the device (`Batcher.batch`): resample the
kept frames, warp and shift the mel axis, normalise (`acento.model.inputs.Normaliser`'s arithmetic), zero
the padding, mask.  No per-clip Python, no host round trip per step.  The draws do not depend on the
device, so a run on CUDA sees the augmentation a CPU run sees.

Bucketing matters for recurrent models: a batch costs as many RNN steps as its longest clip, so
clips of similar (augmented) length are batched together and padding stays small.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from acento.config import AugmentConfig, SpecAugmentConfig
from acento.model.inputs import Normaliser

if TYPE_CHECKING:  # an annotation only
    from acento.features.cache import SplitData

T = TypeVar("T")


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucketing: bool = True, pool_batches: int = 50) -> list[np.ndarray]:
    """Shuffled batches of `batch_size` clips; with bucketing, each pool of `pool_batches` batches is
    sorted by length first."""
    order = rng.permutation(len(lengths))
    if bucketing:
        pool = batch_size * pool_batches
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, -(-len(order) // pool)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def frame_batches(lengths: np.ndarray, max_frames: int, rng: np.random.Generator,
                  pool_clips: int = 2000) -> list[np.ndarray]:
    """Shuffled batches whose padded size (clips x longest clip) stays within `max_frames` frames.

    Clips are shuffled, sorted by length within pools of `pool_clips`, and cut greedily: a batch of long
    clips holds few, one of short clips many, so every step costs about the same and padding is small
    (`padding_fraction`).  A clip longer than `max_frames` is a batch of its own."""
    order = rng.permutation(len(lengths))
    order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                            for chunk in np.array_split(order, max(1, -(-len(order) // pool_clips)))])
    batches, start, longest = [], 0, 0
    for pos, clip in enumerate(order):
        longest_with = max(longest, int(lengths[clip]))
        if pos > start and (pos - start + 1) * longest_with > max_frames:
            batches.append(order[start:pos])
            start, longest_with = pos, int(lengths[clip])
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of the batches' padded frames that are padding."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - float(sum(int(lengths[b].sum()) for b in batches)) / max(padded, 1)


@dataclass
class EpochDraws:
    """One epoch's augmentation of every training clip (arrays over the split's clips, host side)."""
    start: np.ndarray    # [clips] int64: first frame kept (crop)
    keep: np.ndarray     # [clips] int64: frames kept (crop)
    length: np.ndarray   # [clips] int64: frames the network sees (after the time stretch)
    stretch: np.ndarray  # [clips] float32: kept frames per output frame (1 = unchanged)
    warp: np.ndarray     # [clips] float32: mel axis factor (1 = unchanged)
    shift: np.ndarray    # [clips] int64: mel bands the spectrum moves up (negative: down)
    freq_mask: np.ndarray  # [clips, freq_masks, 2] int64: first band and width of each frequency mask
    time_mask: np.ndarray  # [clips, time_masks, 2] int64: first frame and width of each time mask


def _integers(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Uniform integers in [low, high) elementwise (high > low)."""
    return low + np.floor(rng.random(len(low)) * (high - low)).astype(np.int64)


def draw_epoch(lengths: np.ndarray, augment: AugmentConfig | None, masks: SpecAugmentConfig | None,
               n_mels: int, rng: np.random.Generator) -> EpochDraws:
    """Every clip's augmentation for one epoch, drawn at once from `rng`; None: no augmentation.

    crop: a random window of at least `crop` of the frames (clips of more than 2 frames); time_stretch:
    speed change by a factor in [1 - x, 1 + x] (the kept frames resampled linearly to round(keep / factor),
    at least 2); freq_warp: the mel axis stretched about its low end by a factor in [1 - x, 1 + x] (a
    vocal-tract-length-like change of the voice); freq_shift: the spectrum moved up to x bands up or down.
    SpecAugment (Park et al., 2019): per clip `freq_masks` bands of up to `freq_width` mels and `time_masks`
    spans of up to `time_width` frames (at most a fifth of the clip) set to 0, the training mean."""
    n = len(lengths)
    lengths = lengths.astype(np.int64)
    start, keep = np.zeros(n, np.int64), lengths.copy()
    stretch, warp = np.ones(n, np.float32), np.ones(n, np.float32)
    shift = np.zeros(n, np.int64)
    if augment is not None and augment.crop < 1.0:
        lo = np.minimum(np.maximum(2, np.ceil(augment.crop * lengths).astype(np.int64)), lengths)
        keep = np.where(lengths > 2, _integers(rng, lo, lengths + 1), lengths)
        start = _integers(rng, np.zeros(n, np.int64), lengths - keep + 1)
    length = keep
    if augment is not None and augment.time_stretch > 0:
        stretch = rng.uniform(1 - augment.time_stretch, 1 + augment.time_stretch, n).astype(np.float32)
        length = np.maximum(2, np.round(keep / stretch.astype(np.float64)).astype(np.int64))
    if augment is not None and augment.freq_warp > 0:
        warp = rng.uniform(1 - augment.freq_warp, 1 + augment.freq_warp, n).astype(np.float32)
    if augment is not None and augment.freq_shift > 0:
        shift = _integers(rng, np.full(n, -augment.freq_shift), np.full(n, augment.freq_shift + 1))
    freq_mask = np.zeros((n, masks.freq_masks if masks else 0, 2), np.int64)
    time_mask = np.zeros((n, masks.time_masks if masks else 0, 2), np.int64)
    for k in range(freq_mask.shape[1]):
        width = _integers(rng, np.zeros(n, np.int64), np.full(n, masks.freq_width + 1))
        freq_mask[:, k] = np.stack([_integers(rng, np.zeros(n, np.int64), np.maximum(1, n_mels - width)), width], 1)
    for k in range(time_mask.shape[1]):
        width = _integers(rng, np.zeros(n, np.int64), np.minimum(masks.time_width, length // 5) + 1)
        time_mask[:, k] = np.stack([_integers(rng, np.zeros(n, np.int64), np.maximum(1, length - width)), width], 1)
    return EpochDraws(start, keep, length, stretch, warp, shift, freq_mask, time_mask)


def no_draws(lengths: np.ndarray) -> EpochDraws:
    """The identity: every clip whole, unchanged, unmasked."""
    n = len(lengths)
    zeros = np.zeros(n, np.int64)
    return EpochDraws(zeros, lengths.astype(np.int64), lengths.astype(np.int64), np.ones(n, np.float32),
                      np.ones(n, np.float32), zeros, np.zeros((n, 0, 2), np.int64), np.zeros((n, 0, 2), np.int64))


@dataclass
class DeviceBatch:
    features: torch.Tensor  # [batch, frames, n_mels] float32 on the device, 0 past each clip's length
    lengths: torch.Tensor   # [batch] int64 on the device
    labels: torch.Tensor    # [batch] int64 on the device
    index: torch.Tensor     # [batch] int64 on the device: positions of these clips in the split


def _lerp_mels(x: torch.Tensor, pos: torch.Tensor, top: int) -> torch.Tensor:
    """x [batch, frames, n_mels] sampled along the mel axis at fractional positions `pos` [batch, n_mels],
    linearly between the two neighbouring bands (the upper one at most `top`)."""
    low = pos.floor()
    frac = (pos - low)[:, None, :]
    low = low.long()
    high = (low + 1).clamp(max=top)
    a = x.gather(2, low[:, None, :].expand(x.shape))
    b = x.gather(2, high[:, None, :].expand(x.shape))
    return a + (b - a) * frac


class Batcher:
    """A split's log-mels on the training device, cut into augmented, normalised, padded batches.

    data: the split (`SplitData`); in memory, its frames go to the device once (float16 stays float16:
    a full release's labelled clips are ~12 GB) when they take at most half the device's free memory;
    otherwise (or lazily read, larger than memory) each batch's clips are read on the host and sent with
    it.  normalise: the training split's `Normaliser`."""

    def __init__(self, data: SplitData, normalise: Normaliser, device: torch.device):
        self.data, self.device = data, device
        # resident on a GPU when the split takes at most half its free memory; else read per batch
        self.lazy = data.lazy or (device.type == "cuda" and
                                  data.frames.nbytes > torch.cuda.mem_get_info(device)[0] // 2)
        self.cfg = normalise.cfg
        self.mean = torch.as_tensor(normalise.mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(normalise.std, dtype=torch.float32, device=device)
        self.labels = torch.as_tensor(data.labels, device=device)
        if not self.lazy:
            self.frames = torch.as_tensor(np.asarray(data.frames), device=device)
            self.offsets = torch.as_tensor(data.offsets.astype(np.int64), device=device)
        self.n_mels = int(data.frames.shape[1])

    def epoch(self, draws: EpochDraws, batches: list[np.ndarray]) -> Iterator[DeviceBatch]:
        """The batches of one epoch (clip positions in `batches`) under `draws`, in order."""
        plan = {name: torch.as_tensor(getattr(draws, name), device=self.device)
                for name in ("start", "keep", "length", "stretch", "warp", "shift", "freq_mask", "time_mask")}
        cuts = np.cumsum([0] + [len(b) for b in batches])
        order = torch.as_tensor(np.concatenate(batches) if batches else np.zeros(0, np.int64), device=self.device)
        widest = [int(draws.length[b].max()) for b in batches]
        plan["mels"] = bool((draws.warp != 1).any() or (draws.shift != 0).any())
        for k, host_index in enumerate(batches):
            index = order[cuts[k]:cuts[k + 1]]
            yield self.batch(index, host_index, widest[k], plan)

    def batch(self, index: torch.Tensor, host_index: np.ndarray, frames: int, plan: dict) -> DeviceBatch:
        """One batch: clips `index` (on the device; `host_index` the same on the host), `frames` wide."""
        length = plan["length"][index]
        x = self._frames(index, host_index, frames, plan)
        if plan["mels"]:
            x = self._mels(x, plan["warp"][index], plan["shift"][index])
        valid = torch.arange(frames, device=self.device)[None, :] < length[:, None]
        x = self._normalise(x, valid, length)
        x = self._mask(x, valid, plan["freq_mask"][index], plan["time_mask"][index])
        return DeviceBatch(x, length, self.labels[index], index)

    def _frames(self, index: torch.Tensor, host_index: np.ndarray, frames: int, plan: dict) -> torch.Tensor:
        """[batch, frames, n_mels] float32: each clip's kept frames, resampled to its length."""
        if self.lazy:
            clips = self.data.clips_at(host_index)
            offsets = np.cumsum([0] + [len(c) for c in clips[:-1]])
            source = torch.as_tensor(np.concatenate(clips), device=self.device)
            base = torch.as_tensor(offsets, device=self.device) + plan["start"][index]
        else:
            source = self.frames
            base = self.offsets[index] + plan["start"][index]
        keep = plan["keep"][index]
        step = torch.arange(frames, device=self.device, dtype=torch.float32)
        pos = torch.minimum(step[None, :] * plan["stretch"][index][:, None], (keep - 1)[:, None].float())
        low = pos.floor()
        frac = (pos - low)[..., None]
        low = low.long()
        high = torch.minimum(low + 1, (keep - 1)[:, None])
        a = source[base[:, None] + low].float()
        b = source[base[:, None] + high].float()
        return a + (b - a) * frac

    def _mels(self, x: torch.Tensor, warp: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The mel axis warped about its low end by `warp`, then moved up by `shift` bands (edges repeated)."""
        top = self.n_mels - 1
        band = torch.arange(self.n_mels, device=self.device)
        source = (band[None, :] - shift[:, None]).clamp(0, top)
        pos = (source.float() * warp[:, None]).clamp(max=float(top))
        return _lerp_mels(x, pos, top)

    def _normalise(self, x: torch.Tensor, valid: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """`Normaliser`'s arithmetic over each clip's valid frames, then 0 (the training mean) past them."""
        cfg, weight = self.cfg, valid[..., None].float()
        n = length.clamp(min=1)[:, None, None].float()
        if cfg.global_stats:
            x = (x - self.mean) / self.std
        if cfg.utterance_mean:
            x = x - (x * weight).sum(1, keepdim=True) / n
        if cfg.utterance_std:
            centred = x - (x * weight).sum(1, keepdim=True) / n
            x = x / ((centred ** 2 * weight).sum(1, keepdim=True) / n).sqrt().clamp_min(1e-5)
        return x * weight

    def _mask(self, x: torch.Tensor, valid: torch.Tensor, freq: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """SpecAugment's masks set to 0: `freq` [batch, masks, 2] (first band, width), `time` likewise."""
        if freq.shape[1]:
            band = torch.arange(self.n_mels, device=self.device)[None, None, :]
            hit = ((band >= freq[..., :1]) & (band < freq[..., :1] + freq[..., 1:])).any(1)
            x = x.masked_fill(hit[:, None, :], 0.0)
        if time.shape[1]:
            step = torch.arange(x.shape[1], device=self.device)[None, None, :]
            hit = ((step >= time[..., :1]) & (step < time[..., :1] + time[..., 1:])).any(1)
            x = x.masked_fill(hit[..., None], 0.0)
        return x


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yields `items` in order while a background thread produces up to `depth` of them ahead.

    Reading a batch from a lazily read cache happens off the training thread, so the accelerator
    does not wait for the disk.  One producer thread keeps the order exactly as without prefetching;
    an exception in the producer is raised here.
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
