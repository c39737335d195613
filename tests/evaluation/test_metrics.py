"""Known answers for the metrics that train picks checkpoints by and evaluate reports."""

import numpy as np
import pytest

from acento.evaluation.metrics import (
    classification_metrics,
    describe_kept_epoch,
    macro_f1,
    speaker_accuracy,
)


def test_speaker_decision_sums_probabilities_so_a_tied_vote_is_not_settled_by_class_index():
    # Each speaker's clips vote 2-2; the summed probabilities clearly favour the true class of both.
    speakers = np.array(["A"] * 4 + ["B"] * 4)
    labels = np.array([0] * 4 + [1] * 4)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.45, 0.55],     # A: sums 2.55 vs 1.45
                      [0.6, 0.4], [0.55, 0.45], [0.1, 0.9], [0.2, 0.8]])   # B: sums 1.45 vs 2.55
    assert speaker_accuracy(speakers, labels, probs) == 1.0
    # Swapping B's confident clips makes B wrong and leaves A right: exactly one of two.
    probs[6:] = [[0.9, 0.1], [0.8, 0.2]]
    assert speaker_accuracy(speakers, labels, probs) == 0.5


def test_speaker_accuracy_known_answer_with_three_speakers():
    speakers = np.array(["s1", "s1", "s2", "s3", "s3", "s3"])
    labels = np.array([2, 2, 0, 1, 1, 1])
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1],   # s1: sums (0.6, 0.6, 0.8) -> 2, right
                      [0.3, 0.6, 0.1],                     # s2: 1, wrong
                      [0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.0, 0.9, 0.1]])  # s3: (1.0, 1.7, 0.3) -> 1, right
    assert speaker_accuracy(speakers, labels, probs) == pytest.approx(2 / 3)


def one_hot(pred, n):
    return np.eye(n)[pred]


def test_absent_class_is_left_out_of_every_average_and_reported_with_support_zero():
    classes = ["a", "b", "c"]
    labels = np.array([0, 0, 0, 0, 1, 1])          # no clip of "c"
    pred = np.array([0, 0, 0, 2, 1, 0])            # one "a" clip predicted as the absent "c"
    metrics, absent = classification_metrics(labels, one_hot(pred, 3), np.array(list("pqrstu")), classes)
    assert absent == ["c"]
    # recall a = 3/4, b = 1/2; precision a = 3/4, b = 1/1; F1 a = 0.75, b = 2/3
    assert metrics["balanced_accuracy"] == pytest.approx((0.75 + 0.5) / 2, abs=1e-4)
    assert metrics["macro_f1"] == pytest.approx((0.75 + 2 / 3) / 2, abs=1e-4)
    assert metrics["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert metrics["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert metrics["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(0.6667), "support": 2}
    assert metrics["clips"] == 6 and metrics["speakers"] == 6


def test_dev_macro_f1_uses_the_same_classes_as_the_test_metrics():
    labels = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])                  # predicts class 2, which has no dev clip
    expected = (2 / 3 + 1.0) / 2                   # F1 of class 0 and 1 only
    assert macro_f1(labels, pred) == pytest.approx(expected)
    metrics, _ = classification_metrics(labels, one_hot(pred, 3), np.arange(4), ["x", "y", "z"])
    assert metrics["macro_f1"] == pytest.approx(expected, abs=1e-4)


def test_describe_kept_epoch_says_how_the_epoch_was_chosen():
    picked = {"best_dev": {"macro_f1": 0.41234}, "best_epoch": 31, "epochs_run": 80}
    assert describe_kept_epoch(picked) == "dev macro-F1 0.412 at epoch 31/80"
    last = {"best_dev": None, "best_epoch": 80, "epochs_run": 80}
    assert describe_kept_epoch(last) == "no dev split, last epoch 80/80"


def test_speaker_means_average_each_speakers_clips():
    from acento.evaluation.metrics import speaker_means

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    ids, mean = speaker_means(np.array(["b", "a", "b", "a"]), probs)
    assert ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(mean, [[0.35, 0.65], [0.65, 0.35]])
