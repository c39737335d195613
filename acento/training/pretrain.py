"""Self-supervised pretraining of the encoder (the conv front-end and the RNN) on the unlabelled pool.

Labelled speakers are what limits accuracy (the learning curve rises ~0.09 per doubling of them), while
most of a release's speakers give no accent.  This trains the part of the network that reads log-mels on
those clips with a label-free objective, so that `train` (`train.init: pretrained`) starts from it:

- `masked`: masked-frame reconstruction (Mockingjay / TERA, Liu et al., ICASSP 2020 and TASLP 2021;
  DeCoAR, Ling et al., ICASSP 2020).  Spans of `pretrain.mask_span` frames, about `pretrain.mask_share` of
  each clip, are set to 0 (the normalised mean, as SpecAugment's masks are); a linear layer maps each encoder
  step to the `frontend_stride` input frames it covers; the loss is the L1 distance on the masked frames.
  Any direction.
- `apc`: autoregressive predictive coding (Chung et al., Interspeech 2019): each encoder step predicts the
  input frames `pretrain.apc_shift` steps ahead, L1.  Unidirectional stacks only (params.yaml refuses the
  pair: a backward direction reads the answer).

The pool's clips are of speakers with no labelled clip (`acento.corpus.prepare`), so no fold's test speaker is
ever heard here, and one encoder serves every fold.  The pool is normalised with its own statistics (it has
no training split); `train` then normalises with its fold's, as always.

The encoder file (`save_encoder`, read by `load_encoder` with weights_only=True) holds the cell, the rnn and
feature settings, the pretrain section and the weights of every `frontend.`/`rnn.` key; with
`pretrain.epochs: 0` it holds no weights and says why, so that the stage has its output and `train` refuses
to start from it in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from acento.config import Params
from acento.console import progress
from acento.corpus.manifest import POOL
from acento.errors import StageError
from acento.features.cache import SplitData, open_cache
from acento.model.accent_model import FEATURES_NOT_COMPARED
from acento.files import atomic_path
from acento.model.inputs import Normaliser
from acento.model.network import ENCODER_PREFIXES, AccentClassifier, encoder_settings
from acento.runtime import configure_torch, select_device
from acento.training.batches import Batcher, bucketed_batches, no_draws

FORMAT = "acento-encoder"
FORMAT_VERSION = 1


def span_mask(lengths: np.ndarray, steps: int, share: float, span: int, rng: np.random.Generator) -> np.ndarray:
    """[clips, steps] bool: per clip ceil(share * length / span) spans of `span` frames (fewer for a clip
    shorter than a span: one span of its length) at uniform random starts within the clip; spans may overlap."""
    mask = np.zeros((len(lengths), steps), bool)
    for row, length in enumerate(lengths):
        width = min(span, int(length))
        n = max(1, math.ceil(share * length / span))
        for start in rng.integers(0, int(length) - width + 1, n):
            mask[row, start:start + width] = True
    return mask


def pretraining_loss(model: AccentClassifier, head: torch.nn.Linear, x: torch.Tensor, lengths: torch.Tensor,
                     objective: str, mask: torch.Tensor | None, shift: int) -> torch.Tensor:
    """The objective's L1 loss of one batch.  x: [batch, frames, n_mels] normalised, 0 past each clip's
    lengths [batch]; mask: [batch, frames] True on masked frames (`masked`); shift: steps ahead (`apc`)."""
    batch, frames, n_mels = x.shape
    stride = model.cfg.frontend_stride if model.frontend is not None else 1
    steps = -(-frames // stride)
    padded = torch.nn.functional.pad(x, (0, 0, 0, steps * stride - frames))
    valid = torch.arange(steps * stride, device=x.device)[None, :] < lengths[:, None]
    if objective == "masked":
        mask = torch.nn.functional.pad(mask, (0, steps * stride - frames))
        out, _ = model.encode(padded.masked_fill(mask[..., None], 0.0), lengths)
        pred = head(out).reshape(batch, -1, n_mels)[:, :steps * stride]
        where = mask & valid
        return (pred - padded).abs().mean(-1)[where].mean()
    out, _ = model.encode(padded, lengths)
    if steps <= shift:
        return (head(out) * 0.0).sum()  # nothing ahead to predict in this batch
    pred = head(out[:, :steps - shift]).reshape(batch, -1, n_mels)
    target, where = padded[:, shift * stride:], valid[:, shift * stride:]
    return (pred - target).abs().mean(-1)[where].mean()


def save_encoder(path: Path, params: Params, n_mels: int, features: dict, state: dict | None, reason: str,
                 metrics: dict) -> None:
    """Writes the encoder file atomically (`state`: the encoder's weights, or None with a `reason`)."""
    content = {"format": FORMAT, "version": FORMAT_VERSION, "cell": params.model, "n_mels": n_mels,
               "encoder": encoder_settings(params.rnn), "features": features,
               "pretrain": dataclasses.asdict(params.pretrain), "state": state, "reason": reason,
               "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Through a file object, as AccentModel.save: torch names the archive inside after the path it is given
    # (here a random temporary name), so two saves of one encoder would differ byte for byte (and dvc.lock)
    with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as fh:
        torch.save(content, fh)


def load_encoder(path: Path, params: Params, features: dict) -> dict:
    """The weights of the encoder file at `path` for a network of `params` (cell, rnn) reading log-mels of
    `features` (the training cache's settings, as a dict); StageError (one line) naming what does not match,
    an encoder file without weights (pretrain.epochs 0, no pool) or a file that is not one."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the pretrain stage first (dvc repro pretrain)") from None
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors of a damaged or foreign file
        raise StageError(f"{path}: not an encoder file of the pretrain stage ({type(exc).__name__}); rebuild it with "
                         "`dvc repro --force pretrain`") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT or content.get("version") != FORMAT_VERSION:
        raise StageError(f"{path}: not an encoder file of this version of the pretrain stage; rebuild it with "
                         "`dvc repro --force pretrain`")
    if content["state"] is None:
        raise StageError(f"{path}: holds no pretrained encoder ({content['reason']}); set pretrain.epochs > 0 with an "
                         "unlabelled pool (data.unlabelled_clips > 0), or train.init: scratch")
    wanted = {"cell": params.model, **{f"rnn.{k}": v for k, v in encoder_settings(params.rnn).items()},
              **{f"features.{k}": v for k, v in features.items() if k not in FEATURES_NOT_COMPARED}}
    stored = {"cell": content["cell"], **{f"rnn.{k}": v for k, v in content["encoder"].items()},
              **{f"features.{k}": v for k, v in content["features"].items() if k not in FEATURES_NOT_COMPARED}}
    differ = [f"{k} {stored.get(k)!r} (train asks for {v!r})" for k, v in wanted.items() if stored.get(k) != v]
    if differ:
        raise StageError(f"{path}: pretrained with other settings than train asks for: {', '.join(differ)}; rerun "
                         "`dvc repro pretrain` with these params, or train.init: scratch")
    state = content["state"]
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise StageError(f"{path}: damaged encoder file (weights that are not finite numbers); rebuild it with "
                         "`dvc repro --force pretrain`")
    return state


def pretrain(params: Params, cache: Path, out: Path, live_dir: Path) -> dict:
    """Pretrains the encoder of `params` (cell `model`, `rnn`) on the cache's unlabelled pool with
    `params.pretrain`, writes it to `out` (`save_encoder`) and returns the stage metrics: objective,
    epochs, clips and speakers of the pool, the last epoch's loss, the encoder's parameters (no seconds: the
    metrics change only when the result does).  With pretrain.epochs 0 it
    writes an encoder file without weights.  StageError (one line) when the pool is empty."""
    cfg = params.pretrain
    if cfg.epochs == 0:
        with open_cache(Path(cache)) as file:
            features = json.loads(file.attrs["features"])
        n_mels = int(features["n_mels"])
        metrics = {"objective": cfg.objective, "epochs": 0, "clips": 0, "speakers": 0}
        save_encoder(out, params, n_mels, features, None, "pretrain.epochs is 0", metrics)
        shutil.rmtree(live_dir, ignore_errors=True)  # no curve: an empty one, not an earlier run's
        (Path(live_dir) / "plots" / "metrics").mkdir(parents=True)
        return metrics
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = select_device(params.runtime.device)
    configure_torch(device, params.runtime.num_threads, deterministic=True)
    data = SplitData(cache, POOL)
    n_mels = data.feature_config.n_mels
    # The classifier's own modules, so the encoder's state_dict keys are those `train` loads; its head is unused.
    model = AccentClassifier(n_mels, 1, params.model, params.rnn).to(device)
    stride = params.rnn.frontend_stride if params.rnn.frontend == "conv" else 1
    head = torch.nn.Linear(params.rnn.hidden_size * (2 if params.rnn.bidirectional else 1), stride * n_mels).to(device)
    trained = [p for name, p in model.named_parameters() if name.startswith(ENCODER_PREFIXES)] + list(head.parameters())
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    batcher = Batcher(data, Normaliser(params.normalise, data.mean, data.std), device)
    draws = no_draws(data.lengths)
    seconds, loss = 0.0, float("nan")
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            model.train()
            batches = bucketed_batches(data.lengths, cfg.batch_size, rng, True)
            total = torch.zeros((), device=device)
            stream = zip(batches, batcher.epoch(draws, batches))
            for host_index, batch in progress(stream, total=len(batches), desc=f"pretrain {epoch}", unit="batch",
                                              leave=False):
                mask = None
                if cfg.objective == "masked":  # drawn on the host from the run's generator: no device read
                    mask = torch.as_tensor(span_mask(draws.length[host_index], batch.features.shape[1],
                                                     cfg.mask_share, cfg.mask_span, rng), device=device)
                step_loss = pretraining_loss(model, head, batch.features, batch.lengths, cfg.objective, mask,
                                             cfg.apc_shift)
                optimizer.zero_grad(set_to_none=True)
                step_loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 5.0)
                optimizer.step()
                total += step_loss.detach() * len(batch.lengths)
            schedule.step()
            seconds += time.perf_counter() - start
            loss = total.item() / len(data)
            if not math.isfinite(loss):
                data.close()
                raise StageError(f"pretraining stopped at epoch {epoch}: the loss is {loss}; lower pretrain.lr (now "
                                 f"{cfg.lr:g}); no encoder was written")
            live.log_metric("loss", loss)
            live.next_step()
            print(f"pretrain epoch {epoch:3d}  {cfg.objective} loss {loss:.4f}", flush=True)
    data.close()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    metrics = {"objective": cfg.objective, "epochs": cfg.epochs, "clips": len(data),
               "speakers": int(len(np.unique(data.speakers))), "loss": round(loss, 4),
               "parameters": sum(v.numel() for v in state.values())}
    save_encoder(out, params, n_mels, dataclasses.asdict(data.feature_config), state, "", metrics)
    print(f"pretrained the {params.model} encoder on {len(data)} unlabelled clips in {seconds:.0f} s "
          f"({cfg.epochs * len(data) / seconds:.0f} clips/s)")
    return metrics
