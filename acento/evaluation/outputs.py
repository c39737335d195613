"""Writing a model's scores on labelled clips: the metrics and confusion matrix (through dvclive, in
the files `dvc metrics` and `dvc plots` read), the per-clip predictions and the confusion image.

Shared by the `evaluate` stage (the test split of the cache) and the `score` tool (any labelled
release), so both write the same things the same way; the numbers come from
`metrics.classification_metrics`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from acento.files import atomic_path


def write_metrics(path: str | Path, metrics: dict, confusion_path: str | Path | None = None,
                  actual: Sequence[str] = (), predicted: Sequence[str] = ()) -> None:
    """`metrics` as a dvclive summary at `path` (scalars through `Live.log_metric`, the rest, e.g.
    `per_class`, as summary entries), and, with `confusion_path`, the confusion matrix of the class
    names `actual` and `predicted` ([clips] each) through `Live.log_sklearn_plot("confusion_matrix")`:
    rows {"actual", "predicted"} for dvc.yaml's `template: confusion` plot.

    dvclive writes into a scratch folder beside `path`; the files are renamed into place at the end,
    so a failure leaves the previous ones whole.
    """
    from dvclive import (
        Live,  # imported here: it pulls in much of DVC, which classifying files never needs
    )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        with Live(scratch, dvcyaml=None, save_dvc_exp=False, report=None) as live:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    live.log_metric(key, value, plot=False)
                else:
                    live.summary[key] = value
            if confusion_path is not None:
                live.log_sklearn_plot("confusion_matrix", list(actual), list(predicted), name="confusion.json")
        if confusion_path is not None:
            Path(confusion_path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(live.plots_dir) / "sklearn" / "confusion.json", confusion_path)
        os.replace(Path(live.metrics_file), path)


def write_predictions(path: str | Path, clips: Sequence[str], speakers: Sequence[str], labels: Sequence[str],
                      probs: np.ndarray, classes: Sequence[str]) -> None:
    """One row per clip, sorted by clip: clip, speaker, label, predicted, p_<class>... (probabilities
    [clips, classes] to 4 decimals), so that experiments carry their out-of-fold predictions and
    `compare` can pool and pair them clip by clip."""
    frame = pd.DataFrame({"clip": list(clips), "speaker": list(speakers), "label": list(labels),
                          "predicted": [classes[i] for i in probs.argmax(1)]})
    frame = frame.join(pd.DataFrame(probs.round(4), columns=[f"p_{c}" for c in classes]))
    with atomic_path(path, suffix=".csv") as tmp:
        frame.sort_values("clip").to_csv(tmp, index=False)


def read_predictions(source) -> pd.DataFrame:
    """A `write_predictions` CSV (a path or a text buffer) as written: clip, speaker, label and predicted stay
    text (a speaker id of digits keeps its leading zeros; no name is read as NaN), p_<class> as floats."""
    return pd.read_csv(source, dtype={"clip": str, "speaker": str, "label": str, "predicted": str},
                       keep_default_na=False)


def write_confusion_png(path: str | Path, labels: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                        title: str) -> None:
    """The confusion matrix of class indices `labels` and `pred` ([clips]) as a PNG, for people without DVC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    ConfusionMatrixDisplay.from_predictions(labels, pred, labels=list(range(len(classes))),
                                            display_labels=list(classes), ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
