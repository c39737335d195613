"""The training loop: an LSTM or GRU accent classifier from the cached log-mel features of one fold.

With a cross-validated cache the splits are those of fold `data.fold` (`acento.features.cache.SplitData`),
and the normalisation statistics are that fold's training split's.  Model selection uses the dev
split only (best dev macro-F1, early stopping, a plateau schedule's cuts); the test split is touched
once, by `evaluate`.  With `train.dev_speakers: train` the dev speakers are trained on as well and the
last epoch is kept: no dev split at all, an epoch count chosen beforehand by cross-validation.

The loop reads top to bottom: set up (`Trainer.__init__`), then per epoch `train_one_epoch`,
`validate` on dev, `EarlyStopping.update`; at the end the best weights are written with
everything inference needs (`acento.model.accent_model.AccentModel`).  The `train` stage
(pipeline/train.py) and cross-validation (`acento.evaluation.crossval`) call `train`.

One module of ~350 lines on purpose: the loop, its set-up and its end read top to bottom in one place,
as nanoGPT's train.py does; the batches and the checkpoint are modules of their own.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from acento.config import Params
from acento.console import progress
from acento.errors import StageError
from acento.evaluation.metrics import macro_f1
from acento.features.cache import SplitData
from acento.model.accent_model import AccentModel, speaker_hash
from acento.model.inference import predict_proba
from acento.model.inputs import Normaliser
from acento.model.network import ENCODER_PREFIXES, AccentClassifier, SpeakerAdversary, count_parameters
from acento.paths import ENCODER_FILE
from acento.runtime import configure_torch, select_device
from acento.training.batches import (
    Batcher,
    DeviceBatch,
    bucketed_batches,
    draw_epoch,
    frame_batches,
    prefetch,
)
from acento.training.checkpoint import remove, restore, run_key, save
from acento.training.pretrain import load_encoder


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced set gets weight 1 everywhere; [n_classes] on the CPU."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def validate(model: torch.nn.Module, data: SplitData, normalise: Normaliser, batch_size: int,
             device: torch.device, class_weight: torch.Tensor | None) -> dict:
    """Dev loss (class-weighted like the training loss), accuracy and macro-F1 of `data`.

    The probabilities come back to the CPU, so the loss is computed there, with the class weights
    brought to the CPU too: nothing from the training device is mixed in (a CUDA weight with CPU
    log-probabilities crashed the first dev evaluation on GPUs).
    """
    probs = predict_proba(model, data.clip, data.lengths, normalise, batch_size, device)
    log_probs = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    weight = None if class_weight is None else class_weight.to(log_probs.device)
    loss = torch.nn.functional.nll_loss(log_probs, torch.from_numpy(data.labels), weight=weight).item()
    pred = probs.argmax(1)
    return {"loss": loss, "accuracy": float((pred == data.labels).mean()), "macro_f1": macro_f1(data.labels, pred)}


@dataclass
class EarlyStopping:
    """Keeps the best dev result (by macro-F1) and its weights; says when `patience` epochs brought
    nothing better (patience 0: never)."""
    patience: int
    best: dict = field(default_factory=lambda: {"macro_f1": -1.0})
    best_train: dict = field(default_factory=dict)
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0

    def update(self, epoch: int, dev: dict, model: torch.nn.Module, train: dict | None = None) -> bool:
        """Records epoch `epoch`'s dev scores (and its training scores); returns whether they are the
        best so far."""
        if dev["macro_f1"] > self.best["macro_f1"]:
            self.best, self.best_epoch, self.stale = dev, epoch, 0
            self.best_train = dict(train or {})
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        self.stale += 1
        return False

    def keep_last(self, epoch: int, train: dict) -> None:
        """Without a dev split: epoch `epoch` (the latest) is the one kept, with the weights the model ends with."""
        self.best_epoch, self.best_train = epoch, dict(train)

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


class Trainer:
    """The model, its optimiser and schedule, and the data of one training run."""

    def __init__(self, params: Params, cache: Path, drop_speakers: Iterable[str] = (), encoder: Path | None = None,
                 pseudo_labels: dict[str, int] | None = None):
        cfg = self.cfg = params.train
        seed_everything(cfg.seed)
        self.device = select_device(params.runtime.device)
        configure_torch(self.device, params.runtime.num_threads, deterministic=True)
        # fold data.fold of a cross-validated cache: its other folds' speakers are train and dev
        self.has_dev = cfg.dev_speakers == "select"
        self.train_data = SplitData(cache, "train", params.data.fold, drop_speakers, dev_trains=not self.has_dev,
                                    pseudo_labels=pseudo_labels)
        self.dev_data = SplitData(cache, "dev", params.data.fold, drop_speakers) if self.has_dev else None
        if self.has_dev and len(self.dev_data) == 0:
            raise StageError("the dev split is empty; give data.split.dev a larger share or add speakers")
        n_classes = len(self.train_data.classes)
        self.model = AccentClassifier(self.train_data.feature_config.n_mels, n_classes, params.model,
                                      params.rnn).to(self.device)
        if cfg.init == "pretrained":
            self.start_from_encoder(params, encoder)
        self.class_weight = class_weights(self.train_data.labels, n_classes) if cfg.class_weights else None
        self.loss_fn = torch.nn.CrossEntropyLoss(
            weight=None if self.class_weight is None else self.class_weight.to(self.device),
            label_smoothing=cfg.label_smoothing)
        self.normalise = Normaliser(params.normalise, self.train_data.mean, self.train_data.std)
        self.adversary = None
        if cfg.adversary.weight > 0:
            # speaker ids of the training split only: the adversary never sees dev or test speakers
            speaker_ids = np.unique(self.train_data.speakers, return_inverse=True)[1]
            self.speaker_ids = torch.as_tensor(speaker_ids, device=self.device)
            self.adversary = SpeakerAdversary(self.model.pooled_size, int(speaker_ids.max()) + 1,
                                              cfg.adversary.hidden).to(self.device)
        trained = [*self.model.parameters(), *(self.adversary.parameters() if self.adversary else [])]
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        # fused on CUDA: with the GradScaler it skips a step on inf/NaN gradients without reading them back
        self.optimizer = optimizer(trained, lr=cfg.lr * self.lr_scale(), weight_decay=cfg.weight_decay,
                                   **({"fused": True} if self.device.type == "cuda" else {}))
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # The weights that are scored and saved: an exponential moving average of the trained ones
        # when train.ema > 0 (Polyak averaging; torch.optim.swa_utils), else the trained ones.
        self.averaged = None
        if cfg.ema > 0:
            self.averaged = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        self.rng = np.random.default_rng(cfg.seed)
        self.batcher = Batcher(self.train_data, self.normalise, self.device)
        self.inference_batch_size = params.runtime.inference_batch_size

    def start_from_encoder(self, params: Params, encoder: Path | None) -> None:
        """The conv front-end and the RNN from the pretrained encoder file (`acento.training.pretrain`); the
        head keeps its random start.  StageError (one line) for a missing or mismatched file."""
        if encoder is None:
            self.close()
            raise StageError("train.init is 'pretrained' but no encoder file was given (the train stage reads "
                             f"{ENCODER_FILE}); run the pretrain stage, or set train.init: scratch")
        try:
            state = load_encoder(Path(encoder), params, dataclasses.asdict(self.train_data.feature_config))
        except StageError:
            self.close()
            raise
        missing = [k for k in self.model.state_dict() if k.startswith(ENCODER_PREFIXES) and k not in state]
        unexpected = [k for k in state if k not in self.model.state_dict()]
        if missing or unexpected:
            self.close()
            raise StageError(f"{encoder}: its weights do not fit this network ({(missing or unexpected)[0]}); rerun "
                             "`dvc repro pretrain`")
        self.model.load_state_dict(state, strict=False)

    def train_one_epoch(self, epoch: int) -> dict:
        """One pass over the training split in shuffled, length-bucketed batches; mean loss and accuracy.

        The batches are built on the device (`Batcher`); the loss and the correct count stay there
        and are read once, at the end of the epoch: no host round trip per step."""
        cfg, model = self.cfg, self.model
        model.train()
        draws = draw_epoch(self.train_data.lengths, cfg.augment, cfg.specaugment, self.batcher.n_mels, self.rng)
        batches = self.epoch_batches(draws.length)
        stream = self.batcher.epoch(draws, batches)
        if self.train_data.lazy:
            # Read from disk in a background thread while this batch trains.  Not for a split in
            # memory: there the extra thread only competes with torch's.
            stream = prefetch(stream)
        strength = self.adversary_strength(epoch)
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for batch in progress(stream, total=len(batches), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                              leave=False):
            loss, logits = self.step(batch, strength)
            total_loss += loss.detach() * len(batch.labels)
            correct += (logits.argmax(1) == batch.labels).sum()
        n = len(self.train_data)
        return {"loss": total_loss.item() / n, "accuracy": correct.item() / n}

    def epoch_batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """This epoch's batches of clip positions, by the augmented `lengths`: `train.batch_size` clips
        each (length-bucketed when `train.bucketing`), or by a budget of `train.batch_frames` padded frames."""
        if self.cfg.batch_frames:
            return frame_batches(lengths, self.cfg.batch_frames, self.rng)
        return bucketed_batches(lengths, self.cfg.batch_size, self.rng, self.cfg.bucketing)

    def step(self, batch: DeviceBatch, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on `batch`; returns the loss and the logits (on the device, not read)."""
        cfg, model = self.cfg, self.model
        with torch.autocast(self.device.type, enabled=self.amp):
            pooled = model.pool(batch.features, batch.lengths)
            logits = model.head(pooled)
            loss = self.loss_fn(logits.float(), batch.labels)
            if self.adversary is not None:
                speaker_logits = self.adversary(pooled, strength).float()
                loss = loss + cfg.adversary.weight * torch.nn.functional.cross_entropy(
                    speaker_logits, self.speaker_ids[batch.index])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.averaged is not None:
            self.averaged.update_parameters(model)
        return loss, logits

    def lr_scale(self) -> float:
        """sqrt(clips per batch / train.batch_size) with batches by frames (`train.batch_frames`), else 1:
        square-root scaling of Adam's learning rate with the batch (Malladi et al., NeurIPS 2022), the
        clips per batch estimated on the unaugmented lengths (with a generator of its own: the run's draws
        are untouched)."""
        if not self.cfg.batch_frames:
            return 1.0
        batches = frame_batches(self.train_data.lengths, self.cfg.batch_frames, np.random.default_rng(0))
        return float(np.sqrt(len(self.train_data) / len(batches) / self.cfg.batch_size))

    def adversary_strength(self, epoch: int) -> float:
        """The reversed gradient's strength in `epoch` (1-based): rising linearly from 0 over
        `ramp_epochs` epochs, so the adversary first learns what identifies a speaker."""
        ramp = self.cfg.adversary.ramp_epochs
        return 1.0 if ramp == 0 else min(1.0, (epoch - 1) / ramp)

    def close(self) -> None:
        """Closes the cache's train and dev splits."""
        self.train_data.close()
        if self.dev_data is not None:
            self.dev_data.close()

    @property
    def scored_model(self) -> torch.nn.Module:
        """The network that dev scores and the model file use: the weight average when train.ema > 0."""
        return self.model if self.averaged is None else self.averaged.module

    def validate(self) -> dict:
        """Dev scores of the scored model; {} without a dev split (`train.dev_speakers: train`)."""
        if not self.has_dev:
            return {}
        return validate(self.scored_model, self.dev_data, self.normalise, self.inference_batch_size, self.device,
                        self.class_weight)

    def step_schedule(self, dev: dict) -> None:
        """Advances the learning-rate schedule after an epoch, on the dev score it follows."""
        if self.cfg.schedule == "plateau":
            self.scheduler.step(dev["macro_f1"])
        elif self.cfg.schedule == "plateau_loss":
            self.scheduler.step(dev["loss"])
        elif self.scheduler is not None:
            self.scheduler.step()


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler | None:
    """plateau: cut on a dev macro-F1 plateau (the metric that picks the checkpoint; the dev loss can
    rise through over-confidence while the F1 still improves, and cutting on it collapsed the
    learning rate early); plateau_loss: cut on a dev loss plateau; cosine: to 0 over `epochs`.  With
    `warmup_epochs`, a linear warm-up first (then cosine over the epochs left; plateau schedules take no
    warm-up: the config check refuses the pair)."""
    if cfg.schedule in ("plateau", "plateau_loss"):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max" if cfg.schedule == "plateau" else "min",
                                                          factor=cfg.lr_factor, patience=cfg.lr_patience)
    if cfg.schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs - cfg.warmup_epochs)
    else:
        schedule = None
    if cfg.warmup_epochs:
        # epoch e (0-based) of the warm-up trains at (e + 1) / (warmup_epochs + 1) of the lr
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / (cfg.warmup_epochs + 1), 1.0, cfg.warmup_epochs)
        after = schedule or torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, after], [cfg.warmup_epochs])
    return schedule


def log_epoch(live: Live, epoch: int, train: dict, dev: dict, lr: float, improved: bool, echo: bool = True) -> None:
    """One dvclive step and (`echo`) one printed line per epoch (the line, unlike a progress bar, suits logs)."""
    row = {"train/loss": train["loss"], "train/accuracy": train["accuracy"],
           **{f"dev/{k}": dev[k] for k in ("loss", "accuracy", "macro_f1") if k in dev}, "lr": lr}
    for key, value in row.items():
        live.log_metric(key, value)
    live.next_step()
    if not echo:
        return
    dev_text = f"dev loss {dev['loss']:.4f} acc {dev['accuracy']:.3f} macro-F1 {dev['macro_f1']:.3f}  " if dev else ""
    print(f"epoch {epoch:3d}  train loss {train['loss']:.4f} acc {train['accuracy']:.3f}  {dev_text}"
          f"lr {lr:.2g}{'  *' if improved else ''}", flush=True)


def train(params: Params, cache: Path, model_out: Path, live_dir: Path, drop_speakers: Iterable[str] = (),
          checkpoint: Path | None = None, encoder: Path | None = None,
          pseudo_labels: dict[str, int] | None = None) -> dict:
    """Trains on the cache's train split of fold `params.data.fold`, picks the epoch on its dev split
    (or keeps the last, training on the dev speakers too: `train.dev_speakers: train`), writes the model
    file with that training split's normalisation statistics.

    cache: HDF5 feature cache (`acento.features.cache`); model_out: model file (`model.AccentModel`);
    live_dir: dvclive folder for the per-epoch curves; drop_speakers: training speakers left out
    (a learning curve); checkpoint: a file the state is saved to after every epoch and resumed from when
    it belongs to this run (`acento.training.checkpoint`), removed at the end; encoder: the pretrained
    encoder file the network starts from with `train.init: pretrained` (`acento.training.pretrain`);
    pseudo_labels: {unlabelled pool speaker: class index} trained on as labelled (self-training,
    `acento.evaluation.crossval`).  Returns the stage
    metrics: best dev scores, epochs, training seconds (the epoch loops, not validation) and clips per second.
    """
    trainer = Trainer(params, cache, drop_speakers, encoder, pseudo_labels)
    stopper = EarlyStopping(params.train.early_stopping_patience)
    start_from = encoder if params.train.init == "pretrained" else None
    key = run_key(params, cache, drop_speakers, start_from, pseudo_labels) if checkpoint else ""
    resumed = restore(checkpoint, key, trainer, stopper) if checkpoint else None
    done, history = (resumed["epoch"], resumed["history"]) if resumed else (0, [])
    train_seconds = resumed["train_seconds"] if resumed else 0.0
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        live.log_params({"model": params.model, "parameters": count_parameters(trainer.model),
                         "device": trainer.device.type})
        for row in history:  # DVC cleared the curves of the epochs before the kill: log them again
            log_epoch(live, **row, echo=False)
        if resumed:
            print(f"resuming after epoch {done} of {params.train.epochs} ({checkpoint})", flush=True)
        for epoch in range(done + 1, params.train.epochs + 1):
            if stopper.should_stop:
                break
            start = time.perf_counter()
            train_scores = trainer.train_one_epoch(epoch)
            train_seconds += time.perf_counter() - start
            if not math.isfinite(train_scores["loss"]):
                trainer.close()
                raise StageError(f"training stopped at epoch {epoch}: the loss is {train_scores['loss']} (not a finite "
                                 f"number), so the weights are no longer numbers either; no model was written. "
                                 f"Lower train.lr (now {params.train.lr:g}) or set train.grad_clip > 0 (now "
                                 f"{params.train.grad_clip:g}); the feature cache was checked on reading")
            dev = trainer.validate()
            trainer.step_schedule(dev)
            if dev:
                improved = stopper.update(epoch, dev, trainer.scored_model, train_scores)
            else:
                stopper.keep_last(epoch, train_scores)
                improved = False
            history.append({"epoch": epoch, "train": train_scores, "dev": dev, "improved": improved,
                            "lr": trainer.optimizer.param_groups[0]["lr"]})
            log_epoch(live, **history[-1])
            if checkpoint:
                save(checkpoint, key, epoch, trainer, stopper, history, train_seconds)
            if stopper.should_stop:
                print(f"early stop: no better dev macro-F1 for {stopper.stale} epochs")
    epochs_run = history[-1]["epoch"] if history else 0

    model, data = trainer.scored_model, trainer.train_data
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    trainer.close()
    # The feature parameters the cache was built with travel with the model, for `predict`, and so do
    # its training and dev speakers (hashed), for `score` to report the speakers it never heard apart.
    heard = [*data.speakers, *(trainer.dev_data.speakers if trainer.dev_data is not None else [])]
    AccentModel(model, data.classes, data.feature_config, trainer.normalise, device=trainer.device,
                speaker_hashes={speaker_hash(s) for s in heard}).save(model_out)
    remove(checkpoint)
    return {"model": params.model, "epochs_run": epochs_run, "best_epoch": stopper.best_epoch,
            "best_dev": {k: round(float(v), 4) for k, v in stopper.best.items()} if trainer.has_dev else {},
            # training-split scores of the chosen epoch (with augmentation on): the gap to best_dev
            # is how much the model learned that does not carry over to new speakers
            "best_train": {k: round(float(v), 4) for k, v in stopper.best_train.items()},
            "train_seconds": round(train_seconds, 1),
            "train_clips_per_second": round(epochs_run * len(data) / train_seconds, 1),
            "parameters": count_parameters(model), "device": trainer.device.type}


# Wall-clock figures: logged to TRAIN_TIMING, not to the metrics, whose content must change only
# when the result does (two runs on one machine give the same metrics, never the same seconds).
TIMING_KEYS = ("train_seconds", "train_clips_per_second")
