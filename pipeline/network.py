"""The recurrent accent classifier: one architecture whose cell is LSTM or GRU.

Everything but the cell is shared, so `model=lstm` against `model=gru` compares the cells and
nothing else.  Padding never leaks into a prediction: the conv front-end re-zeroes frames past
each clip's end after every layer, the RNN runs on packed sequences, and every pooling looks only at
real frames ("last" means the last real frame, not the last padded step).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.config import RNNConfig


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[batch, steps] True on real frames."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class ConvFrontend(nn.Module):
    """Strided 1-D convolutions over time: fewer, richer steps for the RNN (stride 4 = 4x fewer).

    One layer of stride 2 per halving (one layer of stride 1 for stride 1), each `kernel` frames wide.
    """

    def __init__(self, n_mels: int, channels: int, stride: int, kernel: int):
        super().__init__()
        n_layers = max(1, int(math.log2(stride)))
        strides = [2] * int(math.log2(stride)) if stride > 1 else [1]
        self.layers = nn.ModuleList(
            nn.Conv1d(n_mels if i == 0 else channels, channels, kernel, stride=s, padding=kernel // 2)
            for i, s in zip(range(n_layers), strides))
        self.activation = nn.GELU()

    @staticmethod
    def _conv_length(conv: nn.Conv1d, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of `conv` for inputs of `lengths` frames (PyTorch's Conv1d formula)."""
        return (lengths + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for conv in self.layers:
            lengths = self._conv_length(conv, lengths)
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.transpose(1, 2)  # [batch, mels, time]
        x = x * valid_mask(lengths.to(x.device), x.shape[-1])[:, None, :].to(x.dtype)
        for conv in self.layers:
            x = self.activation(conv(x))
            lengths = self._conv_length(conv, lengths)
            # Zero what lies past each clip's end, as the next layer's own padding would be.
            x = x * valid_mask(lengths.to(x.device), x.shape[-1])[:, None, :].to(x.dtype)
        return x.transpose(1, 2), lengths


class AccentClassifier(nn.Module):
    def __init__(self, n_mels: int, n_classes: int, cell: str, cfg: RNNConfig):
        super().__init__()
        self.cell, self.cfg = cell, cfg
        self.frontend = ConvFrontend(n_mels, cfg.frontend_channels, cfg.frontend_stride, cfg.frontend_kernel) \
            if cfg.frontend == "conv" else None
        rnn_in = cfg.frontend_channels if self.frontend else n_mels
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]  # config.CELLS
        self.rnn = rnn_cls(rnn_in, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                           bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        width = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.attention = nn.Sequential(nn.Linear(width, width // 2), nn.Tanh(), nn.Linear(width // 2, 1)) \
            if cfg.pooling == "attention" else None
        if cfg.pooling == "stats":
            width *= 2  # mean and standard deviation side by side
        self.pooled_size = width
        layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
        for hidden in cfg.head_hidden:
            layers += [nn.Linear(width, hidden), nn.SiLU(), nn.Dropout(cfg.head_dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, n_mels] padded; lengths: [batch] real frames. Returns logits [batch, classes]."""
        return self.head(self.pool(x, lengths))

    def pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The utterance vector [batch, pooled_size] that the head classifies (and, in training, the
        speaker adversary tries to identify the speaker from)."""
        if self.frontend is not None:
            x, lengths = self.frontend(x, lengths)
        lengths = lengths.cpu().clamp(min=1)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        if self.cfg.pooling == "last":
            h = hidden[0] if isinstance(hidden, tuple) else hidden  # [layers*dirs, batch, hidden]
            # Forward direction's state after the last real frame (+ backward's after the first).
            pooled = torch.cat([h[-2], h[-1]], dim=1) if self.cfg.bidirectional else h[-1]
        else:
            out, _ = pad_packed_sequence(out, batch_first=True)
            mask = valid_mask(lengths.to(out.device), out.shape[1])
            n = lengths.to(out.device, out.dtype)[:, None]
            if self.cfg.pooling == "max":  # a unit that fires on one short segment keeps its peak
                pooled = out.masked_fill(~mask[..., None], float("-inf")).amax(1)
            elif self.cfg.pooling in ("mean", "stats"):
                pooled = (out * mask[..., None]).sum(1) / n
                if self.cfg.pooling == "stats":
                    var = (((out - pooled[:, None]) ** 2) * mask[..., None]).sum(1) / n
                    pooled = torch.cat([pooled, var.clamp_min(1e-6).sqrt()], dim=1)
            else:
                scores = self.attention(out).squeeze(-1).masked_fill(~mask, float("-inf"))
                pooled = (torch.softmax(scores, dim=1)[..., None] * out).sum(1)
        return pooled


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times -strength backward (Ganin & Lempitsky's reversal layer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    return _ReverseGradient.apply(x, strength)


class SpeakerAdversary(nn.Module):
    """Guesses the training speaker from the pooled vector through a gradient-reversal layer: it learns
    to identify speakers, while the reversed gradient pushes the network's pooled vector to carry no
    speaker identity (domain-adversarial training, used for accent and language ID).  Training only:
    it is not part of the model file."""

    def __init__(self, pooled_size: int, n_speakers: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(pooled_size, hidden), nn.ReLU(), nn.Linear(hidden, n_speakers))

    def forward(self, pooled: torch.Tensor, strength: float) -> torch.Tensor:
        return self.net(reverse_gradient(pooled, strength))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
