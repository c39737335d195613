import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from acento.apps.predict import main as predict_main
from acento.features.cache import SplitData
from acento.model.accent_model import AccentModel
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
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: not listed
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
    code = ("import json, sys; import acento.apps.predict; a = set(sys.modules); import acento.apps.serve; "
            "b = set(sys.modules); import pipeline.features; print(json.dumps([sorted(a), sorted(b), sorted(sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    predict, serve, features = (set(m.split(".")[0] for m in mods) for mods in json.loads(out))
    assert "torch" in predict and not predict & set(HEAVY)
    assert "fastapi" in serve and not serve & set(HEAVY)
    assert "pandas" in features and not features & {"librosa", "scipy", "numba"}


def test_every_file_in_a_folder_gets_a_line_whatever_its_name(cache, trained_model, tmp_path, capsys):
    from tests.audio.test_decode import TITLE, id3_tag, mp3_bytes

    folder = tmp_path / "uploads"
    folder.mkdir()
    sf.write(folder / "a.aiff", tone(1.0, rate=22050, freq=300), 22050, format="AIFF")
    (folder / "b.MP3").write_bytes(mp3_bytes(1.5))
    (folder / "c.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00isomiso2" + bytes(range(256)) * 20)
    (folder / "d.webm").write_bytes(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm" + bytes(range(256)) * 20)
    (folder / "e.mp3").write_bytes(id3_tag(TITLE))  # a tag and no audio
    (folder / "f.wav").write_bytes(b"")
    sf.write(folder / "g.wav", tone(0.015, rate=16000) * 3, 16000)  # a loud 15 ms tone
    sf.write(folder / "h.flac", np.full(16000, 0.2, np.float32), 16000)  # a DC offset: nothing to hear
    code, out, err = run(capsys, "--model", trained_model, "--json", folder)
    results = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    assert sorted(results) == ["a.aiff", "b.MP3", "c.m4a", "d.webm", "e.mp3", "f.wav", "g.wav", "h.flac"]
    assert results["a.aiff"]["label"] in ("high", "low") and results["b.MP3"]["label"] in ("high", "low")
    assert results["b.MP3"]["seconds"] == pytest.approx(1.5, abs=0.03) and not results["b.MP3"]["cropped"]
    reasons = {name: r["error"].split(":")[0] for name, r in results.items() if "error" in r}
    assert reasons == {"c.m4a": "unsupported_format", "d.webm": "unsupported_format", "e.mp3": "empty_audio",
                       "f.wav": "empty_audio", "g.wav": "too_short", "h.flac": "silent_audio"}
    assert all(name in results[name]["error"] for name in reasons)
    assert code == 1 and "6 of 8 file(s) could not be classified" in err


def test_the_model_file_comes_from_the_environment_outside_a_checkout(trained_model, tmp_path, capsys, monkeypatch):
    """An installed acento-predict run in any folder finds the model through $ACENTO_MODEL_FILE; without it,
    one line names the path it looked for, the folder and both ways out."""
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, rate=16000), 16000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACENTO_MODEL_FILE", raising=False)
    code, _, err = run(capsys, wav)
    assert code == 2 and "models/model.pt: no such model file" in err and str(tmp_path) in err
    assert "--model-file" in err and "ACENTO_MODEL_FILE" in err
    monkeypatch.setenv("ACENTO_MODEL_FILE", str(trained_model))
    code, out, err = run(capsys, "--json", wav)
    assert code == 0 and json.loads(out.splitlines()[0])["label"] in ("high", "low"), err


def overflowing_model(trained_model: Path, out: Path) -> Path:
    """The trained model with every normalisation std 1e-44: finite numbers, so the file loads, but every
    input divides to infinity and the network's scores are NaN (as a damaged or diverged model's)."""
    ckpt = torch.load(trained_model, weights_only=True)
    ckpt["std"] = torch.full_like(ckpt["std"], 1e-44)
    torch.save(ckpt, out)
    return out


def test_a_model_that_scores_nan_is_refused_in_one_line_and_no_nan_is_printed(trained_model, tmp_path, capsys):
    model = overflowing_model(trained_model, tmp_path / "overflow.pt")
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(1.0, rate=16000), 16000)
    with np.errstate(all="ignore"):
        assert np.isnan(AccentModel.load(model).classify(wav).probs["high"])  # the premise: the model gives NaN
    for table in ([], ["--json"]):
        code, out, err = run(capsys, "--model", model, *table, wav)
        assert code == 2 and "nan" not in out.lower()
        assert err == (f"error: {model}: the model gives scores that are not finite numbers (NaN or infinity) for "
                       f"{wav}; the file is damaged or its training diverged, retrain it (dvc repro train)\n")


def special_entries(folder: Path) -> dict[str, str]:
    """Entries of `folder` that are no files, each with the start of the line it must get."""
    (folder / "dangling.wav").symlink_to("gone.wav")
    (folder / "loop1.wav").symlink_to("loop2.wav")
    (folder / "loop2.wav").symlink_to("loop1.wav")
    (folder / "up").symlink_to("..")  # a loop if links to folders were followed
    os.mkfifo(folder / "fifo.wav")  # nothing writes to it: opening it to read would wait for ever
    return {"dangling.wav": "missing_file: {}: a link to gone.wav, which does not exist",
            "loop1.wav": "unreadable_audio: {}: cannot be opened (Too many levels of symbolic links)",
            "loop2.wav": "unreadable_audio: {}: cannot be opened (Too many levels of symbolic links)",
            "up": "unsupported_format: {}: a link to a folder, not followed; give the folder itself",
            "fifo.wav": "unsupported_format: {}: a FIFO (named pipe), not an audio file; not read"}


@pytest.fixture
def unblock_fifos(tmp_path):
    """Should the code under test open a FIFO to read, a writer opens it after 60 s so the test fails, not hangs."""
    timers = []

    def guard(fifo: Path) -> None:
        timer = threading.Timer(60, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
        timer.daemon = True
        timer.start()
        timers.append(timer)
    yield guard
    for timer in timers:
        timer.cancel()


def test_every_entry_of_a_folder_that_is_no_file_gets_one_line_and_is_never_opened(cache, trained_model, tmp_path,
                                                                                   capsys, unblock_fifos):
    folder = tmp_path / "mixed"
    folder.mkdir()
    sf.write(folder / "good.wav", tone(1.0, rate=16000), 16000)
    expected = special_entries(folder)
    unblock_fifos(folder / "fifo.wav")
    code, out, err = run(capsys, "--model", trained_model, "--json", folder)
    results = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    assert sorted(results) == sorted([*expected, "good.wav"])  # in order, each once
    assert results["good.wav"]["label"] in ("high", "low")
    for name, line in expected.items():
        assert results[name] == {"file": str(folder / name), "error": line.format(folder / name)}
    assert code == 1 and err == "5 of 6 file(s) could not be classified\n"


def test_a_folder_of_nothing_but_special_entries_exits_non_zero_with_a_line_each(trained_model, tmp_path, capsys,
                                                                                 unblock_fifos):
    folder = tmp_path / "specials"
    folder.mkdir()
    expected = special_entries(folder)
    unblock_fifos(folder / "fifo.wav")
    code, out, err = run(capsys, "--model", trained_model, folder)
    assert out.splitlines()[1:] == [f"{folder / name}\tERROR\t{expected[name].format(folder / name)}"
                                    for name in sorted(expected)]
    assert code == 1 and err == "5 of 5 file(s) could not be classified\n"


def test_one_decision_per_speaker_on_summed_probabilities(trained_model, tmp_path, capsys):
    """speakers/ana (two high tones, one low, one broken file) and speakers/ben (one low tone): each speaker's
    decision is the class of highest mean probability over their classified clips, known from the per-file run."""
    ana, ben = tmp_path / "speakers" / "ana", tmp_path / "speakers" / "ben"
    for folder, freqs in ((ana, (900, 950, 250)), (ben, (260,))):
        folder.mkdir(parents=True)
        for i, freq in enumerate(freqs):
            sf.write(folder / f"{i}.wav", tone(0.8, rate=16000, freq=freq, seed=i), 16000)
    (ana / "broken.mp3").write_bytes(b"\xff\xfb" + b"garbage" * 100)
    (ana / "session2").mkdir()
    sf.write(ana / "session2" / "3.wav", tone(0.8, rate=16000, freq=920, seed=3), 16000)  # still ana
    code, out, _ = run(capsys, "--model", trained_model, "--json", tmp_path / "speakers")
    per_file = {Path(r["file"]).parent.name + "/" + Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}
    code, out, err = run(capsys, "--model", trained_model, "--json", "--by-speaker", tmp_path / "speakers")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "broken.mp3: unreadable_audio" in err and [r["speaker"] for r in rows] == ["ana", "ben"]
    for row, names in zip(rows, (["ana/0.wav", "ana/1.wav", "ana/2.wav", "session2/3.wav"], ["ben/0.wav"])):
        mean = {c: np.mean([per_file[n]["probs"][c] for n in names]) for c in ("high", "low")}
        assert row["label"] == max(mean, key=mean.get) and row["clips"] == len(names)
        assert row["confidence"] == pytest.approx(mean[row["label"]], abs=2e-4)
    assert (rows[0]["failed"], rows[1]["failed"]) == (1, 0)
    # one person's folder given directly: the folder is the speaker
    code, out, _ = run(capsys, "--model", trained_model, "--by-speaker", ben)
    assert code == 0 and out.splitlines()[0] == "speaker\tlabel\tconfidence\tclips\tfailed"
    assert out.splitlines()[1].split("\t")[0::3] == ["ben", "1"]


def test_by_speaker_sums_probabilities_rather_than_counting_votes():
    from acento.apps.predict import by_speaker

    results = [{"probs": {"a": 0.55, "b": 0.45}}, {"probs": {"a": 0.55, "b": 0.45}}, {"probs": {"a": 0.1, "b": 0.9}},
               {"error": "unreadable_audio"}, {"error": "missing_file"}]
    rows = by_speaker(results, ["x", "x", "x", "x", "y"], ["a", "b"])
    # x: votes 2-1 for a, but mean probabilities a 0.4, b 0.6 -> b; y: nothing classified
    assert rows == [{"speaker": "x", "label": "b", "confidence": 0.6, "probs": {"a": 0.4, "b": 0.6}, "clips": 3,
                     "failed": 1},
                    {"speaker": "y", "label": None, "confidence": None, "probs": {}, "clips": 0, "failed": 1}]


def test_speakers_read_from_a_common_voice_tsv(trained_model, tmp_path, capsys):
    """--speakers other.tsv: each file's speaker is its row's client_id (matched on the file name); a file the
    table does not list is reported and counted, not guessed."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, (name, freq) in enumerate({"a.wav": 900, "b.wav": 950, "c.wav": 260, "d.wav": 250}.items()):
        sf.write(clips / name, tone(0.8, rate=16000, freq=freq, seed=i), 16000)
    tsv = tmp_path / "other.tsv"  # an unbalanced quote, as Common Voice sentences have; a row with no speaker
    tsv.write_text('client_id\tpath\tsentence\nspk1\ta.wav\t"Hola, dijo\nspk2\tc.wav\tx\nspk1\tclips/b.wav\ty\n\td.wav\tz\n')
    code, out, _ = run(capsys, "--model", trained_model, "--json", clips)
    per_file = {Path(r["file"]).name: r["probs"] for r in map(json.loads, out.splitlines())}
    code, out, err = run(capsys, "--model", trained_model, "--json", "--speakers", tsv, clips)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [(r["speaker"], r["clips"]) for r in rows] == [("spk1", 2), ("spk2", 1)]
    mean = {c: (per_file["a.wav"][c] + per_file["b.wav"][c]) / 2 for c in ("high", "low")}
    assert rows[0]["label"] == max(mean, key=mean.get) and rows[0]["confidence"] == pytest.approx(max(mean.values()), abs=2e-4)
    assert rows[1]["label"] == max(per_file["c.wav"], key=per_file["c.wav"].get)
    assert f"{clips / 'd.wav'}: not listed in {tsv} (no speaker)" in err
    assert f"1 of 4 file(s) could not be classified (1 not listed in {tsv})" in err


@pytest.mark.parametrize("table, message", [
    ("speaker\tpath\nx\ta.wav\n", "no column 'client_id' in its header (speaker, path)"),
    ("client_id\tpath\nx\ta.wav\ny\tother/a.wav\n", "line 3: a.wav is listed for two speakers (x and y)"),
    (None, "No such file or directory"),
])
def test_a_speakers_table_that_cannot_say_who_spoke_is_one_line(trained_model, tmp_path, capsys, table, message):
    sf.write(tmp_path / "a.wav", tone(0.5, rate=16000, freq=400, seed=0), 16000)
    tsv = tmp_path / "t.tsv"
    if table is not None:
        tsv.write_text(table)
    code, out, err = run(capsys, "--model", trained_model, "--speakers", tsv, tmp_path / "a.wav")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err and str(tsv) in err
