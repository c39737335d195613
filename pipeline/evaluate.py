"""Stage `evaluate`: test-split metrics of the trained model, for `dvc metrics diff` and `dvc plots`.

The test split is fold `data.fold`'s (with a cross-validated cache).  The test speakers were never seen in training (with `data.split_by: speaker`), so these numbers are
unseen-speaker accuracy, the only kind that says anything about accents.  `speaker_accuracy` decides
once per test speaker (highest summed probability over their clips), as a per-speaker decision would.
The metrics and the confusion rows go through dvclive (`acento.evaluation.outputs`), the PNG is for people
without DVC; `score` writes the same metrics for any other labelled release.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from acento.config import Params
from acento.console import run_stage
from acento.errors import StageError
from acento.evaluation.metrics import classification_metrics
from acento.evaluation.outputs import (
    write_confusion_png,
    write_metrics,
    write_predictions,
)
from acento.features.cache import SplitData
from acento.files import write_json
from acento.model.accent_model import AccentModel, ModelFileError
from acento.model.network import count_parameters
from acento.paths import (
    CONFUSION,
    CONFUSION_PNG,
    EVAL_METRICS,
    EVAL_TIMING,
    FEATURE_CACHE,
    MODEL_FILE,
    PREDICTIONS,
)
from acento.runtime import configure_torch, select_device


def run(params: Params, args: argparse.Namespace) -> None:
    device = select_device(params.runtime.device)
    configure_torch(device, params.runtime.num_threads)
    try:
        model = AccentModel.load(args.model_file, device, params.runtime.inference_batch_size)
    except ModelFileError as exc:
        raise StageError(str(exc)) from None
    with SplitData(args.cache, "test", params.data.fold) as test:
        if len(test) == 0:
            raise StageError("the test split is empty; give data.split.test a larger share or add speakers")
        try:
            model.check_features(test.classes, test.feature_config, f"the feature cache {args.cache}")
        except ModelFileError as exc:
            raise StageError(str(exc)) from None
        start = time.perf_counter()
        probs = model.predict_split(test)
        if not np.isfinite(probs).all():
            raise StageError(f"{args.model_file}: its scores of the test split are not finite numbers (NaN or "
                             "infinity): the file is damaged or its training diverged; retrain it (dvc repro train)")
        seconds = time.perf_counter() - start
    pred = probs.argmax(1)
    metrics, absent = classification_metrics(test.labels, probs, test.speakers, test.classes)
    if absent:
        print(f"warning: no test clip of class(es) {', '.join(absent)}: they are left out of every averaged "
              "metric and reported with support 0", file=sys.stderr)
    metrics.update({"model": model.cell, "params": count_parameters(model.network)})
    # wall-clock figures apart from the metrics, whose content must change only when the result does
    write_json(args.timing, {"inference_seconds": round(seconds, 2),
                                           "inference_clips_per_second": round(len(test) / seconds, 1)})
    names = [test.classes[i] for i in test.labels]
    write_metrics(args.metrics, metrics, args.confusion, names, [test.classes[i] for i in pred])
    write_predictions(args.predictions, test.clips, test.speakers, names, probs, test.classes)
    write_confusion_png(Path(args.png), test.labels, pred, test.classes,
                        f"{model.cell.upper()} on unseen test speakers: accuracy {metrics['accuracy']:.3f}")
    print(f"{model.cell}: test accuracy {metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}, "
          f"macro-F1 {metrics['macro_f1']:.3f}, speaker accuracy {metrics['speaker_accuracy']:.3f} "
          f"({metrics['clips']} clips, {metrics['speakers']} speakers) -> {args.metrics}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-file", "--model", dest="model_file", default=MODEL_FILE,
                        help=f"trained model file (default: {MODEL_FILE})")
    parser.add_argument("--cache", default=FEATURE_CACHE, help=f"HDF5 feature cache (default: {FEATURE_CACHE})")
    parser.add_argument("--metrics", default=EVAL_METRICS, help=f"metrics to write (default: {EVAL_METRICS})")
    parser.add_argument("--timing", default=EVAL_TIMING,
                        help=f"inference seconds and clips/s to write (default: {EVAL_TIMING})")
    parser.add_argument("--confusion", default=CONFUSION, help=f"confusion rows for dvc plots (default: {CONFUSION})")
    parser.add_argument("--predictions", default=PREDICTIONS,
                        help=f"per-clip test predictions (default: {PREDICTIONS})")
    parser.add_argument("--png", default=CONFUSION_PNG, help=f"confusion matrix image (default: {CONFUSION_PNG})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
