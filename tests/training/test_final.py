"""The deployable model: one network per fold, written as one ensemble that predict, serve and score load."""

import json
import os

import pytest

from acento.apps.options import deployed_model
from acento.paths import FINAL_MODEL, MODEL_FILE

pytestmark = pytest.mark.e2e  # trains on the bundled sample (tiny networks, one epoch: about a minute)


def test_final_model_is_an_ensemble_of_every_fold_and_its_report_pools_every_speaker(tmp_path, sample_clips):
    from acento.model.accent_model import AccentModel
    from acento.training.final import main

    out, report = tmp_path / "final.pt", tmp_path / "final.json"
    assert main(["--set", "train.epochs=1", "rnn.hidden_size=8", "rnn.num_layers=1", "rnn.frontend_channels=8",
                 "data.folds=3", "--out", str(out), "--report", str(report), "--cache-dir", str(tmp_path)]) == 0
    model = AccentModel.load(out)
    assert len(model.members) == 3 and model.cell == "lstm"
    summary = json.loads(report.read_text())
    folds = [f["fold"] for f in summary["folds"]]
    assert folds == [0, 1, 2] and summary["members"] == 3
    # every labelled speaker of the sample is in exactly one test fold (196 speakers, as prepare keeps them)
    assert summary["pooled_out_of_fold"]["speakers"] == 196
    assert 0.0 < summary["pooled_out_of_fold"]["balanced_accuracy"] < 1.0
    assert model.classify(sample_clips[0]).label in model.classes
    # the model card beside it carries the report's figures in the header model hubs read
    import yaml

    header = yaml.safe_load((tmp_path / "final.md").read_text().split("---\n")[1])
    metric = header["model-index"][0]["results"][0]["metrics"][0]
    assert metric["value"] == summary["pooled_out_of_fold"]["balanced_accuracy"]


def test_bad_overrides_and_single_split_are_one_line_errors(tmp_path, capsys):
    from acento.training.final import main

    assert main(["--set", "data.folds=1", "--out", str(tmp_path / "f.pt")]) == 2
    assert "data.folds is 1" in capsys.readouterr().err
    assert main(["--set", "rnn.pooling=median", "--out", str(tmp_path / "f.pt")]) == 2
    assert "rnn.pooling" in capsys.readouterr().err
    assert main(["--set", "model", "--out", str(tmp_path / "f.pt")]) == 2
    assert capsys.readouterr().err.strip() == "error: --set takes KEY=VALUE pairs, got 'model'"
    assert not (tmp_path / "f.pt").exists()


def test_predict_serve_and_score_use_the_final_model_once_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert deployed_model() == MODEL_FILE
    FINAL_MODEL.parent.mkdir(parents=True)
    FINAL_MODEL.write_bytes(b"")
    assert deployed_model() == FINAL_MODEL
    os.remove(FINAL_MODEL)
