"""Classify the accent of new recordings with a trained model.

The features are computed exactly as the model's training cache computed them: the feature
parameters, class names and normalisation statistics all come from the model file, not from
params.yaml.  A file that cannot be read is reported and the rest are still classified.

  python -m acento.apps.predict recordings/            # a table
  acento-predict --json --top 3 a.mp3 b.wav          # one JSON object per line
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from acento.apps.options import add_model_file_option
from acento.errors import StageError
from acento.model.accent_model import AccentModel, ModelFileError, Prediction
from acento.runtime import available_cores, resolve_count, select_device

FEW_FILES = 8  # up to this many files are decoded in this process: a process pool costs more than it saves


def collect(inputs: list[str]) -> list[Path]:
    """Files as given, and every regular file found (recursively, sorted) under folders, whatever its
    name: each gets a line, classified or an error saying why not (e.g. a format libsndfile does not
    read).  Hidden files and folders (.DS_Store, .git) are skipped."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(item).parts))
        else:
            files.append(item)  # a missing file is reported per file, like any unreadable one
    return files


def classify_files(files: list[Path], model: AccentModel, workers: int = 1) -> Iterator[dict]:
    """One result per file, in order: {"file", "label", "probs"} (as `--json` prints it) or {"file", "error"}."""
    for path, result in model.classify_files(files, workers if len(files) > FEW_FILES else 1,
                                             one_worker_hint="--workers 1"):
        yield {"file": str(path), **(result.as_dict() if isinstance(result, Prediction) else {"error": result.report()})}


def inference_threads(n_files: int, workers: int) -> int:
    """Torch threads for the network. A few files: one (a batch of a few clips is too small to share
    out, and an OpenMP thread that finds its core busy spins: measured 20 ms -> 4 s for one 5 s clip
    with two threads on two busy cores). More, with decoding processes: the cores those leave free
    (measured 40 ms -> 3.8 s per clip when oversubscribed). More, decoded here: every core."""
    if n_files <= FEW_FILES:
        return 1
    cores = available_cores()
    return max(1, cores - workers) if workers > 1 else cores


def format_row(result: dict, top: int) -> str:
    if "error" in result:
        return f"{result['file']}\tERROR\t{result['error']}"
    ranked = sorted(result["probs"].items(), key=lambda kv: -kv[1])[:top]
    return f"{result['file']}\t{result['label']}\t" + "  ".join(f"{c} {p:.3f}" for c, p in ranked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acento-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER", help="audio files or folders of them")
    add_model_file_option(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--top", type=int, default=0, metavar="K",
                        help="show the K most likely classes (default: all); JSON keeps all probabilities")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per inference batch (default: 64)")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = all cores (default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    args = parser.parse_args(argv)
    if args.top < 0 or args.batch_size < 1 or args.workers < 0:
        parser.error("--top must be >= 0, --batch-size >= 1 and --workers >= 0")
    try:
        device = select_device(args.device, "--device")
        model = AccentModel.load(args.model_file, device, args.batch_size)
    except (ModelFileError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = collect(args.inputs)
    if not files:
        print(f"error: no files under {', '.join(args.inputs)}", file=sys.stderr)
        return 2
    workers = resolve_count(args.workers)
    if device.type == "cpu":
        torch.set_num_threads(inference_threads(len(files), workers))
    top = args.top or len(model.classes)
    failed = 0
    if not args.json:
        print("file\tlabel\tprobabilities")
    try:
        for result in classify_files(files, model, workers):
            failed += "error" in result
            print(json.dumps(result, ensure_ascii=False) if args.json else format_row(result, top), flush=True)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"{failed} of {len(files)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
