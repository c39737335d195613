import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from pipeline.config import PRESETS, NormaliseConfig
from pipeline.data import Normaliser
from pipeline.model import AccentModel, ModelFileError
from pipeline.network import AccentClassifier, ConvFrontend
from tests.helpers import params

SMALL = dataclasses.replace(params().rnn, hidden_size=16, num_layers=2, bidirectional=True, dropout=0.0,
                            frontend="conv", frontend_channels=8, frontend_stride=4, pooling="attention",
                            head_hidden=[], head_dropout=0.0)


def model(cell="gru", **changes):
    torch.manual_seed(0)
    return AccentClassifier(n_mels=10, n_classes=3, cell=cell, cfg=dataclasses.replace(SMALL, **changes)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention", "stats", "max"])
@pytest.mark.parametrize("frontend, bidirectional", [("none", False), ("none", True), ("conv", True)])
def test_padding_changes_nothing(cell, pooling, frontend, bidirectional):
    m = model(cell, pooling=pooling, frontend=frontend, bidirectional=bidirectional)
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
