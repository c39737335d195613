"""acento-export: the ONNX graph gives PyTorch's probabilities on real clips, for one network and an ensemble."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest

from acento.apps.export import main
from acento.model.accent_model import AccentModel
from tests.helpers import untrained_model


def onnx_probs(path, model, clips):
    feats = [model.log_mel.from_file(c) for c in clips]
    lengths = np.array([len(f) for f in feats], np.int64)
    batch = np.full((len(feats), lengths.max(), feats[0].shape[1]), 7.0, np.float32)  # padding of any value
    for i, f in enumerate(feats):
        batch[i, :len(f)] = f
    session = onnxruntime.InferenceSession(str(path))
    return session.run(None, {"log_mels": batch, "lengths": lengths})[0], model.predict_log_mels(feats)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_exported_model_gives_pytorchs_probabilities_on_real_clips(cell, tmp_path, sample_clips, capsys):
    model_file = untrained_model(tmp_path / "m.pt", cell, seed=3)
    assert main(["--model-file", str(model_file)]) == 0
    out = tmp_path / "m.onnx"
    model = AccentModel.load(model_file)
    probs, want = onnx_probs(out, model, sample_clips[:7])  # 7 clips of several lengths, batch 7 (exported at 2)
    np.testing.assert_allclose(probs, want, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == model.classes and meta["cell"] == cell
    assert json.loads(meta["features"])["n_mels"] == model.features.n_mels and meta["source_sha256"] == model.sha256


def test_an_ensemble_exports_as_the_mean_of_its_members(trained_model, tmp_path, sample_clips):
    members = [AccentModel.load(untrained_model(tmp_path / f"m{seed}.pt", "lstm", seed=seed)) for seed in (1, 2)]
    AccentModel.ensemble(members).save(tmp_path / "ens.pt")
    assert main(["--model-file", str(tmp_path / "ens.pt"), "--out", str(tmp_path / "ens.onnx")]) == 0
    probs, want = onnx_probs(tmp_path / "ens.onnx", AccentModel.load(tmp_path / "ens.pt"), sample_clips[:4])
    np.testing.assert_allclose(probs, want, atol=1e-4)
    for member in members:  # the mean of both, not either one
        assert not np.allclose(probs, member.predict_log_mels([member.log_mel.from_file(c) for c in sample_clips[:4]]),
                               atol=1e-4)


def test_a_file_that_is_not_a_model_is_one_line(tmp_path, capsys):
    (tmp_path / "fake.pt").write_bytes(b"not a model")
    assert main(["--model-file", str(tmp_path / "fake.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not an acento model file" in err
    assert not (tmp_path / "fake.onnx").exists()
