"""Classification metrics shared by the dev evaluation in `train` and the test evaluation in `evaluate`.

One definition, so the dev macro-F1 that picks the checkpoint and the test macro-F1 that is reported
mean the same thing.  Every averaged metric averages over the classes **present in the split's
labels**: a class with no clip in the split has no recall to measure, and counting it as F1 = 0 (or
leaving it out of one average but not another) would make the numbers incomparable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean recall over the classes present in `labels` (sklearn's definition, NaN for no clips);
    `weights` [clips] count each clip that many times (the speaker bootstrap of `stats`)."""
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    recalls = []
    for c in np.unique(labels[weights > 0]):
        mask = labels == c
        recalls.append(float((weights[mask] * (pred[mask] == c)).sum() / weights[mask].sum()))
    return float(np.mean(recalls)) if recalls else float("nan")


def describe_kept_epoch(result: dict) -> str:
    """How a training run's kept epoch was chosen, for progress lines: "dev macro-F1 0.412 at epoch 31/80"
    or "no dev split, last epoch 80/80".  result: `train`'s metrics (best_dev, best_epoch, epochs_run)."""
    dev = result["best_dev"]
    chosen = f"dev macro-F1 {dev['macro_f1']:.3f} at epoch" if dev else "no dev split, last epoch"
    return f"{chosen} {result['best_epoch']}/{result['epochs_run']}"


def present_classes(labels: np.ndarray) -> list[int]:
    """Class indices that occur in `labels` (int array [clips]), sorted."""
    return sorted(int(c) for c in np.unique(labels))


def macro_f1(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes present in `labels` (a predicted-but-absent class adds nothing)."""
    return float(f1_score(labels, pred, labels=present_classes(labels), average="macro", zero_division=0))


def speaker_decisions(speakers: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(speaker ids [speakers], true class [speakers], decided class [speakers]), sorted by id: a speaker's
    decision is the class of highest summed probability over their clips; their true class the class of
    their clips (if they differ, the class most of them carry, ties to the lower index).

    speakers: [clips] ids; labels: [clips] int; probs: [clips, classes].  Summing probabilities rather than
    counting votes leaves no ties in practice (a 2-2 vote would otherwise be settled by class index, in
    favour of class 0's speakers).
    """
    ids, mean = speaker_means(speakers, probs)
    truth = pd.Series(labels).groupby(pd.Series(speakers)).agg(lambda s: s.value_counts().sort_index().idxmax())
    return ids, truth.loc[ids].to_numpy(), mean.argmax(1)


def speaker_means(speakers: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(speaker ids [speakers] sorted, each speaker's mean class probabilities over their clips [speakers,
    classes]): a speaker's decision is the argmax (the class of highest summed probability), its
    confidence the mean probability there.  speakers: [clips]; probs: [clips, classes]."""
    frame = pd.DataFrame(probs).groupby(pd.Series(speakers, name="speaker"), sort=True).mean()
    return frame.index.to_numpy(), frame.to_numpy()


def speaker_accuracy(speakers: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> float:
    """Share of speakers whose decision (`speaker_decisions`) is their true class."""
    _, truth, decided = speaker_decisions(speakers, labels, probs)
    return float((decided == truth).mean())


def classification_metrics(labels: np.ndarray, probs: np.ndarray, speakers: np.ndarray,
                           classes: list[str]) -> tuple[dict, list[str]]:
    """Metrics of one split, and the names of `classes` absent from its labels.

    labels: [clips] int; probs: [clips, len(classes)] class probabilities; speakers: [clips].
    Absent classes are reported in `per_class` with support 0 and null scores.
    """
    pred = probs.argmax(1)
    present = present_classes(labels)
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=present,
                                                                     zero_division=0)
    scores = {c: (p, r, f, s) for c, p, r, f, s in zip(present, precision, recall, f1, support)}
    per_class = {}
    for index, name in enumerate(classes):
        if index in scores:
            p, r, f, s = scores[index]
            per_class[name] = {"precision": round(float(p), 4), "recall": round(float(r), 4),
                               "f1": round(float(f), 4), "support": int(s)}
        else:
            per_class[name] = {"precision": None, "recall": None, "f1": None, "support": 0}
    metrics = {
        "accuracy": round(float(accuracy_score(labels, pred)), 4),
        "balanced_accuracy": round(balanced_accuracy(labels, pred), 4),
        "macro_f1": round(macro_f1(labels, pred), 4),
        "speaker_accuracy": round(speaker_accuracy(speakers, labels, probs), 4),
        "per_class": per_class,
        "clips": int(len(labels)),
        "speakers": int(len(set(speakers))),
    }
    return metrics, [classes[i] for i in range(len(classes)) if i not in scores]
