"""Stage `evaluate` on the small cache: metrics and confusion rows through dvclive, predictions, image."""

import json

import pandas as pd

from acento.evaluation.metrics import classification_metrics
from acento.features.cache import SplitData
from acento.model.accent_model import AccentModel
from pipeline.evaluate import main
from tests.helpers import params_file


def test_evaluate_writes_what_dvc_metrics_and_plots_read(cache, trained_model, tmp_path, capsys):
    out = {name: tmp_path / "metrics" / name for name in ("eval.json", "confusion.json", "predictions.csv",
                                                          "confusion.png")}
    code = main(["--params", str(params_file(tmp_path, **{"runtime.num_threads": 1})), "--model-file",
                 str(trained_model), "--cache", str(cache), "--metrics", str(out["eval.json"]),
                 "--confusion", str(out["confusion.json"]), "--predictions", str(out["predictions.csv"]),
                 "--png", str(out["confusion.png"])])
    assert code == 0, capsys.readouterr().err
    with SplitData(cache, "test") as test:
        probs = AccentModel.load(trained_model).predict_split(test)
        expected, _ = classification_metrics(test.labels, probs, test.speakers, test.classes)
        actual = [test.classes[i] for i in test.labels]
        predicted = [test.classes[i] for i in probs.argmax(1)]
        clips = list(test.clips)
    metrics = json.loads(out["eval.json"].read_text())
    # the summary dvclive wrote: every metric of classification_metrics, nested ones too, and the model's
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["model"] == "lstm" and metrics["params"] > 0 and "step" not in metrics
    # dvclive's confusion_matrix rows, one per test clip, in the cache's order
    assert json.loads(out["confusion.json"].read_text()) == [{"actual": a, "predicted": p}
                                                              for a, p in zip(actual, predicted)]
    rows = pd.read_csv(out["predictions.csv"])
    assert rows["clip"].tolist() == sorted(clips) and set(rows.columns) >= {"p_high", "p_low", "speaker"}
    assert out["confusion.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out["eval.json"].parent.iterdir()) == sorted(out)  # no scratch left behind


def test_a_model_of_other_classes_is_refused(cache, tmp_path, capsys):
    from tests.helpers import untrained_model

    model = untrained_model(tmp_path / "seven.pt")
    code = main(["--params", str(params_file(tmp_path)), "--model-file", str(model), "--cache", str(cache),
                 "--metrics", str(tmp_path / "eval.json")])
    err = capsys.readouterr().err
    assert code == 2 and "trained on classes ['andino'" in err and "retrain (dvc repro) or use the matching model" in err
    assert not (tmp_path / "eval.json").exists()


def test_a_missing_model_file_is_one_line(cache, tmp_path, capsys):
    code = main(["--params", str(params_file(tmp_path)), "--model-file", str(tmp_path / "missing.pt"),
                 "--cache", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "no such model file" in err and len(err.splitlines()) == 1
