"""Training batches built on the device: known answers from a per-clip numpy reference of each step."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from acento.config import AugmentConfig, NormaliseConfig, SpecAugmentConfig
from acento.features.cache import SplitData
from acento.model.inputs import Normaliser, collate
from acento.training.batches import Batcher, draw_epoch, frame_batches, no_draws, padding_fraction
from tests.helpers import params

ALL_ON = AugmentConfig(time_stretch=0.3, freq_warp=0.2, freq_shift=3, crop=0.6)
OFF = AugmentConfig(time_stretch=0.0, freq_warp=0.0, freq_shift=0, crop=1.0)
MASKS = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=20)
NO_MASKS = SpecAugmentConfig(freq_masks=0, freq_width=0, time_masks=0, time_width=0)


def reference(clip: np.ndarray, draws, i: int, normalise: Normaliser) -> np.ndarray:
    """Clip i of a batch, one step at a time in numpy (float64): crop, time stretch (linear), mel warp
    about the low end after a shift of the source bands, `Normaliser`, SpecAugment's masks."""
    keep, n, mels = int(draws.keep[i]), int(draws.length[i]), clip.shape[1]
    x = clip[draws.start[i]:draws.start[i] + keep].astype(np.float64)
    pos = np.minimum(np.arange(n) * np.float64(draws.stretch[i]), keep - 1)
    low = np.floor(pos).astype(int)
    x = x[low] + (x[np.minimum(low + 1, keep - 1)] - x[low]) * (pos - low)[:, None]
    band = np.clip(np.arange(mels) - draws.shift[i], 0, mels - 1)
    pos = np.minimum(band * np.float64(draws.warp[i]), mels - 1)
    low = np.floor(pos).astype(int)
    x = x[:, low] + (x[:, np.minimum(low + 1, mels - 1)] - x[:, low]) * (pos - low)[None, :]
    x = normalise(x.astype(np.float32)).astype(np.float64)
    for start, width in draws.freq_mask[i]:
        x[:, start:start + width] = 0
    for start, width in draws.time_mask[i]:
        x[start:start + width] = 0
    return x


def random_split(lengths=(200, 137, 64, 3, 1), n_mels=64):
    """A split of clips of random log-mels (no structure a normalisation could remove: every resampling
    and every shift changes the numbers)."""
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 300, (n, n_mels)).astype(np.float32) for n in lengths]
    frames = np.concatenate(clips).astype(np.float32)
    offsets = np.cumsum([0, *lengths[:-1]])
    return SimpleNamespace(frames=frames, offsets=offsets, lengths=np.array(lengths), lazy=False,
                           labels=np.arange(len(lengths)) % 2), clips


def one_batch(batcher, draws, index):
    return next(batcher.epoch(draws, [np.asarray(index)]))


@pytest.mark.parametrize("normalise", [NormaliseConfig(global_stats=True, utterance_mean=True, utterance_std=False),
                                       NormaliseConfig(global_stats=False, utterance_mean=True, utterance_std=True)])
def test_every_augmented_clip_equals_the_per_clip_reference(normalise):
    data, clips = random_split()
    rng = np.random.default_rng(3)
    normaliser = Normaliser(normalise, rng.normal(0, 50, 64).astype(np.float32),
                            rng.uniform(100, 300, 64).astype(np.float32))
    batcher = Batcher(data, normaliser, torch.device("cpu"))
    for seed in range(5):
        draws = draw_epoch(data.lengths, ALL_ON, MASKS, 64, np.random.default_rng(seed))
        batch = one_batch(batcher, draws, [4, 0, 2, 1, 3])
        assert batch.features.shape == (5, int(draws.length.max()), 64)
        for row, i in enumerate([4, 0, 2, 1, 3]):
            n = int(draws.length[i])
            assert batch.lengths[row] == n and batch.labels[row] == data.labels[i]
            want = reference(clips[i], draws, i, normaliser)
            np.testing.assert_allclose(batch.features[row, :n].numpy(), want, atol=2e-4, rtol=1e-4)
            assert torch.all(batch.features[row, n:] == 0)


def test_without_augmentation_the_training_input_is_the_inference_input(cache):
    """No draws: a training batch is `collate`'s batch (what evaluate and predict feed the network)."""
    data = SplitData(cache, "train")
    normaliser = Normaliser(params().normalise, data.mean, data.std)
    index = np.array([5, 0, 3])
    batch = one_batch(Batcher(data, normaliser, torch.device("cpu")), no_draws(data.lengths), index)
    want = collate([data.clip(i) for i in index], data.labels[index], index, normaliser)
    torch.testing.assert_close(batch.features, want.features, atol=1e-5, rtol=1e-5)
    assert batch.lengths.tolist() == want.lengths.tolist() and batch.labels.tolist() == want.labels.tolist()


def test_a_lazily_read_split_gives_the_batches_of_one_in_memory(cache, monkeypatch):
    in_memory = SplitData(cache, "train")
    monkeypatch.setenv("ACENTO_IN_MEMORY_BYTES", "1")
    lazy = SplitData(cache, "train")
    assert lazy.lazy and not in_memory.lazy
    normaliser = Normaliser(params().normalise, in_memory.mean, in_memory.std)
    draws = draw_epoch(in_memory.lengths, ALL_ON, MASKS, 64, np.random.default_rng(0))
    index = np.array([7, 2, 11, 4])
    a = one_batch(Batcher(in_memory, normaliser, torch.device("cpu")), draws, index)
    b = one_batch(Batcher(lazy, normaliser, torch.device("cpu")), draws, index)
    torch.testing.assert_close(a.features, b.features)


@pytest.mark.parametrize("change, low, high", [
    ({"crop": 0.5}, 100, 200), ({"time_stretch": 0.2}, 166, 251), ({"freq_warp": 0.2}, 200, 200),
    ({"freq_shift": 3}, 200, 200), ({"crop": 0.6, "time_stretch": 0.1, "freq_warp": 0.1, "freq_shift": 2}, 109, 223),
])
def test_drawn_lengths_stay_in_the_ranges_the_settings_allow(change, low, high):
    draws = draw_epoch(np.full(500, 200), dataclasses.replace(OFF, **change), None, 64, np.random.default_rng(0))
    assert low <= draws.length.min() and draws.length.max() <= high
    assert np.all(draws.start + draws.keep <= 200) and np.all(draws.start >= 0)
    assert np.all(np.abs(draws.shift) <= change.get("freq_shift", 0))
    assert np.all(np.abs(draws.warp - 1) <= change.get("freq_warp", 0) + 1e-6)


def test_masks_stay_within_their_widths_and_a_fifth_of_the_clip():
    lengths = np.random.default_rng(0).integers(1, 400, 2000)
    draws = draw_epoch(lengths, OFF, MASKS, 64, np.random.default_rng(1))
    assert draws.freq_mask.shape == (2000, 2, 2) and draws.time_mask.shape == (2000, 2, 2)
    assert draws.freq_mask[..., 1].max() == 10 and np.all(draws.freq_mask.sum(-1) <= 64)
    assert np.all(draws.time_mask[..., 1] <= np.minimum(20, lengths // 5)[:, None])
    assert np.all(draws.time_mask[..., 0] < np.maximum(1, lengths)[:, None])


def test_the_draws_are_the_seeds_and_not_the_devices():
    a = draw_epoch(np.arange(1, 300), ALL_ON, MASKS, 64, np.random.default_rng(9))
    b = draw_epoch(np.arange(1, 300), ALL_ON, MASKS, 64, np.random.default_rng(9))
    assert all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    none = draw_epoch(np.arange(1, 300), None, None, 64, np.random.default_rng(9))
    assert np.array_equal(none.length, np.arange(1, 300)) and none.freq_mask.shape[1] == 0


def test_frame_batches_keep_every_clip_within_the_budget_with_little_padding():
    lengths = np.random.default_rng(0).integers(50, 1000, size=5000)
    batches = frame_batches(lengths, 8000, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    assert all(len(b) * lengths[b].max() <= 8000 for b in batches)
    assert padding_fraction(lengths, batches) < 0.05
    assert frame_batches(np.array([9000, 10]), 8000, np.random.default_rng(0))  # too long: alone, kept
    sizes = {len(b) for b in batches}
    assert max(sizes) >= 4 * min(sizes)  # short clips: many per batch; long ones: few
