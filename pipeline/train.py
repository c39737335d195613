"""Stage `train`: an LSTM or GRU accent classifier from the cached log-mel features.

Model selection uses the dev split only (best dev macro-F1, early stopping, LR schedule on dev
loss); the test split is touched once, by `evaluate`.  The original study chose epochs on its test
set, which makes its test accuracy optimistic.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm

from pipeline.config import Params
from pipeline.data import SplitData, bucketed_batches, iterate
from pipeline.features import CACHE
from pipeline.inference import predict_proba, select_device
from pipeline.models import AccentClassifier, checkpoint, count_parameters
from pipeline.stage import StageError, atomic_path, run_stage, write_json

MODEL = Path("models/model.pt")
METRICS = Path("metrics/train.json")
LIVE_DIR = Path("metrics/training")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced set gets weight 1 everywhere."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def evaluate_split(model: torch.nn.Module, data: SplitData, loss_fn: torch.nn.Module, batch_size: int,
                   device: torch.device) -> dict:
    probs = predict_proba(model, data.clip, data.lengths, data.mean, data.std, batch_size, device)
    log_probs = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    loss = torch.nn.functional.nll_loss(log_probs, torch.from_numpy(data.labels),
                                        weight=getattr(loss_fn, "weight", None)).item()
    pred = probs.argmax(1)
    return {"loss": loss, "accuracy": accuracy_score(data.labels, pred),
            "macro_f1": f1_score(data.labels, pred, average="macro", zero_division=0)}


def train(params: Params, cache: Path, model_out: Path, live_dir: Path) -> dict:
    cfg = params.train
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads or len(os.sched_getaffinity(0)))
        torch.use_deterministic_algorithms(True)
    try:
        train_data, dev_data = SplitData(cache, "train"), SplitData(cache, "dev")
    except FileNotFoundError as exc:
        raise StageError(str(exc)) from None
    if len(dev_data) == 0:
        raise StageError("the dev split is empty; give data.split.dev a larger share or add speakers")
    n_classes, n_mels = len(train_data.classes), train_data.feature_config.n_mels
    model = AccentClassifier(n_mels, n_classes, params.model, params.rnn).to(device)
    weights = class_weights(train_data.labels, n_classes) if cfg.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None,
                                        label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rng = np.random.default_rng(cfg.seed)

    best = {"macro_f1": -1.0}
    best_state, best_epoch, stale, epochs_run = None, 0, 0, 0
    train_seconds, clips_seen = 0.0, 0
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        live.log_params({"model": params.model, "parameters": count_parameters(model), "device": device.type})
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            batches = bucketed_batches(train_data.lengths, cfg.batch_size, rng, cfg.bucketing)
            total_loss, correct = 0.0, 0
            start = time.perf_counter()
            bar = tqdm(iterate(train_data, batches, cfg.specaugment, rng), total=len(batches),
                       desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
            for batch in bar:
                x, y = batch.features.to(device, non_blocking=True), batch.labels.to(device)
                with torch.autocast(device.type, enabled=amp):
                    logits = model(x, batch.lengths)
                    loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                total_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                bar.set_postfix(loss=f"{loss.item():.3f}")
            train_seconds += time.perf_counter() - start
            clips_seen += len(train_data)
            epochs_run = epoch

            dev = evaluate_split(model, dev_data, loss_fn, params.evaluate.batch_size, device)
            scheduler.step(dev["loss"])
            lr = optimizer.param_groups[0]["lr"]
            row = {"train/loss": total_loss / len(train_data), "train/accuracy": correct / len(train_data),
                   "dev/loss": dev["loss"], "dev/accuracy": dev["accuracy"], "dev/macro_f1": dev["macro_f1"],
                   "lr": lr}
            for key, value in row.items():
                live.log_metric(key, value)
            live.next_step()
            improved = dev["macro_f1"] > best["macro_f1"]
            if improved:
                best, best_epoch, stale = dev, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            print(f"epoch {epoch:3d}  train loss {row['train/loss']:.4f} acc {row['train/accuracy']:.3f}  "
                  f"dev loss {dev['loss']:.4f} acc {dev['accuracy']:.3f} macro-F1 {dev['macro_f1']:.3f}  "
                  f"lr {lr:.2g}{'  *' if improved else ''}", flush=True)
            if stale >= cfg.early_stopping_patience:
                print(f"early stop: no better dev macro-F1 for {stale} epochs")
                break

    model.load_state_dict(best_state)
    # The feature parameters the cache was built with travel with the model, for `predict`.
    ckpt = checkpoint(model, n_mels, train_data.classes, dataclasses.asdict(train_data.feature_config),
                      torch.from_numpy(train_data.mean), torch.from_numpy(train_data.std))
    with atomic_path(model_out, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)
    return {"model": params.model, "epochs_run": epochs_run, "best_epoch": best_epoch,
            "best_dev": {k: round(float(v), 4) for k, v in best.items()},
            "train_seconds": round(train_seconds, 1), "train_clips_per_second": round(clips_seen / train_seconds, 1),
            "parameters": count_parameters(model), "device": device.type}


def main(params: Params, args: argparse.Namespace) -> None:
    metrics = train(params, Path(args.cache), Path(args.out), Path(args.live))
    write_json(args.metrics, metrics)
    print(f"{params.model}: best dev macro-F1 {metrics['best_dev']['macro_f1']:.3f} at epoch "
          f"{metrics['best_epoch']} of {metrics['epochs_run']}, {metrics['train_seconds']:.0f} s -> {args.out}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default=CACHE, help=f"HDF5 feature cache (default: {CACHE})")
    parser.add_argument("--out", default=MODEL, help=f"model file to write (default: {MODEL})")
    parser.add_argument("--metrics", default=METRICS, help=f"metrics to write (default: {METRICS})")
    parser.add_argument("--live", default=LIVE_DIR, help=f"dvclive folder for curves (default: {LIVE_DIR})")


if __name__ == "__main__":
    run_stage(__doc__.splitlines()[0], main, _arguments)
