import json

import numpy as np
import pytest
import torch

from pipeline.data import SplitData, bucketed_batches, iterate
from pipeline.train import class_weights, train
from tests.helpers import params

TINY = {"train.epochs": 3, "rnn.hidden_size": 8, "rnn.num_layers": 1, "rnn.frontend_channels": 8,
        "train.batch_size": 4, "train.num_threads": 1}


def test_training_is_deterministic_for_a_seed(cache, tmp_path):
    p = params(**TINY)
    a = train(p, cache, tmp_path / "a.pt", tmp_path / "live_a")
    b = train(p, cache, tmp_path / "b.pt", tmp_path / "live_b")
    for key in ("best_dev", "best_epoch", "epochs_run", "parameters"):
        assert a[key] == b[key]
    wa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(params(**TINY, **{"train.seed": 1}), cache, tmp_path / "c.pt", tmp_path / "live_c")
    wc = torch.load(tmp_path / "c.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_training_writes_model_metrics_and_curves(cache, tmp_path):
    metrics = train(params(**TINY, **{"model": "gru"}), cache, tmp_path / "m.pt", tmp_path / "live")
    assert metrics["model"] == "gru" and metrics["epochs_run"] == 3 and 1 <= metrics["best_epoch"] <= 3
    assert set(metrics["best_dev"]) == {"loss", "accuracy", "macro_f1"} and metrics["parameters"] > 0
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["classes"] == ["high", "low"] and ckpt["features"]["n_mels"] == 64
    curve = (tmp_path / "live" / "plots" / "metrics" / "dev" / "macro_f1.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "macro_f1"] and len(curve) == 4
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == 2


def test_early_stopping_stops_before_the_epoch_limit(cache, tmp_path):
    metrics = train(params(**{**TINY, "train.epochs": 40, "train.early_stopping_patience": 1, "train.lr": 1e-9}),
                    cache, tmp_path / "m.pt", tmp_path / "live")
    assert metrics["epochs_run"] < 40 and metrics["epochs_run"] == metrics["best_epoch"] + 1


def test_bucketing_groups_similar_lengths_and_keeps_every_clip():
    lengths = np.random.default_rng(0).integers(50, 1000, size=1000)
    rng = np.random.default_rng(1)
    bucketed = bucketed_batches(lengths, 16, rng, bucketing=True)
    plain = bucketed_batches(lengths, 16, np.random.default_rng(1), bucketing=False)
    for batches in (bucketed, plain):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padding = lambda bs: sum(lengths[b].max() * len(b) - lengths[b].sum() for b in bs)  # noqa: E731
    assert padding(bucketed) < 0.2 * padding(plain)


def test_batches_are_normalised_padded_with_zero_and_augment_only_when_asked(cache):
    data = SplitData(cache, "train")
    batch = next(iterate(data, [np.array([0, 1, 2])]))
    assert batch.features.shape == (3, int(batch.lengths.max()), 64)
    for row, n in enumerate(batch.lengths.tolist()):
        assert torch.all(batch.features[row, n:] == 0)
    aug = params(**{"train.specaugment.freq_masks": 2, "train.specaugment.freq_width": 10}).train.specaugment
    masked = next(iterate(data, [np.array([0, 1, 2])], aug, np.random.default_rng(0)))
    assert (masked.features == 0).sum() > (batch.features == 0).sum()


def test_class_weights_are_inverse_frequency():
    assert class_weights(np.array([0, 0, 0, 1]), 2).tolist() == pytest.approx([4 / 6, 2.0])
