"""A Common Voice release on disk: found in a folder, unpacked from an archive (safely), or downloaded
first (`acento.corpus.fetch`), and described in a small manifest (TSV row counts and checksums).

The `download` stage (pipeline/download.py) writes that manifest; `acento-score` and the tools reuse
`extract_release` and `find_locale_dir` to read other releases the same way.
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
