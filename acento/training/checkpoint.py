"""Resuming a killed training: the state after each epoch, in one file, and the run it belongs to.

DVC 3 has no checkpoint outputs and deletes a stage's outputs before it runs it, so the `train` stage
keeps this file outside them (logs/train-checkpoint.pt, git-ignored).  It holds everything the next epoch
depends on: the weights, the weight average, the optimiser, the schedule and the gradient scaler, early
stopping's best weights, the augmentation generator and torch's generators, the epochs' logged rows
(replayed into dvclive, whose folder DVC cleared) and the seconds trained.  A rerun with the same
parameters and the same feature cache continues after the last completed epoch and ends with the model an
uninterrupted run writes (tests/training/test_checkpoint.py); any other run starts over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch

from acento.config import Params
from acento.files import atomic_path

FORMAT = "acento-train-checkpoint"


def run_key(params: Params, cache: Path, drop_speakers: Iterable[str], encoder: Path | None = None,
            pseudo_labels: dict[str, int] | None = None) -> str:
    """What a checkpoint must match to be resumed: the parameters the `train` stage lists in dvc.yaml
    (`data.fold`, `model`, `normalise`, `rnn`, `train`), the feature cache's identity (path, size,
    modification time: it stands for the data and features settings), the speakers left out, the
    identity of the pretrained encoder it started from (if any) and the pseudo-labels; a hex digest."""
    settings = {"fold": params.data.fold, "model": params.model,
                **{name: dataclasses.asdict(getattr(params, name)) for name in ("normalise", "rnn", "train")}}
    identity = [*_identity(cache), sorted(drop_speakers), _identity(encoder) if encoder else None,
                sorted((pseudo_labels or {}).items())]
    return hashlib.sha256(json.dumps([settings, identity], sort_keys=True, default=str).encode()).hexdigest()


def _identity(path: Path) -> list:
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def save(path: Path, key: str, epoch: int, trainer, stopper, history: list[dict], train_seconds: float) -> None:
    """Writes the state after `epoch` atomically (a kill while writing leaves the previous one)."""
    state = {
        "format": FORMAT, "key": key, "epoch": epoch, "history": history, "train_seconds": train_seconds,
        "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "scaler": trainer.scaler.state_dict(),
        "averaged": trainer.averaged.state_dict() if trainer.averaged is not None else None,
        "adversary": trainer.adversary.state_dict() if trainer.adversary is not None else None,
        "stopper": dataclasses.asdict(stopper), "rng": trainer.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def restore(path: Path, key: str, trainer, stopper) -> dict | None:
    """Loads the state of `path` into `trainer` and `stopper` if it belongs to this run (`key`); returns
    {"epoch", "history", "train_seconds"}, or None (no file, another run's, or unreadable: start over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
    except Exception as exc:  # a damaged file costs the epochs it held, never the run
        print(f"warning: {path}: unreadable checkpoint ({type(exc).__name__}); training from the start")
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != key:
        print(f"{path}: a checkpoint of other settings or another feature cache; training from the start")
        return None
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    for name in ("scheduler", "averaged", "adversary"):
        if getattr(trainer, name) is not None:
            getattr(trainer, name).load_state_dict(state[name])
    trainer.scaler.load_state_dict(state["scaler"])
    for field, value in state["stopper"].items():
        setattr(stopper, field, value)
    trainer.rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return {"epoch": int(state["epoch"]), "history": state["history"], "train_seconds": float(state["train_seconds"])}


def remove(path: Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)

