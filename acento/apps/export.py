"""acento-export: a model file as ONNX, for runtimes without PyTorch (onnxruntime, ONNX-based servers).

The graph takes log-mels as `acento.audio.logmel.LogMel` computes them and returns class probabilities:

    inputs   log_mels  float32 [batch, frames, n_mels]  padded with anything past each clip's length
             lengths   int64   [batch]                  real frames of each clip (>= 1)
    output   probs     float32 [batch, classes]         the members' mean probability (one member: its own)

Normalisation is inside the graph (each member's training statistics and per-utterance settings, over each
clip's real frames), so a caller only computes log-mels.  Batch and frames are dynamic axes.  The file's
metadata (`metadata_props`) carries the class names, the feature settings, the cell and the source model
file's sha256, so the file is usable alone.  Needs the `export` extra (onnx, onnxscript).

  acento-export                              # models/final.pt (else models/model.pt) -> .onnx beside it
  acento-export --model-file m.pt --out m.onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch import nn

from acento.apps.options import add_model_file_option
from acento.files import atomic_path
from acento.model.accent_model import AccentModel, ModelFileError

OPSET = 17


class Normalise(nn.Module):
    """`acento.model.inputs.Normaliser` over a padded batch: [batch, frames, n_mels] with `lengths`."""

    def __init__(self, normaliser):
        super().__init__()
        self.cfg = normaliser.cfg
        self.register_buffer("mean", torch.as_tensor(normaliser.mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(normaliser.std, dtype=torch.float32))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[1], device=x.device)
        valid = (steps[None, :] < lengths[:, None]).to(x.dtype)[..., None]
        n = lengths.clamp(min=1).to(x.dtype)[:, None, None]
        if self.cfg.global_stats:
            x = (x - self.mean) / self.std
        if self.cfg.utterance_mean:
            x = x - (x * valid).sum(1, keepdim=True) / n
        if self.cfg.utterance_std:
            centred = x - (x * valid).sum(1, keepdim=True) / n
            x = x / ((centred ** 2 * valid).sum(1, keepdim=True) / n).sqrt().clamp_min(1e-5)
        return x * valid


class Exported(nn.Module):
    """The model as one graph: normalise, classify, softmax, mean over members."""

    def __init__(self, model: AccentModel):
        super().__init__()
        self.networks = nn.ModuleList(net.cpu().eval() for net, _ in model.members)
        self.normalise = nn.ModuleList(Normalise(norm) for _, norm in model.members)
        for net in self.networks:
            net.recurrent_path = "padded"

    def forward(self, log_mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(net(norm(log_mels, lengths), lengths), dim=1)
                 for net, norm in zip(self.networks, self.normalise)]
        return torch.stack(probs).mean(0)


def export(model: AccentModel, out: Path) -> None:
    """Writes `model` to `out` as ONNX (atomically), with its classes and settings as metadata."""
    import onnx

    graph = Exported(model).eval()
    example = (torch.randn(2, 120, model.features.n_mels), torch.tensor([120, 80]))
    with atomic_path(out, suffix=".onnx") as tmp, torch.no_grad():
        torch.onnx.export(graph, example, str(tmp), input_names=["log_mels", "lengths"], output_names=["probs"],
                          dynamic_axes={"log_mels": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                        "probs": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        proto = onnx.load(str(tmp))
        meta = {"classes": json.dumps(model.classes), "features": json.dumps(dataclasses.asdict(model.features)),
                "cell": model.cell, "members": str(len(model.members)), "source_sha256": model.sha256,
                "inputs": "log_mels float32 [batch, frames, n_mels] (acento LogMel), lengths int64 [batch]",
                "output": "probs float32 [batch, classes], in the order of `classes`"}
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acento-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_file_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="ONNX file to write (default: the model file's "
                                                                "path with .onnx)")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError as exc:
        print(f"error: acento-export needs {exc.name}: pip install 'acento[export]'", file=sys.stderr)
        return 2
    try:
        model = AccentModel.load(args.model_file)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(args.model_file).with_suffix(".onnx")
    export(model, out)
    print(f"{args.model_file} ({model.cell}, {len(model.members)} network(s), {len(model.classes)} classes) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
