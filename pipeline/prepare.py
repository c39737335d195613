"""Stage `prepare`: from release TSVs to a labelled, filtered, speaker-disjoint manifest.

Accent identification is easy to fake: a model that recognises speakers scores well whenever a
speaker's clips fall on both sides of a split.  So every `client_id` is in exactly one of
train/dev/test: by default the test split is one fold of a speaker-grouped k-fold cross-validation
(`data.folds`), so that `make compare` can score every speaker once.  The manifest records every
fold's split at once (`fold`, `dev_folds`); `train` and `evaluate` pick `data.fold`'s, so changing
the fold reruns neither this stage nor `features`.
`data.split_by: clip` exists only to reproduce the original study's inflated setup.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from acento.config import Params
from acento.console import run_stage
from acento.corpus.manifest import write_manifest
from acento.corpus.prepare import prepare
from acento.errors import StageError
from acento.files import write_json
from acento.paths import CLIP_MANIFEST, DATA_METRICS, RELEASE_MANIFEST


def run(params: Params, args: argparse.Namespace) -> None:
    try:
        release = json.loads(Path(args.release).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{args.release}: not found; run the download stage first (dvc repro download)") from None
    rows, metrics = prepare(params.data, Path(release["root"]))
    write_manifest(rows, args.out)
    write_json(args.metrics, metrics)
    totals = {p: sum(counts.values()) for p, counts in metrics["clips"].items()}
    pool = metrics["pool"]
    unlabelled = f"; unlabelled pool {pool['clips']} clips of {pool['speakers']} speakers" if pool["clips"] else ""
    print(f"kept {len(rows) - pool['clips']} labelled clips ({', '.join(f'{p} {n}' for p, n in totals.items())}) "
          f"of {rows['speaker'].nunique() - pool['speakers']} speakers{unlabelled} -> {args.out}; dropped: "
          f"{ {k: v for k, v in metrics['dropped'].items() if v} }")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", default=RELEASE_MANIFEST,
                        help=f"manifest of the download stage (default: {RELEASE_MANIFEST})")
    parser.add_argument("--out", default=CLIP_MANIFEST, help=f"clip manifest to write (default: {CLIP_MANIFEST})")
    parser.add_argument("--metrics", default=DATA_METRICS, help=f"metrics to write (default: {DATA_METRICS})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
