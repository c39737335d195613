import argparse
import json
import unicodedata

import pandas as pd
import pytest

from acento.corpus.manifest import SPLITS
from acento.corpus.prepare import DROP_REASONS, prepare
from acento.errors import StageError
from pipeline.prepare import run as prepare_run
from tests.helpers import (
    CARIBE,
    CENTRO,
    MEXICO,
    NORTE,
    SUR,
    balanced_rows,
    make_release,
    params,
    speaker_id,
)

SINGLE_SPLIT = {"data.folds": 0}  # one split by data.split fractions, not cross-validation folds


TWO_CLASSES = {"espana": [NORTE, CENTRO, SUR], "america": [MEXICO, CARIBE]}  # unless a test gives its own


def run(tmp_path, rows, **overrides):
    locale = make_release(tmp_path, rows, audio=False)
    for row in rows:  # clips only need to exist for prepare
        if not row.get("_no_file"):
            (locale / "clips" / row["path"]).write_bytes(b"")
    return prepare(params(**{"data.classes": TWO_CLASSES, **overrides}).data, locale)


def test_each_drop_reason_is_counted(tmp_path):
    rows = balanced_rows(speakers_per_class=4, clips_per_speaker=2)
    extra = [
        {"client_id": speaker_id(90), "path": "noacc.mp3", "accents": ""},
        {"client_id": speaker_id(91), "path": "unmapped.mp3", "accents": "acento neutro"},
        {"client_id": speaker_id(92), "path": "ambiguous.mp3", "accents": f"{MEXICO},{NORTE}"},
        {"client_id": speaker_id(93), "path": "missing.mp3", "accents": MEXICO, "_no_file": True},
        {"client_id": speaker_id(94), "path": "short.mp3", "accents": MEXICO, "seconds": 0.4},
        {"client_id": speaker_id(95), "path": "long.mp3", "accents": MEXICO, "seconds": 30},
        {"client_id": speaker_id(96), "path": "down.mp3", "accents": MEXICO, "down_votes": 3},
        {"client_id": speaker_id(0), "path": rows[0]["path"], "accents": NORTE},  # duplicate clip
        {"client_id": speaker_id(97), "path": "lonely.mp3", "accents": CARIBE},  # mapped to a 1-speaker class
    ]
    classes = {"espana": [NORTE], "america": [MEXICO], "caribe": [CARIBE]}
    frame, metrics = run(tmp_path, rows + extra, **{"data.classes": classes, "data.min_speakers": 2})
    dropped = metrics["dropped"]
    assert set(DROP_REASONS) <= set(dropped)
    expected = {"no_accent": 1, "unmapped_accent": 1, "ambiguous_accent": 1, "missing_file": 1, "too_short": 1,
                "too_long": 1, "down_voted": 1, "duplicate_clip": 1, "too_few_speakers": 1}
    assert {k: dropped[k] for k in expected} == expected
    assert len(frame) == len(rows)
    assert set(frame["label"]) == {"espana", "america"}


def test_caps_per_speaker_and_class(tmp_path):
    rows = balanced_rows(speakers_per_class=4, clips_per_speaker=5)
    frame, metrics = run(tmp_path, rows, **{"data.max_clips_per_speaker": 3})
    assert frame.groupby("speaker").size().max() == 3
    assert metrics["dropped"]["speaker_cap"] == 8 * 2
    frame, metrics = run(tmp_path, rows, **{"data.max_clips_per_class": 12})
    assert frame.groupby("label").size().tolist() == [12, 12]
    assert metrics["dropped"]["class_cap"] == 2 * (20 - 12)


def test_free_text_beside_one_class_keeps_the_row(tmp_path):
    rows = balanced_rows(speakers_per_class=3, clips_per_speaker=1)
    rows[0]["accents"] = f"{NORTE},catalán"
    frame, _ = run(tmp_path, rows, **SINGLE_SPLIT)
    assert frame.loc[frame["clip"] == rows[0]["path"], "label"].item() == "espana"
    assert frame.loc[frame["clip"] == rows[0]["path"], "accents"].item() == f"{NORTE}|catalán"


def test_no_speaker_crosses_splits_and_every_split_has_each_class(tmp_path):
    rows = balanced_rows(speakers_per_class=10, clips_per_speaker=3)
    rows += [{"client_id": speaker_id(50), "path": f"prolific{k}.mp3", "accents": SUR} for k in range(25)]
    frame, metrics = run(tmp_path, rows, **SINGLE_SPLIT)
    assert (frame.groupby("speaker")["split"].nunique() == 1).all()
    assert frame.loc[frame["speaker"] == speaker_id(50), "split"].unique().tolist() == ["train"]
    for split in SPLITS:
        assert set(metrics["clips"][split]) == {"espana", "america"}
        assert sum(metrics["speakers"][split].values()) == frame[frame["split"] == split]["speaker"].nunique()


def test_split_is_deterministic_and_follows_the_seed(tmp_path):
    rows = balanced_rows(speakers_per_class=10, clips_per_speaker=2)
    a, _ = run(tmp_path, [dict(r) for r in rows])
    b, _ = run(tmp_path, [dict(r) for r in reversed(rows)])
    c, _ = run(tmp_path, [dict(r) for r in rows], **{"data.seed": 7})
    key = ["clip", "split", "fold", "dev_folds"]
    pd.testing.assert_frame_equal(a[key].sort_values("clip").reset_index(drop=True),
                                  b[key].sort_values("clip").reset_index(drop=True))
    assert not a[key].sort_values("clip").reset_index(drop=True).equals(c[key].sort_values("clip").reset_index(drop=True))


def test_clip_split_leaks_speakers_as_the_original_study_did(tmp_path):
    rows = balanced_rows(speakers_per_class=4, clips_per_speaker=10)
    frame, _ = run(tmp_path, rows, **{**SINGLE_SPLIT, "data.split_by": "clip"})
    assert (frame.groupby("speaker")["split"].nunique() > 1).any()
    assert frame["split"].value_counts()["train"] == pytest.approx(0.6 * len(frame), abs=2)


def test_warns_when_a_class_cannot_fill_every_split(tmp_path, capsys):
    rows = balanced_rows(speakers_per_class=5, clips_per_speaker=2)
    rows += [{"client_id": speaker_id(60 + n), "path": f"car{n}.mp3", "accents": CARIBE} for n in range(1)]
    classes = {"espana": [NORTE], "america": [MEXICO], "caribe": [CARIBE]}
    run(tmp_path, rows, **{**SINGLE_SPLIT, "data.classes": classes, "data.min_speakers": 1})
    assert "class 'caribe' has too few speakers to appear in dev, test" in capsys.readouterr().err


def test_more_folds_than_speakers_is_a_clear_error(tmp_path):
    rows = balanced_rows(speakers_per_class=2, clips_per_speaker=2)
    with pytest.raises(StageError, match=r"data.folds = 5 needs at least 5 speakers; 4 are left .* lower data.folds"):
        run(tmp_path, rows, **{"data.min_speakers": 1})


def test_fewer_than_two_classes_is_a_clear_error(tmp_path):
    rows = [r for r in balanced_rows() if r["accents"] == NORTE]
    rows += [{"client_id": speaker_id(70), "path": "one.mp3", "accents": MEXICO}]  # one speaker: below min_speakers
    with pytest.raises(StageError, match="fewer than two classes left"):
        run(tmp_path, rows)


def test_stage_writes_manifest_and_metrics(tmp_path):
    locale = make_release(tmp_path, balanced_rows(speakers_per_class=3, clips_per_speaker=2))
    (tmp_path / "release.json").write_text(json.dumps({"root": str(locale)}))
    prepare_run(params(**{"data.classes": TWO_CLASSES}), argparse.Namespace(release=tmp_path / "release.json", out=tmp_path / "m.tsv",
                                              metrics=tmp_path / "data.json"))
    manifest = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert list(manifest.columns) == ["clip", "audio_path", "speaker", "accents", "label", "split", "fold",
                                      "dev_folds", "duration"]
    assert json.loads((tmp_path / "data.json").read_text())["clips"]["fold0"]
    assert not list(tmp_path.glob(".m.tsv*")), "no temporary file left behind"


def test_folds_are_speaker_disjoint_and_cover_every_labelled_speaker_once(tmp_path):
    from acento.corpus.manifest import split_of

    rows = balanced_rows(speakers_per_class=10, clips_per_speaker=2)
    manifest, metrics = run(tmp_path, [dict(r) for r in rows], **{"data.folds": 5})
    assert (manifest["split"] == "").all() and sorted(manifest["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (manifest.groupby("speaker")[["fold", "dev_folds"]].nunique() == 1).all().all()
    tests, everyone = [], set(manifest["speaker"])
    assert len(everyone) == 20
    for fold in range(5):
        split = split_of(manifest["split"], manifest["fold"], manifest["dev_folds"], fold)
        by_split = {s: set(manifest[split == s]["speaker"]) for s in SPLITS}
        assert not (by_split["train"] & by_split["dev"]) and not (by_split["train"] & by_split["test"])
        assert not (by_split["dev"] & by_split["test"])
        assert set().union(*by_split.values()) == everyone  # each fold uses every labelled speaker
        # stratified: each class has speakers in the test fold (10 per class, 5 folds: 2 each); dev is a
        # quarter of the other 16 (dev / (train + dev) = 0.2 / 0.8), stratified too
        assert manifest[split == "test"].groupby("label")["speaker"].nunique().tolist() == [2, 2]
        assert manifest[split == "dev"].groupby("label")["speaker"].nunique().tolist() == [2, 2]
        assert metrics["speakers"][f"fold{fold}"] == {"america": 2, "espana": 2}
        tests.append(by_split["test"])
    assert sum(len(t) for t in tests) == len(everyone) and set().union(*tests) == everyone
    assert set(metrics["clips"]) == {f"fold{k}" for k in range(5)}


def test_the_manifest_does_not_depend_on_data_fold(tmp_path):
    rows = balanced_rows(speakers_per_class=10, clips_per_speaker=2)
    a, _ = run(tmp_path / "a", [dict(r) for r in rows], **{"data.folds": 5, "data.fold": 0})
    b, _ = run(tmp_path / "b", [dict(r) for r in rows], **{"data.folds": 5, "data.fold": 3})
    pd.testing.assert_frame_equal(a.drop(columns="audio_path"), b.drop(columns="audio_path"))


def test_each_folds_split_is_the_one_prepare_made_for_that_fold_alone(tmp_path):
    """Known answer: the splits before the fold moved to train time (one StratifiedGroupKFold cut per
    data.fold, as prepare made them then), for every fold."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from acento.corpus.manifest import split_of

    rows = balanced_rows(speakers_per_class=10, clips_per_speaker=3)
    manifest, _ = run(tmp_path, [dict(r) for r in rows], **{"data.folds": 5, "data.seed": 7})
    frame = manifest.sort_values("clip").reset_index(drop=True)
    # the row order prepare splits in: the release's, which here is the clip names' order
    labels, speakers = frame["label"].to_numpy(), frame["speaker"].to_numpy()
    for fold in range(5):
        outer = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=7)
        test = np.zeros(len(frame), bool)
        test[list(outer.split(frame, labels, speakers))[fold][1]] = True
        rest = np.flatnonzero(~test)
        inner = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=7)
        dev = np.zeros(len(frame), bool)
        dev[rest[next(inner.split(rest, labels[rest], speakers[rest]))[1]]] = True
        expected = np.where(test, "test", np.where(dev, "dev", "train"))
        got = split_of(frame["split"], frame["fold"], frame["dev_folds"], fold)
        assert got.tolist() == expected.tolist(), fold


@pytest.mark.parametrize("sentence, kept, malformed", [("Primera línea\nsegunda línea", 20, 0), ("uno\tdos", 19, 1)])
def test_a_line_feed_or_tab_in_a_sentence_neither_invents_nor_loses_a_row(tmp_path, sentence, kept, malformed):
    rows = balanced_rows(speakers_per_class=5, clips_per_speaker=2)  # 20 rows, all usable
    rows[13]["sentence"] = sentence
    frame, metrics = run(tmp_path, rows, **SINGLE_SPLIT)
    assert len(frame) == kept and metrics["dropped"]["malformed_row"] == malformed
    assert len(frame) + sum(metrics["dropped"].values()) == 20  # no invented no_accent row


def test_without_clip_durations_vbr_mp3_lengths_are_counted_not_estimated(tmp_path):
    """MP3s without a Xing header (as `lame -t` writes them): libsndfile's estimate is several times off;
    prepare counts the frames, so 4 s clips are kept under data.max_seconds 5 and above min_seconds 3."""
    from tests.audio.test_decode import mp3_bytes, without_length_tag

    rows = balanced_rows(speakers_per_class=3, clips_per_speaker=1)
    locale = make_release(tmp_path, rows, audio=False, durations=False)
    for i, row in enumerate(rows):
        (locale / "clips" / row["path"]).write_bytes(without_length_tag(mp3_bytes(4.0, seed=i)))
    frame, metrics = prepare(params(**{"data.classes": TWO_CLASSES, "data.min_seconds": 3.0,
                                       "data.max_seconds": 5.0, **SINGLE_SPLIT}).data, locale)
    assert len(frame) == len(rows) and not metrics["dropped"]["too_short"] + metrics["dropped"]["too_long"]
    assert frame["duration"].tolist() == pytest.approx([4.0] * len(rows), abs=0.06)


def test_accents_typed_with_decomposed_letters_format_characters_or_spaces_match_their_class(tmp_path):
    """The TSVs' accents and data.classes' are compared canonically (NFC, no format characters, no
    surrounding spaces), so none of these rows is dropped as unmapped_accent; the manifest has the canonical text."""
    nfd = unicodedata.normalize("NFD", MEXICO)
    assert nfd != MEXICO
    rows = balanced_rows(speakers_per_class=3, clips_per_speaker=1)  # espana: 0, 2, 4; america: 1, 3, 5
    typed = [nfd, f"{MEXICO} ", f"\u200b{MEXICO}", f"{MEXICO}\ufeff", f"\u00a0{MEXICO}\u200d",
             f"{nfd} ,porteño", f"porteño|\u2060{MEXICO} "]
    rows += [{"client_id": speaker_id(1), "path": f"typed{i}.mp3", "accents": a} for i, a in enumerate(typed)]
    rows[0]["accents"] = f"{NORTE}\u200b ,catalán"  # a preset with commas, then free text (up to v20)
    classes = {"espana": [f" {NORTE}\u200e"], "america": [nfd]}  # params.yaml typed the same ways
    frame, metrics = run(tmp_path, rows, **{**SINGLE_SPLIT, "data.classes": classes, "data.min_speakers": 1})
    assert metrics["dropped"]["unmapped_accent"] == 0 and len(frame) == len(rows)
    assert frame.groupby("label").size().to_dict() == {"america": 3 + len(typed), "espana": 3}
    assert frame.loc[frame["clip"] == "typed5.mp3", "accents"].item() == f"{MEXICO}|porteño"
    assert frame.loc[frame["clip"] == rows[0]["path"], "accents"].item() == f"{NORTE}|catalán"
    assert set(frame["accents"]) == {NORTE, MEXICO, f"{MEXICO}|porteño", f"porteño|{MEXICO}", f"{NORTE}|catalán"}


def test_every_configured_accent_that_matches_no_row_is_named_and_an_empty_class_refused(tmp_path, capsys):
    rows = balanced_rows(speakers_per_class=3, clips_per_speaker=1)
    spelt = "España: Norte peninsular"  # not the preset's full text
    classes = {"espana": [NORTE, spelt], "america": [MEXICO]}
    frame, _ = run(tmp_path / "a", [dict(r) for r in rows], **{**SINGLE_SPLIT, "data.classes": classes})
    assert capsys.readouterr().err.splitlines() == [
        f"warning: accent {spelt!r} of data.classes.espana matches no row of validated.tsv; check its spelling "
        "against the release's accents"]
    assert set(frame["label"]) == {"espana", "america"}
    # a class none of whose accents is in the release would vanish from the model: named, then refused
    classes = {**classes, "caribe": [CARIBE, "Caribe"]}
    with pytest.raises(StageError, match=r"no clip left for class\(es\) caribe of data.classes .* remove the class"):
        run(tmp_path / "b", [dict(r) for r in rows], **{**SINGLE_SPLIT, "data.classes": classes})
    err = capsys.readouterr().err.splitlines()
    assert err[1] == (f"warning: class 'caribe' matches no row of validated.tsv: none of its accents ({CARIBE!r}, "
                      "'Caribe') is there; check data.classes.caribe against the release's accents")
    assert len(err) == 2
    # its only rows dropped by a filter: refused too (the class is there, but has nothing to learn from)
    rows += [{"client_id": speaker_id(80), "path": "car.mp3", "accents": CARIBE, "down_votes": 5}]
    with pytest.raises(StageError, match=r"class\(es\) caribe .*'down_voted': 1"):
        run(tmp_path / "c", [dict(r) for r in rows], **{**SINGLE_SPLIT, "data.classes": {**classes, "caribe": [CARIBE]}})


def test_a_speaker_with_clips_of_two_classes_keeps_only_its_majority_class(tmp_path, capsys):
    """Known answer: speaker 90 (3 norte clips, 1 caribe) stays norte; speaker 91 (2 mexico, 2 caribe) is tied
    and dropped whole; caribe keeps its 2 own speakers, so it no longer reaches data.min_speakers 3."""
    rows = balanced_rows(speakers_per_class=4, clips_per_speaker=2)
    rows += [{"client_id": speaker_id(60 + n), "path": f"car{n}.mp3", "accents": CARIBE} for n in range(2)]
    rows += [{"client_id": speaker_id(90), "path": f"mixed{k}.mp3", "accents": a}
             for k, a in enumerate([NORTE, NORTE, CARIBE, NORTE])]
    rows += [{"client_id": speaker_id(91), "path": f"tied{k}.mp3", "accents": a}
             for k, a in enumerate([MEXICO, CARIBE, CARIBE, MEXICO])]
    classes = {"espana": [NORTE], "america": [MEXICO], "caribe": [CARIBE]}
    frame, metrics = run(tmp_path, rows, **{**SINGLE_SPLIT, "data.classes": classes, "data.min_speakers": 3})
    assert (metrics["dropped"]["speaker_other_accent"], metrics["dropped"]["too_few_speakers"]) == (1 + 4, 2)
    assert (frame.groupby("speaker")["label"].nunique() == 1).all()
    assert sorted(frame.loc[frame["speaker"] == speaker_id(90), "clip"]) == ["mixed0.mp3", "mixed1.mp3", "mixed3.mp3"]
    assert speaker_id(91) not in set(frame["speaker"])
    assert metrics["speakers"]["train"]["espana"] + metrics["speakers"]["dev"]["espana"] + \
        metrics["speakers"]["test"]["espana"] == 5
    assert set(frame["label"]) == {"espana", "america"}
    assert len(frame) + sum(metrics["dropped"].values()) == len(rows)
    assert ("warning: 2 speaker(s) have clips of two or more classes: each keeps its majority class (1 tied, "
            "dropped whole); 5 clip(s) dropped as speaker_other_accent") in capsys.readouterr().err


def test_a_dev_share_too_small_for_the_speakers_is_one_line_naming_it(tmp_path):
    rows = balanced_rows(speakers_per_class=10, clips_per_speaker=2)  # 20 speakers, 16 outside each test fold
    with pytest.raises(StageError) as err:
        run(tmp_path, rows, **{"data.split.train": 0.79, "data.split.dev": 0.01})
    assert str(err.value) == ("data.split.dev = 0.01 makes each fold's dev split 1/80 of its other speakers "
                              "(dev / (train + dev)), but fold 0 leaves 16 of them; raise data.split.dev")


def test_the_unlabelled_pool_keeps_whole_speakers_of_no_class_and_none_of_a_labelled_speaker(tmp_path):
    rows = balanced_rows(speakers_per_class=5, clips_per_speaker=2)
    labelled_speaker = rows[0]["client_id"]
    extra = [
        *({"client_id": speaker_id(80), "path": f"none{i}.mp3", "accents": ""} for i in range(3)),
        *({"client_id": speaker_id(81), "path": f"other{i}.mp3", "accents": "acento neutro"} for i in range(2)),
        {"client_id": speaker_id(82), "path": "u82.mp3", "accents": ""},
        {"client_id": speaker_id(83), "path": "short82.mp3", "accents": "", "seconds": 0.4},
        {"client_id": speaker_id(84), "path": "gone.mp3", "accents": "", "_no_file": True},
        {"client_id": labelled_speaker, "path": "mine.mp3", "accents": ""},  # a labelled speaker's clip
        {"client_id": speaker_id(85), "path": "ambiguous.mp3", "accents": f"{MEXICO},{NORTE}"},  # not unlabelled
    ]
    frame, metrics = run(tmp_path, rows + extra, **{"data.unlabelled_clips": 100})
    pool = frame[frame["split"] == "pool"]
    assert sorted(pool["clip"]) == ["none0.mp3", "none1.mp3", "none2.mp3", "other0.mp3", "other1.mp3", "u82.mp3"]
    assert (pool["label"] == "").all() and (pool["fold"] == -1).all() and (pool["dev_folds"] == 0).all()
    assert not set(pool["speaker"]) & set(frame.loc[frame["split"] != "pool", "speaker"])
    assert metrics["pool"]["clips"] == 6 and metrics["pool"]["speakers"] == 3
    assert {k: v for k, v in metrics["pool"]["dropped"].items() if v} == \
        {"too_short": 1, "missing_file": 1, "labelled_speaker": 1}
    labelled = frame[frame["split"] != "pool"].reset_index(drop=True)
    without, metrics0 = run(tmp_path / "again", rows + extra)  # data.unlabelled_clips: 0, the default
    pd.testing.assert_frame_equal(labelled.drop(columns="audio_path"), without.drop(columns="audio_path"))  # the labelled manifest is the same with or without a pool
    assert metrics0["pool"]["clips"] == 0 and metrics0["pool"]["dropped"]["pool_cap"] == 0
    assert metrics0["dropped"] == metrics["dropped"]
    # a budget of 4 clips keeps whole speakers only: never a speaker cut in part
    capped, metrics4 = run(tmp_path / "capped", rows + extra, **{"data.unlabelled_clips": 4})
    kept = capped[capped["split"] == "pool"].groupby("speaker").size()
    assert kept.sum() <= 4 and kept.sum() + metrics4["pool"]["dropped"]["pool_cap"] == 6
    assert dict(kept) == {s: n for s, n in {speaker_id(80): 3, speaker_id(81): 2, speaker_id(82): 1}.items()
                          if s in kept.index}
