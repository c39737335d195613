"""Batched inference shared by `evaluate` and `predict`, so both see the same numbers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from acento.model.inputs import Normaliser, collate, sequential_batches


@torch.no_grad()
def predict_proba(model: torch.nn.Module, get_clip: Callable[[int], np.ndarray], lengths: np.ndarray,
                  normalise: Normaliser, batch_size: int, device: torch.device) -> np.ndarray:
    """Class probabilities [clips, classes] in input order; `get_clip(i)` gives clip i's log-mels.

    Clips are fetched a batch at a time, so a test split larger than memory streams from the cache.
    """
    model.eval()
    probs = np.zeros((len(lengths), 0), dtype=np.float32)
    for index in sequential_batches(np.asarray(lengths), batch_size):
        batch = collate([get_clip(i) for i in index], np.zeros(len(index), np.int64), index, normalise)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            logits = model(batch.features.to(device, non_blocking=True), batch.lengths)
        p = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if probs.shape[1] == 0:
            probs = np.zeros((len(lengths), p.shape[1]), dtype=np.float32)
        probs[index] = p
    return probs
