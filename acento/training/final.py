"""The deployable model: one network per cross-validation fold, as one ensemble model file.

`dvc repro` trains on the speakers of every fold but its test fold (4 of 5 folds), so that `evaluate` can
score it on speakers it never heard.  The model a user deploys should learn from every labelled speaker.
This trains the configuration of params.yaml once per fold of `data.folds` (with `train.dev_speakers:
train`, the default, on every other fold's speakers, the last epoch kept; with `select`, a quarter of them
pick the epoch, never a test fold) and writes the k networks as one model file whose probabilities are
their mean: every labelled speaker trained k-1 of the k networks (k-2 with `select`).
`acento-predict`, `acento-serve` and `acento-score` use it by default once it exists.

The same runs give the configuration's cross-validated score for free: each network's predictions on its
own test fold, pooled (every labelled speaker once), with a speaker-bootstrap interval; they are written
with the per-fold results to reports/final.json, and in a model card beside the model (models/final.md:
Markdown with the YAML header model hubs read, `acento.model.card`).  (The ensemble itself has no held-out speakers left in
the corpus: score it on another release, `python -m acento.apps.score --release OTHER`.)

    make final-model                       # python -m acento.training.final
    python -m acento.training.final --set model=gru --out models/final-gru.pt
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from acento import __version__
from acento.config import PARAMS_FILE, ConfigError, parse_params
from acento.errors import StageError
from acento.evaluation.crossval import (
    build_feature_cache,
    parse_overrides,
    pretrained_encoder,
    raw_params,
    run_folds,
)
from acento.evaluation.metrics import describe_kept_epoch, speaker_accuracy
from acento.evaluation.stats import pooled_balanced_accuracy
from acento.files import write_json
from acento.model.accent_model import AccentModel, ModelFileError
from acento.model.card import write_card
from acento.paths import FINAL_MODEL, FINAL_REPORT
from acento.runtime import scratch_folder


def build(params_file: Path, overrides: dict, out: Path, report: Path, workers: int,
          cache_dir: Path | None = None) -> dict:
    """Trains the fold networks, writes the ensemble to `out` and the summary to `report`; returns it.

    The fold workers end with this process however it ends, and its scratch folder ($TMPDIR/acento-final-PID-*)
    goes at the end, or at the next run if this one is killed (`acento.runtime`).  Raises ConfigError or
    StageError (one line) for bad parameters or data."""
    params = parse_params(raw_params(params_file, overrides))
    if params.data.folds < 2:
        raise StageError(f"{params_file}: data.folds is {params.data.folds}; the final model needs "
                         "cross-validation folds (2 or more)")
    start = time.perf_counter()
    scratch = scratch_folder("final")  # named after this process: removed by the next run if this one is killed
    try:
        cache, folds = build_feature_cache(params_file, Path(cache_dir or scratch), overrides)
        encoder = pretrained_encoder(params_file, overrides, params.model, cache)
        jobs = [{"variant": "final", "base": "final", "cell": params.model, "fold": fold, "cache": str(cache),
                 "encoder": str(encoder or ""), "overrides": overrides, "params_file": str(params_file), "scratch": str(scratch),
                 "keep": str(scratch / "members" / f"fold{fold}.pt")} for fold in range(folds)]
        runs = []
        for run in run_folds(jobs, workers):
            runs.append(run)
            print(f"fold {run['fold']}: {describe_kept_epoch(run)}, {run['train_seconds']:.0f} s", flush=True)
        members = [AccentModel.load(job["keep"]) for job in jobs]
        ensemble = AccentModel.ensemble(members)
        ensemble.save(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    speakers = np.concatenate([r["speakers"] for r in runs])
    labels = np.concatenate([r["labels"] for r in runs])
    probs = np.concatenate([r["probs"] for r in runs])
    pooled = pooled_balanced_accuracy(speakers, labels, probs.argmax(1))
    summary = {
        "model_file": str(out), "model": params.model, "members": len(runs), "classes": runs[0]["classes"],
        "pooled_out_of_fold": {"balanced_accuracy": round(pooled["value"], 4), "ci_low": round(pooled["ci_low"], 4),
                               "ci_high": round(pooled["ci_high"], 4),
                               "speaker_accuracy": round(speaker_accuracy(speakers, labels, probs), 4),
                               "clips": int(len(labels)), "speakers": int(len(set(speakers)))},
        "folds": [{"fold": r["fold"], "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"],
                   "dev_macro_f1": r["best_dev"].get("macro_f1")} for r in runs],
        "overrides": overrides, "minutes": round((time.perf_counter() - start) / 60, 1),
    }
    write_json(report, summary)
    # the model card beside the model (models/final.md), with these figures
    write_card(out.with_suffix(".md"), {**summary, "version": __version__}, ensemble,
               Path(params.data.source.rstrip("/")).name)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help=f"parameters (default: {PARAMS_FILE})")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides of the parameters (YAML values), e.g. model=gru or data.source=OTHER.tar.gz")
    parser.add_argument("--out", type=Path, default=FINAL_MODEL, help=f"model file to write (default: {FINAL_MODEL})")
    parser.add_argument("--report", type=Path, default=FINAL_REPORT,
                        help=f"summary to write (default: {FINAL_REPORT})")
    parser.add_argument("--workers", type=int, default=2, help="folds trained at once (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the feature cache here for later runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = build(args.params, overrides, args.out, args.report, args.workers, args.cache_dir)
    except (ConfigError, StageError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cv = summary["pooled_out_of_fold"]
    print(f"{summary['model']}: {summary['members']} fold networks -> {args.out}; their pooled out-of-fold balanced "
          f"accuracy {cv['balanced_accuracy']:.3f} [{cv['ci_low']:.3f}, {cv['ci_high']:.3f}] "
          f"({cv['speakers']} speakers; summary in {args.report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
