"""The ablation study's bookkeeping: cumulative variants, valid overrides, and one table from several runs."""

import dataclasses

import numpy as np
import yaml

from pipeline.ablate import BASELINE, STEPS, merge_rows, variants
from pipeline.config import PARAMS_FILE, PRESETS, apply_overrides, parse_params


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

    from pipeline.ablate import write_report

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
        "python -m pipeline.ablate --variants +augment", "python -m pipeline.ablate --variants baseline"]
    assert saved["rows"][0]["overrides"] == variants()["baseline"]
    assert "| +augment | GRU | 0.750 [" in report


def test_a_learning_curve_leaves_out_that_share_of_each_classs_training_speakers():
    from pipeline.crossval import speakers_left_out

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
    from pipeline.ablate import summarise

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


def test_a_learning_curve_is_drawn_for_a_variant_measured_at_several_shares(tmp_path):
    from pipeline.ablate import plot_learning_curves

    row = {"base": "default", "cell": "gru", "pooled_balanced_accuracy": 0.4, "ci_low": 0.35, "ci_high": 0.45}
    plot_learning_curves([{**row, "variant": "default"}], tmp_path / "one.png")
    assert not (tmp_path / "one.png").exists()  # one share: no curve
    plot_learning_curves([{**row, "variant": "default"},
                          {**row, "variant": "default@0.5", "train_fraction": 0.5, "pooled_balanced_accuracy": 0.3,
                           "ci_low": 0.25, "ci_high": 0.35}],
                         tmp_path / "two.png")
    assert (tmp_path / "two.png").read_bytes()[:4] == b"\x89PNG"


def test_a_set_item_without_a_value_is_one_line(capsys):
    from pipeline.ablate import main

    assert main(["--variants", "default", "--set", "train.epochs"]) == 2
    assert capsys.readouterr().err.strip() == "error: --set takes KEY=VALUE pairs, got 'train.epochs'"
