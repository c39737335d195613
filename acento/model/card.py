"""A model card beside the deployable model: Markdown with the YAML header that model hubs read.

`make final-model` writes models/final.md next to models/final.pt (`write_card`). The header follows
Hugging Face's model card metadata (`language`, `license`, `library_name`, `tags`, `datasets`,
`model-index` with the task, the data and the metrics); the body says what the model is, what its score
means and what it must not be used for.  Every number comes from the run that made the model: the fold
networks' pooled out-of-fold balanced accuracy with its speaker-bootstrap interval (`summary`, as
reports/final.json holds it).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from acento.files import atomic_path


def model_card(summary: dict, model, release: str) -> str:
    """The card's text.  summary: `acento.training.final.build`'s (model, members, classes,
    pooled_out_of_fold); model: the ensemble (`AccentModel`: its feature settings and network); release:
    the Common Voice release it was trained on (a name)."""
    cv = summary["pooled_out_of_fold"]
    cell = summary["model"]
    header = {
        "language": ["es"], "license": "mit", "library_name": "pytorch",
        "tags": ["audio-classification", "accent-identification", "spanish", "common-voice", cell, "acento"],
        "datasets": ["mozilla-foundation/common_voice"],
        "model-index": [{"name": f"acento-{cell}", "results": [{
            "task": {"type": "audio-classification", "name": "Spanish accent identification"},
            "dataset": {"type": "common_voice", "name": release, "config": "es",
                        "split": "every labelled speaker, 5-fold speaker-grouped cross-validation"},
            "metrics": [
                {"type": "balanced_accuracy", "value": cv["balanced_accuracy"],
                 "name": f"pooled out-of-fold balanced accuracy (95% speaker bootstrap: "
                         f"{cv['ci_low']}-{cv['ci_high']})"},
                {"type": "accuracy", "value": cv["speaker_accuracy"], "name": "speaker accuracy (one decision per speaker)"},
            ]}]}],
    }
    features = model.features
    body = f"""
# acento {cell.upper()}: Spanish accent identification

An ensemble of {summary['members']} {cell.upper()} networks (one per cross-validation fold, probabilities
averaged) that classifies a Spanish recording into one of {len(summary['classes'])} accent classes:
{', '.join(f'`{c}`' for c in summary['classes'])}. Made by `make final-model` of
acento {summary.get('version', '')} on `{release}`.

## How well it does

Each fold network was scored on the speakers of its own test fold, which it never heard; pooled over the
folds ({cv['clips']} clips of {cv['speakers']} speakers): balanced accuracy **{cv['balanced_accuracy']:.3f}**
[{cv['ci_low']:.3f}, {cv['ci_high']:.3f}] (95% interval from a bootstrap over speakers), speaker accuracy
{cv['speaker_accuracy']:.3f}; chance is {1 / len(summary['classes']):.3f}. The ensemble itself has heard every
labelled speaker: score it on another release (`acento-score`), never on this one.

## Input

Any recording libsndfile reads (MP3, WAV, FLAC, OGG/Opus), any rate and channels: decoded to mono at
{features.sample_rate} Hz, silence trimmed, at most {features.max_seconds:g} s, {features.n_mels} log-mel
bands every {1000 * features.hop_length / features.sample_rate:g} ms; the model file carries these settings
and the normalisation statistics (`acento.load(path).classify(file)`).

## Intended use and limits

- For research on accents and for curating speech data: which accent a recording sounds like, with
  probabilities. Not for decisions about people (origin, nationality, hiring, access): accents are
  self-reported in Common Voice, speakers of one accent vary, and a class is a region's label, not a person's.
- Trained on `{release}`; a model trained on the synthetic sample corpus that ships with acento (espeak-ng
  voices) knows nothing about real speakers. Accuracy on real Common Voice speakers is what the figure
  above says only if the model was trained on a real release.
- Classes are unbalanced in Common Voice and a few speakers record thousands of clips: the figure is
  balanced accuracy on unseen speakers, the only kind that says anything about accents.
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n" + body


def write_card(path: Path, summary: dict, model, release: str) -> None:
    """Writes the card to `path` atomically."""
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text(model_card(summary, model, release), encoding="utf-8")
