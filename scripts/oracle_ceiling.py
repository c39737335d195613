"""The ceiling of a synthetic corpus: how well a perfect phone recogniser could tell its accents apart.

`scripts/make_sample_corpus.py --oracle FILE` writes, for every validated speech clip, what such a recogniser
that also knows the sentence would see: for each regional rule the speaker has, how often it applied and how
often it could have.  A clip's oracle features are, per rule, the share of its occurrences that changed
(0 where the rule could not apply or the speaker lacks it) and whether the sentence gave it a chance at all.
A multinomial logistic regression on them, cross-validated over speakers exactly as the project's models are
(sklearn's StratifiedGroupKFold, 5 folds, groups = speakers), gives the pooled out-of-fold balanced accuracy
that no model of the audio can beat by more than chance: the accent lives only in those rewrites.
Also reported: the same with the classes merged into Spain (norte, sur) against the Americas.

    .venv/bin/python scripts/oracle_ceiling.py data/benchmark/oracle.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from acento.evaluation.metrics import balanced_accuracy

SPAIN = {"norte", "sur"}


def oracle_features(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """[clips, 2 * rules]: per rule, applied / occurrences and 1 where it had an occurrence."""
    parsed = []
    for field in frame["rules"].fillna(""):
        row = {}
        for item in filter(None, str(field).split(";")):
            rule, counts = item.split(":")
            applied, total = (int(x) for x in counts.split("/"))
            row[rule] = (applied / total if total else 0.0, 1.0 if total else 0.0)
        parsed.append(row)
    rules = sorted({rule for row in parsed for rule in row})
    x = np.zeros((len(parsed), 2 * len(rules)))
    for i, row in enumerate(parsed):
        for j, rule in enumerate(rules):
            x[i, 2 * j:2 * j + 2] = row.get(rule, (0.0, 0.0))
    return x, rules


def ceiling(x: np.ndarray, labels: np.ndarray, speakers: np.ndarray, folds: int, seed: int) -> float:
    """Pooled out-of-fold balanced accuracy of the oracle classifier, speaker-grouped."""
    pred = np.empty_like(labels)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, labels, speakers):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        model.fit(x[train], labels[train])
        pred[test] = model.predict(x[test])
    return balanced_accuracy(labels, pred)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("oracle", type=Path, help="the TSV written by make_sample_corpus.py --oracle")
    parser.add_argument("--folds", type=int, default=5, help="speaker-grouped folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="fold assignment (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.oracle.is_file():
        print(f"error: {args.oracle}: no such file; write it with make_sample_corpus.py --oracle", file=sys.stderr)
        return 2
    frame = pd.read_csv(args.oracle, sep="\t", dtype=str, keep_default_na=False)
    x, rules = oracle_features(frame)
    classes = np.array(frame["accent_class"])
    speakers = np.array(frame["client_id"])
    full = frame["full_rate"].to_numpy() == "1"
    seven = ceiling(x, classes, speakers, args.folds, args.seed)
    two = ceiling(x, np.where(np.isin(classes, list(SPAIN)), "spain", "americas"), speakers, args.folds, args.seed)
    print(f"{args.oracle}: {len(frame)} clips, {len(set(speakers))} speakers, {len(set(classes))} classes, "
          f"{len(rules)} rules, {full.mean():.0%} of clips from full-rate speakers")
    print(f"oracle pooled out-of-fold balanced accuracy ({args.folds} speaker-grouped folds): "
          f"{len(set(classes))} classes {seven:.3f}, Spain vs the Americas {two:.3f}")
    for regime, mask in (("full-rate speakers", full), ("random-rate speakers", ~full)):
        if mask.any() and len(set(classes[mask])) > 1:
            print(f"  {regime} only: {ceiling(x[mask], classes[mask], speakers[mask], args.folds, args.seed):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
