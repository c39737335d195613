"""The deployable model: one network per fold, written as one ensemble that predict, serve and score load."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from acento.apps.options import deployed_model
from acento.paths import FINAL_MODEL, MODEL_FILE

pytestmark = pytest.mark.e2e  # trains on the bundled sample (tiny networks, one epoch: about a minute)


def test_final_model_is_an_ensemble_of_every_fold_and_its_report_pools_every_speaker(tmp_path, sample_clips):
    from acento.model.accent_model import AccentModel
    from acento.training.final import main

    out, report = tmp_path / "final.pt", tmp_path / "final.json"
    assert main(["--set", "train.epochs=1", "rnn.hidden_size=8", "rnn.num_layers=1", "rnn.frontend_channels=8",
                 "data.folds=3", "--out", str(out), "--report", str(report), "--cache-dir", str(tmp_path)]) == 0
    model = AccentModel.load(out)
    assert len(model.members) == 3 and model.cell == "lstm"
    summary = json.loads(report.read_text())
    folds = [f["fold"] for f in summary["folds"]]
    assert folds == [0, 1, 2] and summary["members"] == 3
    # every labelled speaker of the sample is in exactly one test fold (196 speakers, as prepare keeps them)
    assert summary["pooled_out_of_fold"]["speakers"] == 196
    assert 0.0 < summary["pooled_out_of_fold"]["balanced_accuracy"] < 1.0
    assert model.classify(sample_clips[0]).label in model.classes
    # the model card beside it carries the report's figures in the header model hubs read
    import yaml

    header = yaml.safe_load((tmp_path / "final.md").read_text().split("---\n")[1])
    metric = header["model-index"][0]["results"][0]["metrics"][0]
    assert metric["value"] == summary["pooled_out_of_fold"]["balanced_accuracy"]


def test_bad_overrides_and_single_split_are_one_line_errors(tmp_path, capsys):
    from acento.training.final import main

    assert main(["--set", "data.folds=1", "--out", str(tmp_path / "f.pt")]) == 2
    assert "data.folds is 1" in capsys.readouterr().err
    assert main(["--set", "rnn.pooling=median", "--out", str(tmp_path / "f.pt")]) == 2
    assert "rnn.pooling" in capsys.readouterr().err
    assert main(["--set", "model", "--out", str(tmp_path / "f.pt")]) == 2
    assert capsys.readouterr().err.strip() == "error: --set takes KEY=VALUE pairs, got 'model'"
    assert not (tmp_path / "f.pt").exists()


def test_predict_serve_and_score_use_the_final_model_once_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert deployed_model() == MODEL_FILE
    FINAL_MODEL.parent.mkdir(parents=True)
    FINAL_MODEL.write_bytes(b"")
    assert deployed_model() == FINAL_MODEL
    os.remove(FINAL_MODEL)


def _children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (Linux /proc; zombies count as gone)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state not in "ZX":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in "ZX"


def _wait_for(condition, deadline_s: float, what: str, proc=None):
    """Polls `condition` until it returns something true (returned) or `deadline_s` passes (pytest.fail)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}: {proc.stdout.read()}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {deadline_s:.0f} s")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_final_run_takes_its_fold_workers_with_it_and_the_next_run_removes_its_scratch(
        tmp_path, monkeypatch):
    """SIGKILL (as the OOM killer sends it) of the process training the folds: its workers end (they used to
    train on for minutes), and its scratch folder in the temp directory is removed by the next run."""
    from acento.training.final import main
    from tests.helpers import MEXICO, NORTE, ROOT, balanced_rows, make_release, params_file, tiny

    locale = make_release(tmp_path / "release", balanced_rows(speakers_per_class=4, clips_per_speaker=2))
    settings = params_file(tmp_path, **tiny(epochs=100_000), **{
        "data.source": str(locale.parent), "data.classes": {"norte": [NORTE], "mexico": [MEXICO]},
        "data.folds": 2, "data.min_speakers": 1})
    temp = tmp_path / "tmp"
    temp.mkdir()
    args = ["--params", str(settings), "--out", str(tmp_path / "f.pt"), "--report", str(tmp_path / "f.json"),
            "--workers", "2", "--cache-dir", str(tmp_path / "cache")]
    parent = subprocess.Popen([sys.executable, "-m", "acento.training.final", *args], cwd=ROOT,
                              env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    workers: set[int] = set()
    try:
        # a worker is training once it has made its run folder in the scratch folder
        _wait_for(lambda: list(temp.glob(f"acento-final-{parent.pid}-*/final-lstm-*")), 180,
                  "fold run started", parent)
        workers = _wait_for(lambda: _children(parent.pid), 30, "worker process", parent)
        [scratch] = temp.glob(f"acento-final-{parent.pid}-*")
        parent.kill()
        parent.wait()
        _wait_for(lambda: not any(_alive(w) for w in workers), 30, "end of the workers")
        assert scratch.is_dir()  # nothing could remove it: SIGKILL runs no cleanup
        # the next run (here one that stops at a missing release) removes it, as its owner is gone
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        assert main([*args, "--set", f"data.source={tmp_path / 'absent'}"]) == 2
        assert not scratch.exists() and not list(temp.glob("acento-*"))
    finally:
        for pid in workers | ({parent.pid} if parent.poll() is None else set()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
