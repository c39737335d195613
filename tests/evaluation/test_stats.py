"""Known answers for the speaker bootstrap and the paired tests behind `make compare`."""

import numpy as np
import pytest

from acento.evaluation.metrics import balanced_accuracy
from acento.evaluation.stats import paired_difference, pooled_balanced_accuracy, speaker_balanced_accuracy, verdict


def speakers_and_labels(n_speakers=40, clips=5, classes=4):
    speakers = np.repeat([f"s{i}" for i in range(n_speakers)], clips)
    labels = np.repeat(np.arange(n_speakers) % classes, clips)
    return speakers, labels


def test_balanced_accuracy_known_answer_and_weights():
    labels = np.array([0, 0, 0, 1])
    pred = np.array([0, 0, 1, 0])
    assert balanced_accuracy(labels, pred) == pytest.approx((2 / 3 + 0) / 2)
    # counting the class-1 clip twice changes nothing for recall; dropping a clip does
    assert balanced_accuracy(labels, pred, np.array([1, 1, 1, 2.0])) == pytest.approx(1 / 3)
    assert balanced_accuracy(labels, pred, np.array([1, 1, 0, 1.0])) == pytest.approx(0.5)


def test_identical_predictions_give_no_difference():
    speakers, labels = speakers_and_labels()
    pred = np.random.default_rng(0).integers(0, 4, len(labels))
    d = paired_difference(speakers, labels, pred, pred.copy(), n_boot=500)
    assert d["difference"] == 0 and d["ci_low"] == 0 and d["ci_high"] == 0
    assert d["mcnemar"] == {"only_a_right": 0, "only_b_right": 0, "p": 1.0}
    assert d["sign_test"]["ties"] == 40 and d["sign_test"]["p"] == 1.0
    assert verdict("LSTM", "GRU", d).startswith("No significant difference between LSTM and GRU")


def test_always_right_against_a_coin_flip_excludes_zero():
    speakers, labels = speakers_and_labels()
    coin = np.where(np.random.default_rng(1).random(len(labels)) < 0.5, labels, (labels + 1) % 4)
    d = paired_difference(speakers, labels, coin, labels.copy(), n_boot=500)
    assert d["ci_low"] > 0.3 and d["difference"] == pytest.approx(1 - balanced_accuracy(labels, coin))
    assert d["mcnemar"]["only_a_right"] == 0 and d["mcnemar"]["p"] < 1e-10
    assert d["sign_test"]["b_better"] > 30 and d["sign_test"]["p"] < 1e-6
    assert verdict("LSTM", "GRU", d).startswith("GRU is better than LSTM")


def test_the_bootstrap_resamples_speakers_so_duplicated_clips_do_not_narrow_the_interval():
    # Each speaker is all right or all wrong, as speakers are: 40 independent units, not 200 clips.
    speakers, labels = speakers_and_labels()
    right = np.repeat(np.random.default_rng(2).random(40) < 0.6, 5)
    pred = np.where(right, labels, (labels + 1) % 4)
    one = pooled_balanced_accuracy(speakers, labels, pred, n_boot=1000, seed=3)
    many = pooled_balanced_accuracy(np.repeat(speakers, 100), np.repeat(labels, 100), np.repeat(pred, 100),
                                    n_boot=1000, seed=3)
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert many["value"] == pytest.approx(one["value"])
    # A clip bootstrap would shrink the interval by about sqrt(100) = 10x; resampling speakers does not.
    assert width(many) == pytest.approx(width(one), rel=0.25) and width(one) > 0.15


def test_speaker_balanced_accuracy_decides_once_per_speaker_on_summed_probabilities():
    speakers = np.array(["a", "a", "b", "b", "c", "d", "d", "d"])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6],   # a: summed 1.3 / 0.7 -> 0, right (one clip of two wrong)
                      [0.45, 0.55], [0.3, 0.7],  # b: 0.75 / 1.25 -> 1, wrong
                      [0.2, 0.8],                # c: right
                      [0.6, 0.4], [0.6, 0.4], [0.1, 0.9]])  # d: 1.3 / 1.7 -> 1, right (two clips of three wrong)
    # class 0: speakers a (right), b (wrong): recall 1/2; class 1: c, d both right: recall 1 -> 0.75
    result = speaker_balanced_accuracy(speakers, labels, probs)
    assert result["value"] == 0.75 and 0.25 <= result["ci_low"] <= 0.75 <= result["ci_high"] <= 1.0
