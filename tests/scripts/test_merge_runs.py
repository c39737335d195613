"""Runs of several ablate.py prediction files regrouped into one table, and paired on the same clips."""

import gzip
import json

import pytest
from merge_runs import main


def run(fold, probs, **more):
    # one fold: two speakers, one clip each, classes a (speaker 2f) and b (speaker 2f+1)
    return {"variant": "default", "base": "default", "cell": "lstm", "fold": fold, "seed": 42, "best_dev": {},
            "best_train": {"accuracy": 0.5}, "best_epoch": 3, "epochs_run": 3, "train_seconds": 1.0,
            "classes": ["a", "b"], "labels": [0, 1], "speakers": [f"s{2 * fold}", f"s{2 * fold + 1}"],
            "probs": probs, **more}


RIGHT, WRONG_B = [[0.9, 0.1], [0.2, 0.8]], [[0.9, 0.1], [0.7, 0.3]]


def test_pieces_are_pooled_and_a_self_training_files_two_models_become_two_rows(tmp_path, capsys):
    write = lambda name, runs: (tmp_path / name).write_text(json.dumps({"command": f"ablate {name}", "runs": runs}))  # noqa: E731
    write("f0.json", [run(0, WRONG_B)])
    (tmp_path / "f1.json.gz").write_bytes(gzip.compress(json.dumps({"command": "ablate f1.json", "runs": [run(1, WRONG_B)]}).encode()))
    write("f1.json", [run(1, WRONG_B)])
    write("st.json", [run(f, RIGHT, teacher_probs=WRONG_B, best_dev={"accuracy": 0.9}) for f in (0, 1)])
    assert main(["--out", str(tmp_path / "out"), f"default={tmp_path / 'f0.json'}", f"default={tmp_path / 'f1.json.gz'}",
                 f"default+st={tmp_path / 'st.json'}"]) == 0
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    # two folds pooled: class a always right, class b never -> 0.5; the self-trained row right everywhere
    assert [(r["variant"], r["folds"], r["pooled_balanced_accuracy"]) for r in saved["rows"]] == [
        ("default", 2, 0.5), ("default+st", 2, 1.0)]
    [pair] = saved["paired"]
    assert (pair["a"], pair["b"], pair["folds"], pair["difference"]) == ("default", "default+st", [0, 1], 0.5)
    report = (tmp_path / "out" / "ablation.md").read_text()
    assert "`ablate f0.json`; `ablate f1.json`; `ablate st.json`" in report and "| LSTM | 1 | default+st | 0,1 | +0.500 [" in report
    # the teacher models of the same file: the same row as the pieces, so nothing to gain
    assert main(["--out", str(tmp_path / "t"), f"default={tmp_path / 'st.json'}:teacher",
                 f"default+st={tmp_path / 'st.json'}"]) == 0
    teacher = json.loads((tmp_path / "t" / "ablation.json").read_text())
    assert teacher["paired"][0]["difference"] == 0.5 and teacher["rows"][0]["train_accuracy"] is None
    # the file's dev accuracy and epochs are the second model's: none of them in the teacher's row
    assert "| default | LSTM | 0.500 [0.000, 1.000] | 0.500 [0.000, 1.000] | – | – | – | – | – |" in (tmp_path / "t" / "ablation.md").read_text()
    assert "| default+st | LSTM | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] | 0.500 | 0.900 | -0.400 | 3.0 | 1 |" in \
        (tmp_path / "t" / "ablation.md").read_text()
    # a row of fewer folds says which
    assert main(["--out", str(tmp_path / "p"), f"default={tmp_path / 'st.json'}", f"b={tmp_path / 'f1.json'}"]) == 0
    rows = json.loads((tmp_path / "p" / "ablation.json").read_text())["rows"]
    assert [(r["variant"], r["folds"]) for r in rows] == [("default", 2), ("b~f1", 1)]
    with pytest.raises(SystemExit, match="its runs hold no teacher_probs"):
        main(["--out", str(tmp_path / "x"), f"default={tmp_path / 'f0.json'}:teacher"])
    # pieces of other folds than the first name's: rows, no pair
    assert main(["--out", str(tmp_path / "q"), f"a={tmp_path / 'f0.json'}", f"b={tmp_path / 'f1.json'}"]) == 0
    assert json.loads((tmp_path / "q" / "ablation.json").read_text())["paired"] == []


@pytest.mark.parametrize("runs, message", [
    ([run(0, RIGHT), {**run(0, WRONG_B), "variant": "alt", "base": "alt"}], "holds the runs of 2 variants \\(alt, default\\)"),
    ([run(0, RIGHT), {**run(0, WRONG_B), "seed": 7}], "holds the runs of 2 training seeds \\(42, 7\\)"),
])
def test_a_file_of_several_variants_or_seeds_is_refused(tmp_path, runs, message):
    (tmp_path / "two.json").write_text(json.dumps({"command": "ablate", "runs": runs}))
    with pytest.raises(SystemExit, match=message):  # one row would silently keep one of them per fold
        main(["--out", str(tmp_path / "x"), f"x={tmp_path / 'two.json'}"])


def test_pieces_of_two_seeds_and_other_json_are_refused(tmp_path):
    (tmp_path / "f0.json").write_text(json.dumps({"command": "a", "runs": [run(0, RIGHT)]}))
    (tmp_path / "f1.json").write_text(json.dumps({"command": "b", "runs": [run(1, RIGHT, seed=7)]}))
    with pytest.raises(SystemExit, match="the runs of x come from several training seeds"):
        main(["--out", str(tmp_path / "x"), f"x={tmp_path / 'f0.json'}", f"x={tmp_path / 'f1.json'}"])
    (tmp_path / "ablation.json").write_text(json.dumps({"rows": []}))  # ablate's report, not its --predictions
    with pytest.raises(SystemExit, match="ablation.json: not an ablate.py --predictions file \\(no command and runs\\)"):
        main(["--out", str(tmp_path / "x"), f"x={tmp_path / 'ablation.json'}"])


def test_an_earlier_merges_rows_are_kept_unless_given_again(tmp_path):
    write = lambda name, runs: (tmp_path / name).write_text(json.dumps({"command": f"ablate {name}", "runs": runs}))  # noqa: E731
    write("f0.json", [run(0, RIGHT)])
    write("f1.json", [run(1, RIGHT)])
    write("st.json", [run(f, RIGHT, teacher_probs=WRONG_B) for f in (0, 1)])
    first = tmp_path / "first"
    assert main(["--out", str(first), f"default={tmp_path / 'f0.json'}", f"default={tmp_path / 'f1.json'}",
                 f"b={tmp_path / 'f1.json'}"]) == 0
    # the prediction files of the first merge are gone; a second merge keeps its rows and pair
    (tmp_path / "f0.json").unlink()
    earlier = json.loads((first / "ablation.json").read_text())  # as merges before --keep wrote it: one string
    (first / "ablation.json").write_text(json.dumps({**earlier, "merged_by": "python scripts/merge_runs.py old"}))
    assert main(["--out", str(tmp_path / "second"), "--keep", str(first / "ablation.json"),
                 f"default={tmp_path / 'st.json'}:teacher", f"default+st={tmp_path / 'st.json'}"]) == 0
    saved = json.loads((tmp_path / "second" / "ablation.json").read_text())
    assert [(r["variant"], r["pooled_balanced_accuracy"]) for r in saved["rows"]] == [
        ("default", 0.5), ("b~f1", 1.0), ("default+st", 1.0)]  # default given again: replaced (1.0 before)
    assert [(p["b"], p["folds"], p["difference"]) for p in saved["paired"]] == [("b", [1], 0.0), ("default+st", [0, 1], 0.5)]
    assert [c["command"] for c in saved["commands"]] == ["ablate f0.json", "ablate f1.json", "ablate st.json"]
    assert saved["merged_by"][0] == "python scripts/merge_runs.py old" and "--keep" in saved["merged_by"][1]
    assert "| b~f1 | LSTM | 1.000 [" in (tmp_path / "second" / "ablation.md").read_text()
    # a new row of fewer folds than the kept rows says which, though every new row has the same folds
    assert main(["--out", str(tmp_path / "third"), "--keep", str(first / "ablation.json"), f"c={tmp_path / 'f1.json'}"]) == 0
    assert [r["variant"] for r in json.loads((tmp_path / "third" / "ablation.json").read_text())["rows"]] == [
        "default", "b~f1", "c~f1"]
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(SystemExit, match="--keep .*bad.json: not a merge_runs.py ablation.json"):
        main(["--out", str(tmp_path / "x"), "--keep", str(tmp_path / "bad.json"), f"default={tmp_path / 'st.json'}"])
