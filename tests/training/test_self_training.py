"""Self-training in the train stage: a first run labels the pool's speakers it is sure of, a second trains on
them too (#35)."""

import json

import numpy as np
import pytest
import torch

from acento.config import ConfigError
from acento.training import self_training
from acento.training.self_training import label_pool, train_self_trained
from acento.training.trainer import train
from tests.helpers import params, tiny

POOL_ON = {"data.unlabelled_clips": 1000}


class Scripted:
    """A stand-in model: fixed probabilities per pool clip, in the pool's order."""
    classes = ["high", "low"]

    def __init__(self, by_speaker: dict[str, list[list[float]]]):
        self.by_speaker = by_speaker

    def predict_split(self, pool):
        seen: dict[str, int] = {}
        rows = []
        for s in pool.speakers:
            rows.append(self.by_speaker[s][seen.get(s, 0)])
            seen[s] = seen.get(s, 0) + 1
        return np.array(rows)


def test_the_pool_is_labelled_once_per_speaker_on_mean_probabilities(pool_cache):
    # two clips per pool speaker (u6..u10)
    model = Scripted({"u6": [[0.9, 0.1], [0.7, 0.3]],    # mean 0.8 high: kept at 0.8
                      "u7": [[0.95, 0.05], [0.3, 0.7]],  # mean 0.625 high: one sure clip is not a sure speaker
                      "u8": [[0.2, 0.8], [0.0, 1.0]],    # mean 0.9 low: kept
                      "u9": [[0.5, 0.5], [0.5, 0.5]],
                      "u10": [[0.1, 0.9], [0.5, 0.5]]})  # mean 0.7 low
    labels, summary = label_pool(model, pool_cache, 0.8)
    assert labels == {"u6": 0, "u8": 1}
    assert summary == {"min_confidence": 0.8, "pool_speakers": 5, "pseudo_speakers": 2,
                       "pseudo_classes": {"high": 1, "low": 1}}
    assert label_pool(model, pool_cache, 0.6)[0] == {"u6": 0, "u7": 0, "u8": 1, "u10": 1}


def test_self_training_needs_a_pool_in_params():
    with pytest.raises(ConfigError, match=r"'train.self_train' is 0.6 \(self-training on the unlabelled pool\) but "
                                          r"'data.unlabelled_clips' is 0"):
        params(**{"train.self_train": 0.6, "data.unlabelled_clips": 0})
    assert params(**{"train.self_train": 0.6, **POOL_ON}).train.self_train == 0.6


def test_the_second_run_trains_on_the_speakers_the_first_labelled(pool_cache, tmp_path, monkeypatch):
    calls = []
    real_train = self_training.train
    monkeypatch.setattr(self_training, "train",
                        lambda *a, **k: (calls.append(k.get("pseudo_labels")), real_train(*a, **k))[1])
    p = params(**tiny(epochs=2, **{"train.self_train": 0.01, **POOL_ON}))  # every speaker is that sure
    out = tmp_path / "model" / "model.pt"
    metrics = train_self_trained(p, pool_cache, out, tmp_path / "live", tmp_path / "teacher",
                                 checkpoint=tmp_path / "logs" / "ckpt.pt")
    summary = metrics["self_training"]
    assert summary["pool_speakers"] == summary["pseudo_speakers"] == 5 and sum(summary["pseudo_classes"].values()) == 5
    assert calls[0] is None and sorted(calls[1]) == ["u10", "u6", "u7", "u8", "u9"]  # teacher, then student
    assert summary["teacher"]["epochs_run"] == 2 and "train_seconds" not in summary["teacher"]
    assert [f.name for f in out.parent.iterdir()] == ["model.pt"]  # the first run's model file is gone
    assert not list((tmp_path / "logs").glob("*.pt"))  # both checkpoints removed at the end
    assert (tmp_path / "teacher" / "metrics.json").exists() and (tmp_path / "live" / "metrics.json").exists()
    json.dumps(metrics)  # a metrics file can hold it


def test_with_no_speaker_sure_enough_the_second_run_is_the_plain_run(pool_cache, tmp_path):
    p = params(**tiny(epochs=2, **{"train.self_train": 1.0, **POOL_ON}))  # no mean probability reaches 1
    metrics = train_self_trained(p, pool_cache, tmp_path / "st.pt", tmp_path / "live", tmp_path / "teacher")
    train(p, pool_cache, tmp_path / "plain.pt", tmp_path / "plain-live")
    assert metrics["self_training"]["pseudo_speakers"] == 0
    student = torch.load(tmp_path / "st.pt", weights_only=True)["state_dict"]
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)["state_dict"]
    assert student.keys() == plain.keys() and all(torch.equal(student[k], plain[k]) for k in plain)
