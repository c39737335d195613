"""Stage `download`: find, fetch or unpack a Common Voice release and describe it in a small manifest.

The release itself (tens of GB of clips) never becomes a DVC output: DVC would hash and copy it on
every `dvc status`.  The stage's output is `data/release.json` (where the locale folder is, file
counts, TSV checksums).  It runs on every `dvc repro` (`always_changed`), re-reads only the TSVs when nothing
changed, and the stages after it rerun only when the manifest's content changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acento.config import Params
from acento.console import run_stage
from acento.corpus.release import describe_release, resolve_source
from acento.files import write_json
from acento.paths import RELEASE_MANIFEST


def run(params: Params, args: argparse.Namespace) -> None:
    locale_dir = resolve_source(params)
    manifest = describe_release(locale_dir)
    write_json(args.out, manifest)
    print(f"release {manifest['release']}/{manifest['locale']}: {manifest['clips']} clips, "
          f"{len(manifest['tsvs'])} TSVs at {manifest['root']} -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=RELEASE_MANIFEST,
                        help=f"manifest to write (default: {RELEASE_MANIFEST})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
