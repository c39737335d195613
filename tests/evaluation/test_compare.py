import json

import numpy as np
import pandas as pd
import pytest
import yaml

from acento.config import apply_overrides, parse_params
from acento.evaluation.compare import (
    experiment_commands,
    experiment_revs,
    main,
    markdown,
    metrics_json,
    summarise,
)
from acento.model.presets import PRESETS
from tests.helpers import ROOT


def apply_set_args(raw: dict, args: list[str]) -> dict:
    """What `dvc exp run -S key=value ...` does to params.yaml (values parsed as YAML, like Hydra;
    an unknown key is refused, as DVC refuses it)."""
    return apply_overrides(raw, {key: yaml.safe_load(value) for key, value in (a.split("=", 1) for a in args[1::2])})


def test_every_experiment_is_a_valid_configuration_of_its_cell_fold_seed_and_preset():
    runs = experiment_commands([*PRESETS, "default"], folds=5, seeds=[None, 7])
    assert len(runs) == (len(PRESETS) + 1) * 2 * 2 * 5
    assert len({run["name"] for run, _ in runs}) == len(runs)
    for run, cmd in runs:
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        p = parse_params(apply_set_args(raw, cmd[cmd.index("--name") + 2:]))
        assert (p.model, p.data.fold) == (run["cell"], run["fold"])
        assert p.train.seed == (run["seed"] if run["seed"] is not None else raw["train"]["seed"])
        for key, value in PRESETS.get(run["preset"], {}).items():
            assert getattr(p.rnn, key) == value


def test_dry_run_prints_a_run_per_cell_and_fold(capsys):
    assert main(["--presets", "basic", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    folds = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["folds"]
    assert len(lines) == 2 * folds
    assert lines[0].startswith("$ dvc exp run --queue --name basic-lstm-f0 -S model=lstm -S data.fold=0 -S rnn.hidden_size=313")
    assert any(line.startswith(f"$ dvc exp run --queue --name basic-gru-f{folds - 1} -S model=gru") for line in lines)


def test_experiment_revisions_from_dvc_exp_show_json():
    shown = [{"rev": "workspace", "name": None, "experiments": None},
             {"rev": "abc", "name": "main", "experiments": [
                 {"name": "default-gru-f0", "revs": [{"rev": "123456789", "name": "default-gru-f0", "data": {
                     "rev": "123456789",
                     "metrics": {"metrics/eval.json": {"data": {"balanced_accuracy": 0.6, "macro_f1": 0.5}}}}}]}]}]
    assert experiment_revs(json.loads(json.dumps(shown))) == {
        "default-gru-f0": {"rev": "123456789", "eval": {"balanced_accuracy": 0.6, "macro_f1": 0.5}}}


def fake_results(n_folds=3, speakers_per_fold=8, clips=3, gru_better=False):
    """Runs of two cells over folds with known predictions: LSTM right on even speakers only; GRU the
    same, or right everywhere."""
    rng = np.random.default_rng(0)
    results = []
    for cell in ("lstm", "gru"):
        for fold in range(n_folds):
            rows = []
            for s in range(speakers_per_fold):
                speaker = f"f{fold}s{s}"
                label = ["a", "b"][s % 2]
                right = (s // 2) % 2 == 0 or (cell == "gru" and gru_better)
                for k in range(clips):
                    p = 0.9 if right else 0.2
                    pa = p if label == "a" else 1 - p
                    rows.append({"clip": f"{speaker}c{k}", "speaker": speaker, "label": label,
                                 "predicted": "a" if pa > 0.5 else "b", "p_a": pa, "p_b": 1 - pa})
            frame = pd.DataFrame(rows)
            ba = float(np.mean([(frame[frame.label == c].predicted == c).mean() for c in "ab"]))
            results.append({"name": f"default-{cell}-f{fold}", "preset": "default", "cell": cell, "fold": fold,
                            "seed": None, "eval": {"balanced_accuracy": ba, "macro_f1": ba},
                            "predictions": frame.sample(frac=1, random_state=int(rng.integers(100)))})
    return results


def test_summary_pools_folds_and_pairs_the_cells():
    summary = summarise(fake_results(), n_boot=300)
    lstm, gru = summary["default"]["cells"]["lstm"], summary["default"]["cells"]["gru"]
    assert lstm["clips"] == 3 * 8 * 3 and lstm["speakers"] == 24
    assert lstm["pooled_balanced_accuracy"]["value"] == pytest.approx(0.5)
    assert lstm["balanced_accuracy_mean"] == pytest.approx(0.5) and lstm["balanced_accuracy_sd"] == 0
    assert lstm["pooled_speaker_accuracy"] == pytest.approx(0.5)
    assert gru["pooled_balanced_accuracy"]["value"] == pytest.approx(0.5)  # the same answers as LSTM here
    d = summary["default"]["gru_minus_lstm"]
    assert d["difference"] == 0 and d["verdict"].startswith("No significant difference")

    better = summarise(fake_results(gru_better=True), n_boot=300)["default"]
    assert better["cells"]["gru"]["pooled_balanced_accuracy"]["value"] == 1.0
    assert better["gru_minus_lstm"]["ci_low"] > 0 and better["gru_minus_lstm"]["verdict"].startswith("GRU is better")
    report = markdown({"default": better}, "python -m acento.evaluation.compare", 3.2)
    assert "| GRU | 1.000, 1.000, 1.000 | 1.000 ± 0.000 |" in report and "**Verdict:** GRU is better" in report
    flat = metrics_json({"default": better})
    assert flat["default"]["gru"]["pooled_balanced_accuracy"] == 1.0 and "mcnemar_p" in flat["default"]["gru_minus_lstm"]


def test_with_several_seeds_the_verdict_says_how_many_seeds_agree():
    # seed 1: GRU right everywhere (better); seed 2: both cells alike (no difference)
    runs = []
    for seed, gru_better in ((1, True), (2, False)):
        for run in fake_results(gru_better=gru_better):
            runs.append({**run, "name": f"{run['name']}-s{seed}", "seed": seed})
    d = summarise(runs, n_boot=300)["default"]["gru_minus_lstm"]
    assert [(s["seed"], s["ci_low"] > 0) for s in d["per_seed"]] == [(1, True), (2, False)]
    assert d["verdict"].endswith("Each of the 2 training seeds alone: GRU better in 1, LSTM better in 0, "
                                 "no significant difference in 1.")
    assert "per_seed" not in summarise(fake_results(), n_boot=300)["default"]["gru_minus_lstm"]


def test_a_queue_worker_that_died_is_replaced_while_runs_are_queued(monkeypatch, capsys):
    import subprocess

    from acento.evaluation import compare

    # the queue as `dvc queue status` shows it, poll by poll: both workers, then one gone (the broker's
    # race), then two again once replaced, then every run done
    queued = "Task  Name  Created  Status\na1  default-lstm-f0  04:23 PM  Running\na2  default-lstm-f1  04:23 PM  Queued\n"
    polls = iter([queued + "\nWorker status: 2 active, 0 idle", queued + "\nWorker status: 1 active, 0 idle",
                  queued + "\nWorker status: 2 active, 0 idle",
                  "a1  default-lstm-f0  04:23 PM  Success\na2  default-lstm-f1  04:23 PM  Success\n"
                  "\nWorker status: 0 active, 1 idle"])
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd[:4])
        out = next(polls) if cmd[:3] == ["dvc", "queue", "status"] else ""
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(compare.subprocess, "run", fake_run)
    monkeypatch.setattr(compare.time, "sleep", lambda s: None)
    monkeypatch.setattr(compare, "WORKER_GRACE_SECONDS", -1)
    commands = [["dvc", "exp", "run", "--queue", "--name", f"default-lstm-f{f}"] for f in (0, 1)]
    assert compare.run_experiments(commands, jobs=2) == 0
    starts = [c for c in calls if c[:3] == ["dvc", "queue", "start"]]
    assert starts == [["dvc", "queue", "start", "-j"]] * 2  # the first start, and one replacement
    out = capsys.readouterr().out
    assert "a DVC queue worker stopped" in out and "starting 1 more" in out
    assert compare.missing_workers("Worker status: 0 active, 1 idle", 2) == 1
    assert compare.missing_workers("no worker line", 2) == 0
