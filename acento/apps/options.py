"""Options shared by the commands that classify (`acento-predict`, `acento-serve`, `acento-score`,
`acento-propose`)."""

import os
from pathlib import Path

from acento.paths import FINAL_MODEL, MODEL_FILE

MODEL_ENV = "ACENTO_MODEL_FILE"  # a model file for every command, wherever it runs (an installed acento)


def deployed_model() -> Path:
    """The model file the apps use by default: $ACENTO_MODEL_FILE when set; else, relative to the current
    folder (a checkout), the ensemble of `make final-model` where it exists (trained on every labelled
    speaker), else the pipeline's model of `dvc repro`."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV]).expanduser()
    return FINAL_MODEL if FINAL_MODEL.is_file() else MODEL_FILE


def add_model_file_option(parser) -> None:
    """The `--model-file` option of the tools that classify (an argparse parser), defaulting to `deployed_model()`."""
    parser.add_argument("--model-file", "--model", dest="model_file", default=deployed_model(),
                        help=f"trained model file (default: ${MODEL_ENV} if set, else {FINAL_MODEL} from "
                             f"`make final-model` if it exists, else {MODEL_FILE} from `dvc repro`, both "
                             "relative to the current folder)")


def add_release_option(parser) -> None:
    """The required `--release` option of the tools that read a Common Voice release (`acento-score`,
    `acento-propose`)."""
    parser.add_argument("--release", required=True, type=Path,
                        help="Common Voice release: extracted folder or .tar.gz/.tgz/.tar archive")


def non_finite_scores(model_file: str | Path, what: str) -> str:
    """The one line for a model file whose class probabilities for `what` are not finite numbers (NaN or
    infinity: weights or statistics that overflow), as `acento-predict` and `acento-serve` refuse it."""
    return (f"{model_file}: the model gives scores that are not finite numbers (NaN or infinity) for {what}; "
            "the file is damaged or its training diverged, retrain it (dvc repro train)")
