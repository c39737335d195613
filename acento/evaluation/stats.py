"""Uncertainty of cross-validated scores, with the speaker as the unit of resampling.

Clips of one speaker are not independent: they share a voice, a microphone and a way of speaking,
so a classifier is right or wrong on most of them together.  Resampling clips would pretend there
are hundreds of independent trials where there are only as many as speakers, and give intervals far
too narrow.  Every interval here resamples speakers (a cluster bootstrap), and the paired tests
compare two models on the same clips.

Inputs are per-clip arrays of one length: `speakers` (ids), `labels` and predictions (class indices).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from acento.evaluation.metrics import balanced_accuracy, speaker_decisions

CONFIDENCE = 0.95


def speaker_resamples(speakers: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clip weights [n_boot, clips], speaker index [clips]): in each resample, every clip counts as
    many times as its speaker was drawn (speakers drawn with replacement, as many as there are)."""
    ids, index = np.unique(speakers, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    counts = np.stack([np.bincount(d, minlength=len(ids)) for d in draws])  # [n_boot, speakers]
    return counts[:, index].astype(np.float64), index


def bootstrap_interval(values: np.ndarray) -> tuple[float, float]:
    """Percentile interval of bootstrap values at CONFIDENCE."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def pooled_balanced_accuracy(speakers: np.ndarray, labels: np.ndarray, pred: np.ndarray,
                             n_boot: int = 2000, seed: int = 0) -> dict:
    """Balanced accuracy over all out-of-fold clips, with a speaker-bootstrap interval."""
    weights, _ = speaker_resamples(speakers, n_boot, seed)
    boots = np.array([balanced_accuracy(labels, pred, w) for w in weights])
    low, high = bootstrap_interval(boots)
    return {"value": balanced_accuracy(labels, pred), "ci_low": low, "ci_high": high}


def speaker_balanced_accuracy(speakers: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict:
    """{"value", "ci_low", "ci_high"}: the balanced accuracy of one decision per speaker (the class of highest
    summed probability over their clips: `acento.evaluation.metrics.speaker_decisions`) against their true
    class, each class's recall over its speakers, with a 95% bootstrap interval over speakers
    (`pooled_balanced_accuracy` with one row per speaker)."""
    ids, truth, decided = speaker_decisions(speakers, labels, probs)
    return {k: round(v, 4) for k, v in pooled_balanced_accuracy(ids, truth, decided).items()}


def paired_difference(speakers: np.ndarray, labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """B − A on the same clips: balanced-accuracy difference with a speaker-bootstrap interval (the
    same resampled speakers for both), an exact McNemar test on clip correctness, and a sign test
    over speakers (is B right on more of a speaker's clips than A?)."""
    weights, index = speaker_resamples(speakers, n_boot, seed)
    boots = np.array([balanced_accuracy(labels, pred_b, w) - balanced_accuracy(labels, pred_a, w) for w in weights])
    low, high = bootstrap_interval(boots)
    right_a, right_b = pred_a == labels, pred_b == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    mcnemar_p = 1.0 if only_a + only_b == 0 else float(binomtest(only_b, only_a + only_b, 0.5).pvalue)
    n_speakers = index.max() + 1
    per_speaker_a = np.bincount(index, weights=right_a, minlength=n_speakers)
    per_speaker_b = np.bincount(index, weights=right_b, minlength=n_speakers)
    b_better, a_better = int((per_speaker_b > per_speaker_a).sum()), int((per_speaker_a > per_speaker_b).sum())
    sign_p = 1.0 if a_better + b_better == 0 else float(binomtest(b_better, a_better + b_better, 0.5).pvalue)
    return {"difference": balanced_accuracy(labels, pred_b) - balanced_accuracy(labels, pred_a),
            "ci_low": low, "ci_high": high,
            "mcnemar": {"only_a_right": only_a, "only_b_right": only_b, "p": mcnemar_p},
            "sign_test": {"b_better": b_better, "a_better": a_better, "ties": int(n_speakers - a_better - b_better),
                          "p": sign_p}}


def better_of(paired: dict) -> str | None:
    """Which of a `paired_difference`'s two is better: "a", "b", or None when its speaker-bootstrap interval
    covers 0 (no significant difference)."""
    if paired["ci_low"] <= 0 <= paired["ci_high"]:
        return None
    return "b" if paired["difference"] > 0 else "a"


def verdict(name_a: str, name_b: str, paired: dict) -> str:
    """One sentence: a difference only when the speaker-bootstrap interval excludes 0."""
    d, low, high = paired["difference"], paired["ci_low"], paired["ci_high"]
    interval = f"{d:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}]"
    side = better_of(paired)
    if side is None:
        return (f"No significant difference between {name_a} and {name_b}: {name_b} − {name_a} balanced accuracy "
                f"{interval} covers 0 (McNemar p = {paired['mcnemar']['p']:.3g}).")
    better, worse = (name_b, name_a) if side == "b" else (name_a, name_b)
    return (f"{better} is better than {worse}: {name_b} − {name_a} balanced accuracy {interval} excludes 0 "
            f"(McNemar p = {paired['mcnemar']['p']:.3g}, speaker sign test p = {paired['sign_test']['p']:.3g}).")


def seed_agreement(name_a: str, name_b: str, per_seed: list[dict]) -> str:
    """One sentence: how many training seeds, each compared alone (`paired_difference` of that seed's
    predictions), find B better, A better, or neither, by the rule of `verdict` (the interval excludes 0)."""
    b_better = sum(d["ci_low"] > 0 for d in per_seed)
    a_better = sum(d["ci_high"] < 0 for d in per_seed)
    return (f"Each of the {len(per_seed)} training seeds alone: {name_b} better in {b_better}, {name_a} better in "
            f"{a_better}, no significant difference in {len(per_seed) - a_better - b_better}.")
