"""Bad input gives one line on stderr naming the file or key, a non-zero exit and no traceback."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from acento.apps import predict
from pipeline import evaluate, features, train
from tests.helpers import params_file, tiny, tone

TINY = tiny()


def one_line_error(capsys, code: int, expected_code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == expected_code, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_cuda_asked_for_on_a_machine_without_it(cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = params_file(tmp_path, **TINY, **{"runtime.device": "cuda"})
    code = train.main(["--params", str(p), "--cache", str(cache), "--out", str(tmp_path / "m.pt"),
                       "--metrics", str(tmp_path / "t.json"), "--live", str(tmp_path / "live")])
    one_line_error(capsys, code, 2, "runtime.device is 'cuda' but no CUDA device is available")


def test_predict_names_its_own_flag_when_cuda_is_missing(trained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, rate=16000), 16000)
    code = predict.main(["--model-file", str(trained_model), "--device", "cuda", str(wav)])
    one_line_error(capsys, code, 2, "--device is 'cuda'")


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_garbage_feature_cache(stage, trained_model, tmp_path, capsys):
    garbage = tmp_path / "features.h5"
    garbage.write_bytes(b"this is not HDF5" * 100)
    p = params_file(tmp_path, **TINY)
    if stage == "train":
        code = train.main(["--params", str(p), "--cache", str(garbage), "--out", str(tmp_path / "m.pt"),
                           "--metrics", str(tmp_path / "t.json"), "--live", str(tmp_path / "live")])
    else:
        code = evaluate.main(["--params", str(p), "--cache", str(garbage), "--model-file", str(trained_model),
                              "--metrics", str(tmp_path / "e.json")])
    one_line_error(capsys, code, 2, str(garbage), "not a readable HDF5 feature cache", "dvc repro --force features")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "e.json").exists()


def broken_model_files(trained_model, tmp_path):
    ckpt = torch.load(trained_model, weights_only=True)
    no_weights = {k: v for k, v in ckpt.items() if k != "state_dict"}
    torch.save(no_weights, tmp_path / "no_weights.pt")
    wrong_shape = {**ckpt, "rnn": {**ckpt["rnn"], "hidden_size": ckpt["rnn"]["hidden_size"] * 2}}
    torch.save(wrong_shape, tmp_path / "wrong_shape.pt")
    return {"no_weights": (tmp_path / "no_weights.pt", "without state_dict"),
            "wrong_shape": (tmp_path / "wrong_shape.pt", "do not fit the network")}


@pytest.mark.parametrize("kind", ["no_weights", "wrong_shape"])
def test_damaged_model_files_in_predict_and_evaluate(kind, cache, trained_model, tmp_path, capsys):
    path, message = broken_model_files(trained_model, tmp_path)[kind]
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, rate=16000), 16000)
    code = predict.main(["--model-file", str(path), str(wav)])
    one_line_error(capsys, code, 2, str(path), message)
    code = evaluate.main(["--params", str(params_file(tmp_path, **TINY)), "--cache", str(cache),
                          "--model-file", str(path), "--metrics", str(tmp_path / "e.json")])
    one_line_error(capsys, code, 2, str(path), message)


def _crash(path):
    import os
    os._exit(1)  # what a segfault in a C decoder looks like to the process pool


def test_a_crashed_decoder_in_predict_points_to_its_own_flag(trained_model, tmp_path, capsys, monkeypatch):
    import acento.audio.extract as audio

    monkeypatch.setattr(audio, "_extract", _crash)
    for i in range(10):  # more than 8 files: predict decodes in worker processes
        sf.write(tmp_path / f"c{i}.wav", tone(0.3, rate=16000, seed=i), 16000)
    code = predict.main(["--model-file", str(trained_model), "--workers", "2", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 2 and "a decoding process died" in out.err and "(--workers 1)" in out.err


@pytest.mark.parametrize("names", [["NA", "None"], ["nan", "null"]])
def test_classes_that_pandas_would_read_as_missing(names, tmp_path, capsys):
    rows = []
    for i in range(8):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, tone(0.6, rate=16000, freq=300 + 50 * i, seed=i), 16000)
        rows.append({"clip": path.name, "audio_path": str(path), "speaker": f"s{i}", "accents": "x",
                     "label": names[i % 2], "split": ["train", "train", "dev", "test"][i // 2 % 4],
                     "fold": -1, "dev_folds": 0, "duration": 0.6})
    manifest = tmp_path / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    code = features.main(["--params", str(params_file(tmp_path)), "--manifest", str(manifest),
                          "--out", str(tmp_path / "f.h5"), "--metrics", str(tmp_path / "f.json")])
    assert code == 0, capsys.readouterr().err
    import h5py

    with h5py.File(tmp_path / "f.h5") as h5:
        assert json.loads(h5.attrs["classes"]) == sorted(names)
        split = h5["clips/split"].asstr()[()]
        assert np.bincount(h5["clips/labels"][()][split == "train"]).tolist() == [2, 2]


def test_a_cache_another_process_writes_is_reported_as_locked_not_damaged(cache, tmp_path, capsys):
    import shutil
    import subprocess
    import sys

    held = tmp_path / "features.h5"
    shutil.copy(cache, held)
    writer = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); "
                               "print('open', flush=True); time.sleep(60)", str(held)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        p = params_file(tmp_path, **TINY)
        code = train.main(["--params", str(p), "--cache", str(held), "--out", str(tmp_path / "m.pt"),
                           "--metrics", str(tmp_path / "t.json"), "--live", str(tmp_path / "live")])
    finally:
        writer.kill()
        writer.wait()
    err = one_line_error(capsys, code, 2, "features.h5: locked, another process has it open for writing")
    assert "rebuild" not in err
