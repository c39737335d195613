"""Two rows compared clip by clip: B − A balanced accuracy on the same clips.

Reads either two `python scripts/ablate.py ... --predictions FILE.json` outputs made on the same cache
(same data and features params: the same clips in the same order in every fold), or two per-clip
predictions CSVs (`acento-score --predictions FILE.csv`, or an experiment's metrics/predictions.csv) of
the same clips.  An ablation file's probabilities are averaged over its training seeds (as the
ablation's rows do) and its folds pooled.  Prints each row's balanced accuracy, the paired difference
with its speaker-bootstrap interval, McNemar's exact test on clip correctness and a sign test over
speakers (`acento.evaluation.stats.paired_difference`), and how many of the shared training seeds, each alone,
find B or A better (`acento.evaluation.stats.seed_agreement`, as `make compare` does).  `--merge` (CSVs only, as
`acento-score --merge`) sums each clip's probabilities into coarser classes first.

  python scripts/paired_rows.py runs/select/p.json runs/devtrain/p.json
  python scripts/paired_rows.py before.csv after.csv --merge spain=norte,sur \\
      --merge americas=mexico,caribe,andino,rioplatense,chileno
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ablate import pooled_predictions

from acento.apps.score import merge_matrix, parse_merge
from acento.errors import StageError
from acento.evaluation.metrics import balanced_accuracy
from acento.evaluation.outputs import read_predictions
from acento.evaluation.stats import paired_difference, seed_agreement, verdict


def pooled(path: Path) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Speakers and labels of every fold's test clips (fold order), and per training seed those clips'
    probabilities [clips, classes]; the mean over seeds under key -1."""
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    variants = {(r["variant"], r["cell"]) for r in runs}
    if len(variants) != 1:
        raise SystemExit(f"error: {path} holds {len(variants)} rows ({sorted(variants)}); give one row per file")
    runs_of = {(r["fold"], r["seed"]) for r in runs}
    if len(runs_of) != len({r["fold"] for r in runs}) * len({r["seed"] for r in runs}):
        raise SystemExit(f"error: {path}: not every fold has every seed ({len(runs_of)} runs); rerun the ablation")
    speakers, labels, probs, mean = pooled_predictions(runs)
    return speakers, labels, {**probs, -1: mean}


Row = tuple[np.ndarray | None, np.ndarray, np.ndarray, dict[int, np.ndarray]]


def scored(path: Path, merge_items: list[str]) -> Row:
    """Names, speakers and class indices of a predictions CSV's clips, sorted by clip, and their
    probabilities [clips, classes] under key -1; with `merge_items` (TARGET=CLASS,...) summed into the
    merged classes."""
    try:
        frame = read_predictions(path).sort_values("clip", kind="stable")
        columns = [c for c in frame.columns if c.startswith("p_")]
        classes = [c[2:] for c in columns]
        probs, labels = frame[columns].to_numpy(dtype=float), frame["label"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: {path}: not a per-clip predictions CSV (clip, speaker, label, p_<class>...): "
                         f"{exc}") from None
    merge = parse_merge(merge_items, classes)
    targets = sorted(set(merge.values()))
    to_target = merge_matrix(merge, classes, targets)
    unknown = sorted(set(labels) - set(merge))
    if unknown:
        raise SystemExit(f"error: {path}: labels {unknown} are not among its p_<class> columns")
    if not merge_items and "predicted" in frame:  # the written prediction settles ties made by 4-decimal rounding
        probs[np.arange(len(frame)), frame["predicted"].map({c: i for i, c in enumerate(classes)})] += 1e-6
    index = {t: i for i, t in enumerate(targets)}
    return (frame["clip"].to_numpy(), frame["speaker"].to_numpy(),
            labels.map(lambda c: index[merge[c]]).to_numpy(), {-1: probs @ to_target})


def load(path: Path, merge_items: list[str]) -> Row:
    """`scored` for a predictions CSV; `pooled` for an ablation's JSON (no clip names: None)."""
    if path.suffix == ".csv":
        return scored(path, merge_items)
    if merge_items:
        raise SystemExit(f"error: {path}: --merge needs predictions CSVs (an ablation file holds class indices)")
    return None, *pooled(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="predictions of row A (ablate --predictions JSON, or a CSV)")
    parser.add_argument("b", type=Path, help="predictions of row B, compared as B − A")
    parser.add_argument("--merge", action="append", default=[], metavar="TARGET=CLASS,CLASS",
                        help="CSVs only: score on coarser classes (e.g. spain=norte,sur); repeat per target")
    args = parser.parse_args(argv)
    try:
        clips, speakers, labels, a = load(args.a, args.merge)
        clips_b, speakers_b, labels_b, b = load(args.b, args.merge)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    same_clips = (clips is None) == (clips_b is None) and (clips is None or np.array_equal(clips, clips_b))
    if not (same_clips and np.array_equal(speakers, speakers_b) and np.array_equal(labels, labels_b)):
        print("error: the two files hold different clips; make both rows on one cache (same data and features "
              "params), or score both models on one release", file=sys.stderr)
        return 2
    pred_a, pred_b = a[-1].argmax(1), b[-1].argmax(1)
    diff = paired_difference(speakers, labels, pred_a, pred_b)
    shared = sorted(set(a) & set(b) - {-1})
    # each shared seed alone (a bootstrap each), only where there are several to compare
    per_seed = [paired_difference(speakers, labels, a[s].argmax(1), b[s].argmax(1)) for s in shared] \
        if len(shared) > 1 else []
    for name, path, row, pred in (("A", args.a, a, pred_a), ("B", args.b, b, pred_b)):
        source = f"{len(row) - 1} seed(s)" if len(row) > 1 else "one model's predictions"
        print(f"{name} {path}: {balanced_accuracy(labels, pred):.3f} ({source})")
    sign = "" if "sign test" in verdict("A", "B", diff) else f" Speaker sign test p = {diff['sign_test']['p']:.3g}."
    seeds = f" {seed_agreement('A', 'B', per_seed)}" if per_seed else ""
    print(f"{verdict('A', 'B', diff)}{sign}{seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
