"""`python -m acento.apps.score`: a model scored on a labelled release, read as `prepare` reads it."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from acento.apps.score import main, parse_classes
from acento.audio.decode import AudioError
from acento.corpus.prepare import labelled_clips
from acento.corpus.release import extract_release
from acento.model.accent_model import AccentModel, speaker_hash
from tests.helpers import (
    CARIBE,
    MEXICO,
    NORTE,
    SAMPLE,
    SUR,
    balanced_rows,
    make_release,
    params,
    params_file,
    speaker_id,
    untrained_model,
)

SPAIN = ["norte", "sur"]
AMERICAS = ["andino", "caribe", "chileno", "mexico", "rioplatense"]


@pytest.fixture(scope="module")
def seven_class_model(tmp_path_factory):
    """An untrained (seeded) GRU with the sample's seven classes: scoring needs a model, not a good one."""
    return untrained_model(tmp_path_factory.mktemp("tiny") / "tiny.pt", "gru")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_bundled_sample_scored_as_spain_against_the_americas(seven_class_model, tmp_path, capsys):
    raw = tmp_path / "raw"
    settings = params_file(tmp_path, **{"data.raw_dir": str(raw)})
    locale = extract_release(SAMPLE, raw, "es")  # score finds this extraction again (same archive)
    labelled, dropped = labelled_clips(params().data, locale)
    model = AccentModel.load(seven_class_model)
    expected_failed = Counter(r.reason for _, r in model.classify_files(labelled["audio_path"].tolist())
                              if isinstance(r, AudioError))
    code, _, err = run(capsys, "--model-file", seven_class_model, "--release", SAMPLE, "--params", settings,
                       "--merge", "spain=" + ",".join(SPAIN), "--merge", "americas=" + ",".join(AMERICAS),
                       "--out", tmp_path / "score.json", "--predictions", tmp_path / "clips.csv", "--workers", 1)
    assert code == 0, err
    metrics = json.loads((tmp_path / "score.json").read_text())
    # every labelled clip is classified or counted as failed, by reason, as the features stage counts them
    assert {k: v for k, v in metrics["failed"].items() if v} == dict(expected_failed)
    assert expected_failed["unreadable_audio"] > 0 and expected_failed["silent_audio"] > 0  # the sample's rules
    assert metrics["clips"] == len(labelled) - sum(expected_failed.values())
    assert metrics["dropped"] == {k: v for k, v in dropped.items() if v} and metrics["dropped"]["down_voted"] > 0
    assert metrics["classes"] == ["americas", "spain"]
    clips = pd.read_csv(tmp_path / "clips.csv")
    truth = labelled.set_index("clip")["label"].map(lambda c: "spain" if c in SPAIN else "americas")
    assert clips["label"].tolist() == truth.loc[clips["clip"]].tolist()
    assert {c: s["support"] for c, s in metrics["per_class"].items()} == clips["label"].value_counts().to_dict()
    assert sum(map(sum, metrics["confusion"]["actual_by_predicted"])) == metrics["clips"]
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(clips["label"], clips["predicted"]),
                                                         abs=1e-4)
    # one decision per speaker: the class of highest summed probability over their clips
    summed = clips.groupby("speaker")[["p_americas", "p_spain"]].sum()
    decided = np.where(summed["p_spain"] > summed["p_americas"], "spain", "americas")
    truth = clips.groupby("speaker")["label"].agg(lambda s: s.value_counts().sort_index().idxmax()).loc[summed.index]
    speaker_ba = metrics["speaker_balanced_accuracy"]
    assert speaker_ba["value"] == pytest.approx(balanced_accuracy_score(truth, decided), abs=1e-4)
    assert speaker_ba["ci_low"] <= speaker_ba["value"] <= speaker_ba["ci_high"]
    assert f"speaker balanced accuracy {speaker_ba['value']:.3f} [{speaker_ba['ci_low']:.3f}," in err
    # a merged class's probability is the sum of its model classes'
    first = clips.iloc[0]
    probs = model.classify(locale / "clips" / first["clip"]).probs
    assert first["p_spain"] == pytest.approx(sum(probs[c] for c in SPAIN), abs=2e-4)
    assert first["p_americas"] == pytest.approx(sum(probs[c] for c in AMERICAS), abs=2e-4)


@pytest.fixture()
def release(tmp_path):
    rows = balanced_rows(speakers_per_class=3, clips_per_speaker=2)  # 6 speakers: 6 norte, 6 mexico clips
    rows += [{"client_id": "x1", "path": "caribe.mp3", "accents": CARIBE},
             {"client_id": "x2", "path": "voted.mp3", "accents": NORTE, "down_votes": 3},
             {"client_id": "x3", "path": "gone.mp3", "accents": MEXICO, "_no_file": True},
             {"client_id": "x4", "path": "corrupt.mp3", "accents": MEXICO}]
    locale = make_release(tmp_path, rows)
    (locale / "clips" / "corrupt.mp3").write_bytes(b"\xff\xfb" + b"garbage" * 100)
    return locale.parent.parent


def test_classes_given_on_the_command_line_and_everything_merged_into_one(trained_model, release, tmp_path, capsys):
    code, out, err = run(capsys, "--model", trained_model, "--release", release, "--workers", 1,
                         "--classes", f"high={NORTE}", f"low={MEXICO}", "--merge", "any=high,low")
    assert code == 0, err
    metrics = json.loads(out)
    # one class, every clip predicted as it: known answers whatever the network says
    assert (metrics["accuracy"], metrics["balanced_accuracy"], metrics["macro_f1"]) == (1.0, 1.0, 1.0)
    assert metrics["per_class"] == {"any": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 12}}
    assert metrics["dropped"] == {"unmapped_accent": 1, "down_voted": 1, "missing_file": 1}
    assert metrics["failed"]["unreadable_audio"] == 1
    assert metrics["confusion"] == {"actual_by_predicted": [[12]]} and metrics["speakers"] == 6
    assert "balanced accuracy 1.000" in err


def test_unmerged_scores_agree_with_the_models_own_answers(trained_model, release, capsys):
    code, out, _ = run(capsys, "--model", trained_model, "--release", release, "--workers", 1,
                       "--classes", f"high={NORTE}", f"low={MEXICO}")
    assert code == 0
    metrics = json.loads(out)
    model = AccentModel.load(trained_model)
    clips = sorted((release / "cv-corpus-test" / "es" / "clips").glob("common_voice_*.mp3"))
    truth = ["high" if int(c.stem[-5:-2]) % 2 == 0 else "low" for c in clips]  # even speakers are norte
    predicted = [p.label for p in model.classify_batch(clips)]
    assert metrics["per_class"]["high"]["support"] == 6 and metrics["per_class"]["low"]["support"] == 6
    assert metrics["accuracy"] == pytest.approx(np.mean([t == p for t, p in zip(truth, predicted)]), abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--merge", "any=high,nope"], "--merge 'any=high,nope': the model has no class 'nope'; its classes: high, low"),
    (["--merge", "a=high", "--merge", "b=high"], "--merge: class 'high' is in both 'a' and 'b'"),
    (["--classes", f"spain={NORTE}"], "--classes: spain is neither a class of the model (high, low) nor a merged"),
    (["--classes", f"high={NORTE}"], "class(es) low have no accents in --classes; give them with --classes"),
    (["--classes", f"high={NORTE}", f"low={NORTE}"], "is in both 'high' and 'low'; give it one class"),
    (["--classes", "nothing.yaml"], "--classes nothing.yaml: no such file"),
    ([], "class(es) high, low have no accents in params.yaml data.classes; give them with --classes"),
])
def test_bad_class_arguments_are_one_line(trained_model, release, capsys, argv, message):
    code, out, err = run(capsys, "--model", trained_model, "--release", release, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_release_that_is_neither_folder_nor_archive(trained_model, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hi")
    code, _, err = run(capsys, "--model", trained_model, "--release", tmp_path / "notes.txt",
                       "--classes", f"high={NORTE}", f"low={MEXICO}")
    assert code == 2 and "notes.txt: not a release folder or a .tar.gz/.tgz/.tar archive" in err


def test_accents_with_commas_are_kept_whole_and_files_are_read(tmp_path):
    assert parse_classes([f"spain={NORTE},{SUR}", f"mexico={MEXICO}"]) == {"spain": [NORTE, SUR], "mexico": [MEXICO]}
    assert parse_classes([f"spain={NORTE}|{SUR}"]) == {"spain": [NORTE, SUR]}
    (tmp_path / "classes.json").write_text(json.dumps({"spain": [NORTE, SUR], "americas": [MEXICO]}))
    assert parse_classes([str(tmp_path / "classes.json")]) == {"spain": [NORTE, SUR], "americas": [MEXICO]}


def test_speakers_the_model_learned_from_are_counted_and_the_others_scored_apart(trained_model, release, tmp_path,
                                                                                 capsys):
    model = AccentModel.load(trained_model)
    model.speaker_hashes = frozenset({speaker_hash(speaker_id(0)), speaker_hash(speaker_id(1)), "0" * 16})
    model.save(tmp_path / "heard.pt")
    code, out, err = run(capsys, "--model", tmp_path / "heard.pt", "--release", release, "--workers", 1,
                         "--classes", f"high={NORTE}", f"low={MEXICO}", "--predictions", tmp_path / "clips.csv")
    assert code == 0, err
    heard = json.loads(out)["heard_speakers"]
    assert {k: heard[k] for k in ("speakers", "of_speakers", "clips", "of_clips")} == \
        {"speakers": 2, "of_speakers": 6, "clips": 4, "of_clips": 12}
    clips = pd.read_csv(tmp_path / "clips.csv")
    new = clips[~clips["speaker"].isin([speaker_id(0), speaker_id(1)])]
    assert (heard["unseen"]["clips"], heard["unseen"]["speakers"]) == (8, 4)
    assert heard["unseen"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(new["label"], new["predicted"]), abs=1e-4)
    assert (f"warning: 2 of the 6 speakers (4 of 12 clips) trained this model or chose its epoch: the scores below "
            f"include them; on the 4 other speakers alone: balanced accuracy "
            f"{heard['unseen']['balanced_accuracy']:.3f}") in err


def test_a_model_that_heard_none_of_the_speakers_says_nothing_and_an_old_one_warns(trained_model, release, tmp_path,
                                                                                   capsys):
    code, out, err = run(capsys, "--model", trained_model, "--release", release, "--workers", 1,
                         "--classes", f"high={NORTE}", f"low={MEXICO}")
    metrics = json.loads(out)
    assert code == 0 and metrics["heard_speakers"]["speakers"] == 0 and "warning" not in err
    unseen = metrics["heard_speakers"]["unseen"]
    assert (unseen["balanced_accuracy"], unseen["clips"]) == (metrics["balanced_accuracy"], metrics["clips"])
    old = AccentModel.load(trained_model)
    old.speaker_hashes = frozenset()
    old.save(tmp_path / "old.pt")
    code, out, err = run(capsys, "--model", tmp_path / "old.pt", "--release", release, "--workers", 1,
                         "--classes", f"high={NORTE}", f"low={MEXICO}")
    assert code == 0 and json.loads(out)["heard_speakers"] is None
    assert f"warning: {tmp_path / 'old.pt'} does not list the speakers it was trained on" in err
