"""Building the HDF5 feature cache: every clip of a manifest decoded once (in worker processes), its
log-mels written by one writer (`acento.features.cache` owns the file's layout), failures counted by reason.

The `features` stage (pipeline/features.py) calls `build_cache`; cross-validation and the benchmarks
build caches the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acento.config import Params
from acento.console import run_stage
from acento.corpus.manifest import read_manifest
from acento.features.build import build_cache
from acento.files import write_json
from acento.paths import CLIP_MANIFEST, FEATURE_CACHE, FEATURES_METRICS
from acento.runtime import resolve_count


def run(params: Params, args: argparse.Namespace) -> None:
    manifest = read_manifest(args.manifest)
    metrics = build_cache(manifest, params.features, Path(args.out), resolve_count(params.runtime.workers))
    write_json(args.metrics, metrics)
    print(f"{sum(metrics['clips'].values())} clips, {metrics['seconds_of_audio']:.0f} s of audio -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default=CLIP_MANIFEST, help=f"clip manifest (default: {CLIP_MANIFEST})")
    parser.add_argument("--out", default=FEATURE_CACHE, help=f"HDF5 cache to write (default: {FEATURE_CACHE})")
    parser.add_argument("--metrics", default=FEATURES_METRICS,
                        help=f"metrics to write (default: {FEATURES_METRICS})")


def main(argv: list[str] | None = None) -> int:
    return run_stage(__doc__, run, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
