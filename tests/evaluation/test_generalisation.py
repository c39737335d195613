"""The means of learning accents rather than voices: normalisation, augmentation, the speaker adversary."""

import dataclasses

import numpy as np
import torch

from acento.config import AugmentConfig, NormaliseConfig
from acento.features.cache import SplitData
from acento.model.inputs import Normaliser
from acento.model.network import AccentClassifier, SpeakerAdversary, reverse_gradient
from acento.training.trainer import Trainer, train
from tests.helpers import params, tiny

TINY = tiny(epochs=2)
OFF = AugmentConfig(time_stretch=0.0, freq_warp=0.0, freq_shift=0, crop=1.0)


def ramp(frames=200, mels=64):
    """A clip whose value says where it is: frame index * 1000 + mel index."""
    return (np.arange(frames)[:, None] * 1000 + np.arange(mels)[None, :]).astype(np.float32)


def test_utterance_normalisation_removes_each_clips_mean_and_scale():
    rng = np.random.default_rng(0)
    clip = rng.normal(3.0, 2.0, size=(120, 64)).astype(np.float32) + np.linspace(0, 5, 64)
    stats = Normaliser(NormaliseConfig(True, False, False), clip.mean(0) + 1, np.full(64, 2.0, np.float32))
    np.testing.assert_allclose(stats(clip).mean(0), -0.5, atol=1e-4)
    both = Normaliser(NormaliseConfig(True, True, True), stats.mean, stats.std)
    np.testing.assert_allclose(both(clip).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(both(clip).std(0), 1, atol=1e-3)
    alone = Normaliser(NormaliseConfig(False, True, False), stats.mean, stats.std)
    np.testing.assert_allclose(alone(clip), clip - clip.mean(0), atol=1e-4)
    # a constant channel offset (a different microphone gain) disappears with the utterance mean
    np.testing.assert_allclose(both(clip + 7.0), both(clip), atol=1e-4)


def test_augmentation_is_off_at_evaluation(cache):
    """The dev evaluation sees exactly the unaugmented clips: the same scores twice, whatever the draws."""
    p = params(**TINY, **{"train.augment.crop": 0.5, "train.augment.time_stretch": 0.2,
                          "train.specaugment.time_masks": 2, "train.dev_speakers": "select"})
    trainer = Trainer(p, cache)
    trainer.train_one_epoch(1)
    assert trainer.validate() == trainer.validate()


def test_gradient_reversal_flips_the_sign_and_scales_by_strength():
    x = torch.randn(3, 4, requires_grad=True)
    (reverse_gradient(x, 0.5) * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * torch.arange(4.0).expand(3, 4))
    torch.testing.assert_close(reverse_gradient(x.detach(), 0.5), x.detach())  # identity forward


def test_the_adversary_pushes_the_encoder_against_speaker_identity():
    torch.manual_seed(0)
    pooled = torch.randn(8, 6, requires_grad=True)
    adversary = SpeakerAdversary(6, 4, 5)
    speakers = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    torch.nn.functional.cross_entropy(adversary(pooled, 1.0), speakers).backward()
    through_reversal = pooled.grad.clone()
    pooled.grad = None
    torch.nn.functional.cross_entropy(adversary.net(pooled), speakers).backward()
    torch.testing.assert_close(through_reversal, -pooled.grad)  # the encoder climbs the speaker loss


def test_training_with_every_means_runs_and_the_model_file_carries_the_normalisation(cache, tmp_path):
    p = params(**TINY, **{"normalise.utterance_mean": True, "normalise.utterance_std": True,
                          "rnn.pooling": "stats", "train.optimizer": "adamw", "train.weight_decay": 0.01,
                          "train.schedule": "cosine", "train.adversary.weight": 0.5,
                          "train.augment.freq_warp": 0.1, "train.augment.crop": 0.8})
    metrics = train(p, cache, tmp_path / "m.pt", tmp_path / "live")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["normalise"] == {"global_stats": True, "utterance_mean": True, "utterance_std": True}
    assert not any(k.startswith("net.") for k in ckpt["state_dict"])  # the adversary is not saved
    assert metrics["epochs_run"] == 2 and ckpt["rnn"]["pooling"] == "stats"


def test_predict_applies_the_utterance_normalisation_the_model_was_trained_with(cache, tmp_path):
    from acento.model.accent_model import AccentModel

    p = params(**TINY, **{"normalise.utterance_mean": True})
    train(p, cache, tmp_path / "m.pt", tmp_path / "live")
    model = AccentModel.load(tmp_path / "m.pt")
    network = model.network
    trained_with = Trainer(p, cache).normalise
    seen = []
    network.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].clone(), inputs[1].clone())))
    test = SplitData(cache, "test")
    files = [cache.parent / clip for clip in test.clips]
    model.classify_batch(files)
    x, lengths = seen[0]
    extract = model.log_mel
    by_length = {int(n): row for row, n in enumerate(lengths)}
    for f in files:
        expected = trained_with(extract.from_file(f))
        got = x[by_length[len(expected)], :len(expected)].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got.mean(0), 0, atol=1e-4)  # the utterance mean is gone, as in training


def test_stats_pooling_looks_only_at_real_frames():
    cfg = dataclasses.replace(params().rnn, hidden_size=6, num_layers=1, frontend="none", pooling="stats",
                              bidirectional=True, dropout=0.0)
    torch.manual_seed(0)
    m = AccentClassifier(10, 3, "gru", cfg).eval()
    x = torch.randn(1, 20, 10)
    padded = torch.cat([x, torch.randn(1, 15, 10) * 100], dim=1)
    torch.testing.assert_close(m(padded, torch.tensor([20])), m(x, torch.tensor([20])), rtol=1e-5, atol=1e-5)
    assert m.pool(x, torch.tensor([20])).shape == (1, 24)
