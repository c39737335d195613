import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from acento.config import NormaliseConfig
from acento.model.accent_model import AccentModel, ModelFileError
from acento.model.network import (
    AccentClassifier,
    ConvFrontend,
    recurrent_path,
    reversal_index,
    run_packed,
    run_padded,
)
from acento.model.presets import PRESETS
from acento.model.inputs import Normaliser
from tests.helpers import params

SMALL = dataclasses.replace(params().rnn, hidden_size=16, num_layers=2, bidirectional=True, dropout=0.0,
                            frontend="conv", frontend_channels=8, frontend_stride=4, pooling="attention",
                            head_hidden=[], head_dropout=0.0)


def model(cell="gru", **changes):
    torch.manual_seed(0)
    return AccentClassifier(n_mels=10, n_classes=3, cell=cell, cfg=dataclasses.replace(SMALL, **changes)).eval()


@pytest.mark.parametrize("path", ["packed", "padded"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention", "stats", "max"])
@pytest.mark.parametrize("frontend, bidirectional", [("none", False), ("none", True), ("conv", True)])
def test_padding_changes_nothing(cell, pooling, frontend, bidirectional, path):
    m = model(cell, pooling=pooling, frontend=frontend, bidirectional=bidirectional)
    m.recurrent_path = path
    short = torch.randn(1, 23, 10)
    alone = m(short, torch.tensor([23]))
    padded = torch.cat([short, torch.randn(1, 17, 10) * 100], dim=1)  # garbage, not zeros, past the end
    other = torch.randn(1, 40, 10)
    batched = m(torch.cat([padded, other]), torch.tensor([23, 40]))
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [3, 5, 9])
@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_conv_frontend_lengths(stride, kernel):
    front = ConvFrontend(n_mels=10, channels=4, stride=stride, kernel=kernel)
    lengths = torch.tensor([1, 5, 8, 100, 101])
    out, out_lengths = front(torch.randn(5, 101, 10), lengths)
    assert out.shape[1] == out_lengths.max()
    assert out_lengths.tolist() == [-(-n // stride) for n in lengths.tolist()]
    assert torch.equal(front.out_lengths(lengths), out_lengths)


def test_last_pooling_means_the_last_real_frame_for_a_unidirectional_rnn():
    m = model("lstm", pooling="last", frontend="none", bidirectional=False, num_layers=1)
    x = torch.randn(2, 30, 10)
    out, _ = m.rnn(x[:1, :12])
    expected = m.head(out[:, -1])
    torch.testing.assert_close(m(x, torch.tensor([12, 30]))[:1], expected)


def test_presets_reproduce_the_original_models():
    basic = AccentClassifier(64, 15, "lstm", dataclasses.replace(SMALL, **PRESETS["basic"]))
    assert basic.rnn.hidden_size == 313 and basic.rnn.num_layers == 1 and len(basic.head) == 2
    advanced = AccentClassifier(64, 15, "gru", dataclasses.replace(SMALL, **PRESETS["advanced"]))
    linears = [layer for layer in advanced.head if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(313, 156), (156, 78), (78, 15)]
    assert advanced.rnn.dropout == 0.4 and isinstance(advanced.rnn, torch.nn.GRU)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    m = model("lstm")
    path = tmp_path / "model.pt"
    features = dataclasses.replace(params().features, n_mels=10)
    normaliser = Normaliser(NormaliseConfig(True, True, False), np.arange(10, dtype=np.float32),
                            np.full(10, 2.0, np.float32))
    AccentModel(m, ["a", "b", "c"], features, normaliser).save(path)
    loaded = AccentModel.load(path)
    assert loaded.classes == ["a", "b", "c"] and loaded.cell == "lstm" and loaded.features == features
    assert loaded.normaliser.cfg == normaliser.cfg and loaded.normaliser.std.tolist() == [2.0] * 10
    assert loaded.normaliser.mean.tolist() == list(range(10))
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(2, 50, 10)
    torch.testing.assert_close(loaded.network(x, torch.tensor([50, 31])), m(x, torch.tensor([50, 31])))


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="not an acento model file"):
        AccentModel.load(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="no 'acento-model' marker"):
        AccentModel.load(tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="no such model file"):
        AccentModel.load(tmp_path / "missing.pt")


def test_max_pooling_is_each_units_peak_over_real_frames():
    m = model("gru", pooling="max", frontend="none", bidirectional=True, num_layers=1)
    x = torch.randn(1, 12, 10)
    out, _ = m.rnn(x)  # the clip alone: every frame real
    padded = torch.cat([x, torch.full((1, 8, 10), 50.0)], dim=1)
    with torch.no_grad():
        pooled = m.pool(torch.cat([padded, torch.randn(1, 20, 10)]), torch.tensor([12, 20]))
    torch.testing.assert_close(pooled[0], out[0].amax(0), rtol=1e-5, atol=1e-5)
    assert m.pooled_size == 2 * 16


def test_reversal_index_reverses_each_clip_within_its_length():
    index = reversal_index(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]


def test_recurrent_path_is_padded_on_every_device():
    """Dense input on the CPU (oneDNN) and on CUDA (cuDNN's persistent kernel takes no packed sequence)."""
    assert recurrent_path(torch.device("cpu")) == "padded"
    assert recurrent_path(torch.device("cuda")) == "padded"
    assert model().recurrent_path is None  # the device decides unless a caller forces a path


def forward_backward(m, x, lengths, path):
    """Pooled vector and the gradients of a fixed linear function of it (every parameter and the input)."""
    m.recurrent_path = path
    m.zero_grad()
    x = x.clone().requires_grad_(True)
    pooled = m.pool(x, lengths)
    (pooled * torch.linspace(-1, 1, pooled.numel()).reshape(pooled.shape)).sum().backward()
    grads = {name: p.grad.clone() for name, p in m.named_parameters() if p.grad is not None}
    return pooled.detach(), grads, x.grad


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention", "stats", "max"])
def test_padded_run_equals_the_packed_run_with_gradients(cell, num_layers, bidirectional, pooling):
    m = model(cell, pooling=pooling, frontend="none", num_layers=num_layers, bidirectional=bidirectional).train()
    lengths = torch.tensor([7, 19, 1, 12])
    padding = ~valid_mask_3d(lengths, 23).expand(4, 23, 10)
    x = torch.randn(4, 23, 10)
    x[padding] *= 30  # garbage, not zeros, past each end
    packed, packed_grads, packed_x = forward_backward(m, x, lengths, "packed")
    padded, padded_grads, padded_x = forward_backward(m, x, lengths, "padded")
    torch.testing.assert_close(padded, packed, rtol=1e-5, atol=1e-5)
    assert padded_grads.keys() == packed_grads.keys() and any("reverse" in k for k in packed_grads) == bidirectional
    for name in packed_grads:
        torch.testing.assert_close(padded_grads[name], packed_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(padded_x, packed_x, rtol=1e-4, atol=1e-5)
    assert padded_x[padding].abs().max() == 0  # padding gets no gradient


def valid_mask_3d(lengths, steps):
    return (torch.arange(steps)[None, :] < lengths[:, None])[..., None]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_run_drops_out_between_layers_in_training_only(cell):
    # dropout 1 zeroes the second layer's input in training, as nn.LSTM/GRU do: a known answer
    m = model(cell, pooling="mean", frontend="none", num_layers=2, bidirectional=True)
    m.rnn.dropout = 1.0
    x, lengths = torch.randn(3, 15, 10), torch.tensor([15, 4, 9])
    m.train()
    padded, _, _ = forward_backward(m, x, lengths, "padded")
    packed, _, _ = forward_backward(m, x, lengths, "packed")
    torch.testing.assert_close(padded, packed, rtol=1e-5, atol=1e-5)
    m.eval()
    evaluated, _, _ = forward_backward(m, x, lengths, "padded")
    assert not torch.allclose(evaluated, padded, atol=1e-3)
    m.rnn.dropout = 0.0
    torch.testing.assert_close(forward_backward(m, x, lengths, "packed")[0], evaluated, rtol=1e-5, atol=1e-5)


def test_padded_run_keeps_the_modules_state_dict_keys():
    m = model("lstm", num_layers=2, bidirectional=True)
    plain = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    assert [k for k in m.state_dict() if k.startswith("rnn.")] == [f"rnn.{k}" for k in plain.state_dict()]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_run_gives_the_packed_runs_output_zeros_past_each_end(cell):
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](6, 5, num_layers=2, bidirectional=True,
                                                            batch_first=True)
    x, lengths = torch.randn(3, 11, 6), torch.tensor([4, 9, 2])  # padded beyond the longest clip too
    padded = run_padded(rnn, x, lengths)
    assert padded.shape == (3, 9, 10)
    torch.testing.assert_close(padded, run_packed(rnn, x, lengths), rtol=1e-5, atol=1e-6)
    assert padded[0, 4:].abs().max() == 0 and padded[2, 2:].abs().max() == 0


@pytest.mark.parametrize("path", ["packed", "padded"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_last_pooling_is_each_directions_final_state(cell, path):
    # forward state after the last real frame, backward state after reading back to frame 0: torch's h_n
    m = model(cell, pooling="last", frontend="none", bidirectional=True, num_layers=2)
    m.recurrent_path = path
    x, lengths = torch.randn(3, 20, 10), torch.tensor([20, 6, 13])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    h = m.rnn(packed)[1]
    h = h[0] if cell == "lstm" else h
    with torch.no_grad():
        torch.testing.assert_close(m.pool(x, lengths), torch.cat([h[-2], h[-1]], dim=1), rtol=1e-5, atol=1e-6)
