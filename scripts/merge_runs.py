"""One report from several `python scripts/ablate.py ... --predictions FILE.json` runs: a long study run in
pieces (some folds here, others there), and rows that `ablate.py` names alike but that trained differently
(`--set train.init=pretrained`, or the two models of `--self-train`).

Each argument NAME=FILE[:teacher] (FILE may be gzipped: FILE.json.gz, as the reports keep them) gives the runs of FILE the variant name NAME (`@F` is added for a share F
of the training speakers); `:teacher` takes a `--self-train` file's first models (`teacher_probs`) instead
of its second (its training and dev accuracy, best epoch and seconds are not kept: –). A file must hold the
runs of one variant and one training seed. Runs of one name, cell and share are
pooled over their folds (a fold given twice: the later file's run; a row of fewer folds than the others is
named NAME~fA,B, as ablate.py names it); every row must hold the same test clips as the others of its cell
and share. Writes OUT/ablation.md and .json (ablate.py's table, speaker-level column included),
OUT/learning_curve.png (every row, a line per name and cell) and, for each cell and share, every row
against the first name given, paired on the same clips (`acento.evaluation.stats.paired_difference`).
`--keep EARLIER/ablation.json` adds an earlier merge's rows, pairs and commands whose prediction files are
gone (rows of a name, cell and share given again are replaced; their pairs cannot be recomputed and stay).

  python scripts/merge_runs.py --out reports/x default=scratch.json default=scratch-f34.json \\
      default:pretrained=pre.json default=st.json:teacher default+st0.6=st.json
  python scripts/merge_runs.py --out reports/x --keep reports/x/ablation.json default=gru.json:teacher ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ablate import (
    markdown,
    plot_learning_curves,
    pooled_predictions,
    predictions_source,
    read_predictions,
    row_share,
    summarise,
)

from acento.evaluation.stats import paired_difference
from acento.files import atomic_path, write_json


def parse_source(text: str) -> tuple[str, Path, bool]:
    """NAME=FILE[:teacher] -> (name, file, teacher?)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"error: {text!r}: give NAME=FILE or NAME=FILE:teacher")
    return name, *predictions_source(rest)


def regroup(sources: list[tuple[str, Path, bool]]) -> tuple[dict[tuple[str, str, float], dict[int, dict]], list[str]]:
    """{(name, cell, share): {fold: run}} and the files' commands, in the order given."""
    groups: dict[tuple[str, str, float], dict[int, dict]] = {}
    commands: list[str] = []
    for name, path, teacher in sources:
        saved = read_predictions(path, teacher)
        # one NAME per file: a file of several variants (ablate's default runs them all) or seeds would give
        # one row several runs per fold
        for key, what in (("variant", "variants"), ("seed", "training seeds")):
            found = sorted({str(run[key]) for run in saved["runs"]})
            if len(found) > 1:
                raise SystemExit(f"error: {path}: holds the runs of {len(found)} {what} ({', '.join(found)}); "
                                 f"merge files of one (ablate.py --variants ONE, one --seeds)")
        if saved["command"] not in commands:
            commands.append(saved["command"])
        for run in saved["runs"]:
            share = float(run.get("train_fraction", 1.0))
            run = {**run, "base": name, "variant": name + ("" if share == 1 else f"@{share:g}")}
            groups.setdefault((name, run["cell"], share), {})[run["fold"]] = run
    return groups, commands


def paired_rows(groups: dict[tuple[str, str, float], dict[int, dict]], names: list[str]) -> list[dict]:
    """Every row against the first name's row of its cell and share, on the folds both ran."""
    out = []
    for (name, cell, share), runs in groups.items():
        first = groups.get((names[0], cell, share))
        if name == names[0] or first is None:
            continue
        folds = sorted(set(first) & set(runs))
        if not folds:  # pieces of other folds: nothing to pair
            continue
        speakers, labels, _, probs_a = pooled_predictions([first[f] for f in folds])
        speakers_b, labels_b, _, probs_b = pooled_predictions([runs[f] for f in folds])
        if list(speakers) != list(speakers_b) or list(labels) != list(labels_b):
            raise SystemExit(f"error: {name} and {names[0]} ({cell}, share {share:g}) hold other test clips; "
                             "merge runs of one cache only")
        d = paired_difference(speakers, labels, probs_a.argmax(1), probs_b.argmax(1))
        out.append({"a": names[0], "b": name, "cell": cell, "train_fraction": share, "folds": folds,
                    "difference": round(d["difference"], 4), "ci_low": round(d["ci_low"], 4),
                    "ci_high": round(d["ci_high"], 4), "mcnemar_p": float(f"{d['mcnemar']['p']:.3g}"),
                    "sign_test_p": float(f"{d['sign_test']['p']:.3g}")})
    return out


def load_kept(path: Path) -> dict:
    """An earlier merge's ablation.json: rows, paired, commands and merged_by (a list: every merge that made
    it, oldest first).  SystemExit (one line) when it is not one."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        rows, pairs, commands = saved["rows"], saved["paired"], saved["commands"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: --keep {path}: not a merge_runs.py ablation.json ({exc!r})") from None
    merged_by = saved.get("merged_by", [])
    return {"rows": rows, "paired": pairs, "commands": commands,
            "merged_by": [merged_by] if isinstance(merged_by, str) else list(merged_by)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="NAME=FILE[:teacher]")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument("--keep", type=Path, default=None, metavar="ABLATION_JSON",
                        help="an earlier merge's ablation.json: its rows, pairs and commands join the report")
    args = parser.parse_args(argv)
    sources = [parse_source(s) for s in args.sources]
    names = list(dict.fromkeys(name for name, _, _ in sources))
    groups, commands = regroup(sources)
    kept = load_kept(args.keep) if args.keep else {"rows": [], "paired": [], "commands": [], "merged_by": []}
    commands = list(dict.fromkeys([c["command"] for c in kept["commands"]] + commands))
    rows = []
    # the folds of every row, kept ones too: a row of fewer is named so
    every_fold = sorted({fold for runs in groups.values() for fold in runs} |
                        {int(f) for r in kept["rows"] for f in r.get("test_folds", [])})
    for runs in groups.values():
        if sorted(runs) != every_fold:  # a row of fewer folds than the others: named as ablate.py names it
            runs = {f: {**r, "variant": r["variant"] + "~f" + ",".join(map(str, sorted(runs)))} for f, r in runs.items()}
        if len({r["seed"] for r in runs.values()}) > 1:
            raise SystemExit(f"error: the runs of {next(iter(runs.values()))['base']} come from several training "
                             "seeds; merge runs of one seed")
        row = summarise(list(runs.values()), folds=len(runs), n_seeds=1)
        if any(r["teacher"] for r in runs.values()):  # the file's scores and epochs are the second model's
            row[0].update(train_accuracy=None, dev_accuracy=None, gap=None, mean_best_epoch=None,
                          train_seconds_per_fold=None)
        rows += row
    fresh = {(r["base"], r["cell"], r["train_fraction"]) for r in rows}
    rows += [r for r in kept["rows"] if (r["base"], r["cell"], row_share(r)) not in fresh]
    order = list(dict.fromkeys([r["base"] for r in kept["rows"]] + names))
    rows.sort(key=lambda r: (r["cell"] != "lstm", order.index(r["base"]), -row_share(r)))
    pairs = paired_rows(groups, names)
    again = {(p["a"], p["b"], p["cell"], p["train_fraction"]) for p in pairs}
    pairs = [p for p in kept["paired"] if (p["a"], p["b"], p["cell"], p["train_fraction"]) not in again] + pairs
    lines = ["", f"## Paired on the same clips: each row against {names[0]}", "",
             "| cell | share | B | folds | B − A [95% CI] | McNemar p | sign test p |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['cell'].upper()} | {p['train_fraction']:g} | {p['b']} | {','.join(map(str, p['folds']))} | "
              f"{p['difference']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | {p['mcnemar_p']:.3g} | "
              f"{p['sign_test_p']:.3g} |" for p in pairs]
    report = markdown(rows, [{"command": c} for c in commands])
    report = report.replace("# Ablation:", "# Merged runs:", 1) + "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "ablation.md", suffix=".md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    merged_by = kept["merged_by"] + ["python scripts/merge_runs.py " + " ".join(argv or sys.argv[1:])]
    write_json(args.out / "ablation.json", {"rows": rows, "paired": pairs, "commands": [{"command": c} for c in commands],
                                            "merged_by": merged_by})
    plot_learning_curves(rows, args.out / "learning_curve.png", min_shares=1)  # a row of one share: a point
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
