"""Stage `features`: decode every clip once and cache its log-mel spectrogram in HDF5.

Decoding MP3 and computing mel spectrograms every epoch would dominate training time, so it is
done here, once, in parallel worker processes feeding a single writer (`acento.features.cache` owns the
file's layout).  A clip's features do not depend on its split: the cache holds each clip once with
its fold, and serves every `data.fold` (which `train` and `evaluate` read, not this stage).
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
