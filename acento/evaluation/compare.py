"""LSTM against GRU, cross-validated over speakers: is one cell better, and how sure is that?

For each preset (the original study's basic, deep and advanced models, as overrides of the `rnn`
section, and `default`, params.yaml as it is) and each cell, the pipeline runs once per fold of the
speaker-grouped cross-validation (`data.fold` = 0 .. data.folds-1), each run a named DVC
experiment (`default-gru-f3`).  Every speaker is then in exactly one test fold, so the out-of-fold
predictions of all folds cover every labelled clip once and can be pooled.  The results are read
back from the experiments themselves (`dvc exp show --json` for the metrics, each experiment's
commit for `metrics/predictions.csv`) and summarised in reports/compare.{md,json,png}:
per-fold scores, pooled out-of-fold balanced accuracy with a speaker-bootstrap interval, and the
paired GRU − LSTM difference on the same clips (`acento.evaluation.stats`).

  python -m acento.evaluation.compare                         # default preset, LSTM and GRU, every fold
  python -m acento.evaluation.compare --presets default basic --seeds 1 2

One module of ~350 lines on purpose: `make compare`'s whole tool (the experiments' commands, running
them through DVC's queue, reading them back, the summary, the report and the plot), read as one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from acento.config import CELLS, load_params
from acento.evaluation.metrics import speaker_accuracy
from acento.evaluation.outputs import read_predictions
from acento.evaluation.stats import (
    paired_difference,
    pooled_balanced_accuracy,
    seed_agreement,
    verdict,
)
from acento.files import atomic_path, write_json
from acento.model.presets import PRESETS, preset_overrides
from acento.paths import (
    COMPARE_METRICS,
    COMPARE_PLOT,
    COMPARE_REPORT,
    EVAL_METRICS,
    PREDICTIONS,
)


def experiment_name(preset: str, cell: str, fold: int, seed: int | None) -> str:
    return f"{preset}-{cell}-f{fold}" + (f"-s{seed}" if seed is not None else "")


def overrides(preset: str, cell: str, fold: int, seed: int | None) -> list[str]:
    """`dvc exp run -S` arguments of one run: the cell, the test fold, a training seed, the preset."""
    args = ["-S", f"model={cell}", "-S", f"data.fold={fold}"]
    if seed is not None:
        args += ["-S", f"train.seed={seed}"]
    for key, value in preset_overrides(preset).items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        args += ["-S", f"{key}={text}"]
    return args


def experiment_commands(presets: list[str], folds: int, seeds: list[int | None]) -> list[tuple[dict, list[str]]]:
    """(run description, `dvc exp run --queue` command) for every preset x cell x fold x seed."""
    runs = []
    for preset in presets:
        for cell in CELLS:
            for seed in seeds:
                for fold in range(folds):
                    name = experiment_name(preset, cell, fold, seed)
                    cmd = ["dvc", "exp", "run", "--queue", "--name", name,
                           *overrides(preset, cell, fold, seed)]
                    runs.append(({"name": name, "preset": preset, "cell": cell, "fold": fold, "seed": seed}, cmd))
    return runs


def experiment_revs(exp_show: list[dict]) -> dict[str, dict]:
    """Experiment name -> {"rev": commit, "eval": metrics/eval.json}, from `dvc exp show --json`."""
    found = {}
    for baseline in exp_show:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                name = rev.get("name") or exp.get("name")
                data = rev.get("data") or {}
                evaluation = (data.get("metrics") or {}).get(str(EVAL_METRICS), {}).get("data", {})
                if name:
                    found[name] = {"rev": data.get("rev") or rev.get("rev"), "eval": evaluation}
    return found


def experiment_predictions(rev: str) -> pd.DataFrame:
    """An experiment's per-clip test predictions, from its commit (the file is tracked by git)."""
    text = subprocess.run(["git", "show", f"{rev}:{PREDICTIONS}"], capture_output=True, text=True, check=True).stdout
    return read_predictions(io.StringIO(text))


def gather(runs: list[dict]) -> list[dict]:
    """Each run with its test metrics and predictions, read back from DVC's experiments."""
    # every commit's experiments: the reports may be written after HEAD moved past the baseline
    shown = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True, text=True, check=True)
    revs = experiment_revs(json.loads(shown.stdout))
    missing = [r["name"] for r in runs if r["name"] not in revs]
    if missing:
        raise SystemExit(f"error: no DVC experiment named {', '.join(missing[:3])}; run them first (without --report-only)")
    return [{**run, "eval": revs[run["name"]]["eval"], "predictions": experiment_predictions(revs[run["name"]]["rev"])}
            for run in runs]


def summarise(results: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Per preset and cell: per-fold scores, pooled out-of-fold balanced accuracy with its speaker
    bootstrap interval, pooled speaker accuracy; per preset: the paired GRU − LSTM comparison."""
    summary: dict = {}
    for preset in dict.fromkeys(r["preset"] for r in results):
        cells, pooled, seed_preds = {}, {}, {}
        for cell in CELLS:
            runs = [r for r in results if r["preset"] == preset and r["cell"] == cell]
            if not runs:
                continue
            frame = pd.concat([r["predictions"].assign(fold=r["fold"], seed=r["seed"]) for r in runs])
            # with several training seeds, each clip's prediction is the seeds' mean probability
            prob_cols = [c for c in frame.columns if c.startswith("p_")]
            merged = frame.groupby(["clip", "speaker", "label"], as_index=False)[prob_cols].mean()
            classes = [c[2:] for c in prob_cols]
            merged["predicted"] = [classes[i] for i in merged[prob_cols].to_numpy().argmax(1)]
            pooled[cell] = merged.sort_values("clip").reset_index(drop=True)
            seed_preds[cell] = {s: group.sort_values("clip").set_index("clip")[prob_cols].to_numpy().argmax(1)
                                for s, group in frame.groupby(frame["seed"].fillna(-1))}
            index = {c: i for i, c in enumerate(classes)}
            labels, pred = merged["label"].map(index).to_numpy(), merged["predicted"].map(index).to_numpy()
            speakers = merged["speaker"].to_numpy()
            per_fold = [{"fold": r["fold"], "seed": r["seed"], "balanced_accuracy": r["eval"].get("balanced_accuracy"),
                         "macro_f1": r["eval"].get("macro_f1")} for r in runs]
            ba = np.array([f["balanced_accuracy"] for f in per_fold], dtype=float)
            f1 = np.array([f["macro_f1"] for f in per_fold], dtype=float)
            cells[cell] = {
                "folds": per_fold,
                "balanced_accuracy_mean": float(ba.mean()), "balanced_accuracy_sd": float(ba.std(ddof=1)) if len(ba) > 1 else 0.0,
                "macro_f1_mean": float(f1.mean()), "macro_f1_sd": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
                "pooled_balanced_accuracy": pooled_balanced_accuracy(speakers, labels, pred, n_boot, seed),
                # the same per-speaker decision as evaluate's: highest summed probability
                "pooled_speaker_accuracy": speaker_accuracy(speakers, labels, merged[prob_cols].to_numpy()),
                "clips": int(len(merged)), "speakers": int(len(set(speakers))), "chance": 1 / len(classes),
            }
        entry: dict = {"cells": cells}
        if set(pooled) == set(CELLS):
            a, b = pooled["lstm"], pooled["gru"]
            if not a["clip"].equals(b["clip"]):
                raise SystemExit(f"error: preset {preset}: LSTM and GRU runs predicted different clips; rerun both")
            index = {c: i for i, c in enumerate(sorted(set(a["label"]) | set(a["predicted"]) | set(b["predicted"])))}
            paired = paired_difference(a["speaker"].to_numpy(), a["label"].map(index).to_numpy(),
                                       a["predicted"].map(index).to_numpy(), b["predicted"].map(index).to_numpy(),
                                       n_boot, seed)
            entry["gru_minus_lstm"] = {**paired, "verdict": verdict("LSTM", "GRU", paired)}
            seeds = sorted(set(seed_preds["lstm"]) & set(seed_preds["gru"]))
            if len(seeds) > 1:  # does each training seed alone reach the same verdict?
                labels, speakers = a["label"].map(index).to_numpy(), a["speaker"].to_numpy()
                per_seed = [paired_difference(speakers, labels, seed_preds["lstm"][s], seed_preds["gru"][s], n_boot, seed)
                            for s in seeds]
                entry["gru_minus_lstm"]["per_seed"] = [
                    {"seed": None if s == -1 else int(s), "difference": d["difference"], "ci_low": d["ci_low"],
                     "ci_high": d["ci_high"]} for s, d in zip(seeds, per_seed)]
                entry["gru_minus_lstm"]["verdict"] += " " + seed_agreement("LSTM", "GRU", per_seed)
        summary[preset] = entry
    return summary


def markdown(summary: dict, command: str, minutes: float | None) -> str:
    took = f" in {minutes:.1f} min" if minutes is not None else ""
    lines = ["# LSTM vs GRU, cross-validated over speakers", "",
             f"Made by `{command}`{took}. Every speaker is in exactly one test fold; intervals are "
             "95% bootstrap intervals over speakers (2,000 resamples).", ""]
    for preset, entry in summary.items():
        lines += [f"## Preset `{preset}`", "",
                  "| cell | balanced accuracy per fold | mean ± sd | macro-F1 mean ± sd | pooled out-of-fold balanced "
                  "accuracy [95% CI] | pooled speaker accuracy | clips / speakers |",
                  "|---|---|---|---|---|---|---|"]
        for cell, c in entry["cells"].items():
            folds = ", ".join(f"{f['balanced_accuracy']:.3f}" for f in c["folds"])
            p = c["pooled_balanced_accuracy"]
            lines.append(f"| {cell.upper()} | {folds} | {c['balanced_accuracy_mean']:.3f} ± {c['balanced_accuracy_sd']:.3f} "
                         f"| {c['macro_f1_mean']:.3f} ± {c['macro_f1_sd']:.3f} | **{p['value']:.3f}** "
                         f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}] | {c['pooled_speaker_accuracy']:.3f} "
                         f"| {c['clips']} / {c['speakers']} |")
        if "gru_minus_lstm" in entry:
            d = entry["gru_minus_lstm"]
            lines += ["", f"GRU − LSTM on the same clips: balanced accuracy {d['difference']:+.3f} "
                      f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]; exact McNemar p = {d['mcnemar']['p']:.3g} "
                      f"({d['mcnemar']['only_b_right']} clips right only for GRU, {d['mcnemar']['only_a_right']} only "
                      f"for LSTM); speaker sign test p = {d['sign_test']['p']:.3g} (GRU better on "
                      f"{d['sign_test']['b_better']} speakers, LSTM on {d['sign_test']['a_better']}, "
                      f"{d['sign_test']['ties']} ties).", "", f"**Verdict:** {d['verdict']}"]
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    """One panel per preset: each fold's balanced accuracy (points), the mean (bar) and the pooled
    out-of-fold value with its speaker-bootstrap interval (error bar), per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(3.2 * len(summary) + 1, 3.8), squeeze=False, sharey=True)
    for ax, (preset, entry) in zip(axes[0], summary.items()):
        for x, (cell, c) in enumerate(entry["cells"].items()):
            folds = [f["balanced_accuracy"] for f in c["folds"]]
            ax.scatter(np.full(len(folds), x) + np.linspace(-0.12, 0.12, len(folds)), folds, s=18, alpha=0.7,
                       label="fold" if x == 0 else None)
            ax.hlines(c["balanced_accuracy_mean"], x - 0.25, x + 0.25, colors="k", label="mean" if x == 0 else None)
            p = c["pooled_balanced_accuracy"]
            ax.errorbar(x + 0.32, p["value"], yerr=[[p["value"] - p["ci_low"]], [p["ci_high"] - p["value"]]],
                        fmt="D", color="tab:red", capsize=4, label="pooled, 95% CI" if x == 0 else None)
            chance = c["chance"]
        ax.axhline(chance, ls=":", color="grey", label="chance")
        ax.set_xticks(range(len(entry["cells"])), [c.upper() for c in entry["cells"]])
        ax.set_title(preset)
        ax.set_xlim(-0.6, len(entry["cells"]) - 0.3)
    axes[0][0].set_ylabel("balanced accuracy (unseen speakers)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def metrics_json(summary: dict) -> dict:
    """The numbers `dvc metrics show` presents: flat per preset and cell (lists left out)."""
    out = {}
    for preset, entry in summary.items():
        out[preset] = {cell: {"pooled_balanced_accuracy": round(c["pooled_balanced_accuracy"]["value"], 4),
                              "pooled_balanced_accuracy_ci_low": round(c["pooled_balanced_accuracy"]["ci_low"], 4),
                              "pooled_balanced_accuracy_ci_high": round(c["pooled_balanced_accuracy"]["ci_high"], 4),
                              "balanced_accuracy_mean": round(c["balanced_accuracy_mean"], 4),
                              "balanced_accuracy_sd": round(c["balanced_accuracy_sd"], 4),
                              "macro_f1_mean": round(c["macro_f1_mean"], 4),
                              "pooled_speaker_accuracy": round(c["pooled_speaker_accuracy"], 4)}
                       for cell, c in entry["cells"].items()}
        if "gru_minus_lstm" in entry:
            d = entry["gru_minus_lstm"]
            out[preset]["gru_minus_lstm"] = {"difference": round(d["difference"], 4), "ci_low": round(d["ci_low"], 4),
                                             "ci_high": round(d["ci_high"], 4), "mcnemar_p": round(d["mcnemar"]["p"], 4),
                                             "sign_test_p": round(d["sign_test"]["p"], 4)}
            if "per_seed" in d:
                out[preset]["gru_minus_lstm"]["seeds_gru_better"] = sum(s["ci_low"] > 0 for s in d["per_seed"])
                out[preset]["gru_minus_lstm"]["seeds_lstm_better"] = sum(s["ci_high"] < 0 for s in d["per_seed"])
                out[preset]["gru_minus_lstm"]["seeds"] = len(d["per_seed"])
    return out


def write_reports(summary: dict, command: str, minutes: float | None) -> None:
    with atomic_path(COMPARE_REPORT, suffix=".md") as tmp:
        tmp.write_text(markdown(summary, command, minutes), encoding="utf-8")
    write_json(COMPARE_METRICS, metrics_json(summary))
    plot(summary, COMPARE_PLOT)


# Seconds a freshly started queue worker is given to show up in `dvc queue status` before it counts as missing.
WORKER_GRACE_SECONDS = 60


def missing_workers(status: str, jobs: int) -> int:
    """How many of `jobs` queue workers `dvc queue status` ("Worker status: 1 active, 0 idle") no longer lists."""
    found = re.search(r"Worker status: (\d+) active, (\d+) idle", status)
    return 0 if found is None else max(0, jobs - int(found[1]) - int(found[2]))


def run_experiments(commands: list[list[str]], jobs: int) -> int:
    """Queues every experiment and runs `jobs` at a time (`dvc queue start -j`), each in a temporary
    workspace of its own: the user's workspace (params.yaml, dvc.lock, metrics/, uncommitted changes and all)
    is the experiments' starting point and is left exactly as it was."""
    for cmd in commands:
        print("$", " ".join(cmd), flush=True)
        name = cmd[cmd.index("--name") + 1]
        # a rerun replaces an old experiment of that name, and its finished task in the queue
        subprocess.run(["dvc", "exp", "remove", name], capture_output=True)
        subprocess.run(["dvc", "queue", "remove", name], capture_output=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"error: could not queue experiment {name}; see the output above", file=sys.stderr)
            return 1
    print(f"$ dvc queue start -j {jobs}, then wait for the queue", flush=True)
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], check=True)
    started = time.monotonic()
    names = {cmd[cmd.index("--name") + 1] for cmd in commands}
    done: set[str] = set()
    while True:
        status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True).stdout
        rows = [line.split() for line in status.splitlines() if len(line.split()) >= 3]
        ours = {row[1]: row[-1] for row in rows if row[1] in names}
        missing = missing_workers(status, jobs) if "Queued" in ours.values() else 0
        if missing and time.monotonic() - started > WORKER_GRACE_SECONDS:
            # DVC's queue workers share a file-system message broker whose concurrent reads can kill one
            # (JSONDecodeError: treeverse/dvc-task#73); measured here: one of two workers gone after 15
            # minutes, and the rest of the queue ran at half speed
            print(f"a DVC queue worker stopped (a known race of DVC's file-system broker, treeverse/dvc-task#73); "
                  f"starting {missing} more", flush=True)
            subprocess.run(["dvc", "queue", "start", "-j", str(missing)], check=True)
            started = time.monotonic()
        failed = sorted(name for name, state in ours.items() if state == "Failed")
        if failed:
            print(f"error: experiment(s) {', '.join(failed)} failed; see `dvc queue logs NAME`", file=sys.stderr)
            return 1
        finished = {name for name, state in ours.items() if state == "Success"}
        for name in sorted(finished - done):
            print(f"done: {name} ({len(finished)}/{len(names)})", flush=True)
        done = finished
        if not any(state in ("Queued", "Running") for state in ours.values()):
            return 0
        time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["default"], choices=[*PRESETS, "default"],
                        help="presets to compare (default: default; `make compare-all` runs every one)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="training seeds (train.seed) per fold; default: params.yaml's one seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="experiments run at once, each in its own temporary workspace with "
                             "runtime.num_threads torch threads (`dvc queue start -j`; default: the cores, %(default)s)")
    parser.add_argument("--report-only", action="store_true",
                        help="do not run anything: gather the experiments already run and write the reports")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands instead of running them")
    args = parser.parse_args(argv)
    folds = load_params().data.folds
    if folds < 2:
        print("error: data.folds is below 2 in params.yaml; cross-validation needs at least 2 folds", file=sys.stderr)
        return 2
    seeds: list[int | None] = list(args.seeds) if args.seeds else [None]
    planned = experiment_commands(args.presets, folds, seeds)
    if args.dry_run:
        for _, cmd in planned:
            print("$", " ".join(cmd))
        return 0
    start = time.perf_counter()
    if not args.report_only:
        code = run_experiments([cmd for _, cmd in planned], max(1, args.jobs))
        if code:
            return code
    summary = summarise(gather([run for run, _ in planned]))
    command = "python -m acento.evaluation.compare" + (f" --presets {' '.join(args.presets)}" if args.presets != ["default"] else "") \
        + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
    write_reports(summary, command, None if args.report_only else (time.perf_counter() - start) / 60)
    print(Path(COMPARE_REPORT).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
