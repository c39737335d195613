import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.cache import SplitData
from pipeline.model import AccentModel
from pipeline.predict import main as predict_main
from tests.helpers import ROOT, tone

HEAVY = ("librosa", "scipy", "numba", "pandas", "h5py", "sklearn", "matplotlib", "dvclive")


def run(capsys, *argv):
    code = predict_main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_probabilities_sum_to_one_and_labels_agree_with_evaluate(cache, trained_model, capsys):
    with SplitData(cache, "test") as test:
        probs = AccentModel.load(trained_model, batch_size=8).predict_split(test)
    files = [cache.parent / clip for clip in test.clips]
    code, out, _ = run(capsys, "--model", trained_model, "--json", *files)
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in results] == [str(f) for f in files]
    for result, expected in zip(results, probs):
        assert sum(result["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert result["label"] == test.classes[int(expected.argmax())]
        # the cache stores float16 features; predict computes float32 ones
        assert list(result["probs"].values()) == pytest.approx(expected.tolist(), abs=0.02)


def test_bad_files_are_reported_while_others_succeed(cache, trained_model, tmp_path, capsys):
    (tmp_path / "corrupt.mp3").write_bytes(b"\xff\xfb" + b"garbage" * 100)
    stereo = tmp_path / "stereo32k.wav"
    sf.write(stereo, tone(1.0, rate=32000, channels=2), 32000)
    code, out, err = run(capsys, "--model", trained_model, "--json", stereo, tmp_path / "corrupt.mp3",
                         tmp_path / "missing.flac")
    results = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "2 of 3 file(s) could not be classified" in err
    assert results[0]["file"] == str(stereo) and results[0]["label"] in ("high", "low")
    assert results[1]["error"].startswith("unreadable_audio") and results[2]["error"].startswith("missing_file")


def test_table_with_top_k_and_folders(cache, trained_model, tmp_path, capsys):
    for i in range(12):  # enough files for the decoding process pool
        sf.write(tmp_path / f"clip{i}.flac", tone(0.8, rate=44100, freq=300 + 40 * i, seed=i), 44100)
    (tmp_path / "notes.txt").write_text("not audio, not listed")
    code, out, _ = run(capsys, "--model", trained_model, "--top", 1, "--workers", 2, tmp_path)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "file\tlabel\tprobabilities" and len(lines) == 13
    label, probs = lines[1].split("\t")[1:]
    assert probs.startswith(label) and len(probs.split("  ")) == 1


def test_non_model_file_is_refused(tmp_path, capsys):
    (tmp_path / "fake.pt").write_bytes(np.arange(10).tobytes())
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, rate=16000), 16000)
    code, _, err = run(capsys, "--model", tmp_path / "fake.pt", wav)
    assert code == 2 and err.startswith("error: ") and "not an acento model file" in err


def test_predicting_imports_only_what_it_needs_and_no_stage_imports_librosa():
    """A one-clip `acento-predict` should cost little more than importing torch: none of the stage-only
    libraries, and no librosa or scipy anywhere (the features stage computes log-mels as predict does)."""
    code = ("import json, sys; import pipeline.predict; a = set(sys.modules); import pipeline.serve; "
            "b = set(sys.modules); import pipeline.features; print(json.dumps([sorted(a), sorted(b), sorted(sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    predict, serve, features = (set(m.split(".")[0] for m in mods) for mods in json.loads(out))
    assert "torch" in predict and not predict & set(HEAVY)
    assert "fastapi" in serve and not serve & set(HEAVY)
    assert "pandas" in features and not features & {"librosa", "scipy", "numba"}
