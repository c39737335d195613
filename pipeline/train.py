"""Stage `train`: an LSTM or GRU accent classifier from the cached log-mel features.

With a cross-validated cache the splits are those of fold `data.fold` (`acento.features.cache.SplitData`),
and the normalisation statistics are that fold's training split's.  Model selection uses the dev
split only (best dev macro-F1, early stopping, a plateau schedule's cuts); the test split is touched
once, by `evaluate`.  With `train.dev_speakers: train` the dev speakers are trained on as well and the
last epoch is kept: no dev split at all, an epoch count chosen beforehand by cross-validation.  The
original study chose epochs on its test set, which makes its test accuracy optimistic.  With
`train.self_train > 0` a first run labels the unlabelled pool's speakers it is sure of and a second run
trains on them too (`acento.training.self_training`); the second is the model.

The loop reads top to bottom: set up (`Trainer.__init__`), then per epoch `train_one_epoch`,
`validate` on dev, `EarlyStopping.update`; at the end the best weights are written with
everything inference needs (`acento.model.accent_model.AccentModel`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acento.config import Params
from acento.console import run_stage
from acento.evaluation.metrics import describe_kept_epoch
from acento.files import write_json
from acento.paths import (
    ENCODER_FILE,
    FEATURE_CACHE,
    MODEL_FILE,
    TRAIN_CHECKPOINT,
    TRAIN_METRICS,
    TEACHER_CURVES,
    TRAIN_TIMING,
    TRAINING_CURVES,
)
from acento.training.self_training import train_self_trained
from acento.training.trainer import TIMING_KEYS, train


def run(params: Params, args: argparse.Namespace) -> None:
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if params.train.self_train:
        metrics = train_self_trained(params, Path(args.cache), Path(args.out), Path(args.live),
                                     Path(args.teacher_live), checkpoint=checkpoint, encoder=Path(args.encoder))
    else:
        metrics = train(params, Path(args.cache), Path(args.out), Path(args.live), checkpoint=checkpoint,
                        encoder=Path(args.encoder))
    write_json(args.metrics, {k: v for k, v in metrics.items() if k not in TIMING_KEYS})
    write_json(args.timing, {k: metrics[k] for k in TIMING_KEYS})
    print(f"{params.model}: {describe_kept_epoch(metrics)}, {metrics['train_seconds']:.0f} s -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default=FEATURE_CACHE, help=f"HDF5 feature cache (default: {FEATURE_CACHE})")
    parser.add_argument("--encoder", default=ENCODER_FILE,
                        help=f"pretrained encoder to start from with train.init: pretrained (default: {ENCODER_FILE})")
    parser.add_argument("--out", default=MODEL_FILE, help=f"model file to write (default: {MODEL_FILE})")
    parser.add_argument("--metrics", default=TRAIN_METRICS, help=f"metrics to write (default: {TRAIN_METRICS})")
    parser.add_argument("--timing", default=TRAIN_TIMING,
                        help=f"training seconds and clips/s to write (default: {TRAIN_TIMING})")
    parser.add_argument("--live", default=TRAINING_CURVES,
                        help=f"dvclive folder for curves (default: {TRAINING_CURVES})")
    parser.add_argument("--teacher-live", default=TEACHER_CURVES,
                        help=f"dvclive folder for the first model's curves with train.self_train > 0 (default: "
                             f"{TEACHER_CURVES})")
    parser.add_argument("--checkpoint", default=TRAIN_CHECKPOINT,
                        help="the state after each epoch, so that a killed run resumes where it stopped (the "
                             f"same params and cache; default: {TRAIN_CHECKPOINT}); '' = none")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
