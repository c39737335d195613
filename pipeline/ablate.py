"""Which training choices make a model learn accents rather than voices: an ablation by speaker-grouped
cross-validation, in one process.

Each variant is a set of overrides of params.yaml.  For every variant, cell and fold of
`data.folds`, the model is trained on the fold's training speakers, its epoch picked on its dev
speakers, and its test-fold predictions kept; the folds' predictions are pooled (every labelled
speaker once) into a balanced accuracy with a 95% speaker-bootstrap interval (`pipeline.stats`).
Nothing is chosen on a test fold.  The features of each fold are computed once and shared by all
variants (they depend on the split, not on the model), and folds train in parallel processes.

This is the study behind the defaults in params.yaml (docs/study.md: "Accent, not voice"); `make compare`
is the user-facing comparison of cells, with every run a DVC experiment.

  python -m pipeline.ablate --variants baseline +utterance_norm --cells gru
  python -m pipeline.ablate --list
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.config import CELLS, PARAMS_FILE, PRESETS, apply_overrides, parse_params, preset_overrides
from pipeline.paths import ABLATION_JSON, ABLATION_REPORT
from pipeline.stage import atomic_path, write_json

# Cumulative steps from the defaults this project had before the study ("baseline") to the chosen
# defaults: each row adds one change to the row above it.
BASELINE = {"normalise.utterance_mean": False, "normalise.utterance_std": False, "rnn.hidden_size": 128,
            "rnn.num_layers": 2, "rnn.dropout": 0.2, "rnn.pooling": "attention", "rnn.frontend_stride": 4,
            "rnn.frontend_kernel": 5, "train.optimizer": "adam", "train.weight_decay": 0.0,
            "train.schedule": "plateau_loss", "train.class_weights": True, "train.epochs": 30,
            "train.early_stopping_patience": 6, "train.augment.time_stretch": 0.0, "train.augment.freq_warp": 0.0,
            "train.augment.freq_shift": 0, "train.augment.crop": 1.0, "train.specaugment.freq_masks": 0,
            "train.specaugment.time_masks": 0, "train.adversary.weight": 0.0}
STEPS: list[tuple[str, dict]] = [
    ("baseline", {}),
    ("+utterance_norm", {"normalise.utterance_mean": True}),
    ("+adamw_f1_schedule", {"train.optimizer": "adamw", "train.weight_decay": 0.01, "train.schedule": "plateau"}),
    ("+smaller_rnn", {"rnn.hidden_size": 64}),
    ("+augment", {"train.augment.time_stretch": 0.1, "train.augment.freq_warp": 0.08, "train.augment.freq_shift": 2,
                  "train.augment.crop": 0.8, "train.specaugment.freq_masks": 1, "train.specaugment.time_masks": 1}),
    ("+stats_pooling", {"rnn.pooling": "stats"}),
    ("+stride_2", {"rnn.frontend_stride": 2}),
    ("+speaker_adversary", {"train.adversary.weight": 0.3}),
]
# Single changes off one step of the path (name -> (step, change)): what else was tried.
ALTERNATIVES: dict[str, tuple[str, dict]] = {
    "alt:max_pooling": ("+augment", {"rnn.pooling": "max"}),
    "alt:utterance_std": ("+augment", {"normalise.utterance_std": True}),
    "alt:speaker_adversary": ("+augment", {"train.adversary.weight": 0.3}),
    "alt:longer": ("+augment", {"train.epochs": 60, "train.early_stopping_patience": 12}),
}


def variants() -> dict[str, dict]:
    """name -> overrides of params.yaml: `default` (params.yaml as it is), each step including the ones above
    it, the alternatives (one change off one step), then the original study's presets (`preset:basic` ...)
    as overrides of the `rnn` section of params.yaml as it stands, so with its normalisation and
    augmentation on."""
    out, current = {"default": {}}, dict(BASELINE)
    for name, change in STEPS:
        current = {**current, **change}
        out[name] = dict(current)
    for name, (step, change) in ALTERNATIVES.items():
        out[name] = {**out[step], **change}
    for preset in PRESETS:
        out[f"preset:{preset}"] = preset_overrides(preset)
    return out


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
                      dataclasses.asdict(dataclasses.replace(base.features, workers=0))], sort_keys=True, default=str)
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
            build_cache(manifest, base.features, cache, resolve_count(base.features.workers))
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
    """Trains one variant/cell on one fold's cache; returns its test predictions and dev/train scores.
    Runs in a worker process with one torch thread (faster than two on small recurrent batches)."""
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
    shutil.rmtree(work, ignore_errors=True)
    return {**{k: job[k] for k in ("variant", "base", "cell", "fold")}, "seed": params.train.seed,
            "best_dev": metrics["best_dev"],
            "best_train": metrics["best_train"], "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"], "train_seconds": metrics["train_seconds"],
            "classes": test.classes, "labels": test.labels.tolist(), "probs": probs.tolist(),
            "speakers": test.speakers.tolist()}


def summarise(runs: list[dict], folds: int, n_seeds: int = 1) -> list[dict]:
    """One row per variant and cell whose `folds` x `n_seeds` runs are all in: the pooled out-of-fold balanced
    accuracy of the seeds' mean probability per clip (one seed: that seed's), with its speaker-bootstrap
    interval; with several seeds also each seed's own pooled value (`per_seed`)."""
    from pipeline.stats import balanced_accuracy, pooled_balanced_accuracy

    rows = []
    frame = pd.DataFrame(runs)
    for (variant, cell), group in frame.groupby(["variant", "cell"], sort=False):
        if len(group) < folds * n_seeds:
            continue  # still running
        by_fold = [fold_runs for _, fold_runs in group.groupby("fold", sort=True)]
        speakers = np.concatenate([np.asarray(f.iloc[0]["speakers"]) for f in by_fold])
        labels = np.concatenate([np.asarray(f.iloc[0]["labels"]) for f in by_fold])
        probs = np.concatenate([np.mean([np.asarray(p) for p in f["probs"]], axis=0) for f in by_fold])
        pooled = pooled_balanced_accuracy(speakers, labels, probs.argmax(1))
        per_seed = [balanced_accuracy(labels, np.concatenate(
            [np.asarray(f[f["seed"] == seed].iloc[0]["probs"]).argmax(1) for f in by_fold]))
            for seed in sorted(group["seed"].unique())]
        train_acc = np.mean([r["accuracy"] for r in group["best_train"]])
        dev_acc = np.mean([r["accuracy"] for r in group["best_dev"]])
        row = {"variant": variant, "base": group.iloc[0]["base"], "cell": cell, "pooled_balanced_accuracy": round(pooled["value"], 4),
               "ci_low": round(pooled["ci_low"], 4), "ci_high": round(pooled["ci_high"], 4),
               "train_accuracy": round(float(train_acc), 3), "dev_accuracy": round(float(dev_acc), 3),
               "gap": round(float(train_acc - dev_acc), 3), "folds": len(by_fold), "seeds": len(per_seed),
               "mean_best_epoch": round(float(group["best_epoch"].mean()), 1),
               "train_seconds_per_fold": round(float(group["train_seconds"].mean()), 1)}
        if len(per_seed) > 1:
            row["per_seed"] = [round(v, 4) for v in per_seed]
        rows.append(row)
    return rows


def markdown(rows: list[dict], commands: list[dict]) -> str:
    made = "; ".join(f"`{c['command']}` ({c['minutes']:.0f} min)" for c in commands)
    lines = ["# Ablation: pooled out-of-fold balanced accuracy on unseen speakers", "",
             f"Made by {made}. Each row up to `{STEPS[-1][0]}` adds one change to the row above; "
             "`alt:*` rows are one change off the step in brackets; `preset:*` rows are the original study's "
             "networks on params.yaml's normalisation and augmentation. 95% intervals resample speakers. "
             "Train/dev accuracy: at each fold's chosen epoch (train with augmentation on), mean over folds.", "",
             "`VARIANT@F`: trained on a share F of each fold's training speakers; `VARIANTxNseeds`: each clip's "
             "probabilities averaged over N training seeds (each seed's own value in the last column).", "",
             "| variant | cell | pooled balanced accuracy [95% CI] | train acc | dev acc | gap | best epoch | "
             "train s/fold | each seed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["variant"] + (f" (off {ALTERNATIVES[r['variant']][0]})" if r["variant"] in ALTERNATIVES else "")
        lines.append(f"| {name} | {r['cell'].upper()} | {r['pooled_balanced_accuracy']:.3f} "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['train_accuracy']:.3f} | {r['dev_accuracy']:.3f} "
                     f"| {r['gap']:+.3f} | {r['mean_best_epoch']:.1f} | {r['train_seconds_per_fold']:.0f} | "
                     f"{', '.join(f'{v:.3f}' for v in r.get('per_seed', []))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=None, help="variant names (default: all; see --list)")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra overrides for every variant (YAML values), e.g. train.epochs=15")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--workers", type=int, default=2, help="folds trained at once (default: 2)")
    parser.add_argument("--out", type=Path, default=ABLATION_REPORT.parent,
                        help=f"folder for the report (default: {ABLATION_REPORT.parent})")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="training seeds (train.seed) per fold; each clip's probabilities are averaged over "
                             "them (default: params.yaml's one seed)")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train on this share of each fold's training speakers of each class (dev and test "
                             "unchanged): a point of the learning curve; rows are named VARIANT@FRACTION "
                             "(default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the fold caches here and reuse them in later runs with the same data and "
                             "features params (default: a temporary folder, removed at the end)")
    parser.add_argument("--list", action="store_true", help="print the variants and their overrides")
    args = parser.parse_args(argv)
    table = variants()
    if args.list:
        print(json.dumps(table, indent=2))
        return 0
    chosen = args.variants or list(table)
    unknown = [v for v in chosen if v not in table]
    if unknown:
        print(f"error: unknown variant(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if not 0 < args.train_fraction <= 1:
        print(f"error: --train-fraction {args.train_fraction}: give a share in (0, 1]", file=sys.stderr)
        return 2
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    start = time.perf_counter()
    # A plain `kill` (SIGTERM) then still runs the cleanup below instead of leaving the fold caches in /tmp.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scratch = Path(tempfile.mkdtemp(prefix="acento-ablate-"))
    try:
        caches = build_fold_caches(args.params, args.cache_dir or scratch, extra, args.train_fraction)
        seeds = args.seeds or [None]
        label = ("" if args.train_fraction == 1 else f"@{args.train_fraction:g}") + \
            (f"x{len(seeds)}seeds" if len(seeds) > 1 else "")
        jobs = [{"variant": v + label, "base": v, "cell": c, "fold": f, "seed": seed, "cache": str(cache),
                 "overrides": {**table[v], **extra}, "params_file": str(args.params), "scratch": str(scratch)}
                for v in chosen for c in args.cells for seed in seeds for f, cache in enumerate(caches)]
        runs, report = [], ""
        with ProcessPoolExecutor(args.workers) as pool:
            for run in pool.map(run_fold, jobs):
                runs.append(run)
                print(f"{run['variant']:>20} {run['cell']} fold {run['fold']} seed {run['seed']}: dev macro-F1 "
                      f"{run['best_dev']['macro_f1']:.3f} (train acc {run['best_train'].get('accuracy', 0):.3f}) "
                      f"epoch {run['best_epoch']}/{run['epochs_run']}, {run['train_seconds']:.0f} s", flush=True)
                if run["fold"] == len(caches) - 1:  # perhaps a variant and cell complete: the report so far
                    report = write_report(runs, args, argv, table, extra, start, len(caches), len(seeds))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(report)
    return 0


def merge_rows(previous: list[dict], new: list[dict], order: list[str]) -> list[dict]:
    """The rows of earlier runs of the report folder with this run's rows replacing theirs (same variant
    and cell), in the order of `--list` and LSTM before GRU: one table built by several invocations."""
    fresh = {(r["variant"], r["cell"]) for r in new}
    rows = [r for r in previous if (r["variant"], r["cell"]) not in fresh] + new
    rank = {name: i for i, name in enumerate(order)}
    return sorted(rows, key=lambda r: (rank.get(r["variant"], len(rank)), r["cell"] != "lstm"))


def write_report(runs: list[dict], args: argparse.Namespace, argv: list[str] | None, table: dict, extra: dict,
                 start: float, folds: int, n_seeds: int) -> str:
    command = ("python -m pipeline.ablate " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    minutes = (time.perf_counter() - start) / 60
    new = [{**row, "overrides": {**table[row["base"]], **extra}, "command": command}
           for row in summarise(runs, folds, n_seeds)]
    previous = {}
    json_path, report_path = args.out / ABLATION_JSON.name, args.out / ABLATION_REPORT.name
    if json_path.exists():
        previous = json.loads(json_path.read_text(encoding="utf-8"))
    rows = merge_rows(previous.get("rows", []), new, list(table))
    commands = [c for c in previous.get("commands", []) if c["command"] != command]
    commands.append({"command": command, "minutes": round(minutes, 1)})
    report = markdown(rows, commands)
    with atomic_path(report_path, suffix=".md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    write_json(json_path, {"rows": rows, "commands": commands})
    return report


if __name__ == "__main__":
    sys.exit(main())
