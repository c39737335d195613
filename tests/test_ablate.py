"""The ablation study's bookkeeping: cumulative variants, valid overrides, and one table from several runs."""

import dataclasses

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
        return [{"variant": variant, "cell": "gru", "fold": f, "best_dev": {"accuracy": 0.3, "macro_f1": 0.3},
                 "best_train": {"accuracy": 0.4}, "best_epoch": 3, "epochs_run": 5, "train_seconds": 10.0,
                 "classes": ["a", "b"], "labels": [0, 1, 0, 1], "pred": [0, 1, 1, 1],
                 "speakers": [2 * f, 2 * f, 2 * f + 1, 2 * f + 1]} for f in range(2)]

    args = argparse.Namespace(out=tmp_path)
    write_report(runs("+augment"), args, ["--variants", "+augment"], variants(), {}, time.perf_counter())
    report = write_report(runs("baseline"), args, ["--variants", "baseline"], variants(), {}, time.perf_counter())
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert [(r["variant"], r["pooled_balanced_accuracy"], r["gap"]) for r in saved["rows"]] == [
        ("baseline", 0.75, 0.1), ("+augment", 0.75, 0.1)]
    assert [c["command"] for c in saved["commands"]] == [
        "python -m pipeline.ablate --variants +augment", "python -m pipeline.ablate --variants baseline"]
    assert saved["rows"][0]["overrides"] == variants()["baseline"]
    assert "| +augment | GRU | 0.750 [" in report
