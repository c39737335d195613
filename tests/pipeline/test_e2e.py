"""The DVC workflow a user runs, on the bundled sample, in a throwaway git repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

# Small enough to train in seconds; the workflow, not the accuracy, is under test here.
FAST = {"epochs": 2, "batch_size": 32}
FAST_RNN = {"hidden_size": 16, "num_layers": 1, "frontend_channels": 16}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    work = base / "project"
    files = tracked_files() or pytest.skip("the project is not a git checkout")
    for name in files:
        if name.startswith(("metrics/", "dvc.lock")) or not (ROOT / name).exists():
            continue  # start without a baseline: this run makes its own
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(FAST)
    params["rnn"].update(FAST_RNN)
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    env = {**os.environ, "HOME": str(base / "home"), "GIT_CONFIG_NOSYSTEM": "1", "DVC_NO_ANALYTICS": "1",
           "DVC_GLOBAL_CONFIG_DIR": str(base / "dvc-global"), "DVC_SYSTEM_CONFIG_DIR": str(base / "dvc-system"),
           "DVC_SITE_CACHE_DIR": str(base / "dvc-site"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)

    def run(*cmd, check=True):
        result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.name", "acento test")
    run("git", "config", "user.email", "test@acento.invalid")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "project")
    return work, run


def test_repro_then_gru_experiment_and_metrics_diff(repo):
    work, run = repo
    run("dvc", "repro")
    data = json.loads((work / "metrics/data.json").read_text())
    assert set(data) == {"clips", "speakers", "dropped", "pool"} and data["dropped"]["no_accent"] > 0
    assert data["pool"]["clips"] == 0  # data.unlabelled_clips: 0, no pool by default
    # every labelled speaker of the sample in exactly one of the 5 test folds
    assert list(data["speakers"]) == [f"fold{k}" for k in range(5)]
    assert sum(sum(counts.values()) for counts in data["speakers"].values()) == 196
    features = json.loads((work / "metrics/features.json").read_text())
    # the sample's unreadable and silent clips are skipped and counted, the rest cached
    assert features["failed"]["unreadable_audio"] > 0 and features["failed"]["silent_audio"] > 0
    assert list(features["clips"]) == [f"fold{k}" for k in range(5)] and min(features["clips"].values()) > 0
    lstm = json.loads((work / "metrics/eval.json").read_text())
    assert lstm["model"] == "lstm"
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "speaker_accuracy", "per_class", "params"):
        assert key in lstm
    # wall-clock figures stay out of the metrics (a rerun on the same machine changes no result file)
    train_metrics = json.loads((work / "metrics/train.json").read_text())
    assert not {"inference_clips_per_second", "train_seconds"} & (set(lstm) | set(train_metrics))
    assert json.loads((work / "logs/evaluate.json").read_text())["inference_clips_per_second"] > 0
    assert json.loads((work / "logs/train.json").read_text())["train_seconds"] > 0
    assert set(lstm["per_class"]) == set(yaml.safe_load((work / "params.yaml").read_text())["data"]["classes"])
    confusion = json.loads((work / "metrics/confusion.json").read_text())
    assert len(confusion) == lstm["clips"] and {"actual", "predicted"} <= set(confusion[0])
    assert (work / "metrics/confusion.png").read_bytes()[:4] == b"\x89PNG"
    predictions = pd.read_csv(work / "metrics/predictions.csv")
    assert len(predictions) == lstm["clips"] and predictions["speaker"].nunique() == lstm["speakers"]
    assert [c for c in predictions.columns if c.startswith("p_")] == [f"p_{c}" for c in sorted(lstm["per_class"])]
    assert (work / "models/model.pt").exists()

    # Nothing changed: a second repro reruns only the always-changed download stage.
    again = run("dvc", "repro")
    assert "Running stage 'train'" not in again.stdout and "Stage 'train' didn't change" in again.stdout

    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "lstm baseline")
    run("dvc", "exp", "run", "-S", "model=gru")
    gru = json.loads((work / "metrics/eval.json").read_text())
    assert gru["model"] == "gru" and gru["params"] < lstm["params"]

    diff = json.loads(run("dvc", "metrics", "diff", "--json").stdout)
    accuracy = diff["metrics/eval.json"]["accuracy"]
    assert accuracy["old"] == lstm["accuracy"] and accuracy["new"] == gru["accuracy"]
    assert diff["metrics/eval.json"]["params"]["old"] == lstm["params"]

    plots = json.loads(run("dvc", "plots", "diff", "--json").stdout)["data"]
    assert sorted(plots["metrics/confusion.json"][0]["revisions"]) == ["HEAD", "workspace"]
    assert "metrics/training/plots/metrics/train/loss.tsv" in plots

    shown = json.loads(run("dvc", "exp", "show", "--json").stdout)
    rows = {row["rev"]: row for row in exp_show_rows(shown)}
    baseline = next(row for row in rows.values() if not row["experiment"] and row["rev"] != "workspace")
    experiment = next(row for row in rows.values() if row["experiment"])
    assert (baseline["model"], baseline["accuracy"], baseline["params"]) == ("lstm", lstm["accuracy"], lstm["params"])
    assert (experiment["model"], experiment["accuracy"], experiment["params"]) == ("gru", gru["accuracy"],
                                                                                  gru["params"])


def test_changing_the_fold_seed_or_cell_reruns_only_train_and_evaluate(repo):
    """The features of a clip do not depend on its split: one manifest and one cache serve every fold."""
    work, run = repo
    run("dvc", "repro")
    original = (work / "params.yaml").read_text()
    fold0 = pd.read_csv(work / "metrics/predictions.csv")

    def stale(**changes) -> set[str]:
        """The stages `dvc status` reports changed after these changes to params.yaml (section.key: value)."""
        params = yaml.safe_load(original)
        for key, value in changes.items():
            section, name = key.split("__") if "__" in key else (None, key)
            (params[section] if section else params)[name] = value
        (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
        status = json.loads(run("dvc", "status", "--json").stdout)
        return set(status) - {"download"}  # always changed (it re-reads the release), cheap

    try:
        assert stale() == set()
        assert stale(data__fold=3) == {"train", "evaluate"}  # both read data.fold
        assert stale(train__seed=7) == {"train"}  # evaluate follows when the model file changes
        # the encoder is the cell's own: pretrain reruns too (at once with pretrain.epochs 0)
        assert stale(model="gru" if yaml.safe_load(original)["model"] == "lstm" else "lstm") == {"pretrain", "train"}
        assert stale(pretrain__epochs=3) == {"pretrain"}  # train follows only when the encoder file changes
        assert stale(data__seed=7) >= {"prepare"}  # the folds themselves do depend on data.seed
        stale(data__fold=3)
        out = run("dvc", "repro").stdout
        assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
        assert "Running stage 'prepare'" not in out and "Running stage 'features'" not in out
        fold3 = pd.read_csv(work / "metrics/predictions.csv")
        # another fold's test speakers, from the same cache
        assert len(fold3) > 0 and not set(fold3["speaker"]) & set(fold0["speaker"])
    finally:
        (work / "params.yaml").write_text(original)


def test_pretraining_on_the_unlabelled_pool_then_training_from_it(repo):
    """data.unlabelled_clips keeps the sample's speakers of no accent as a pool; pretrain trains the encoder on
    it and train starts from it, then self-trains on the pool's speakers; the labelled folds are as without
    the pool."""
    work, run = repo
    run("dvc", "repro")
    original = (work / "params.yaml").read_text()
    labelled = pd.read_csv(work / "data/prepared/manifest.tsv", sep="\t")
    params = yaml.safe_load(original)
    params["data"]["unlabelled_clips"] = 1000
    params["pretrain"].update({"epochs": 2, "batch_size": 8})
    params["train"].update({"init": "pretrained", "self_train": 0.01})  # 0.01: every pool speaker
    try:
        (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
        out = run("dvc", "repro").stdout
        assert all(f"Running stage '{s}'" in out for s in ("prepare", "features", "pretrain", "train", "evaluate"))
        manifest = pd.read_csv(work / "data/prepared/manifest.tsv", sep="\t", keep_default_na=False)
        pool = manifest[manifest["split"] == "pool"]
        data = json.loads((work / "metrics/data.json").read_text())
        assert len(pool) == data["pool"]["clips"] > 0 and (pool["label"] == "").all()
        assert not set(pool["speaker"]) & set(labelled["speaker"])  # no fold's speaker is in the pool
        assert len(manifest) - len(pool) == len(labelled)
        pretrained = json.loads((work / "metrics/pretrain.json").read_text())
        assert pretrained["epochs"] == 2 and pretrained["clips"] == json.loads(
            (work / "metrics/features.json").read_text())["clips"]["pool"]
        assert json.loads((work / "metrics/eval.json").read_text())["accuracy"] >= 0
        self_trained = json.loads((work / "metrics/train.json").read_text())["self_training"]
        assert self_trained["pseudo_speakers"] == self_trained["pool_speakers"] == data["pool"]["speakers"]
        assert (work / "logs/teacher-training/metrics.json").exists()
        # asking to start from an encoder that was never pretrained is one line, before any training
        params["pretrain"]["epochs"] = 0
        (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
        result = run(sys.executable, "-m", "pipeline.train", check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert "'train.init' is 'pretrained' but 'pretrain.epochs' is 0" in result.stderr
    finally:
        (work / "params.yaml").write_text(original)


def exp_show_rows(shown: list[dict]) -> list[dict]:
    """(rev, experiment?, model param, test accuracy, parameter count) of each row of `dvc exp show --json`."""
    rows = []

    def add(rev: dict, experiment: bool) -> None:
        data = rev.get("data") or {}
        evaluation = (data.get("metrics") or {}).get("metrics/eval.json", {}).get("data", {})
        model = (data.get("params") or {}).get("params.yaml", {}).get("data", {}).get("model")
        rows.append({"rev": data.get("rev", rev.get("rev")), "experiment": experiment, "model": model,
                     "accuracy": evaluation.get("accuracy"), "params": evaluation.get("params")})

    for baseline in shown:
        add(baseline, False)
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev, True)
    return rows


def test_bad_params_stop_the_stage_with_one_line(repo):
    work, run = repo
    params = (work / "params.yaml").read_text()
    try:
        (work / "params.yaml").write_text(params.replace("model: gru", "model: transformer")
                                          .replace("model: lstm", "model: transformer"))
        result = run(sys.executable, "-m", "pipeline.train", check=False)
        assert result.returncode == 2
        assert result.stderr.strip() == ("error: params.yaml: 'model' is 'transformer'; allowed: lstm, gru")
    finally:
        (work / "params.yaml").write_text(params)


def test_every_stage_has_help(repo):
    work, run = repo
    own_output = {"download": "data/release.json", "prepare": "data/prepared/manifest.tsv",
                  "features": "data/features/features.h5", "pretrain": "models/encoder.pt", "train": "models/model.pt",
                  "evaluate": "metrics/eval.json"}
    for stage, output in own_output.items():
        text = " ".join(run(sys.executable, "-m", f"pipeline.{stage}", "--help").stdout.split())
        assert text.startswith("usage: ") and f"Stage `{stage}`:" in text, stage
        assert "--params" in text and f"(default: {output})" in text, stage


def test_compare_cross_validates_both_cells_as_experiments_and_writes_the_reports(repo):
    work, run = repo
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["folds"] = 2  # the workflow under test, not the numbers: two folds keep it short
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    run("dvc", "repro")
    # as after `make run`: outputs and params differ from HEAD, uncommitted; compare must leave them as they are
    before = {name: (work / name).read_bytes() for name in ("params.yaml", "dvc.lock", "metrics/eval.json")}
    assert run("git", "status", "--porcelain", "--", "params.yaml", "dvc.lock").stdout != ""
    out = run(sys.executable, "-m", "acento.evaluation.compare").stdout
    assert "**Verdict:**" in out
    report = (work / "reports/compare.md").read_text()
    assert "| LSTM |" in report and "| GRU |" in report and "GRU − LSTM on the same clips" in report
    assert (work / "reports/compare.png").read_bytes()[:4] == b"\x89PNG"
    shown = json.loads(run("dvc", "metrics", "show", "--json").stdout)
    flat = json.dumps(shown)
    assert "reports/compare.json" in flat and "pooled_balanced_accuracy" in flat
    names = {row["name"] for row in exp_show_names(json.loads(run("dvc", "exp", "show", "--json").stdout))}
    assert {"default-lstm-f0", "default-lstm-f1", "default-gru-f0", "default-gru-f1"} <= names
    # the user's workspace is as it was
    assert {name: (work / name).read_bytes() for name in before} == before


def exp_show_names(shown: list[dict]) -> list[dict]:
    return [{"name": rev.get("name") or exp.get("name")} for baseline in shown
            for exp in baseline.get("experiments") or [] for rev in exp.get("revs") or []]
