"""Speaker-grouped cross-validation in one process: the feature cache of a release and one training run per
fold, shared by the ablation (`pipeline.ablate`) and the deployable model (`acento.training.final`).

The cache is the `features` stage's, made without DVC: every clip decoded once, with its fold, for every
fold (`acento.features.cache`).  `run_fold` trains one configuration on one fold's training speakers (epoch chosen
on its dev speakers) and returns its test-fold probabilities.  A tool module: it calls the stages' functions
(as `bench` and `score` do).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from acento.config import apply_overrides, parse_params


def raw_params(path: Path, overrides: dict) -> dict:
    return apply_overrides(yaml.safe_load(path.read_text(encoding="utf-8")), overrides)


def parse_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE ...` of the tools as {key: YAML value}; ValueError naming the item without a `=`."""
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ValueError(f"--set takes KEY=VALUE pairs, got {bad[0]!r}")
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def build_feature_cache(params_file: Path, scratch: Path, overrides: dict | None = None) -> tuple[Path, int]:
    """The feature cache of the release in params.yaml (with `overrides`, e.g. another `data.source`) and its
    number of folds (data.folds).  It lies in a folder of `scratch` named by the hash of the `data` (less
    `data.fold`, which it does not depend on) and `features` sections, so a kept `--cache-dir` is reused only
    for the same clips and features."""
    from acento.corpus.prepare import prepare
    from acento.corpus.release import resolve_source
    from acento.features.build import build_cache
    from acento.runtime import resolve_count

    base = parse_params(raw_params(params_file, overrides or {}))
    key = json.dumps([dataclasses.asdict(dataclasses.replace(base.data, fold=0)),
                      dataclasses.asdict(base.features)], sort_keys=True, default=str)
    cache = scratch / f"caches-{hashlib.sha256(key.encode()).hexdigest()[:12]}" / "features.h5"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        manifest, _ = prepare(base.data, resolve_source(base))
        build_cache(manifest, base.features, cache, resolve_count(base.runtime.workers))
    return cache, base.data.folds


def pretrained_encoder(params_file: Path, overrides: dict, cell: str, cache: Path) -> Path | None:
    """The encoder that the runs of `cell` with these overrides start from (`train.init: pretrained`): pretrained
    once on the cache's unlabelled pool (`acento.training.pretrain`), beside the cache in a file named by the hash
    of the settings it depends on (so a kept `--cache-dir` reuses it); None with `train.init: scratch`.  The pool
    has no speaker of any fold, so one encoder serves every fold."""
    from acento.training.pretrain import pretrain

    params = parse_params(raw_params(params_file, {**overrides, "model": cell, "runtime.num_threads": 1}))
    if params.train.init != "pretrained":
        return None
    key = json.dumps([cell, *(dataclasses.asdict(getattr(params, name)) for name in ("normalise", "rnn", "pretrain"))],
                     sort_keys=True, default=str)
    out = Path(cache).parent / f"encoder-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if not out.is_file():
        live = out.with_suffix(".live")
        pretrain(params, Path(cache), out, live)
        shutil.rmtree(live, ignore_errors=True)
    return out


def speakers_left_out(speakers: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> set[str]:
    """The training speakers a learning curve leaves out: all but `fraction` of each class's speakers
    (at least one kept; a seeded choice).  speakers, labels: one value per training clip."""
    rng = np.random.default_rng(seed)
    dropped: set[str] = set()
    for label in np.unique(labels):
        names = np.unique(speakers[labels == label])
        keep = max(1, round(fraction * len(names)))
        dropped |= set(rng.permutation(names)[keep:])
    return dropped


def _init_worker() -> None:
    """A fold worker: SIGTERM ends it (not the caller's handler), and so does its parent's death."""
    from acento.runtime import die_with_parent

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()


def run_folds(jobs: list[dict], workers: int) -> Iterator[dict]:
    """`run_fold` of every job, `workers` at a time in worker processes; the results in the jobs' order.

    If the caller stops early (an exception in its loop, Ctrl-C, SIGTERM turned into SystemExit) or a run
    fails, the jobs not yet started never start and the running ones end at once: leaving a `with
    ProcessPoolExecutor` block instead waits for every queued job, which left a killed ablation training
    for hours and a `timeout` without effect.  Workers take SIGTERM's default action (ending), whatever
    handler the caller installed (ablate's turns it into SystemExit, which a worker would catch as a failed
    job and go on to the next), and end with the caller however it ends, SIGKILL included (`_init_worker`).
    """
    pool = ProcessPoolExecutor(max(1, workers), initializer=_init_worker)
    try:
        futures = [pool.submit(run_fold, job) for job in jobs]  # not map: it cancels them when stopped, below
        for future in futures:
            yield future.result()
    except BaseException:
        # No public way before Python 3.14 (terminate_workers); shutdown clears the list.  With every worker
        # ended, the pool fails the jobs still queued itself (cancelled ones made its thread raise).
        running = list((pool._processes or {}).values())
        pool.shutdown(wait=False)
        for process in running:
            process.terminate()
        raise
    pool.shutdown()


def no_vscode_signals() -> None:
    """Turns off, in this worker process, dvclive's signals to DVC's VS Code extension: files that every
    run writes into the repository's .dvc/tmp/exps/run (at each epoch) and removes at its end, checking
    first that they exist.  Fold runs in parallel share those files, so one run's removal between another's
    check and removal failed that run with FileNotFoundError as it ended (seen in `make test`'s
    `acento.training.final` test).  The signals only show experiments live in VS Code; fold runs are none."""
    import dvclive.live

    for name in ("mark_dvclive_step_completed", "cleanup_dvclive_step_completed", "mark_dvclive_only_started",
                 "mark_dvclive_only_ended"):
        setattr(dvclive.live, name, lambda *args, **kwargs: None)


def run_fold(job: dict) -> dict:
    """Trains one configuration on one fold of the cache; returns its test-fold probabilities and dev/train scores.

    job: `params_file`, `overrides` (of params.yaml), `cell`, `fold` (the test fold), `cache`, `scratch` (a
    folder for the model file), `variant` and `base` (names carried into the result), optionally `seed`
    (train.seed), `train_fraction` (the share of each class's training speakers kept: a learning curve;
    dev and test unchanged), `keep` (where to keep the model file; otherwise it is deleted), `encoder` (the
    pretrained encoder file of `pretrained_encoder`, for train.init: pretrained) and `self_train` (a minimum
    speaker confidence: self-training on the unlabelled pool's speakers the fold's model is that sure of,
    `acento.training.self_training`; default: params' train.self_train, 0 = off; the result then holds the
    second model's probabilities and the first's as `teacher_probs`).  Runs in a worker
    process with one torch thread (faster than two on small recurrent batches)."""
    import contextlib
    import io

    from acento.evaluation.metrics import describe_kept_epoch
    from acento.features.cache import SplitData
    from acento.model.accent_model import AccentModel
    from acento.training.self_training import label_pool
    from acento.training.trainer import train

    seed = {} if job.get("seed") is None else {"train.seed": job["seed"]}
    params = parse_params(raw_params(Path(job["params_file"]), {**job["overrides"], **seed, "model": job["cell"],
                                                                "data.fold": job["fold"], "runtime.num_threads": 1}))
    work = Path(job["scratch"]) / f"{job['variant']}-{job['cell']}-{job['fold']}-{params.train.seed}"
    dropped: set[str] = set()
    if job.get("train_fraction", 1) < 1:
        with SplitData(job["cache"], "train", job["fold"], dev_trains=params.train.dev_speakers == "train") as full:
            dropped = speakers_left_out(full.speakers, full.labels, job["train_fraction"], params.data.seed)
    no_vscode_signals()
    encoder = Path(job["encoder"]) if job.get("encoder") else None

    def fit(live: str, pseudo_labels: dict[str, int] | None = None) -> tuple[dict, AccentModel, np.ndarray]:
        """One training run into work/model.pt: its metrics, its model and the test fold's probabilities."""
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = train(params, Path(job["cache"]), work / "model.pt", work / live, dropped, encoder=encoder,
                            pseudo_labels=pseudo_labels)
        model = AccentModel.load(work / "model.pt", batch_size=params.runtime.inference_batch_size)
        return metrics, model, model.predict_split(test)

    name = f"{job['variant']} {job['cell']} fold {job['fold']}"
    # Progress of a long run (a self-trained benchmark fold is about 45 core-minutes) on stderr, one line each
    # step; the training's own epoch lines stay out of the caller's output (several folds run at once).
    print(f"{name}: training", file=sys.stderr, flush=True)
    with SplitData(job["cache"], "test", job["fold"]) as test:
        metrics, model, probs = fit("live")
    teacher = {}
    min_confidence = job["self_train"] if job.get("self_train") is not None else (params.train.self_train or None)
    if min_confidence is not None:
        # Self-training (`acento.training.self_training`): the fold's model labels the unlabelled pool's
        # speakers it is sure of, then a new run of the same settings trains on them too.  The pool has no
        # speaker of any fold, so the test speakers stay unheard.
        pseudo, summary = label_pool(model, job["cache"], min_confidence)
        print(f"{name}: first model {describe_kept_epoch(metrics)}; {summary['pseudo_speakers']} of "
              f"{summary['pool_speakers']} pool speakers at a mean probability >= {min_confidence:g} "
              f"({', '.join(f'{c} {n}' for c, n in summary['pseudo_classes'].items() if n) or 'none'}); "
              f"training the second", file=sys.stderr, flush=True)
        teacher = {"teacher_probs": probs.tolist(), "pseudo_speakers": summary["pseudo_speakers"],
                   "pool_speakers": summary["pool_speakers"], "pseudo_classes": list(summary["pseudo_classes"].values())}
        with SplitData(job["cache"], "test", job["fold"]) as test:
            metrics, model, probs = fit("live-student", pseudo)
    if job.get("keep"):
        Path(job["keep"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(work / "model.pt", job["keep"])
    shutil.rmtree(work, ignore_errors=True)
    return {**{k: job[k] for k in ("variant", "base", "cell", "fold")}, "seed": params.train.seed,
            "train_fraction": job.get("train_fraction", 1.0),
            "best_dev": metrics["best_dev"],
            "best_train": metrics["best_train"], "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"], "train_seconds": metrics["train_seconds"],
            "classes": test.classes, "labels": test.labels.tolist(), "probs": probs.tolist(),
            "speakers": test.speakers.tolist(), **teacher}
