"""The model object: files, waveforms and log-mels give the same answers, in input order."""

import numpy as np
import pytest

from acento.audio.decode import AudioError, load_audio
from acento.model.accent_model import AccentModel, Prediction
from tests.helpers import untrained_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return AccentModel.load(untrained_model(tmp_path_factory.mktemp("m") / "m.pt"), batch_size=2)


def test_files_in_chunks_get_each_clips_own_answer_in_order(model, sample_clips, tmp_path):
    (tmp_path / "corrupt.mp3").write_bytes(b"\xff\xfb" + b"garbage" * 100)
    files = sample_clips[:5] + [tmp_path / "corrupt.mp3"] + sample_clips[5:]  # 2 clips a batch: 2 chunks of 8
    results = list(model.classify_files(files))
    assert [path for path, _ in results] == files
    assert isinstance(results[5][1], AudioError) and results[5][1].reason == "unreadable_audio"
    alone = [model.predict_audio(load_audio(f, model.features.sample_rate)) for f in sample_clips]
    got = [np.array(list(r.probs.values())) for _, r in results if isinstance(r, Prediction)]
    np.testing.assert_allclose(np.stack(got), np.stack(alone), atol=1e-5)
    # the clips' answers differ from each other, so a clip given another's answer would be caught
    spread = np.abs(np.stack(alone)[:, None] - np.stack(alone)[None]).max(-1)
    assert (spread + np.eye(len(alone)) > 1e-3).all()
    assert all(r.label == max(r.probs, key=r.probs.get) and list(r.probs) == model.classes
               for _, r in results if isinstance(r, Prediction))


def test_classify_batch_raises_for_the_first_unusable_file(model, sample_clips, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert model.classify_batch([sample_clips[0]]) == [model.classify(sample_clips[0])]
    with pytest.raises(AudioError, match="empty.wav"):
        model.classify_batch([sample_clips[0], tmp_path / "empty.wav"])


def test_a_saved_model_loads_back_to_the_same_answers(model, sample_clips, tmp_path):
    model.save(tmp_path / "again.pt")
    again = AccentModel.load(tmp_path / "again.pt")
    assert again.checkpoint().keys() == model.checkpoint().keys() and again.sha256 != ""
    assert again.classify(sample_clips[0]) == model.classify(sample_clips[0])
    about = model.describe()
    assert (about["model"], about["classes"], about["features"]["n_mels"], about["rnn"]["hidden_size"]) == \
        ("lstm", ["andino", "caribe", "chileno", "mexico", "norte", "rioplatense", "sur"], 64, 8)


def test_an_ensemble_averages_its_members_and_saves_and_loads_as_one_file(sample_clips, tmp_path):
    from acento.model.accent_model import ModelFileError

    a, b = (AccentModel.load(untrained_model(tmp_path / f"{n}.pt", seed=seed)) for n, seed in (("a", 1), ("b", 2)))
    both = AccentModel.ensemble([a, b])
    clip = load_audio(sample_clips[0], a.features.sample_rate)
    pa, pb = a.predict_audio(clip), b.predict_audio(clip)
    assert np.abs(pa - pb).max() > 1e-3  # two different members
    np.testing.assert_allclose(both.predict_audio(clip), (pa + pb) / 2, atol=1e-6)
    both.save(tmp_path / "both.pt")
    again = AccentModel.load(tmp_path / "both.pt")
    assert len(again.members) == 2 and again.describe()["members"] == 2
    np.testing.assert_allclose(again.predict_audio(clip), (pa + pb) / 2, atol=1e-6)
    assert again.classify(sample_clips[0]).label == a.classes[int(np.argmax(pa + pb))]
    gru = AccentModel.load(untrained_model(tmp_path / "g.pt", cell="gru"))
    with pytest.raises(ModelFileError, match="another cell"):
        AccentModel.ensemble([a, gru])


def test_an_ensemble_file_without_members_is_reported(tmp_path):
    import torch

    from acento.model.accent_model import ENSEMBLE_VERSION, FORMAT, ModelFileError

    torch.save({"format": FORMAT, "version": ENSEMBLE_VERSION, "members": []}, tmp_path / "e.pt")
    with pytest.raises(ModelFileError, match="without members"):
        AccentModel.load(tmp_path / "e.pt")
    torch.save({"format": FORMAT, "version": ENSEMBLE_VERSION, "members": [{"model": "lstm"}]}, tmp_path / "e.pt")
    with pytest.raises(ModelFileError, match="without n_mels"):
        AccentModel.load(tmp_path / "e.pt")


def test_the_same_model_saved_twice_gives_the_same_bytes(model, tmp_path):
    model.save(tmp_path / "a.pt")
    model.save(tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_classifying_from_python_imports_no_pipeline_service_or_plotting_package(trained_model, sample_clips):
    """`import acento; acento.load(path).classify(file)` is what `pip install acento` (no extras) serves: it
    must not import DVC, dvclive, FastAPI, uvicorn, matplotlib or scikit-learn (the extras' packages)."""
    import json
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import json, sys, acento; p = acento.load(sys.argv[1]).classify(sys.argv[2]); "
            "print(json.dumps([p.label, sorted({m.split('.')[0] for m in sys.modules})]))")
    out = subprocess.run([sys.executable, "-c", code, str(trained_model), str(sample_clips[0])], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    label, modules = json.loads(out)
    assert label in ("high", "low") and "torch" in modules and "acento" in modules
    assert not set(modules) & {"dvc", "dvclive", "fastapi", "uvicorn", "starlette", "matplotlib", "sklearn",
                               "pipeline"}
