"""The ablation study's bookkeeping: cumulative variants, valid overrides, and one table from several runs."""

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ablate import BASELINE, STEPS, merge_rows, variants

from acento.config import PARAMS_FILE, apply_overrides, parse_params
from acento.model.presets import PRESETS


def test_each_step_adds_its_change_to_the_step_above():
    table = variants()
    names = [name for name, _ in STEPS]
    assert table["baseline"] == BASELINE
    for above, (name, change) in zip(names, STEPS[1:]):
        assert table[name] == {**table[above], **change}
    # the last cumulative step differs from the one above only by its own change
    assert {k for k in table[names[-1]] if table[names[-1]][k] != table[names[-2]].get(k)} == set(STEPS[-1][1])


def test_every_variant_is_a_valid_configuration_and_presets_keep_the_params_normalisation():
    raw = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    defaults = parse_params(raw)
    for name, overrides in variants().items():
        params = parse_params(apply_overrides(raw, overrides))  # raises on a bad key or value
        # each variant is params.yaml plus its own overrides, never on top of an earlier variant's
        assert parse_params(raw) == defaults
        if name.startswith("preset:"):
            preset = PRESETS[name.split(":", 1)[1]]
            assert params.rnn == dataclasses.replace(defaults.rnn, **preset)
            assert params.normalise == defaults.normalise and params.train == defaults.train
        else:
            assert params.model == defaults.model and params.data == defaults.data


def test_merged_rows_replace_a_rerun_and_follow_the_variant_order():
    def row(variant, cell, value):
        return {"variant": variant, "cell": cell, "pooled_balanced_accuracy": value}

    old = [row("+augment", "gru", 0.3), row("baseline", "gru", 0.2), row("baseline", "lstm", 0.1)]
    new = [row("baseline", "gru", 0.25)]
    merged = merge_rows(old, new, ["baseline", "+augment"])
    assert [(r["variant"], r["cell"], r["pooled_balanced_accuracy"]) for r in merged] == [
        ("baseline", "lstm", 0.1), ("baseline", "gru", 0.25), ("+augment", "gru", 0.3)]


def test_a_report_pools_the_folds_and_keeps_earlier_rows(tmp_path):
    import argparse
    import json
    import time

    from ablate import write_report

    def runs(variant):  # two folds, two speakers each; class 0 right half the time, class 1 always
        return [{"variant": variant, "base": variant, "cell": "gru", "fold": f, "seed": 42,
                 "best_dev": {"accuracy": 0.3, "macro_f1": 0.3},
                 "best_train": {"accuracy": 0.4}, "best_epoch": 3, "epochs_run": 5, "train_seconds": 10.0,
                 "classes": ["a", "b"], "labels": [0, 1, 0, 1], "probs": [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0, 1]],
                 "speakers": [2 * f, 2 * f, 2 * f + 1, 2 * f + 1]} for f in range(2)]

    args = argparse.Namespace(out=tmp_path)
    write_report(runs("+augment"), args, ["--variants", "+augment"], variants(), {}, time.perf_counter(), 2, 1)
    report = write_report(runs("baseline"), args, ["--variants", "baseline"], variants(), {}, time.perf_counter(), 2, 1)
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert [(r["variant"], r["pooled_balanced_accuracy"], r["gap"]) for r in saved["rows"]] == [
        ("baseline", 0.75, 0.1), ("+augment", 0.75, 0.1)]
    assert [c["command"] for c in saved["commands"]] == [
        "python scripts/ablate.py --variants +augment", "python scripts/ablate.py --variants baseline"]
    assert saved["rows"][0]["overrides"] == variants()["baseline"]
    assert "| +augment | GRU | 0.750 [" in report


def test_runs_without_a_dev_split_report_no_dev_accuracy(tmp_path):
    import argparse
    import json
    import time

    from ablate import write_report

    # train.dev_speakers: train: the runs carry no dev scores, the last epoch is kept
    runs = [{"variant": "default", "base": "default", "cell": "lstm", "fold": f, "seed": 42, "best_dev": {},
             "best_train": {"accuracy": 0.8}, "best_epoch": 5, "epochs_run": 5, "train_seconds": 1.0,
             "classes": ["a", "b"], "labels": [0, 1], "probs": [[0.9, 0.1], [0.6, 0.4]], "speakers": [2 * f, 2 * f + 1]}
            for f in range(2)]
    report = write_report(runs, argparse.Namespace(out=tmp_path), ["--variants", "default"], variants(), {},
                          time.perf_counter(), 2, 1)
    [row] = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert row["dev_accuracy"] is None and row["gap"] is None and row["train_accuracy"] == 0.8
    assert "| default | LSTM | 0.500 [" in report and "| 0.800 | – | – | 5.0 |" in report


def test_a_learning_curve_leaves_out_that_share_of_each_classs_training_speakers():
    from acento.evaluation.crossval import speakers_left_out

    speakers = np.array([f"s{s}" for s in range(16) for _ in range(3)])
    labels = np.array([s % 2 for s in range(16) for _ in range(3)])
    dropped = speakers_left_out(speakers, labels, 0.25, seed=0)
    kept = {s for s in speakers if s not in dropped}
    assert sorted(int(s[1:]) % 2 for s in kept) == [0, 0, 1, 1]  # 8 per class -> 2
    assert speakers_left_out(speakers, labels, 0.25, seed=0) == dropped
    assert speakers_left_out(speakers, labels, 0.25, seed=1) != dropped
    assert len(speakers_left_out(speakers, labels, 0.01, seed=0)) == 14  # at least one speaker per class kept
    assert speakers_left_out(speakers, labels, 1.0, seed=0) == set()


def test_seeds_are_averaged_per_clip_and_each_seed_is_reported():
    from ablate import summarise

    # one fold, two speakers, two seeds: seed 1 gets clip 0 wrong, seed 2 gets clip 1 wrong; their mean
    # probabilities get both right
    base = {"variant": "defaultx2seeds", "base": "default", "cell": "lstm", "fold": 0, "classes": ["a", "b"],
            "labels": [0, 1], "speakers": ["s1", "s2"], "best_dev": {"accuracy": 0.5}, "best_train": {"accuracy": 0.6},
            "best_epoch": 2, "train_seconds": 1.0}
    runs = [{**base, "seed": 1, "probs": [[0.45, 0.55], [0.1, 0.9]]},
            {**base, "seed": 2, "probs": [[0.9, 0.1], [0.6, 0.4]]}]
    assert summarise(runs[:1], folds=1, n_seeds=2) == []  # a seed still running
    [row] = summarise(runs, folds=1, n_seeds=2)
    assert row["pooled_balanced_accuracy"] == 1.0 and row["per_seed"] == [0.5, 0.5] and row["seeds"] == 2
    assert row["base"] == "default" and row["train_fraction"] == 1.0
    half = [{**run, "variant": "default@0.5", "train_fraction": 0.5} for run in runs]
    assert summarise(half, folds=1, n_seeds=2)[0]["train_fraction"] == 0.5


def test_rows_give_the_speaker_level_balanced_accuracy_of_the_pooled_probabilities(tmp_path):
    import argparse
    import time

    from ablate import write_report

    # speaker a (class 0): one clip of two wrong, summed 1.3 / 0.7 -> right; speaker b (class 1): two clips of
    # three wrong, summed 1.3 / 1.7 -> right. Per clip 1/2 and 1/3 -> 0.417; per speaker both right -> 1.0
    run = {"variant": "default", "base": "default", "cell": "lstm", "fold": 0, "seed": 42, "best_dev": {},
           "best_train": {"accuracy": 0.8}, "best_epoch": 5, "epochs_run": 5, "train_seconds": 1.0,
           "classes": ["x", "y"], "labels": [0, 0, 1, 1, 1], "speakers": ["a", "a", "b", "b", "b"],
           "probs": [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.6, 0.4], [0.1, 0.9]]}
    report = write_report([run], argparse.Namespace(out=tmp_path), ["--variants", "default"], variants(), {},
                          time.perf_counter(), 1, 1)
    assert "| default | LSTM | 0.417 [" in report and "] | 1.000 [1.000, 1.000] | 0.800 |" in report


def test_a_learning_curve_is_drawn_for_a_variant_measured_at_several_shares(tmp_path):
    from ablate import plot_learning_curves

    row = {"base": "default", "cell": "gru", "pooled_balanced_accuracy": 0.4, "ci_low": 0.35, "ci_high": 0.45}
    plot_learning_curves([{**row, "variant": "default"}], tmp_path / "one.png")
    assert not (tmp_path / "one.png").exists()  # one share: no curve
    plot_learning_curves([{**row, "variant": "default"},
                          {**row, "variant": "default@0.5", "train_fraction": 0.5, "pooled_balanced_accuracy": 0.3,
                           "ci_low": 0.25, "ci_high": 0.35}],
                         tmp_path / "two.png")
    assert (tmp_path / "two.png").read_bytes()[:4] == b"\x89PNG"


def test_a_set_item_without_a_value_is_one_line(capsys):
    from ablate import main

    assert main(["--variants", "default", "--set", "train.epochs"]) == 2
    assert capsys.readouterr().err.strip() == "error: --set takes KEY=VALUE pairs, got 'train.epochs'"


def test_two_rows_are_compared_clip_by_clip_over_their_mean_seed(tmp_path, capsys):
    import json

    from tests.helpers import load_script

    paired = load_script("paired_rows")

    def predictions(name, probs_by_seed):  # one fold, four clips of four speakers, classes a and b
        runs = [{"variant": name, "cell": "lstm", "fold": 0, "seed": seed, "speakers": ["s1", "s2", "s3", "s4"],
                 "labels": [0, 0, 1, 1], "probs": probs} for seed, probs in probs_by_seed.items()]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"command": "x", "runs": runs}))
        return path

    right, wrong = [0.8, 0.2], [0.2, 0.8]
    # A: clips 2 and 4 wrong in both seeds (0.5)
    a = predictions("a", {1: [right, wrong, [0.3, 0.7], right], 2: [right, wrong, [0.3, 0.7], right]})
    # B: seed 1 all right (1.0), seed 2 misses clips 1 and 2 (0.5, no better than A); their mean all right
    b = predictions("b", {1: [right, [0.6, 0.4], [0.3, 0.7], [0.4, 0.6]],
                          2: [[0.45, 0.55], [0.45, 0.55], [0.3, 0.7], [0.1, 0.9]]})
    assert paired.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "A " in out and ": 0.500 (2 seed(s))" in out and ": 1.000 (2 seed(s))" in out
    assert "B − A balanced accuracy +0.500" in out
    # each seed alone: four speakers are too few for either seed's interval to exclude 0
    assert "Each of the 2 training seeds alone: B better in 0, A better in 0, no significant difference in 2." in out
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"runs": [{**r, "labels": [1, 0, 1, 1]} for r in json.loads(b.read_text())["runs"]]}))
    assert paired.main([str(a), str(other)]) == 2
    assert "different clips" in capsys.readouterr().err


def test_two_scored_csvs_are_compared_clip_by_clip_also_on_merged_classes(tmp_path, capsys):
    """`acento-score --predictions` CSVs: paired on clip names (rows in any order); `--merge` sums each clip's
    probabilities first, so that a model can gain on seven classes and not on two."""
    from tests.helpers import load_script

    paired = load_script("paired_rows")
    head = "clip,speaker,label,predicted,p_mexico,p_norte,p_sur\n"
    a_rows = ["c1,s1,norte,sur,0.3,0.2,0.5",      # wrong; Spain (0.7) on two classes
              "c2,s2,sur,sur,0.1,0.0,0.9", "c3,s3,mexico,mexico,0.8,0.1,0.1",
              "c4,s4,mexico,mexico,0.4,0.3,0.3"]  # right; Spain (0.6), wrong, on two classes
    b_rows = [a_rows[3], a_rows[2], a_rows[1], "c1,s1,norte,norte,0.3,0.6,0.1"]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(head + "\n".join(a_rows) + "\n")
    b.write_text(head + "\n".join(b_rows) + "\n")
    assert paired.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert ": 0.667 (one model's predictions)" in out and ": 1.000 (one model's predictions)" in out
    assert "B − A balanced accuracy +0.333" in out
    merge = ["--merge", "spain=norte,sur", "--merge", "americas=mexico"]
    assert paired.main([str(a), str(b), *merge]) == 0
    out = capsys.readouterr().out
    assert out.count(": 0.750 (one model's predictions)") == 2 and "B − A balanced accuracy +0.000" in out
    other = tmp_path / "other.csv"
    other.write_text(head + "\n".join(a_rows[:3] + ["c5,s4,mexico,mexico,0.4,0.3,0.3"]) + "\n")
    assert paired.main([str(a), str(other)]) == 2
    assert "different clips" in capsys.readouterr().err
    assert paired.main([str(a), str(b), "--merge", "spain=norte,valencia"]) == 2
    assert capsys.readouterr().err.startswith("error: --merge 'spain=norte,valencia': the model has no class")


def _failing_first(job: dict) -> dict:
    """A stand-in for crossval.run_fold: fold 0 fails at once, the others take a while, then leave a mark."""
    if job["fold"] == 0:
        raise ValueError("fold 0 failed")
    time.sleep(job["seconds"])
    (Path(job["marks"]) / str(job["fold"])).touch()
    return job


@pytest.mark.parametrize("sigterm_handler", [False, True])
def test_a_failed_run_ends_the_running_and_queued_ones_instead_of_waiting_for_them(tmp_path, monkeypatch,
                                                                                  sigterm_handler):
    """The pool behind ablate and final: when a run fails (or the command is interrupted or killed), the
    other runs stop too; a plain `with ProcessPoolExecutor` block first waited for every run already
    handed to a worker (hours of training), so that `kill` or `timeout` seemed to do nothing.  Also with
    ablate's SIGTERM handler installed, which the workers inherit."""
    import signal

    import acento.evaluation.crossval as crossval

    monkeypatch.setattr(crossval, "run_fold", _failing_first)  # workers are forked: they see it too
    if sigterm_handler:
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    jobs = [{"fold": fold, "seconds": 2, "marks": str(tmp_path)} for fold in range(6)]
    try:
        with pytest.raises(ValueError, match="fold 0 failed"):
            list(crossval.run_folds(jobs, workers=2))
    finally:
        if sigterm_handler:
            signal.signal(signal.SIGTERM, previous)
    time.sleep(3)  # long enough for any run still alive to finish and leave its mark
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _fake_runs(jobs, workers):
    """run_folds without training: fold f's two test clips (speakers 2f, 2f+1; labels 0, 1), the first right
    only in odd folds, the second always right."""
    for job in jobs:
        f = job["fold"]
        yield {"variant": job["variant"], "base": job["base"], "cell": job["cell"], "fold": f, "seed": 42,
               "best_dev": {}, "best_train": {"accuracy": 0.5}, "best_epoch": 80, "epochs_run": 80,
               "train_seconds": 1.0, "classes": ["a", "b"], "labels": [0, 1],
               "probs": [[0.9, 0.1] if f % 2 else [0.2, 0.8], [0.3, 0.7]], "speakers": [2 * f, 2 * f + 1]}


def test_some_folds_only_pool_those_folds_speakers_and_name_them(tmp_path, monkeypatch, capsys):
    import json

    import ablate

    asked = []
    monkeypatch.setattr(ablate, "build_feature_cache", lambda params, folder, extra: (tmp_path / "cache.h5", 5))
    monkeypatch.setattr(ablate, "run_folds", lambda jobs, workers: (asked.extend(jobs), _fake_runs(jobs, workers))[1])
    out = tmp_path / "out"
    assert ablate.main(["--variants", "default", "--cells", "gru", "--folds", "3", "1", "--out", str(out),
                        "--predictions", str(out / "p.json")]) == 0
    assert [j["fold"] for j in asked] == [1, 3]
    [row] = json.loads((out / "ablation.json").read_text())["rows"]
    # folds 1 and 3: every clip right; fold 0 or 2 would have brought a wrong one
    assert (row["variant"], row["folds"], row["test_folds"], row["pooled_balanced_accuracy"]) == \
        ("default~f1,3", 2, [1, 3], 1.0)
    assert "| default~f1,3 | GRU | 1.000 [" in (out / "ablation.md").read_text()
    assert ablate.main(["--variants", "default", "--cells", "gru", "--folds", "5", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --folds 5: data.folds is 5; give folds in 0..4"


def test_a_stopped_ablation_keeps_the_predictions_of_every_finished_run(tmp_path, monkeypatch):
    import json

    import ablate

    def stopped_after_one(jobs, workers):
        yield next(_fake_runs(jobs, workers))
        raise KeyboardInterrupt

    monkeypatch.setattr(ablate, "build_feature_cache", lambda params, folder, extra: (tmp_path / "cache.h5", 5))
    monkeypatch.setattr(ablate, "run_folds", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        ablate.main(["--variants", "default", "--cells", "lstm", "--out", str(tmp_path), "--predictions",
                     str(tmp_path / "p.json")])
    assert [(r["variant"], r["fold"]) for r in json.loads((tmp_path / "p.json").read_text())["runs"]] == \
        [("default", 0)]


def test_the_presets_table_compares_networks_on_the_folds_every_one_ran(tmp_path, capsys):
    """scripts/presets_table.py: runs grouped by network and cell across files (an ablation run in pieces),
    rows missing a fold left out, pooled values and paired rows on the given folds' clips."""
    import json

    from tests.helpers import load_script

    table = load_script("presets_table")
    right, wrong = [0.8, 0.2], [0.2, 0.8]

    def run(base, cell, fold, first=right):  # four clips of four speakers per fold, classes 0, 0, 1, 1
        return {"variant": base, "base": base, "cell": cell, "fold": fold, "seed": 42, "labels": [0, 0, 1, 1],
                "speakers": [f"s{fold}{i}" for i in range(4)], "probs": [first, right, wrong, wrong],
                "best_train": {"accuracy": 0.5}, "train_seconds": 10.0}

    def file(name, runs):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"command": f"ablate {name}", "runs": runs}))
        return str(path)

    a = file("a", [run(n, c, f, wrong if (n, c, f) == ("preset:x", "lstm", 2) else right)
                   for n in ("default", "preset:x") for c in ("lstm", "gru") for f in range(3)
                   if (n, c, f) != ("preset:x", "gru", 2)]
                  + [run("preset:y", "lstm", f) for f in range(2)])
    b = file("b", [run("preset:x", "gru", 2)])  # the GRU's third fold, run apart
    assert table.main([a, b, "--folds", "0", "1", "2", "--all-folds", "3", "--out", str(tmp_path / "out")]) == 0
    assert "left out: preset:y lstm" in capsys.readouterr().err
    saved = json.loads((tmp_path / "out" / "presets.json").read_text())
    assert [(r["network"], r["cell"], round(r["pooled_balanced_accuracy"], 4), r["all_folds"] is not None)
            for r in saved["rows"]] == [("preset:x", "lstm", 0.9167, True), ("preset:x", "gru", 1.0, True),
                                        ("default", "lstm", 1.0, True), ("default", "gru", 1.0, True)]
    pairs = {(p["a"], p["b"]): round(p["difference"], 4) for p in saved["paired"]}
    assert pairs == {("preset:x lstm", "preset:x gru"): 0.0833, ("default lstm", "default gru"): 0.0,
                     ("default lstm", "preset:x lstm"): -0.0833, ("default gru", "preset:x gru"): 0.0}
    assert [round(p["all_folds"]["difference"], 4) for p in saved["paired"]] == [0.0833, 0.0, -0.0833, 0.0]
    assert "| preset:x | LSTM | 1 | 0.917 [" in (tmp_path / "out" / "presets.md").read_text()
    assert table.main([a, b, "--folds", "0", "1", "--out", str(tmp_path / "two")]) == 0  # preset:y ran these
    two = json.loads((tmp_path / "two" / "presets.json").read_text())
    assert [r["network"] for r in two["rows"]] == ["preset:x", "preset:x", "preset:y", "default", "default"]
    # --all-folds 5: no row has every fold, so no whole-corpus values
    assert {p["all_folds"] is None for p in two["paired"]} == {True}
    assert [r["all_folds"] for r in two["rows"]] == [None] * 5
    with pytest.raises(SystemExit, match="no network of these files ran on every one of --folds 3"):
        table.main([a, b, "--folds", "3", "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="preset:x gru fold 2 seed 42 is in both"):
        table.main([a, b, b, "--folds", "0", "--out", str(tmp_path / "dup")])


def test_the_presets_table_takes_the_reference_from_a_gzipped_self_training_files_first_models(tmp_path):
    """FILE.json.gz:teacher: the reference network's rows are a `--self-train` file's first models (its
    teacher_probs), without the second models' training accuracy and seconds."""
    import gzip
    import json

    from tests.helpers import load_script

    table = load_script("presets_table")
    right, wrong = [0.8, 0.2], [0.2, 0.8]

    def run(base, fold, probs, **more):  # two clips of two speakers per fold, classes 0 and 1
        return {"variant": base, "base": base, "cell": "lstm", "fold": fold, "seed": 42, "labels": [0, 1],
                "speakers": [f"s{fold}0", f"s{fold}1"], "probs": probs,
                "best_train": {"accuracy": 0.5}, "train_seconds": 10.0, **more}

    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps({"command": "ablate presets", "runs": [run("preset:x", f, [right, right])
                                                                          for f in range(2)]}))
    st = tmp_path / "st.json.gz"  # the students are always right, the teachers say class 0 as the preset
    st.write_bytes(gzip.compress(json.dumps({"command": "ablate st", "runs": [
        run("default", f, [right, wrong], teacher_probs=[right, right]) for f in range(2)]}).encode()))
    out = tmp_path / "out"
    assert table.main([str(presets), f"{st}:teacher", "--folds", "0", "1", "--all-folds", "2", "--out", str(out)]) == 0
    saved = json.loads((out / "presets.json").read_text())
    assert [(r["network"], r["pooled_balanced_accuracy"], r["train_accuracy"]) for r in saved["rows"]] == [
        ("preset:x", 0.5, 0.5), ("default", 0.5, None)]
    assert [(p["a"], p["b"], p["difference"]) for p in saved["paired"]] == [("default lstm", "preset:x lstm", 0.0)]
    assert "| default | LSTM | 1 | 0.500 [" in (out / "presets.md").read_text()
    assert "`ablate st`" in (out / "presets.md").read_text()
    # the same file without :teacher is the students': right everywhere
    assert table.main([str(presets), str(st), "--folds", "0", "1", "--out", str(tmp_path / "students")]) == 0
    students = json.loads((tmp_path / "students" / "presets.json").read_text())
    assert [r["pooled_balanced_accuracy"] for r in students["rows"]] == [0.5, 1.0]
    with pytest.raises(SystemExit, match="presets.json: its runs hold no teacher_probs"):
        table.main([f"{presets}:teacher", "--folds", "0", "--out", str(tmp_path / "none")])


def test_fold_workers_leave_the_repositorys_vscode_signal_files_alone(tmp_path, monkeypatch):
    """Parallel fold runs shared dvclive's .dvc/tmp/exps/run signal files, and one run's removal failed
    another's; a worker turns them off (acento.evaluation.crossval.no_vscode_signals)."""
    import dvclive.live
    import dvclive.vscode

    from acento.evaluation.crossval import no_vscode_signals

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    for name in ("mark_dvclive_step_completed", "cleanup_dvclive_step_completed", "mark_dvclive_only_started",
                 "mark_dvclive_only_ended"):
        monkeypatch.setattr(dvclive.live, name, getattr(dvclive.vscode, name))  # restored after the test
    monkeypatch.delenv("DVC_ROOT", raising=False)
    dvclive.live.mark_dvclive_step_completed(1)  # as dvclive does without it: a file in the repository
    assert (tmp_path / ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED").exists()
    (tmp_path / ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED").unlink()
    no_vscode_signals()
    dvclive.live.mark_dvclive_step_completed(2)
    dvclive.live.mark_dvclive_only_started("x")
    assert list((tmp_path / ".dvc/tmp/exps/run").iterdir()) == []


def test_a_killed_ablations_scratch_folder_is_removed_by_the_next_run(tmp_path, monkeypatch, capsys):
    """The scratch folder is named after its process (acento-ablate-PID-...): one left by a killed run
    (SIGKILL runs no cleanup) goes at the next run; the run's own goes at its end, even a failed one."""
    import tempfile

    import ablate

    from tests.test_runtime import dead_pid

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"acento-ablate-{dead_pid()}-k1ll3d"
    (stale / "caches-0123").mkdir(parents=True)
    made = []
    monkeypatch.setattr(ablate, "build_feature_cache",
                        lambda params, folder, extra: (made.append(folder), (folder / "cache.h5", 5))[1])
    assert ablate.main(["--variants", "default", "--folds", "7", "--out", str(tmp_path / "out")]) == 2
    assert "error: --folds 7" in capsys.readouterr().err
    [scratch] = made
    assert scratch.name.startswith(f"acento-ablate-{os.getpid()}-") and scratch.parent == tmp_path
    assert not stale.exists() and not scratch.exists()


@pytest.mark.parametrize("options, applied, name", [
    ([], None, "default~f1"),  # params.yaml: train.self_train 0, off
    (["--set", "data.unlabelled_clips=100", "train.self_train=0.7"], 0.7, "default~f1+st0.7"),  # by params: named so
    (["--self-train", "0.6", "--set", "data.unlabelled_clips=100", "train.self_train=0.7"], 0.6, "default~f1+st0.6"),
])
def test_rows_are_named_by_the_self_training_that_applies(tmp_path, monkeypatch, options, applied, name):
    import json

    import ablate

    asked = []
    monkeypatch.setattr(ablate, "build_feature_cache", lambda params, folder, extra: (tmp_path / "cache.h5", 5))
    monkeypatch.setattr(ablate, "run_folds", lambda jobs, workers: (asked.extend(jobs), _fake_runs(jobs, workers))[1])
    assert ablate.main(["--variants", "default", "--cells", "lstm", "--folds", "1", "--out", str(tmp_path), *options]) == 0
    assert [j["self_train"] for j in asked] == [applied]
    assert [r["variant"] for r in json.loads((tmp_path / "ablation.json").read_text())["rows"]] == [name]


def test_self_training_without_a_pool_is_refused_before_any_training(tmp_path, monkeypatch, capsys):
    import ablate

    monkeypatch.setattr(ablate, "build_feature_cache", lambda params, folder, extra: (tmp_path / "cache.h5", 5))
    monkeypatch.setattr(ablate, "run_folds", lambda jobs, workers: pytest.fail("trained"))
    assert ablate.main(["--variants", "default", "--cells", "lstm", "--self-train", "0.6", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: params.yaml: 'train.self_train' is 0.6 (self-training on the unlabelled")
