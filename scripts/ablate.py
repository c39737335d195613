"""Which training choices make a model learn accents rather than voices: an ablation by speaker-grouped
cross-validation, in one process.

Each variant is a set of overrides of params.yaml.  For every variant, cell and fold of
`data.folds`, the model is trained on the fold's training speakers, its epoch picked on its dev
speakers, and its test-fold predictions kept; the folds' predictions are pooled (every labelled
speaker once) into a balanced accuracy with a 95% speaker-bootstrap interval (`acento.evaluation.stats`).
Nothing is chosen on a test fold.  The features are computed once, for every fold and variant (a clip's
features depend neither on its split nor on the model), and folds train in parallel processes.

This is the study behind the defaults in params.yaml (docs/study.md: "Accent, not voice"); `make compare`
is the user-facing comparison of cells, with every run a DVC experiment.

  python scripts/ablate.py --variants baseline +utterance_norm --cells gru
  python scripts/ablate.py --list
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from acento.config import CELLS, PARAMS_FILE, ConfigError, parse_params
from acento.evaluation.crossval import build_feature_cache, parse_overrides, pretrained_encoder, raw_params, run_folds
from acento.files import atomic_path, write_json
from acento.model.presets import PRESETS, preset_overrides
from acento.paths import ABLATION_JSON, ABLATION_REPORT
from acento.runtime import scratch_folder

# Cumulative steps from the defaults this project had before the study ("baseline") to the chosen
# defaults: each row adds one change to the row above it.
BASELINE = {"normalise.utterance_mean": False, "normalise.utterance_std": False, "rnn.hidden_size": 128,
            "rnn.num_layers": 2, "rnn.dropout": 0.2, "rnn.pooling": "attention", "rnn.frontend_stride": 4,
            "rnn.frontend_kernel": 5, "train.optimizer": "adam", "train.weight_decay": 0.0,
            "train.schedule": "plateau_loss", "train.class_weights": True, "train.epochs": 30,
            "train.early_stopping_patience": 6, "train.dev_speakers": "select", "train.augment.time_stretch": 0.0,
            "train.augment.freq_warp": 0.0, "train.augment.freq_shift": 0, "train.augment.crop": 1.0,
            "train.specaugment.freq_masks": 0,
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
    # off params.yaml as it stands (issue 22): whole clips instead of random crops of >= 80%
    "default:whole_clips": ("default", {"train.augment.crop": 1.0}),
    # the dev split picks the epoch but stops nothing: on the sample, early stopping on ~40 dev speakers
    # ended some folds at epoch 6-14 with training accuracy 0.22-0.34 (underfit); cosine decay over 40 epochs
    "default:cosine40": ("default", {"train.schedule": "cosine", "train.epochs": 40,
                                     "train.early_stopping_patience": 40, "train.dev_speakers": "select"}),
    # the dev speakers pick the epoch instead of training too (the defaults of round 3)
    "default:dev_select": ("default", {"train.dev_speakers": "select"}),
    # issue 35: start from the encoder pretrained on the unlabelled pool (masked reconstruction, 20 epochs);
    # needs a pool: --set data.unlabelled_clips=100000 (the same for its `default` rows, so both share one cache)
    "default:pretrained": ("default", {"train.init": "pretrained", "pretrain.epochs": 20}),
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


def predictions_source(text: str) -> tuple[Path, bool]:
    """FILE[:teacher] (a command-line argument of merge_runs.py and presets_table.py) -> (file, teacher?)."""
    return Path(text.removesuffix(":teacher")), text.endswith(":teacher")


def read_predictions(path: Path, teacher: bool = False) -> dict:
    """A `--predictions` file ({"command": str, "runs": [run, ...]}), plain or gzipped (FILE.json.gz, as the
    reports keep them).  teacher: each run's `probs` become its `teacher_probs` (a `--self-train` file's first
    models: plain runs of the same settings), and `teacher` marks it (its training and dev scores, epoch and
    seconds stay the second model's: not the row's).  SystemExit (one line naming the file) when it is not
    such a file."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        saved = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, EOFError) as exc:
        raise SystemExit(f"error: {path}: not an ablate.py --predictions file ({exc})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("runs"), list) or "command" not in saved:
        raise SystemExit(f"error: {path}: not an ablate.py --predictions file (no command and runs)")
    if teacher and any("teacher_probs" not in run for run in saved["runs"]):
        raise SystemExit(f"error: {path}: its runs hold no teacher_probs (not an ablate.py --self-train run)")
    saved["runs"] = [{**run, "probs": run["teacher_probs"] if teacher else run["probs"], "teacher": teacher}
                     for run in saved["runs"]]
    return saved


def pooled_predictions(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """The test clips of one row's runs (one per fold and training seed), pooled in fold order: speakers,
    labels, each seed's probabilities [clips, classes] and their mean over seeds (the row's prediction)."""
    folds = sorted({r["fold"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["fold"], r["seed"]): r for r in runs}
    speakers = np.concatenate([np.asarray(by[f, seeds[0]]["speakers"]) for f in folds])
    labels = np.concatenate([np.asarray(by[f, seeds[0]]["labels"]) for f in folds])
    per_seed = {s: np.concatenate([np.asarray(by[f, s]["probs"]) for f in folds]) for s in seeds}
    return speakers, labels, per_seed, np.mean(list(per_seed.values()), axis=0)


def summarise(runs: list[dict], folds: int, n_seeds: int = 1) -> list[dict]:
    """One row per variant and cell whose `folds` x `n_seeds` runs are all in: the pooled out-of-fold balanced
    accuracy of the seeds' mean probability per clip (one seed: that seed's), with its speaker-bootstrap
    interval; the speaker-level balanced accuracy of the same probabilities (one decision per speaker:
    `acento.evaluation.stats.speaker_balanced_accuracy`); with several seeds also each seed's own pooled
    value (`per_seed`)."""
    from acento.evaluation.metrics import balanced_accuracy
    from acento.evaluation.stats import pooled_balanced_accuracy, speaker_balanced_accuracy

    rows = []
    frame = pd.DataFrame(runs)
    for (variant, cell), group in frame.groupby(["variant", "cell"], sort=False):
        if len(group) < folds * n_seeds:
            continue  # still running
        speakers, labels, seed_probs, probs = pooled_predictions(group.to_dict("records"))
        pooled = pooled_balanced_accuracy(speakers, labels, probs.argmax(1))
        per_seed = [balanced_accuracy(labels, p.argmax(1)) for p in seed_probs.values()]
        train_acc = np.mean([r["accuracy"] for r in group["best_train"]])
        dev = [r["accuracy"] for r in group["best_dev"] if r]  # none without a dev split
        dev_acc = round(float(np.mean(dev)), 3) if dev else None
        row = {"variant": variant, "base": group.iloc[0]["base"],
               "train_fraction": float(group.iloc[0].get("train_fraction", 1.0)), "cell": cell,
               "pooled_balanced_accuracy": round(pooled["value"], 4),
               "ci_low": round(pooled["ci_low"], 4), "ci_high": round(pooled["ci_high"], 4),
               "speaker_balanced_accuracy": speaker_balanced_accuracy(speakers, labels, probs),
               "train_accuracy": round(float(train_acc), 3), "dev_accuracy": dev_acc,
               "gap": None if dev_acc is None else round(float(train_acc) - dev_acc, 3),
               "folds": int(group["fold"].nunique()), "test_folds": sorted(int(f) for f in group["fold"].unique()),
               "seeds": len(per_seed),
               "mean_best_epoch": round(float(group["best_epoch"].mean()), 1),
               "train_seconds_per_fold": round(float(group["train_seconds"].mean()), 1)}
        if len(per_seed) > 1:
            row["per_seed"] = [round(v, 4) for v in per_seed]
        rows.append(row)
    return rows


def markdown(rows: list[dict], commands: list[dict]) -> str:
    made = "; ".join(f"`{c['command']}`" + (f" ({c['minutes']:.0f} min)" if c.get("minutes") is not None else "")
                     for c in commands)
    lines = ["# Ablation: pooled out-of-fold balanced accuracy on unseen speakers", "",
             f"Made by {made}. Each row up to `{STEPS[-1][0]}` adds one change to the row above; "
             "`alt:*` rows are one change off the step in brackets; `preset:*` rows are the original study's "
             "networks on params.yaml's normalisation and augmentation. 95% intervals resample speakers. "
             "Train/dev accuracy: at each fold's chosen epoch (train with augmentation on), mean over folds.", "",
             "`VARIANT@F`: trained on a share F of each fold's training speakers; `VARIANTxNseeds`: each clip's "
             "probabilities averaged over N training seeds (each seed's own value in the last column); "
             "`VARIANT~fA,B`: only test folds A and B ran (their speakers only).", "",
             "Speaker-level: one decision per speaker (the class of highest summed probability over their clips), "
             "balanced over classes, its interval resampling speakers (– in rows written before it was kept).", "",
             "| variant | cell | pooled balanced accuracy [95% CI] | speaker-level [95% CI] | train acc | dev acc | gap "
             "| best epoch | train s/fold | each seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["variant"] + (f" (off {ALTERNATIVES[r['variant']][0]})" if r["variant"] in ALTERNATIVES else "")
        spk = r.get("speaker_balanced_accuracy")
        spk_cell = f"{spk['value']:.3f} [{spk['ci_low']:.3f}, {spk['ci_high']:.3f}]" if spk else "–"
        lines.append(f"| {name} | {r['cell'].upper()} | {r['pooled_balanced_accuracy']:.3f} "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {spk_cell} | "
                     f"{table_cell(r['train_accuracy'], '.3f')} | {table_cell(r['dev_accuracy'], '.3f')} | "
                     f"{table_cell(r['gap'], '+.3f')} | {table_cell(r['mean_best_epoch'], '.1f')} | "
                     f"{table_cell(r['train_seconds_per_fold'], '.0f')} | "
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
    parser.add_argument("--self-train", type=float, default=None, metavar="MIN_CONFIDENCE",
                        help="self-training: each fold's model labels the unlabelled pool's speakers (needs "
                             "data.unlabelled_clips > 0) that it gives a mean probability of at least this, and a "
                             "second run trains on them too; rows are named VARIANT+stMIN_CONFIDENCE, and the "
                             "first run's scores are kept as teacher_probs in --predictions (default: params.yaml's "
                             "train.self_train, with --set; off when 0)")
    parser.add_argument("--folds", nargs="+", type=int, default=None, metavar="FOLD",
                        help="test folds to run (default: every fold of data.folds): the pooled score then covers "
                             "only these folds' speakers, and the rows are named VARIANT~fFOLD,... (a long run "
                             "in pieces, or one that does not fit its time)")
    parser.add_argument("--keep-models", type=Path, default=None,
                        help="keep each run's model file here, as VARIANT-CELL-fFOLD[-sSEED].pt (e.g. to make an "
                             "ensemble of the fold models with acento.model.accent_model.AccentModel.ensemble; default: deleted)")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="also write every run's test-fold probabilities, with the clips' speakers and labels, "
                             "to this JSON file (to compare two rows clip by clip: acento.evaluation.stats.paired_difference)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the feature cache (every fold's clips, decoded once) here and reuse it in later "
                             "runs with the same data and features params (default: a temporary folder, removed "
                             "at the end)")
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
    if args.self_train is not None and not 0 <= args.self_train <= 1:
        print(f"error: --self-train {args.self_train}: give a probability in [0, 1]", file=sys.stderr)
        return 2
    if not 0 < args.train_fraction <= 1:
        print(f"error: --train-fraction {args.train_fraction}: give a share in (0, 1]", file=sys.stderr)
        return 2
    try:
        extra = parse_overrides(args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    # A plain `kill` (SIGTERM) then still runs the cleanup below instead of leaving the feature cache in /tmp.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scratch = scratch_folder("ablate")  # named after this process: removed by the next run if this one is killed
    try:
        cache, folds = build_feature_cache(args.params, args.cache_dir or scratch, extra)
        test_folds = sorted(set(args.folds)) if args.folds else list(range(folds))
        if any(not 0 <= f < folds for f in test_folds):
            print(f"error: --folds {' '.join(map(str, args.folds))}: data.folds is {folds}; give folds in "
                  f"0..{folds - 1}", file=sys.stderr)
            return 2
        seeds = args.seeds or [None]
        # the minimum confidence that applies: --self-train, else params' train.self_train (0 there = off), so
        # that a row self-trained by params.yaml or --set is named so too; checked like params' (a pool is
        # needed) before any training, not when the first model of each fold is done
        asked = extra if args.self_train is None else {**extra, "train.self_train": args.self_train}
        try:
            configured = parse_params(raw_params(args.params, asked)).train.self_train
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        self_train = args.self_train if args.self_train is not None else (configured or None)
        label = ("" if args.train_fraction == 1 else f"@{args.train_fraction:g}") + \
            (f"x{len(seeds)}seeds" if len(seeds) > 1 else "") + \
            ("" if len(test_folds) == folds else "~f" + ",".join(map(str, test_folds))) + \
            ("" if self_train is None else f"+st{self_train:g}")
        encoders = {(v, c): pretrained_encoder(args.params, {**table[v], **extra}, c, cache)
                    for v in chosen for c in args.cells}
        jobs = [{"variant": v + label, "base": v, "train_fraction": args.train_fraction, "cell": c, "fold": f,
                 "seed": seed, "cache": str(cache), "encoder": str(encoders[v, c] or ""), "self_train": self_train,
                 "overrides": {**table[v], **extra}, "params_file": str(args.params), "scratch": str(scratch),
                 **({"keep": str(args.keep_models / f"{v + label}-{c}-f{f}{'' if seed is None else f'-s{seed}'}.pt")}
                    if args.keep_models else {})}
                for v in chosen for c in args.cells for seed in seeds for f in test_folds]
        from acento.evaluation.metrics import describe_kept_epoch

        runs, report = [], ""
        for run in run_folds(jobs, args.workers):
            runs.append(run)
            print(f"{run['variant']:>20} {run['cell']} fold {run['fold']} seed {run['seed']}: "
                  f"{describe_kept_epoch(run)} (train acc {run['best_train'].get('accuracy', 0):.3f}), "
                  f"{run['train_seconds']:.0f} s", flush=True)
            if args.predictions:  # after every run: a stopped ablation keeps what it trained
                write_json(args.predictions, {"command": command_line(argv), "runs": runs})
            if run["fold"] == test_folds[-1]:  # perhaps a variant and cell complete: the report so far
                report = write_report(runs, args, argv, table, extra, start, len(test_folds), len(seeds))
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


def table_cell(value: float | None, spec: str) -> str:
    """A table cell: the value formatted, or "–" when there is none (no dev split, a score not kept)."""
    return "–" if value is None else format(value, spec)


def command_line(argv: list[str] | None) -> str:
    """This invocation as a command a reader can rerun."""
    return ("python scripts/ablate.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()


def write_report(runs: list[dict], args: argparse.Namespace, argv: list[str] | None, table: dict, extra: dict,
                 start: float, folds: int, n_seeds: int) -> str:
    command = command_line(argv)
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
    plot_learning_curves(rows, args.out / "learning_curve.png")
    return report


def row_share(row: dict) -> float:
    """A report row's share of the training speakers (`--train-fraction`); 1 for rows written before the field."""
    return row.get("train_fraction") or 1.0


def plot_learning_curves(rows: list[dict], out: Path, min_shares: int = 2) -> None:
    """Pooled out-of-fold balanced accuracy (with its interval) against the share of training speakers,
    per base variant and cell, for every one measured at `min_shares` shares or more (`--train-fraction`)."""
    curves: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("seeds", 1) == 1:
            curves.setdefault((row["base"], row["cell"]), []).append(row)
    curves = {key: sorted(points, key=row_share) for key, points in curves.items()
              if len({row_share(r) for r in points}) >= min_shares}
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {base: ("-", "--", ":", "-.")[i % 4] for i, base in enumerate(dict.fromkeys(b for b, _ in curves))}
    colours = {cell: f"C{i}" for i, cell in enumerate(dict.fromkeys(c for _, c in curves))}
    for (base, cell), points in curves.items():  # a colour per cell, a line style per variant
        x = [100 * row_share(r) for r in points]
        y = np.array([r["pooled_balanced_accuracy"] for r in points])
        err = np.array([[v - r["ci_low"], r["ci_high"] - v] for v, r in zip(y, points)]).T
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linestyle=styles[base], color=colours[cell],
                    label=f"{base} {cell.upper()}")
    ax.set_xlabel("training speakers used (% of each fold's, per class)")
    ax.set_ylabel("pooled out-of-fold balanced accuracy")
    ax.set_title("Learning curve (95% speaker-bootstrap intervals)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
