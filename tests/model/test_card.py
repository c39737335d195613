"""The model card: the YAML header model hubs read, with the figures it was given, and a body that says them."""

import yaml

from acento.model.accent_model import AccentModel
from acento.model.card import model_card, write_card
from tests.helpers import untrained_model

SUMMARY = {"model": "gru", "members": 5, "classes": ["norte", "sur", "mexico"], "version": "0.2.0",
           "pooled_out_of_fold": {"balanced_accuracy": 0.4123, "ci_low": 0.3801, "ci_high": 0.4432,
                                  "speaker_accuracy": 0.6012, "clips": 931, "speakers": 196}}


def test_the_header_holds_the_classes_metrics_and_data_and_the_body_says_them(tmp_path):
    model = AccentModel.load(untrained_model(tmp_path / "m.pt", "gru"))
    text = model_card(SUMMARY, model, "cv-corpus-16.1-2023-12-06")
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["language"] == ["es"] and header["license"] == "mit" and "gru" in header["tags"]
    result = header["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "cv-corpus-16.1-2023-12-06"
    metrics = {m["type"]: m for m in result["metrics"]}
    assert metrics["balanced_accuracy"]["value"] == 0.4123 and "0.3801-0.4432" in metrics["balanced_accuracy"]["name"]
    assert metrics["accuracy"]["value"] == 0.6012
    body = text.split("---\n", 2)[2]
    assert "**0.412**" in body and "[0.380, 0.443]" in body and "chance is 0.333" in body
    assert "`norte`, `sur`, `mexico`" in body and "5 GRU networks" in body and "Not for decisions about people" in body
    assert f"{model.features.n_mels} log-mel" in body


def test_the_card_is_written_whole(tmp_path):
    model = AccentModel.load(untrained_model(tmp_path / "m.pt"))
    write_card(tmp_path / "final.md", SUMMARY, model, "sample")
    assert (tmp_path / "final.md").read_text() == model_card(SUMMARY, model, "sample")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".md"] == ["final.md"]
