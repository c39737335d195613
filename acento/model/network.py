"""The recurrent accent classifier: one architecture whose cell is LSTM or GRU.

Everything but the cell is shared, so `model=lstm` against `model=gru` compares the cells and
nothing else.  Padding never leaks into a prediction: the conv front-end re-zeroes frames past
each clip's end after every layer, the RNN's backward direction starts at each clip's last real
frame (packed sequences, or the exact padded run of `run_padded`), and every pooling looks only at
real frames ("last" means the last real frame, not the last padded step).
"""

from __future__ import annotations

import math

import torch
from torch import _VF, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from acento.config import RNNConfig


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[batch, steps] True on real frames."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def recurrent_path(device: torch.device) -> str:
    """How the recurrent layers run on `device`: the one place this is decided.  "padded" everywhere.

    On the CPU, PyTorch's LSTM runs on oneDNN kernels only for dense input, and the CPU GRU's dense path
    is faster too; a packed sequence falls to a slower path (bench/results.md "recurrent": default network
    2.2x the clips/s for the LSTM, 1.2x for the GRU).  On CUDA, cuDNN's persistent kernel (the fast one
    for small hidden sizes) runs only on dense input, never on a `PackedSequence`
    (aten/src/ATen/native/cudnn/RNN.cpp, `get_algo`); training batches are length-bucketed, so padding
    is small.  `run_padded` computes exactly what packed sequences would."""
    return "padded"


def run_packed(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference path: `rnn` (batch_first) over packed sequences.

    x: [batch, steps, features] padded; lengths: [batch] real steps, each in 1..steps.
    Returns [batch, max(lengths), directions * hidden], zeros past each clip's end."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True)
    return out


def reversal_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[batch, steps] time index that reverses each clip within its length and leaves the steps
    past its end in place; applied twice it is the identity."""
    t = torch.arange(steps, device=lengths.device)[None, :]
    last = lengths[:, None] - 1
    return torch.where(t <= last, last - t, t)


def _reverse(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))


def run_padded(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`rnn` over the dense padded batch, exactly as over packed sequences (`run_packed`), so that
    the CPU's fast dense kernels run (oneDNN for the LSTM).

    Layer by layer and direction by direction, with the module's own weights (`weight_ih_l{k}`,
    `weight_ih_l{k}_reverse`, ...; its state_dict is unchanged) through `torch._VF.lstm`/`gru`, the
    kernels `nn.LSTM`/`nn.GRU` themselves call.  The forward direction is exact as it is: padding
    trails, and what it computes past a clip's end is discarded.  The backward direction reads each
    clip reversed within its length (`reversal_index`), so it starts at the clip's last real frame;
    its output is reversed back.  Dropout between layers as `nn.LSTM` applies it (training only,
    on each layer's output but the last's).

    x: [batch, steps, features] padded; lengths: [batch] real steps, each in 1..steps.
    Returns [batch, max(lengths), directions * hidden], zeros past each clip's end."""
    if getattr(rnn, "proj_size", 0):
        raise ValueError("run_padded: LSTM projections (proj_size > 0) are not supported; use run_packed")
    if lengths.device.type == "cpu" and not torch.onnx.is_in_onnx_export():
        x = x[:, :int(lengths.max())]  # trimming wider padding costs no host round trip here (an export
        # must not: the trace would keep this batch's width)
    lengths = lengths.to(x.device)
    batch, steps = x.shape[:2]
    index = reversal_index(lengths, steps)
    kernel = _VF.lstm if isinstance(rnn, nn.LSTM) else _VF.gru
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout > 0 and rnn.training:
            x = nn.functional.dropout(x, rnn.dropout, training=True)
        outputs = []
        for suffix in ("", "_reverse")[:2 if rnn.bidirectional else 1]:
            weights = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in names]
            h0 = x.new_zeros(1, batch, rnn.hidden_size)
            hx = (h0, h0) if isinstance(rnn, nn.LSTM) else h0
            if suffix:
                out = _reverse(kernel(_reverse(x, index), hx, weights, rnn.bias, 1, 0.0, rnn.training, False,
                                      True)[0], index)
            else:
                out = kernel(x, hx, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
            outputs.append(out)
        x = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    return x * valid_mask(lengths, steps)[..., None].to(x.dtype)


RECURRENT_PATHS = {"packed": run_packed, "padded": run_padded}


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
        # None: `recurrent_path` of the input's device decides; "packed"/"padded" force one (tests, bench).
        self.recurrent_path: str | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, n_mels] padded; lengths: [batch] real frames. Returns logits [batch, classes]."""
        return self.head(self.pool(x, lengths))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder (conv front-end and RNN, the part `pretrain` trains): x [batch, time, n_mels] padded,
        lengths [batch] real frames -> ([batch, steps, directions * hidden], zeros past each clip's end;
        [batch] real steps), steps = ceil(time / frontend_stride)."""
        if self.frontend is not None:
            x, lengths = self.frontend(x, lengths)
        lengths = lengths.to(x.device).clamp(min=1)
        return RECURRENT_PATHS[self.recurrent_path or recurrent_path(x.device)](self.rnn, x, lengths), lengths

    def pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The utterance vector [batch, pooled_size] that the head classifies (and, in training, the
        speaker adversary tries to identify the speaker from)."""
        out, lengths = self.encode(x, lengths)
        if self.cfg.pooling == "last":
            # The forward direction's state at the last real frame (+ the backward's at the first).
            pooled = out[torch.arange(len(out), device=out.device), lengths - 1]
            if self.cfg.bidirectional:
                hidden = self.cfg.hidden_size
                pooled = torch.cat([pooled[:, :hidden], out[:, 0, hidden:]], dim=1)
        else:
            mask = valid_mask(lengths, out.shape[1])
            n = lengths.to(out.dtype)[:, None]
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


ENCODER_PREFIXES = ("frontend.", "rnn.")  # the state_dict keys of `AccentClassifier.encode`'s modules


def encoder_settings(cfg: RNNConfig) -> dict:
    """The rnn settings that shape the encoder's weights (not dropout, pooling or the head)."""
    return {k: getattr(cfg, k) for k in ("hidden_size", "num_layers", "bidirectional", "frontend",
                                         "frontend_channels", "frontend_stride", "frontend_kernel")}


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
