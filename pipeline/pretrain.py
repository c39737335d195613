"""Stage `pretrain`: the encoder (conv front-end and RNN) pretrained on the unlabelled pool, for `train`.

Most speakers of a Common Voice release give no accent; `prepare` keeps up to `data.unlabelled_clips` of their
clips as an unlabelled pool (speakers with no labelled clip, so in no fold), `features` caches them, and this
stage trains the encoder of the `model` cell on them with a label-free objective (`pretrain.objective`:
masked-frame reconstruction or autoregressive predictive coding).  With `train.init: pretrained`, `train`
starts from it.  With `pretrain.epochs: 0` (the default) it writes an encoder file without weights, at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acento.config import Params
from acento.console import run_stage
from acento.files import write_json
from acento.paths import ENCODER_FILE, FEATURE_CACHE, PRETRAIN_METRICS, PRETRAINING_CURVES
from acento.training.pretrain import pretrain


def run(params: Params, args: argparse.Namespace) -> None:
    metrics = pretrain(params, Path(args.cache), Path(args.out), Path(args.live))
    write_json(args.metrics, metrics)
    if metrics["epochs"]:
        print(f"{params.model} encoder: {metrics['objective']} loss {metrics['loss']:.4f} after {metrics['epochs']} "
              f"epochs on {metrics['clips']} clips of {metrics['speakers']} speakers -> {args.out}")
    else:
        print(f"no pretraining (pretrain.epochs is 0): {args.out} holds no weights; train.init: scratch")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default=FEATURE_CACHE, help=f"HDF5 feature cache (default: {FEATURE_CACHE})")
    parser.add_argument("--out", default=ENCODER_FILE, help=f"encoder file to write (default: {ENCODER_FILE})")
    parser.add_argument("--metrics", default=PRETRAIN_METRICS, help=f"metrics to write (default: {PRETRAIN_METRICS})")
    parser.add_argument("--live", default=PRETRAINING_CURVES,
                        help=f"dvclive folder for the loss curve (default: {PRETRAINING_CURVES})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
