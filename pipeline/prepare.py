"""From a release's TSVs to the clip manifest: labelled, filtered, every drop counted by reason.

`labelled_clips` reads the TSV records (`acento.corpus.records`), maps accents to classes and drops
what cannot be used; `prepare` then caps clips per speaker and per class and assigns every speaker to
one test fold (`acento.corpus.splits`).  The `prepare` stage (pipeline/prepare.py) writes the result;
`acento-score` reads any other labelled release with `labelled_clips`, as the stage does.
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
    print(f"kept {len(rows)} clips ({', '.join(f'{p} {n}' for p, n in totals.items())}) of "
          f"{rows['speaker'].nunique()} speakers -> {args.out}; dropped: "
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
