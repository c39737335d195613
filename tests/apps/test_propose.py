"""`acento-propose`: one proposed accent per unlabelled speaker of a release, for a curator."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from acento.apps.propose import COLUMNS, main
from acento.model.accent_model import AccentModel
from tests.helpers import CARIBE, MEXICO, NORTE, make_release, params_file, tone

CLASSES = {"high": [NORTE], "low": [MEXICO]}  # the trained_model fixture's classes; CARIBE maps to none
CORRUPT = b"\xff\xfb" + b"garbage" * 100


def clip_rows(speaker: str, n: int, accents: str = "", **extra) -> list[dict]:
    return [{"client_id": speaker, "path": f"{speaker}_{k}.mp3", "accents": accents, **extra} for k in range(n)]


@pytest.fixture()
def release(tmp_path):
    """A release folder whose speakers exercise every rule (client_ids kept short and readable):
    lab0, lab1: labelled (never proposed); mixed: one labelled clip and two without an accent (never proposed);
    quiet: 3 clips, no accent; other: 2 clips of an accent of no class; broken: 3 clips, one corrupt;
    single: 1 clip; dead: 1 corrupt clip; many: 4 identical clips; short: a clip under data.min_seconds."""
    rows = (clip_rows("lab0", 2, NORTE) + clip_rows("lab1", 2, MEXICO)
            + clip_rows("mixed", 1, NORTE) + [{"client_id": "mixed", "path": "mixed_x.mp3", "accents": ""},
                                              {"client_id": "mixed", "path": "mixed_y.mp3", "accents": ""}]
            + clip_rows("quiet", 3) + clip_rows("other", 2, CARIBE) + clip_rows("broken", 3)
            + clip_rows("single", 1) + clip_rows("dead", 1) + clip_rows("many", 4)
            + clip_rows("short", 1, seconds=0.5))
    locale = make_release(tmp_path / "release", rows)
    clips = locale / "clips"
    for k in range(3):  # high- and low-pitched speakers, so the trained model tells them apart
        sf.write(clips / f"quiet_{k}.mp3", tone(1.5, freq=900.0 + 5 * k, seed=k), 48000, format="MP3")
    for k in range(2):
        sf.write(clips / f"other_{k}.mp3", tone(1.5, freq=250.0 + 5 * k, seed=k), 48000, format="MP3")
    for k in range(4):  # any choice of `many`'s clips gives the same decision
        sf.write(clips / f"many_{k}.mp3", tone(1.5, freq=600.0, seed=7), 48000, format="MP3")
    (clips / "broken_1.mp3").write_bytes(CORRUPT)
    (clips / "dead_0.mp3").write_bytes(CORRUPT)
    return locale


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"speaker": str})


def expected_decision(model: AccentModel, paths: list) -> tuple[str, float, str, float]:
    """(class, confidence, runner-up, its mean probability) from the model's own Python API: the class of
    highest summed probability over the speaker's clips."""
    probs = np.array([[p.probs[c] for c in model.classes] for p in model.classify_batch(paths)])
    mean = probs.mean(0)
    first, second = np.argsort(-mean)[:2]
    return model.classes[first], float(mean[first]), model.classes[second], float(mean[second])


def test_unlabelled_speakers_get_the_models_summed_decision_highest_confidence_first(trained_model, release,
                                                                                     tmp_path, capsys):
    settings = params_file(tmp_path, **{"data.classes": CLASSES})
    out = tmp_path / "out" / "proposals.tsv"
    code, stdout, err = run(capsys, "--model-file", trained_model, "--release", release.parent.parent, "--params",
                            settings, "--out", out, "--min-clips", 2, "--max-clips-per-speaker", 3, "--workers", 1)
    assert code == 0, err
    table = read(out)
    assert list(table.columns) == COLUMNS and stdout == ""
    # never a labelled speaker, nor `mixed` (a labelled clip), `short` (filtered), `single` (1 clip < 2), `dead`
    assert sorted(table["speaker"]) == ["broken", "many", "other", "quiet"]
    rows = table.set_index("speaker")
    assert rows.loc[["quiet", "other", "broken", "many"], "clips_used"].tolist() == [3, 2, 2, 3]
    assert rows.loc[["quiet", "other", "broken", "many"], "clips_failed"].tolist() == [0, 0, 1, 0]
    assert rows.loc["other", "accents"] == CARIBE and rows.loc["quiet", "accents"] == ""
    model = AccentModel.load(trained_model)
    clips = release / "clips"
    used = {"quiet": [clips / f"quiet_{k}.mp3" for k in range(3)], "other": [clips / f"other_{k}.mp3" for k in range(2)],
            "broken": [clips / "broken_0.mp3", clips / "broken_2.mp3"], "many": [clips / "many_0.mp3"]}
    for speaker, paths in used.items():
        label, confidence, runner_up, runner_up_p = expected_decision(model, paths)
        assert rows.loc[speaker, "class"] == label, speaker
        assert rows.loc[speaker, "confidence"] == pytest.approx(confidence, abs=2e-4)
        assert (rows.loc[speaker, "runner_up"], rows.loc[speaker, "runner_up_probability"]) == \
            (runner_up, pytest.approx(runner_up_p, abs=2e-4))
    assert table["confidence"].between(0, 1).all()
    assert table["confidence"].tolist() == sorted(table["confidence"], reverse=True)
    assert err.strip().splitlines()[-1] == (
        f"acento-propose: 4 of 6 unlabelled speaker(s) proposed, from 11 clip(s) -> {out}; speakers left out: "
        "no_usable_clip 1, few_clips 1; clips failed: unreadable_audio 2; clips not in the pool: too_short 1, "
        "labelled_speaker 2, speaker_cap 1")


def test_known_scores_give_the_summed_decision_ties_by_speaker_and_min_confidence_counts(trained_model, tmp_path,
                                                                                          monkeypatch, capsys):
    """A model whose P(high) is known from a clip's length (1.2 s: 0.40, 1.4 s: 0.45, 1.9 s: 0.95): `split`'s first
    clip and most of its clips say low, their summed probability high."""
    known = {12: 0.40, 14: 0.45, 19: 0.95}
    monkeypatch.setattr(AccentModel, "predict_log_mels",
                        lambda self, clips: np.array([[p, 1 - p] for p in (known[round(len(c) / 10)] for c in clips)]))
    rows = (clip_rows("split", 1, seconds=1.2) + [{"client_id": "split", "path": "split_1.mp3", "seconds": 1.4},
                                                  {"client_id": "split", "path": "split_2.mp3", "seconds": 1.9}]
            + clip_rows("sure", 2, seconds=1.9) + clip_rows("lowish", 1, seconds=1.2) + clip_rows("lab", 2, NORTE))
    locale = make_release(tmp_path / "release", rows)
    settings = params_file(tmp_path, **{"data.classes": CLASSES})
    argv = ["--model-file", trained_model, "--release", locale.parent.parent, "--params", settings, "--workers", 1]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "all.tsv")
    assert code == 0, err
    every = read(tmp_path / "all.tsv")
    assert every[["speaker", "class", "confidence", "clips_used", "runner_up", "runner_up_probability"]] \
        .values.tolist() == [["sure", "high", 0.95, 2, "low", 0.05],
                             ["lowish", "low", 0.6, 1, "high", 0.4],   # a tie at 0.6: by speaker
                             ["split", "high", 0.6, 3, "low", 0.4]]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "sure.tsv", "--min-confidence", 0.7)
    assert code == 0, err
    assert read(tmp_path / "sure.tsv")["speaker"].tolist() == ["sure"]
    assert "1 of 3 unlabelled speaker(s) proposed, from 6 clip(s)" in err
    assert "speakers left out: low_confidence 2; clips failed: none; clips not in the pool: none" in err


def test_a_release_without_unlabelled_speakers_gives_a_header_and_a_warning(trained_model, tmp_path, capsys):
    locale = make_release(tmp_path / "release", clip_rows("lab0", 2, NORTE) + clip_rows("lab1", 2, MEXICO))
    settings = params_file(tmp_path, **{"data.classes": CLASSES})
    code, _, err = run(capsys, "--model-file", trained_model, "--release", locale.parent.parent, "--params", settings,
                       "--out", tmp_path / "p.tsv")
    assert code == 0 and read(tmp_path / "p.tsv").columns.tolist() == COLUMNS and len(read(tmp_path / "p.tsv")) == 0
    assert "has no unlabelled speaker left after the filters" in err and "0 of 0 unlabelled speaker(s)" in err


def test_bad_input_is_one_line_and_status_2_and_nothing_is_written(trained_model, release, tmp_path, capsys):
    settings = params_file(tmp_path, **{"data.classes": CLASSES})
    (tmp_path / "notes.txt").write_text("hi")
    base = ["--release", release.parent.parent, "--params", settings, "--workers", 1]
    cases = [
        (["--model-file", trained_model, "--release", tmp_path / "notes.txt", "--params", settings],
         "notes.txt: not a release folder or a .tar.gz/.tgz/.tar archive"),
        (["--model-file", tmp_path / "none.pt", *base], "none.pt: no such model file"),
        (["--model-file", trained_model, *base[:2], "--params", tmp_path / "none.yaml"], "none.yaml: not found"),
        (["--model-file", trained_model, *base, "--out", tmp_path / "notes.txt" / "p.tsv"], "cannot be written"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "proposals.tsv").exists()
    # every clip of the pool undecodable: an error, not an empty list
    for clip in (release / "clips").glob("*.mp3"):
        clip.write_bytes(CORRUPT)
    code, _, err = run(capsys, "--model-file", trained_model, *base, "--out", tmp_path / "p.tsv")
    assert code == 2 and "none of the 14 unlabelled clips could be decoded ({'unreadable_audio': 14})" in err
    assert not (tmp_path / "p.tsv").exists()


@pytest.mark.parametrize("argv", [["--min-clips", "0"], ["--min-confidence", "1.5"], ["--max-clips-per-speaker", "-1"]])
def test_impossible_options_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--release", "x", *argv])
    assert exc.value.code == 2 and "--min-clips must be >= 1" in capsys.readouterr().err


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("usage: acento-propose")
    assert "--min-confidence" in out and "--max-clips-per-speaker" in out and "--model-file" in out
