"""Stage `evaluate`: test-split metrics of the trained model, for `dvc metrics diff` and `dvc plots`.

The test speakers were never seen in training (with `data.split_by: speaker`), so these numbers are
unseen-speaker accuracy, the only kind that says anything about accents.  `speaker_accuracy` votes
over each test speaker's clips, as a per-speaker decision would.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (ConfusionMatrixDisplay, accuracy_score, balanced_accuracy_score, f1_score,
                             precision_recall_fscore_support)

from pipeline.config import Params
from pipeline.data import SplitData
from pipeline.features import CACHE
from pipeline.inference import predict_proba, select_device
from pipeline.models import ModelFileError, count_parameters, load_model
from pipeline.stage import StageError, atomic_path, run_stage, write_json
from pipeline.train import MODEL

METRICS = Path("metrics/eval.json")
CONFUSION = Path("metrics/confusion.json")
CONFUSION_PNG = Path("metrics/confusion.png")


def speaker_accuracy(speakers: np.ndarray, labels: np.ndarray, pred: np.ndarray) -> float:
    """Share of speakers whose majority-voted prediction equals their (majority) true class."""
    frame = pd.DataFrame({"speaker": speakers, "label": labels, "pred": pred})
    votes = frame.groupby("speaker").agg(label=("label", lambda s: s.mode().iloc[0]),
                                         pred=("pred", lambda s: s.mode().iloc[0]))
    return float((votes["label"] == votes["pred"]).mean())


def compute_metrics(labels: np.ndarray, pred: np.ndarray, speakers: np.ndarray, classes: list[str]) -> dict:
    present = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=present,
                                                                     zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(labels, pred)), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(labels, pred)), 4),
        "macro_f1": round(float(f1_score(labels, pred, labels=present, average="macro", zero_division=0)), 4),
        "speaker_accuracy": round(speaker_accuracy(speakers, labels, pred), 4),
        "per_class": {c: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                          "support": int(s)} for c, p, r, f, s in zip(classes, precision, recall, f1, support)},
        "clips": int(len(labels)),
        "speakers": int(len(set(speakers))),
    }


def write_confusion_png(path: Path, labels: np.ndarray, pred: np.ndarray, classes: list[str], title: str) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    ConfusionMatrixDisplay.from_predictions(labels, pred, labels=list(range(len(classes))),
                                            display_labels=classes, ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(params: Params, args: argparse.Namespace) -> None:
    device = select_device(params.train.device)
    if device.type == "cpu":
        torch.set_num_threads(params.train.num_threads or len(os.sched_getaffinity(0)))
    try:
        model, ckpt = load_model(args.model, device)
        test = SplitData(args.cache, "test")
    except (ModelFileError, FileNotFoundError) as exc:
        raise StageError(str(exc)) from None
    if len(test) == 0:
        raise StageError("the test split is empty; give data.split.test a larger share or add speakers")
    if ckpt["classes"] != test.classes:
        raise StageError(f"{args.model}: trained on classes {ckpt['classes']}, the cache has {test.classes}; "
                         "retrain (dvc repro train)")
    mean, std = ckpt["mean"].numpy(), ckpt["std"].numpy()
    start = time.perf_counter()
    probs = predict_proba(model, test.clip, test.lengths, mean, std, params.evaluate.batch_size, device)
    seconds = time.perf_counter() - start
    pred = probs.argmax(1)
    metrics = compute_metrics(test.labels, pred, test.speakers, test.classes)
    metrics.update({"model": ckpt["cell"], "params": count_parameters(model),
                    "inference_clips_per_second": round(len(test) / seconds, 1)})
    write_json(args.metrics, metrics)
    write_json(args.confusion, [{"actual": test.classes[a], "predicted": test.classes[p]}
                                for a, p in zip(test.labels, pred)])
    write_confusion_png(Path(args.png), test.labels, pred, test.classes,
                        f"{ckpt['cell'].upper()} on unseen test speakers: accuracy {metrics['accuracy']:.3f}")
    print(f"{ckpt['cell']}: test accuracy {metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}, "
          f"macro-F1 {metrics['macro_f1']:.3f}, speaker accuracy {metrics['speaker_accuracy']:.3f} "
          f"({metrics['clips']} clips, {metrics['speakers']} speakers) -> {args.metrics}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=MODEL, help=f"model file (default: {MODEL})")
    parser.add_argument("--cache", default=CACHE, help=f"HDF5 feature cache (default: {CACHE})")
    parser.add_argument("--metrics", default=METRICS, help=f"metrics to write (default: {METRICS})")
    parser.add_argument("--confusion", default=CONFUSION, help=f"confusion rows for dvc plots (default: {CONFUSION})")
    parser.add_argument("--png", default=CONFUSION_PNG, help=f"confusion matrix image (default: {CONFUSION_PNG})")


if __name__ == "__main__":
    run_stage(__doc__.splitlines()[0], main, _arguments)
