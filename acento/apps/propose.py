"""Propose an accent for each speaker of a release who gave none: a list for a curator to check and label.

The release is read as `prepare` reads it (params.yaml's `data.tsvs`, down-vote and duration filters,
`data.classes`), and its unlabelled speakers are those whose clips carry no accent or only accents of no
class (`acento.corpus.prepare.unlabelled_clips`); a speaker who also has a labelled clip is left out
whole.  At most `--max-clips-per-speaker` clips of each (a seeded choice) are classified, and each speaker
gets one decision, as `acento-predict --by-speaker` makes it: the class of highest summed probability over
their clips, its mean probability as the confidence (`acento.apps.predict.by_speaker`).

The TSV has one row per speaker proposed, highest confidence first: speaker (Common Voice's client_id),
class, confidence, clips_used, clips_failed (clips that could not be decoded), runner_up and
runner_up_probability (the next class and its mean probability), accents (what the speaker wrote, if
anything).  `--min-clips` and `--min-confidence` leave speakers out of the file; one summary line on
stderr counts them by reason, with the clips that failed by reason.  A proposal is the model's guess, no
label: a curator decides.

  acento-propose --release data/sample/cv-corpus-sample-es.tar.gz --out proposals.tsv
  acento-propose --release ~/cv-corpus-21.0/es --min-clips 3 --min-confidence 0.5
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from acento.apps.options import add_model_file_option, add_release_option, non_finite_scores
from acento.apps.predict import by_speaker
from acento.apps.score import release_dir
from acento.audio.decode import FAILURE_REASONS, AudioError
from acento.config import PARAMS_FILE, ConfigError, DataConfig, load_params
from acento.console import progress
from acento.corpus.prepare import unlabelled_clips
from acento.corpus.splits import cap_per_group
from acento.errors import StageError
from acento.files import atomic_path
from acento.model.accent_model import AccentModel, ModelFileError
from acento.runtime import resolve_count, select_device

COLUMNS = ["speaker", "class", "confidence", "clips_used", "clips_failed", "runner_up", "runner_up_probability",
           "accents"]
LEFT_OUT = ("no_usable_clip", "few_clips", "low_confidence")  # why a speaker of the pool gets no row


def propose(model: AccentModel, locale_dir: Path, data: DataConfig, max_clips_per_speaker: int = 0,
            min_clips: int = 1, min_confidence: float = 0.0, workers: int = 1) -> tuple[pd.DataFrame, dict]:
    """The proposals for the unlabelled speakers of the release at `locale_dir` (a frame of COLUMNS, highest
    confidence first, ties by speaker) and what was counted: {"speakers" (in the pool), "clips" (classified),
    "left_out": {LEFT_OUT reason: speakers}, "failed": {FAILURE_REASONS reason: clips}, "dropped": {reason:
    clips kept out of the pool, `unlabelled_clips`' reasons and speaker_cap}}.

    StageError if clips were found but none could be decoded, or the model scores one with NaN.
    """
    rows, dropped = unlabelled_clips(data, locale_dir)
    rows, dropped["speaker_cap"] = cap_per_group(rows, "speaker", max_clips_per_speaker, data.seed)
    rows = rows.sort_values(["speaker", "clip"])
    failed: Counter[str] = Counter(dict.fromkeys(FAILURE_REASONS, 0))
    results = []
    decoded = model.classify_files(rows["audio_path"].tolist(), workers, "--workers 1")
    for path, result in progress(decoded, total=len(rows), desc="classifying", unit="clip"):
        if isinstance(result, AudioError):
            failed[result.reason] += 1
            results.append({"error": result.report()})
            continue
        if not all(map(math.isfinite, result.probs.values())):
            raise StageError(non_finite_scores(model.path or "the model", str(path)))
        results.append({"probs": result.probs})
    if len(rows) and sum(failed.values()) == len(rows):
        raise StageError(f"{locale_dir}: none of the {len(rows)} unlabelled clips could be decoded "
                         f"({ {k: v for k, v in failed.items() if v} })")
    accents = rows.groupby("speaker")["accents"].agg(lambda s: "|".join(sorted({a for a in s if a})))
    left_out: Counter[str] = Counter(dict.fromkeys(LEFT_OUT, 0))
    proposals = []
    for decision in by_speaker(results, rows["speaker"].tolist(), model.classes):
        reason = ("no_usable_clip" if decision["label"] is None else "few_clips" if decision["clips"] < min_clips
                  else "low_confidence" if decision["confidence"] < min_confidence else None)
        if reason:
            left_out[reason] += 1
            continue
        ranked = sorted(decision["probs"].items(), key=lambda kv: -kv[1])
        runner_up = ranked[1] if len(ranked) > 1 else ("", float("nan"))
        proposals.append({"speaker": decision["speaker"], "class": decision["label"],
                          "confidence": decision["confidence"], "clips_used": decision["clips"],
                          "clips_failed": decision["failed"], "runner_up": runner_up[0],
                          "runner_up_probability": runner_up[1], "accents": accents[decision["speaker"]]})
    table = pd.DataFrame(proposals, columns=COLUMNS)
    table = table.sort_values(["confidence", "speaker"], ascending=[False, True], kind="stable").reset_index(drop=True)
    counts = {"speakers": int(rows["speaker"].nunique()), "clips": len(rows) - sum(failed.values()),
              "left_out": dict(left_out), "failed": dict(failed), "dropped": dict(dropped)}
    return table, counts


def write_proposals(path: Path, table: pd.DataFrame) -> None:
    """The proposals as UTF-8 TSV, atomically (nothing at `path` unless it is whole)."""
    try:
        with atomic_path(path, suffix=".tsv") as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.4f", lineterminator="\n")
    except OSError as exc:
        raise StageError(f"--out {path}: cannot be written ({exc.strerror or exc})") from None


def summary(table: pd.DataFrame, counts: dict, out: Path) -> str:
    """The one line printed at the end: speakers proposed, left out, clips failed, clips kept out of the pool."""
    def listed(counter: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in counter.items() if v) or "none"

    return (f"acento-propose: {len(table)} of {counts['speakers']} unlabelled speaker(s) proposed, from "
            f"{counts['clips']} clip(s) -> {out}; speakers left out: {listed(counts['left_out'])}; clips failed: "
            f"{listed(counts['failed'])}; clips not in the pool: {listed(counts['dropped'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acento-propose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_file_option(parser)
    add_release_option(parser)
    parser.add_argument("--out", type=Path, default=Path("proposals.tsv"),
                        help="TSV to write, one row per speaker proposed (default: proposals.tsv)")
    parser.add_argument("--min-clips", type=int, default=1, metavar="N",
                        help="leave out (and count) speakers with fewer than N clips classified (default: 1)")
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="X",
                        help="leave out (and count) speakers whose confidence is below X, 0 to 1; they are not "
                             "written (default: 0, every speaker)")
    parser.add_argument("--max-clips-per-speaker", type=int, metavar="N",
                        help="classify at most N clips of a speaker, a seeded choice (params.yaml data.seed); "
                             "0 = all (default: params.yaml's data.max_clips_per_speaker)")
    parser.add_argument("--params", default=PARAMS_FILE,
                        help=f"parameters file: release TSVs, filters, classes (default: {PARAMS_FILE})")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0 = all cores (default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    args = parser.parse_args(argv)
    if args.min_clips < 1 or not 0 <= args.min_confidence <= 1 or args.workers < 0 or \
            (args.max_clips_per_speaker is not None and args.max_clips_per_speaker < 0):
        parser.error("--min-clips must be >= 1, --min-confidence within 0..1, --max-clips-per-speaker and "
                     "--workers >= 0")
    try:
        params = load_params(args.params)
        model = AccentModel.load(args.model_file, select_device(args.device, "--device"))
        if sorted(params.data.classes) != model.classes:
            print(f"warning: {args.model_file} has classes {', '.join(model.classes)}, {args.params} data.classes "
                  f"{', '.join(sorted(params.data.classes))}: speakers are unlabelled by params.yaml's accents, "
                  "proposed among the model's classes", file=sys.stderr)
        cap = params.data.max_clips_per_speaker if args.max_clips_per_speaker is None else args.max_clips_per_speaker
        locale_dir = release_dir(args.release.expanduser(), params.data)
        table, counts = propose(model, locale_dir, params.data, cap, args.min_clips, args.min_confidence,
                                resolve_count(args.workers))
        write_proposals(args.out, table)
    except (ConfigError, StageError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: nothing was written to {args.out}", file=sys.stderr)
        return 130
    if not counts["speakers"]:
        print(f"warning: {locale_dir} has no unlabelled speaker left after the filters; {args.out} holds only "
              "its header", file=sys.stderr)
    print(summary(table, counts, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
