"""Score a trained model on any labelled Common Voice-format release: how well does it do on
another release's speakers?

The release is read as `prepare` reads it (the TSVs of params.yaml's `data.tsvs`, the same accent
parsing, down-vote and duration filters), every clip that maps to a class is classified, and the
metrics `evaluate` writes (accuracy, balanced accuracy, macro-F1, per class, speaker accuracy) are
written as JSON with the confusion matrix, the rows dropped by reason and the clips that could not
be decoded by reason.

Classes.  By default the release's accents map to the model's classes as params.yaml's
`data.classes` says.  `--classes` gives another mapping: a YAML or JSON file like `data.classes`,
or `NAME=ACCENT|ACCENT...` arguments (`,` also separates accents; Common Voice's preset names with
commas in them are kept whole).  `--merge TARGET=CLASS,CLASS...` scores the model on coarser classes:
each target's probability is the sum of its model classes' (classes not named stay themselves), so a
seven-class model can be scored as Spain against the Americas; the mapping's classes may be the
model's (their accents then count for their target) or the targets themselves.

  python -m acento.apps.score --release data/sample/cv-corpus-sample-es.tar.gz --out score.json
  python -m acento.apps.score --release ~/cv-corpus-21.0/es --merge spain=norte,sur \\
      --merge americas=mexico,caribe,andino,rioplatense,chileno --predictions clips.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from acento.apps.options import add_model_file_option, add_release_option
from acento.audio.decode import FAILURE_REASONS, AudioError
from acento.config import PARAMS_FILE, ConfigError, DataConfig, load_params
from acento.corpus.prepare import labelled_clips
from acento.corpus.records import split_accents
from acento.corpus.release import ARCHIVE_SUFFIXES, extract_release, find_locale_dir
from acento.errors import StageError
from acento.evaluation.metrics import classification_metrics
from acento.evaluation.stats import speaker_balanced_accuracy
from acento.evaluation.outputs import write_predictions
from acento.files import write_json
from acento.model.accent_model import AccentModel, ModelFileError, speaker_hash
from acento.runtime import resolve_count, select_device


def parse_merge(items: list[str], model_classes: list[str]) -> dict[str, str]:
    """model class -> target class from `TARGET=CLASS,CLASS...` items; unnamed classes map to themselves.

    StageError for a model class that does not exist, or one given to two targets.
    """
    merge = {c: c for c in model_classes}
    named: dict[str, str] = {}
    for item in items:
        target, sep, members = item.partition("=")
        if not sep or not target.strip() or not members.strip():
            raise StageError(f"--merge {item!r}: write TARGET=CLASS,CLASS... (e.g. spain=norte,sur)")
        for member in (m.strip() for m in members.split(",") if m.strip()):
            if member not in merge:
                raise StageError(f"--merge {item!r}: the model has no class {member!r}; its classes: "
                                 f"{', '.join(model_classes)}")
            if member in named:
                raise StageError(f"--merge: class {member!r} is in both {named[member]!r} and {target.strip()!r}")
            named[member] = merge[member] = target.strip()
    return merge


def parse_classes(items: list[str]) -> dict[str, list[str]]:
    """class -> accents from a YAML/JSON file (one item) or `NAME=ACCENT|ACCENT...` items."""
    if len(items) == 1 and "=" not in items[0]:
        path = Path(items[0])
        try:
            mapping = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
        except FileNotFoundError:
            raise StageError(f"--classes {path}: no such file; give a YAML/JSON file or NAME=ACCENT|ACCENT") from None
        except yaml.YAMLError as exc:
            raise StageError(f"--classes {path}: not valid YAML or JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, list) and v for v in mapping.values()):
            raise StageError(f"--classes {path}: must map each class name to a list of accents, as "
                             "params.yaml's data.classes does")
        return {str(k): [str(a) for a in v] for k, v in mapping.items()}
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, accents = item.partition("=")
        if not sep or not name.strip() or not split_accents(accents):
            raise StageError(f"--classes {item!r}: write NAME=ACCENT|ACCENT... or give a YAML/JSON file")
        out.setdefault(name.strip(), []).extend(split_accents(accents))
    return out


def merge_matrix(merge: dict[str, str], classes: list[str], targets: list[str]) -> np.ndarray:
    """[classes, targets] of 0/1 (float32): probabilities [clips, classes] @ it sum each class into its target."""
    return np.array([[merge[c] == t for t in targets] for c in classes], dtype=np.float32)


def target_mapping(merge: dict[str, str], params_classes: dict[str, list[str]],
                   given: dict[str, list[str]] | None) -> tuple[list[str], dict[str, list[str]]]:
    """(the classes scored, sorted; each one's accents).  A class of the mapping (`given`, else
    params.yaml's `data.classes`) that is a model class lends its accents to its merged class; one
    named as a merged class keeps them.  params.yaml's other classes are left out; `given`'s are an error."""
    targets = sorted(set(merge.values()))
    mapping: dict[str, list[str]] = {}
    for cls, accents in (given if given is not None else params_classes).items():
        target = merge.get(cls, cls if cls in targets else None)
        if target is None and given is not None:
            raise StageError(f"--classes: {cls} is neither a class of the model ({', '.join(merge)}) nor a merged "
                             f"class ({', '.join(targets)})")
        if target is not None:
            mapping.setdefault(target, []).extend(accents)
    missing = [t for t in targets if t not in mapping]
    if missing:
        raise StageError(f"class(es) {', '.join(missing)} have no accents in "
                         f"{'--classes' if given is not None else 'params.yaml data.classes'}; give them with --classes")
    seen: dict[str, str] = {}
    for cls, accents in mapping.items():
        for accent in accents:
            if seen.setdefault(accent, cls) != cls:
                raise StageError(f"accent {accent!r} is in both {seen[accent]!r} and {cls!r}; give it one class")
    return targets, mapping


def release_dir(release: Path, data: DataConfig) -> Path:
    """The locale folder of a release folder, or of an archive (extracted once into data.raw_dir)."""
    if release.is_dir():
        return find_locale_dir(release, data.locale)
    if release.is_file() and release.name.endswith(ARCHIVE_SUFFIXES):
        return extract_release(release, Path(data.raw_dir), data.locale)
    raise StageError(f"--release {release}: not a release folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive")


def score(model: AccentModel, locale_dir: Path, data: DataConfig, merge: dict[str, str], targets: list[str],
          workers: int = 1) -> tuple[dict, dict]:
    """Classifies every labelled clip of the release; returns (metrics, per-clip predictions).

    data.classes must map accents to `targets`; `merge` maps each model class to its target.
    metrics: `classification_metrics`'s, plus the confusion matrix (rows: true class, columns:
    predicted, in `targets` order), rows dropped by reason and clips that failed by reason.
    """
    rows, dropped = labelled_clips(data, locale_dir)
    if rows.empty:
        raise StageError(f"{locale_dir}: no clip maps to a class ({', '.join(targets)}); dropped: "
                         f"{ {k: v for k, v in dropped.items() if v} }; check --classes and data.tsvs")
    to_target = merge_matrix(merge, model.classes, targets)
    failed: Counter[str] = Counter(dict.fromkeys(FAILURE_REASONS, 0))
    kept, probs = [], []
    for i, (_, result) in enumerate(model.classify_files(rows["audio_path"].tolist(), workers, "--workers 1")):
        if isinstance(result, AudioError):
            failed[result.reason] += 1
            continue
        kept.append(i)
        probs.append(np.array([result.probs[c] for c in model.classes], dtype=np.float32) @ to_target)
    if not kept:
        raise StageError(f"{locale_dir}: none of {len(rows)} clips could be decoded ({dict(failed)})")
    rows = rows.iloc[kept]
    probs_arr = np.stack(probs)
    if not np.isfinite(probs_arr).all():
        raise StageError(f"{model.path}: its scores are not finite numbers (NaN or infinity): the file is damaged "
                         "or its training diverged; retrain it (dvc repro train)")
    index = {t: i for i, t in enumerate(targets)}
    labels = rows["label"].map(index).to_numpy()
    metrics, absent = classification_metrics(labels, probs_arr, rows["speaker"].to_numpy(), targets)
    if absent:
        print(f"warning: no clip of class(es) {', '.join(absent)} in the release: they are left out of every "
              "averaged metric and reported with support 0", file=sys.stderr)
    confusion = np.zeros((len(targets), len(targets)), dtype=int)
    np.add.at(confusion, (labels, probs_arr.argmax(1)), 1)
    metrics["speaker_balanced_accuracy"] = speaker_balanced_accuracy(rows["speaker"].to_numpy(), labels, probs_arr)
    metrics["heard_speakers"] = heard_speakers(model, rows["speaker"].to_numpy(), labels, probs_arr, targets)
    metrics.update({"model": model.cell, "model_sha256": model.sha256, "release": str(locale_dir),
                    "classes": targets, "merge": {c: t for c, t in merge.items() if c != t},
                    "confusion": {"actual_by_predicted": confusion.tolist()},
                    "dropped": {k: v for k, v in dropped.items() if v}, "failed": dict(failed)})
    predictions = {"clips": rows["clip"].tolist(), "speakers": rows["speaker"].tolist(),
                   "labels": rows["label"].tolist(), "probs": probs_arr}
    return metrics, predictions


def heard_speakers(model: AccentModel, speakers: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                   targets: list[str]) -> dict | None:
    """How many of the scored speakers the model learned from (its file lists its training and dev
    speakers, hashed: `AccentModel.speaker_hashes`), and the metrics of the other speakers' clips alone
    (`unseen`, None if there are none): a model scored on its own training speakers looks far better than
    it is on new ones.  None for a model file that lists no speakers (written before they were stored)."""
    if not model.speaker_hashes:
        return None
    names = np.unique(speakers)
    heard_names = {s for s in names if speaker_hash(str(s)) in model.speaker_hashes}
    heard = np.isin(speakers, list(heard_names))
    unseen = None
    if (~heard).any():
        unseen, _ = classification_metrics(labels[~heard], probs[~heard], speakers[~heard], targets)
    return {"speakers": len(heard_names), "of_speakers": len(names), "clips": int(heard.sum()),
            "of_clips": len(speakers), "unseen": unseen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acento-score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_file_option(parser)
    add_release_option(parser)
    parser.add_argument("--classes", nargs="+", metavar="FILE_OR_NAME=ACCENTS",
                        help="class -> accents: a YAML/JSON file, or NAME=ACCENT|ACCENT... (default: params.yaml's)")
    parser.add_argument("--merge", action="append", default=[], metavar="TARGET=CLASS,CLASS",
                        help="score model classes summed into a coarser class (repeatable)")
    parser.add_argument("--out", type=Path, help="metrics JSON to write (default: print it)")
    parser.add_argument("--predictions", type=Path, help="also write per-clip predictions (CSV)")
    parser.add_argument("--params", default=PARAMS_FILE,
                        help=f"parameters file: release TSVs, filters, default classes (default: {PARAMS_FILE})")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = all cores (default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    try:
        params = load_params(args.params)
        model = AccentModel.load(args.model_file, select_device(args.device, "--device"))
        merge = parse_merge(args.merge, model.classes)
        given = parse_classes(args.classes) if args.classes else None
        targets, mapping = target_mapping(merge, params.data.classes, given)
        data = dataclasses.replace(params.data, classes=mapping)
        locale_dir = release_dir(args.release.expanduser(), data)
        metrics, predictions = score(model, locale_dir, data, merge, targets, resolve_count(args.workers))
    except (ConfigError, StageError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_json(args.out, metrics)
    else:
        print(json.dumps(metrics, indent=2, ensure_ascii=False))
    if args.predictions:
        write_predictions(args.predictions, predictions["clips"], predictions["speakers"], predictions["labels"],
                          predictions["probs"], targets)
    failed = sum(metrics["failed"].values())
    heard = metrics["heard_speakers"]
    if heard is None:
        print(f"warning: {args.model_file} does not list the speakers it was trained on (written before acento "
              "stored them): if this release holds them, these scores are higher than on new speakers",
              file=sys.stderr)
    elif heard["speakers"]:
        unseen = heard["unseen"]
        print(f"warning: {heard['speakers']} of the {heard['of_speakers']} speakers ({heard['clips']} of "
              f"{heard['clips'] + (unseen['clips'] if unseen else 0)} clips) trained this model or chose its epoch: "
              "the scores below include them; "
              + (f"on the {unseen['speakers']} other speakers alone: balanced accuracy "
                 f"{unseen['balanced_accuracy']:.3f}, speaker accuracy {unseen['speaker_accuracy']:.3f} "
                 "(heard_speakers.unseen in the metrics)" if unseen else "no scored speaker is new to it"),
              file=sys.stderr)
    print(f"{model.cell} on {metrics['clips']} clips of {metrics['speakers']} speakers ({', '.join(targets)}): "
          f"balanced accuracy {metrics['balanced_accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, speaker "
          f"accuracy {metrics['speaker_accuracy']:.3f}, speaker balanced accuracy "
          f"{metrics['speaker_balanced_accuracy']['value']:.3f} [{metrics['speaker_balanced_accuracy']['ci_low']:.3f}, "
          f"{metrics['speaker_balanced_accuracy']['ci_high']:.3f}]" + (f"; {failed} clip(s) not decodable" if failed else "")
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
