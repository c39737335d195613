"""Speaker-grouped cross-validation in one process: the fold caches of a release and one training run per
fold, shared by the ablation (`pipeline.ablate`) and the deployable model (`pipeline.final`).

The fold caches are the `features` stage's HDF5 caches of every `data.fold` = 0 .. folds-1, made without
DVC: every clip is decoded once (for fold 0) and the other folds re-split those log-mels.  `run_fold`
trains one configuration on one fold's training speakers (epoch chosen on its dev speakers) and returns
its test-fold probabilities.  A tool module: it calls the stages' functions (as `bench` and `score` do).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.config import apply_overrides, parse_params
from pipeline.stage import atomic_path


def raw_params(path: Path, overrides: dict) -> dict:
    return apply_overrides(yaml.safe_load(path.read_text(encoding="utf-8")), overrides)


def build_fold_caches(params_file: Path, scratch: Path, overrides: dict | None = None,
                      train_fraction: float = 1.0) -> list[Path]:
    """The feature cache of every fold (`data.fold` = 0 .. folds-1) of the release in params.yaml (with
    `overrides`, e.g. another `data.source`), in a folder of `scratch` named by the hash of the `data` and
    `features` sections (so a kept `--cache-dir` is reused only for the same clips and features).  Every clip
    is decoded once, for fold 0; the other folds' caches re-split those log-mels (`resplit_cache`): a clip's
    features do not depend on its split.  With `train_fraction` < 1 each fold keeps that share of its
    training speakers of each class (`fewer_training_speakers`; dev and test unchanged): a learning curve."""
    from pipeline.download import resolve_source
    from pipeline.features import build_cache
    from pipeline.prepare import prepare
    from pipeline.runtime import resolve_count

    base = parse_params(raw_params(params_file, overrides or {}))
    key = json.dumps([dataclasses.asdict(dataclasses.replace(base.data, fold=0)),
                      dataclasses.asdict(base.features)], sort_keys=True, default=str)
    folder = scratch / f"caches-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    caches = [folder / f"fold{fold}.h5" for fold in range(base.data.folds)]
    if train_fraction < 1:
        subsets = [folder / f"fold{fold}-train{train_fraction:g}.h5" for fold in range(base.data.folds)]
        if not all(cache.is_file() for cache in subsets):
            for full, subset in zip(build_fold_caches(params_file, scratch, overrides), subsets):
                manifest = fewer_training_speakers(cache_table(full), train_fraction, base.data.seed)
                with atomic_path(subset, suffix=".h5") as tmp:
                    resplit_cache(full, manifest, tmp)
        return subsets
    if all(cache.is_file() for cache in caches):
        return caches
    folder.mkdir(parents=True, exist_ok=True)
    locale_dir = resolve_source(base)
    for fold, cache in enumerate(caches):
        manifest, _ = prepare(dataclasses.replace(base.data, fold=fold), locale_dir)
        if fold == 0:
            build_cache(manifest, base.features, cache, resolve_count(base.runtime.workers))
        else:
            with atomic_path(cache, suffix=".h5") as tmp:
                resplit_cache(caches[0], manifest, tmp)
    return caches


def cache_table(cache: Path) -> pd.DataFrame:
    """clip, speaker, label (class index) and split of every clip in `cache`."""
    from pipeline.cache import SplitData
    from pipeline.manifest import SPLITS

    parts = []
    for split in SPLITS:
        data = SplitData(cache, split)
        parts.append(pd.DataFrame({"clip": data.clips, "speaker": data.speakers, "label": data.labels,
                                   "split": split}))
    return pd.concat(parts, ignore_index=True)


def fewer_training_speakers(table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """`table` with all but `fraction` of each class's training speakers (at least one; a seeded choice)
    moved to the split "unused", which `resplit_cache` leaves out."""
    rng = np.random.default_rng(seed)
    train = table[table["split"] == "train"]
    dropped = set()
    for _, group in train.groupby("label"):
        speakers = np.array(sorted(group["speaker"].unique()))
        keep = max(1, round(fraction * len(speakers)))
        dropped |= set(rng.permutation(speakers)[keep:])
    return table.assign(split=np.where(table["speaker"].isin(dropped) & (table["split"] == "train"), "unused",
                                       table["split"]))


def resplit_cache(source: Path, manifest: pd.DataFrame, out: Path) -> None:
    """Writes to `out` the clips of cache `source` with the splits of `manifest` (same clips, another fold),
    and the per-mel mean and std of the new training split, from the stored log-mels.  A clip whose split
    in `manifest` is none of train, dev and test is left out."""
    from pipeline.cache import CacheWriter, SplitData
    from pipeline.manifest import SPLITS

    split_of = dict(zip(manifest["clip"], manifest["split"]))
    parts = [SplitData(source, split) for split in SPLITS]
    n_mels, dtype = parts[0].frames.shape[1], str(parts[0].frames.dtype)
    total, total_sq, frames = np.zeros(n_mels), np.zeros(n_mels), 0
    with CacheWriter(out, n_mels, dtype) as writer:
        for part in parts:
            for i in range(len(part)):
                split = split_of[part.clips[i]]
                if split not in SPLITS:
                    continue
                feats = part.clip(i)
                writer.add(split, feats, int(part.labels[i]), part.speakers[i], part.clips[i])
                if split == "train":
                    total += feats.sum(0, dtype=np.float64)
                    total_sq += (feats.astype(np.float64) ** 2).sum(0)
                    frames += len(feats)
        mean = total / frames
        writer.finish(parts[0].classes, dataclasses.asdict(parts[0].feature_config), mean,
                      np.sqrt(np.maximum(total_sq / frames - mean ** 2, 1e-8)))


def run_fold(job: dict) -> dict:
    """Trains one configuration on one fold's cache; returns its test-fold probabilities and dev/train scores.

    job: `params_file`, `overrides` (of params.yaml), `cell`, `fold`, `cache` (that fold's), `scratch` (a
    folder for the model file), `variant` and `base` (names carried into the result), optionally `seed`
    (train.seed) and `keep` (where to keep the model file; otherwise it is deleted).  Runs in a worker
    process with one torch thread (faster than two on small recurrent batches)."""
    import contextlib
    import io

    from pipeline.cache import SplitData
    from pipeline.model import AccentModel
    from pipeline.train import train

    seed = {} if job.get("seed") is None else {"train.seed": job["seed"]}
    params = parse_params(raw_params(Path(job["params_file"]), {**job["overrides"], **seed, "model": job["cell"],
                                                                "runtime.num_threads": 1}))
    work = Path(job["scratch"]) / f"{job['variant']}-{job['cell']}-{job['fold']}-{params.train.seed}"
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = train(params, Path(job["cache"]), work / "model.pt", work / "live")
    model = AccentModel.load(work / "model.pt", batch_size=params.runtime.inference_batch_size)
    with SplitData(job["cache"], "test") as test:
        probs = model.predict_split(test)
    if job.get("keep"):
        Path(job["keep"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(work / "model.pt", job["keep"])
    shutil.rmtree(work, ignore_errors=True)
    return {**{k: job[k] for k in ("variant", "base", "cell", "fold")}, "seed": params.train.seed,
            "best_dev": metrics["best_dev"],
            "best_train": metrics["best_train"], "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"], "train_seconds": metrics["train_seconds"],
            "classes": test.classes, "labels": test.labels.tolist(), "probs": probs.tolist(),
            "speakers": test.speakers.tolist()}
