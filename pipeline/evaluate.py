"""Stage `evaluate`: test-split metrics of the trained model, for `dvc metrics diff` and `dvc plots`.

The test speakers were never seen in training (with `data.split_by: speaker`), so these numbers are
unseen-speaker accuracy, the only kind that says anything about accents.  `speaker_accuracy` decides
once per test speaker (highest summed probability over their clips), as a per-speaker decision would.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import ConfusionMatrixDisplay

from pipeline.cache import SplitData
from pipeline.config import Params
from pipeline.data import Normaliser
from pipeline.inference import predict_proba
from pipeline.metrics import classification_metrics
from pipeline.network import ModelFileError, count_parameters, load_model_file
from pipeline.paths import CONFUSION, CONFUSION_PNG, EVAL_METRICS, FEATURE_CACHE, MODEL_FILE, PREDICTIONS
from pipeline.runtime import configure_torch, select_device
from pipeline.stage import StageError, atomic_path, run_stage, write_json


def write_predictions(path: Path, data: SplitData, probs: np.ndarray) -> None:
    """One row per test clip (clip, speaker, label, predicted, p_<class>...), so that experiments
    carry their out-of-fold predictions and `compare` can pool and pair them clip by clip."""
    frame = pd.DataFrame({"clip": data.clips, "speaker": data.speakers,
                          "label": [data.classes[i] for i in data.labels],
                          "predicted": [data.classes[i] for i in probs.argmax(1)]})
    frame = frame.join(pd.DataFrame(probs.round(4), columns=[f"p_{c}" for c in data.classes]))
    with atomic_path(path, suffix=".csv") as tmp:
        frame.sort_values("clip").to_csv(tmp, index=False)


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


def run(params: Params, args: argparse.Namespace) -> None:
    device = select_device(params.runtime.device)
    configure_torch(device, params.runtime.num_threads)
    try:
        model, ckpt = load_model_file(args.model_file, device)
    except ModelFileError as exc:
        raise StageError(str(exc)) from None
    test = SplitData(args.cache, "test")
    if len(test) == 0:
        raise StageError("the test split is empty; give data.split.test a larger share or add speakers")
    if ckpt["classes"] != test.classes:
        raise StageError(f"{args.model_file}: trained on classes {ckpt['classes']}, the cache has {test.classes}; "
                         "retrain (dvc repro train)")
    start = time.perf_counter()
    probs = predict_proba(model, test.clip, test.lengths, Normaliser.from_checkpoint(ckpt),
                          params.runtime.inference_batch_size, device)
    seconds = time.perf_counter() - start
    pred = probs.argmax(1)
    metrics, absent = classification_metrics(test.labels, probs, test.speakers, test.classes)
    if absent:
        print(f"warning: no test clip of class(es) {', '.join(absent)}: they are left out of every averaged "
              "metric and reported with support 0", file=sys.stderr)
    metrics.update({"model": ckpt["model"], "params": count_parameters(model),
                    "inference_clips_per_second": round(len(test) / seconds, 1)})
    write_json(args.metrics, metrics)
    write_predictions(Path(args.predictions), test, probs)
    write_json(args.confusion, [{"actual": test.classes[a], "predicted": test.classes[p]}
                                for a, p in zip(test.labels, pred)])
    write_confusion_png(Path(args.png), test.labels, pred, test.classes,
                        f"{ckpt['model'].upper()} on unseen test speakers: accuracy {metrics['accuracy']:.3f}")
    print(f"{ckpt['model']}: test accuracy {metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}, "
          f"macro-F1 {metrics['macro_f1']:.3f}, speaker accuracy {metrics['speaker_accuracy']:.3f} "
          f"({metrics['clips']} clips, {metrics['speakers']} speakers) -> {args.metrics}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-file", "--model", dest="model_file", default=MODEL_FILE,
                        help=f"trained model file (default: {MODEL_FILE})")
    parser.add_argument("--cache", default=FEATURE_CACHE, help=f"HDF5 feature cache (default: {FEATURE_CACHE})")
    parser.add_argument("--metrics", default=EVAL_METRICS, help=f"metrics to write (default: {EVAL_METRICS})")
    parser.add_argument("--confusion", default=CONFUSION, help=f"confusion rows for dvc plots (default: {CONFUSION})")
    parser.add_argument("--predictions", default=PREDICTIONS,
                        help=f"per-clip test predictions (default: {PREDICTIONS})")
    parser.add_argument("--png", default=CONFUSION_PNG, help=f"confusion matrix image (default: {CONFUSION_PNG})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
