"""Two ablation rows compared clip by clip: B − A pooled out-of-fold balanced accuracy on the same clips.

Reads two `python -m pipeline.ablate ... --predictions FILE` outputs made on the same cache (same data
and features params: the same clips in the same order in every fold), averages each clip's probabilities
over a file's training seeds (as the ablation's rows do), pools the folds and prints each row's pooled
balanced accuracy, the paired difference with its speaker-bootstrap interval, McNemar's exact test on clip
correctness and a sign test over speakers (`pipeline.stats.paired_difference`), and how many of the shared
training seeds, each alone, find B or A better (`pipeline.stats.seed_agreement`, as `make compare` does).

  python scripts/paired_rows.py runs/select/p.json runs/devtrain/p.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.ablate import pooled_predictions
from pipeline.metrics import balanced_accuracy
from pipeline.stats import paired_difference, seed_agreement, verdict


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="predictions of row A (ablate --predictions)")
    parser.add_argument("b", type=Path, help="predictions of row B, compared as B − A")
    args = parser.parse_args(argv)
    speakers, labels, a = pooled(args.a)
    speakers_b, labels_b, b = pooled(args.b)
    if not (np.array_equal(speakers, speakers_b) and np.array_equal(labels, labels_b)):
        print("error: the two files hold different clips; make both rows on one cache (same data and features "
              "params)", file=sys.stderr)
        return 2
    pred_a, pred_b = a[-1].argmax(1), b[-1].argmax(1)
    diff = paired_difference(speakers, labels, pred_a, pred_b)
    shared = sorted(set(a) & set(b) - {-1})
    # each shared seed alone (a bootstrap each), only where there are several to compare
    per_seed = [paired_difference(speakers, labels, a[s].argmax(1), b[s].argmax(1)) for s in shared] \
        if len(shared) > 1 else []
    print(f"A {args.a}: {balanced_accuracy(labels, pred_a):.3f} ({len(a) - 1} seed(s))")
    print(f"B {args.b}: {balanced_accuracy(labels, pred_b):.3f} ({len(b) - 1} seed(s))")
    sign = "" if "sign test" in verdict("A", "B", diff) else f" Speaker sign test p = {diff['sign_test']['p']:.3g}."
    seeds = f" {seed_agreement('A', 'B', per_seed)}" if per_seed else ""
    print(f"{verdict('A', 'B', diff)}{sign}{seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
