"""Classify the accent of new recordings with a trained model.

The features are computed exactly as the model's training cache computed them: the feature
parameters, class names and normalisation statistics all come from the model file, not from
params.yaml.  A file that cannot be read is reported and the rest are still classified; so is every entry
of a folder that is no file (a link to nothing, a loop of links, a FIFO, a socket, a device), never opened.
A model whose scores are not finite numbers is refused with one line: nothing prints NaN.

With --by-speaker, clips are grouped into speakers by folder and each speaker gets one decision: the class
of highest summed probability over the speaker's clips (the rule of `evaluate`'s speaker accuracy), with the
mean probability of that class as its confidence.  A clip's speaker is the first folder under the folder
given (speakers/ana/1.mp3: ana), or the folder holding it when it lies directly in the folder given or is
given by name (ana/1.mp3: ana).  With --speakers TSV the speakers come from a table instead: a Common
Voice TSV (validated.tsv, other.tsv, ...) maps each clip's file name (its `path` column) to its speaker
(`client_id`, or --speaker-column); a file the table does not list is reported and counted, never guessed.

  python -m acento.apps.predict recordings/            # a table
  acento-predict --json --top 3 a.mp3 b.wav          # one JSON object per line
  acento-predict --by-speaker speakers/              # one line per sub-folder of speakers/
  acento-predict --speakers cv/es/other.tsv cv/es/clips/   # one line per client_id
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from acento.apps.options import add_model_file_option, non_finite_scores
from acento.audio.decode import AudioError, not_a_file
from acento.errors import StageError
from acento.model.accent_model import AccentModel, ModelFileError, Prediction
from acento.runtime import available_cores, resolve_count, select_device

FEW_FILES = 8  # up to this many files are decoded in this process: a process pool costs more than it saves


def speaker_of(path: Path, inputs: list[str]) -> str:
    """The speaker of a collected file (--by-speaker): the first folder under the input folder holding it,
    else the name of the folder it lies in."""
    for root in map(Path, inputs):
        if root.is_dir() and path.is_relative_to(root) and len(path.relative_to(root).parts) > 1:
            return path.relative_to(root).parts[0]
    return path.absolute().parent.name


def speakers_from_tsv(path: Path, column: str = "client_id") -> dict[str, str]:
    """{clip file name: speaker} from a tab-separated table with a header: Common Voice's `path` column
    (file names, or paths: their last part is used) and `column`.  Rows with either field empty are
    skipped.  StageError (one line naming the file, and the line where it applies) for an unreadable file,
    a missing column, or a file listed for two speakers."""
    mapping: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)  # Common Voice's quoting
            missing = [c for c in ("path", column) if c not in (reader.fieldnames or [])]
            if missing:
                raise StageError(f"{path}: no column {' or '.join(map(repr, missing))} in its header "
                                 f"({', '.join(reader.fieldnames or []) or 'empty'}); give a Common Voice TSV, or "
                                 "--speaker-column for the speaker's column")
            for line, row in enumerate(reader, start=2):
                name, speaker = Path((row.get("path") or "").strip()).name, (row.get(column) or "").strip()
                if name and speaker:
                    if mapping.setdefault(name, speaker) != speaker:
                        raise StageError(f"{path}, line {line}: {name} is listed for two speakers ({mapping[name]} "
                                         f"and {speaker}); fix the table")
    except OSError as exc:
        raise StageError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StageError(f"{path}: not a tab-separated UTF-8 table ({exc})") from None
    return mapping


def by_speaker(results: list[dict], speakers: list[str], classes: list[str]) -> list[dict]:
    """One decision per speaker, in order of first appearance: {"speaker", "label", "confidence", "probs" (the
    mean over the speaker's classified clips), "clips", "failed"}; label None if no clip could be classified.
    The label is the class of highest summed probability (`acento.evaluation.metrics.speaker_decisions`'
    rule), the confidence its mean probability."""
    grouped: dict[str, list[dict]] = {}
    for speaker, result in zip(speakers, results):
        grouped.setdefault(speaker, []).append(result)
    out = []
    for speaker, rows in grouped.items():
        probs = np.array([[r["probs"][c] for c in classes] for r in rows if "error" not in r]).reshape(-1, len(classes))
        mean = probs.mean(0) if len(probs) else None
        best = int(np.argmax(mean)) if mean is not None else None
        out.append({"speaker": speaker, "label": None if best is None else classes[best],
                    "confidence": None if best is None else round(float(mean[best]), 4),
                    "probs": {} if mean is None else {c: round(float(p), 4) for c, p in zip(classes, mean)},
                    "clips": len(probs), "failed": len(rows) - len(probs)})
    return out


def collect(inputs: list[str]) -> tuple[list[Path], dict[Path, AudioError]]:
    """(entries, refused): files as given, and every entry found (recursively, sorted) under folders,
    whatever its name, each to get a line; `refused` holds why each folder entry that is no file to read
    (`decode.not_a_file`: a link to nothing, a loop of links, a link to a folder, a FIFO, a socket, a
    device) is not opened.  Hidden files and folders (.DS_Store, .git) are skipped; links to folders
    are not followed (a loop cannot recurse)."""
    files: list[Path] = []
    refused: dict[Path, AudioError] = {}
    for item in map(Path, inputs):
        if not item.is_dir():
            files.append(item)  # a missing file is reported per file, like any unreadable one
            continue
        for path in sorted(item.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(item).parts) or \
                    (path.is_dir() and not path.is_symlink()):
                continue
            files.append(path)
            problem = not_a_file(path, str(path))
            if problem:
                refused[path] = problem
    return files, refused


class NonFiniteScores(Exception):
    """The model scored a file with a NaN or an infinity: no score of it can be trusted."""


def classify_files(files: list[Path], model: AccentModel, workers: int = 1,
                   refused: dict[Path, AudioError] | None = None) -> Iterator[dict]:
    """One result per file, in order: {"file", "label", "probs"} (as `--json` prints it) or {"file", "error"};
    the files in `refused` get their error unopened.  NonFiniteScores if the model scores a file with NaN."""
    refused = refused or {}
    readable = [f for f in files if f not in refused]
    decoded = model.classify_files(readable, workers if len(readable) > FEW_FILES else 1, one_worker_hint="--workers 1")
    for path in files:
        if path in refused:
            yield {"file": str(path), "error": refused[path].report()}
            continue
        _, result = next(decoded)
        if isinstance(result, Prediction) and not all(map(math.isfinite, result.probs.values())):
            raise NonFiniteScores(non_finite_scores(model.path or "the model", str(path)))
        yield {"file": str(path),
               **(result.as_dict() if isinstance(result, Prediction) else {"error": result.report()})}


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
    parser.add_argument("--by-speaker", action="store_true",
                        help="one decision per speaker (a folder per speaker) instead of one per file")
    parser.add_argument("--speakers", type=Path, default=None, metavar="TSV",
                        help="one decision per speaker, the speakers read from this table (a Common Voice TSV: "
                             "its 'path' column of file names and --speaker-column); implies --by-speaker")
    parser.add_argument("--speaker-column", default="client_id",
                        help="the --speakers table's column of speakers (default: client_id)")
    args = parser.parse_args(argv)
    args.by_speaker = args.by_speaker or args.speakers is not None
    if args.top < 0 or args.batch_size < 1 or args.workers < 0:
        parser.error("--top must be >= 0, --batch-size >= 1 and --workers >= 0")
    try:
        device = select_device(args.device, "--device")
        model = AccentModel.load(args.model_file, device, args.batch_size)
    except (ModelFileError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files, refused = collect(args.inputs)
    if not files:
        print(f"error: no files under {', '.join(args.inputs)}", file=sys.stderr)
        return 2
    unlisted = 0
    if args.speakers is not None:
        try:
            listed = speakers_from_tsv(args.speakers, args.speaker_column)
        except StageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        missing = [path for path in files if path.name not in listed]
        for path in missing:
            print(f"{path}: not listed in {args.speakers} (no speaker)", file=sys.stderr)
        unlisted = len(missing)
        files = [path for path in files if path.name in listed]
        if not files:
            print(f"error: none of the files is listed in {args.speakers}'s path column", file=sys.stderr)
            return 2
    workers = resolve_count(args.workers)
    if device.type == "cpu":
        torch.set_num_threads(inference_threads(len(files), workers))
    top = args.top or len(model.classes)
    failed = unlisted
    if not args.json:
        print("speaker\tlabel\tconfidence\tclips\tfailed" if args.by_speaker else "file\tlabel\tprobabilities")
    results = []
    try:
        with np.errstate(all="ignore"):  # a model that overflows is reported below, in one line
            for result in classify_files(files, model, workers, refused):
                failed += "error" in result
                if args.by_speaker:
                    results.append(result)
                    if "error" in result:
                        print(f"{result['file']}: {result['error']}", file=sys.stderr)
                    continue
                print(json.dumps(result, ensure_ascii=False, allow_nan=False) if args.json else
                      format_row(result, top), flush=True)
    except (StageError, NonFiniteScores) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.by_speaker:
        speakers = [listed[f.name] if args.speakers is not None else speaker_of(f, args.inputs) for f in files]
        for row in by_speaker(results, speakers, model.classes):
            print(json.dumps(row, ensure_ascii=False, allow_nan=False) if args.json else
                  f"{row['speaker']}\t{row['label'] or 'ERROR'}\t"
                  f"{'' if row['confidence'] is None else format(row['confidence'], '.3f')}\t{row['clips']}\t{row['failed']}")
    if failed:
        print(f"{failed} of {len(files) + unlisted} file(s) could not be classified"
              + (f" ({unlisted} not listed in {args.speakers})" if unlisted else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
