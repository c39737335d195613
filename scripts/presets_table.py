"""The original study's table, redone: every network and cell of several ablation runs on the same speakers.

Reads `python scripts/ablate.py ... --predictions FILE.json` outputs made on the same cache (the same clips
in the same order in every fold; FILE.json.gz gzipped; FILE:teacher a `--self-train` file's first models, plain
runs of its settings, whose training accuracy and seconds it does not hold), groups their runs by network (the
ablation's base variant: `preset:basic`, `default`, ...) and cell, keeps only the test folds given with
`--folds` (a long run that did not cover every fold is compared on the folds it did), and writes, on those
folds' clips:

- per network and cell: the pooled out-of-fold balanced accuracy (probabilities averaged over a file's
  training seeds) with its 95% speaker-bootstrap interval, each seed alone, the training accuracy and the
  seconds per fold-run; and on every fold where a file holds them all;
- per network: GRU − LSTM paired on the same clips (speaker-bootstrap interval, exact McNemar test, sign test
  over speakers: `acento.evaluation.stats.paired_difference`);
- per network and cell: the network − `--reference` (default: `default`), paired the same way.

  python scripts/presets_table.py runs/basic/p.json runs/deep-adv/p.json runs/default/p.json \\
      --folds 0 1 2 --out reports/presets
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from ablate import pooled_predictions, predictions_source, read_predictions, table_cell

from acento.evaluation.metrics import balanced_accuracy
from acento.evaluation.stats import (
    better_of,
    paired_difference,
    pooled_balanced_accuracy,
)
from acento.files import atomic_path, write_json


def load(sources: list[str]) -> tuple[dict[tuple[str, str], list[dict]], list[str]]:
    """Runs of every FILE[:teacher] by (network, cell), and the files' commands: one network's folds may come
    from several files (an ablation run in pieces with `--folds`), but one fold and seed of it only once (which
    to trust?)."""
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    source: dict[tuple[str, str, int, int | None], Path] = {}
    commands: list[str] = []
    for text in sources:
        path, teacher = predictions_source(text)
        saved = read_predictions(path, teacher)
        commands.append(saved["command"])
        for run in saved["runs"]:
            key = (run["base"], run["cell"], run["fold"], run["seed"])
            if key in source:
                raise SystemExit(f"error: {key[0]} {key[1]} fold {key[2]} seed {key[3]} is in both {source[key]} "
                                 f"and {path}; give it once")
            source[key] = path
            rows[key[:2]].append(run)
    return rows, list(dict.fromkeys(commands))


def row_of(runs: list[dict], folds: list[int]) -> dict | None:
    """One network and cell on `folds`' clips, or None when a fold or a seed of it is missing."""
    kept = [r for r in runs if r["fold"] in folds]
    seeds = {r["seed"] for r in runs}
    if {(r["fold"], r["seed"]) for r in kept} != {(f, s) for f in folds for s in seeds}:
        return None
    speakers, labels, per_seed, mean = pooled_predictions(kept)
    pooled = pooled_balanced_accuracy(speakers, labels, mean.argmax(1))
    trained = not any(r["teacher"] for r in kept)  # a teacher run's scores and seconds are its student's
    train_accuracy = round(float(np.mean([r["best_train"]["accuracy"] for r in kept])), 3) if trained else None
    train_seconds = round(float(np.mean([r["train_seconds"] for r in kept])), 1) if trained else None
    return {"speakers": speakers, "labels": labels, "pred": mean.argmax(1),
            "pooled_balanced_accuracy": round(pooled["value"], 4),
            "ci_low": round(pooled["ci_low"], 4), "ci_high": round(pooled["ci_high"], 4),
            "seeds": len(seeds),
            "per_seed": [round(balanced_accuracy(labels, p.argmax(1)), 4) for p in per_seed.values()]
            if len(seeds) > 1 else [],
            "train_accuracy": train_accuracy, "train_seconds_per_fold": train_seconds,
            "clips": len(labels), "n_speakers": len(set(speakers))}


def paired(a: dict, b: dict) -> dict:
    """B − A on the same clips (they must be: the same cache, the same folds)."""
    if not (np.array_equal(a["speakers"], b["speakers"]) and np.array_equal(a["labels"], b["labels"])):
        raise SystemExit("error: two rows hold different clips; were they made on the same cache?")
    return paired_difference(a["speakers"], a["labels"], a["pred"], b["pred"])


def pair_line(name_a: str, name_b: str, p: dict, whole: dict | None) -> str:
    """A table row of B − A, with the better of the two by its speaker interval (as `acento.evaluation.stats.verdict`),
    and the same on every fold (`whole`) when both rows have them."""
    better = {"a": name_a, "b": name_b, None: "no significant difference"}[better_of(p)]
    every = "–" if whole is None else f"{whole['difference']:+.3f} [{whole['ci_low']:+.3f}, {whole['ci_high']:+.3f}]"
    return (f"| {name_b} − {name_a} | {p['difference']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | "
            f"{p['mcnemar']['p']:.2g} | {p['sign_test']['p']:.2g} | {better} | {every} |")


def compared(rows: dict, full: dict, a: tuple[str, str], b: tuple[str, str]) -> tuple[dict, dict | None]:
    """B − A on the chosen folds, and on every fold when both have them."""
    return paired(rows[a], rows[b]), None if full[a] is None or full[b] is None else paired(full[a], full[b])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", nargs="+", metavar="FILE[:teacher]",
                        help="ablate --predictions files (FILE:teacher: a --self-train file's first models)")
    parser.add_argument("--folds", nargs="+", type=int, required=True, help="test folds every row is compared on")
    parser.add_argument("--all-folds", type=int, default=5, help="data.folds (default: 5)")
    parser.add_argument("--reference", default="default", help="the network the others are paired with")
    parser.add_argument("--note", default="", help="a paragraph under the title")
    parser.add_argument("--out", type=Path, required=True, help="folder for presets.md and presets.json")
    args = parser.parse_args(argv)
    runs, commands = load(args.predictions)
    folds = sorted(set(args.folds))
    first = list(dict.fromkeys(k[0] for k in runs))  # networks in the order of the files, the reference last
    order = sorted(runs, key=lambda k: (k[0] == args.reference, first.index(k[0]), k[1] != "lstm"))
    rows, full, missing = {}, {}, []
    for key in order:
        row = row_of(runs[key], folds)
        if row is None:
            missing.append(f"{key[0]} {key[1]}")
            continue
        rows[key] = row
        full[key] = row_of(runs[key], list(range(args.all_folds)))
    if missing:
        print(f"note: not on every fold of {folds}, left out: {', '.join(missing)}", file=sys.stderr)
    if not rows:
        raise SystemExit(f"error: no network of these files ran on every one of --folds {' '.join(map(str, folds))}; "
                         "give the folds they ran")
    any_row = next(iter(rows.values()))
    lines = ["# The original study's networks, cross-validated on unseen speakers", "", args.note, "",
             f"On test folds {', '.join(map(str, folds))} of {args.all_folds} ({any_row['clips']} clips, "
             f"{any_row['n_speakers']} speakers, each a test speaker once); 95% intervals resample speakers.", "",
             f"| network | cell | seeds | pooled balanced accuracy [95% CI], folds {','.join(map(str, folds))} | "
             f"each seed alone | all {args.all_folds} folds | train acc | train s per fold-run |",
             "|---|---|---|---|---|---|---|---|"]
    for (net, cell), r in rows.items():
        f = full[(net, cell)]
        lines.append(f"| {net} | {cell.upper()} | {r['seeds']} | {r['pooled_balanced_accuracy']:.3f} "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {', '.join(f'{v:.3f}' for v in r['per_seed'])} | "
                     + (f"{f['pooled_balanced_accuracy']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]" if f else "–")
                     + f" | {table_cell(r['train_accuracy'], '.3f')} | "
                     f"{table_cell(r['train_seconds_per_fold'], '.0f')} |")
    pairs = []
    lines += ["", "Paired on the same clips (B − A balanced accuracy, McNemar's exact test on clip correctness, "
              "sign test over speakers):", "",
              f"| B − A | difference [95% CI], folds {','.join(map(str, folds))} | McNemar p | sign p | better | "
              f"all {args.all_folds} folds |", "|---|---|---|---|---|---|"]
    nets = list(dict.fromkeys(k[0] for k in rows))
    for net in nets:
        if (net, "lstm") in rows and (net, "gru") in rows:
            p, whole = compared(rows, full, (net, "lstm"), (net, "gru"))
            pairs.append({"a": f"{net} lstm", "b": f"{net} gru", **p, "all_folds": whole})
            lines.append(pair_line(f"{net} LSTM", f"{net} GRU", p, whole))
    for net in nets:
        for cell in ("lstm", "gru"):
            if net != args.reference and (net, cell) in rows and (args.reference, cell) in rows:
                p, whole = compared(rows, full, (args.reference, cell), (net, cell))
                pairs.append({"a": f"{args.reference} {cell}", "b": f"{net} {cell}", **p, "all_folds": whole})
                lines.append(pair_line(f"{args.reference} {cell.upper()}", f"{net} {cell.upper()}", p, whole))
    lines += ["", "Made by `python scripts/presets_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
              + "` from these ablations:", ""]
    lines += [f"- `{c}`" for c in commands]
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "presets.md", suffix=".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    keep = ("pooled_balanced_accuracy", "ci_low", "ci_high", "seeds", "per_seed", "train_accuracy",
            "train_seconds_per_fold", "clips", "n_speakers")
    data = {"folds": folds, "rows": [{"network": k[0], "cell": k[1], **{x: r[x] for x in keep},
                                      "all_folds": None if full[k] is None else {x: full[k][x] for x in keep}}
                                     for k, r in rows.items()],
            "paired": pairs, "commands": list(commands)}
    write_json(args.out / "presets.json", data)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
