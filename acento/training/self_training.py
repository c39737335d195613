"""Self-training on the unlabelled pool: a trained model labels the pool's speakers it is sure of, and a
second run of the same settings trains on them as if they were labelled (`train.self_train`).

The decision is per speaker, never per clip: a speaker's class is the one of highest mean probability over
their clips (`acento.evaluation.metrics.speaker_means`, the rule of `speaker_decisions`), kept when that mean
reaches `min_confidence`.  The pool holds no speaker of any fold (`acento.corpus.prepare`: a speaker with a
labelled clip never enters it), so no dev or test speaker is ever heard, with or without labels.  Classic
self-training (pseudo-labelling: Scudder 1965; Lee, ICML 2013 workshop; for speech, Kahn et al., ICASSP
2020); measured on the benchmark corpus in docs/study.md ("Round 6").
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from acento.config import Params
from acento.corpus.manifest import POOL
from acento.evaluation.metrics import speaker_means
from acento.features.cache import SplitData
from acento.model.accent_model import AccentModel
from acento.runtime import select_device
from acento.training.trainer import train

SUMMARY_KEYS = ("best_train", "best_dev", "best_epoch", "epochs_run")  # no seconds: metrics files are results


def label_pool(model: AccentModel, cache: str | Path, min_confidence: float) -> tuple[dict[str, int], dict]:
    """({pool speaker: class index} for the speakers whose mean probability of their decided class is at
    least `min_confidence` (in [0, 1]), a summary: pool_speakers, pseudo_speakers, pseudo_classes
    ({class name: speakers})).  Every pool clip is scored (in batches, the model's device).  StageError
    (one line) when the cache has no pool."""
    with SplitData(cache, POOL) as pool:
        ids, mean = speaker_means(pool.speakers, model.predict_split(pool))
    sure = mean.max(1) >= min_confidence
    labels = {str(s): int(c) for s, c in zip(ids[sure], mean.argmax(1)[sure])}
    counts = np.bincount(list(labels.values()), minlength=len(model.classes))
    return labels, {"min_confidence": min_confidence, "pool_speakers": len(ids), "pseudo_speakers": len(labels),
                    "pseudo_classes": dict(zip(model.classes, counts.tolist()))}


def train_self_trained(params: Params, cache: Path, model_out: Path, live_dir: Path, teacher_live_dir: Path,
                       drop_speakers: Iterable[str] = (), checkpoint: Path | None = None,
                       encoder: Path | None = None) -> dict:
    """Two runs of `acento.training.trainer.train` with `params`: the first (the teacher, curves in
    `teacher_live_dir`) labels the pool (`label_pool` at `params.train.self_train`), the second trains on
    the labelled split plus those speakers and is written to `model_out`.  Returns the second run's metrics
    with a `self_training` section: the pool summary and the first run's scores.

    checkpoint: the second run's; the first resumes from its own file beside it (`-teacher`), so a run
    killed in the first resumes there.  A run killed in the second resumes there only if the first is run
    again (its checkpoint is removed when it ends): the same seed gives it the same weights and labels."""
    drop_speakers = list(drop_speakers)
    teacher_file = model_out.with_name(f".{model_out.stem}.teacher{model_out.suffix}")
    teacher_checkpoint = checkpoint.with_name(f"{checkpoint.stem}-teacher{checkpoint.suffix}") if checkpoint else None
    try:
        teacher = train(params, cache, teacher_file, teacher_live_dir, drop_speakers, checkpoint=teacher_checkpoint,
                        encoder=encoder)
        model = AccentModel.load(teacher_file, select_device(params.runtime.device),
                                 batch_size=params.runtime.inference_batch_size)
        pseudo, summary = label_pool(model, cache, params.train.self_train)
    finally:
        teacher_file.unlink(missing_ok=True)
    print(f"self-training: {summary['pseudo_speakers']} of {summary['pool_speakers']} unlabelled speakers at mean "
          f"probability >= {params.train.self_train:g} join the training split (first run: "
          f"{teacher['train_seconds']:.0f} s)", flush=True)
    metrics = train(params, cache, model_out, live_dir, drop_speakers, checkpoint=checkpoint, encoder=encoder,
                    pseudo_labels=pseudo)
    return {**metrics, "self_training": {**summary, "teacher": {k: teacher[k] for k in SUMMARY_KEYS}}}
