"""A killed `train` resumes after its last completed epoch and ends with the uninterrupted run's model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from acento.model.accent_model import AccentModel
from acento.training import trainer as trainer_module
from acento.training.trainer import train
from tests.helpers import ROOT, params, params_file, tiny

# the last epoch's weights are kept (no dev split), so the model depends on every epoch, those after the
# interruption too; warm-up and cosine make the schedule's state matter
SETTINGS = tiny(epochs=6, **{"train.augment.crop": 0.7, "train.specaugment.time_masks": 1, "train.warmup_epochs": 2})


def weights(path):
    return AccentModel.load(path).network.state_dict()


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_interrupted_run_resumes_and_ends_with_the_uninterrupted_model(cache, tmp_path, monkeypatch, capsys):
    p = params(**SETTINGS)
    whole = tmp_path / "whole.pt"
    expected = train(p, cache, whole, tmp_path / "live_whole")
    checkpoint = tmp_path / "ckpt.pt"
    real = trainer_module.Trainer.train_one_epoch

    def dies_in_epoch_4(self, epoch):
        if epoch == 4:
            raise KeyboardInterrupt  # as a kill would, after epoch 3's checkpoint
        return real(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_one_epoch", dies_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        train(p, cache, tmp_path / "resumed.pt", tmp_path / "live", checkpoint=checkpoint)
    assert checkpoint.is_file() and not (tmp_path / "resumed.pt").exists()
    monkeypatch.setattr(trainer_module.Trainer, "train_one_epoch", real)
    capsys.readouterr()
    metrics = train(p, cache, tmp_path / "resumed.pt", tmp_path / "live", checkpoint=checkpoint)
    out = capsys.readouterr().out
    assert "resuming after epoch 3 of 6" in out and "epoch   1 " not in out and "epoch   4 " in out
    assert same_weights(whole, tmp_path / "resumed.pt")
    assert {k: metrics[k] for k in ("best_epoch", "best_train", "epochs_run")} == \
        {k: expected[k] for k in ("best_epoch", "best_train", "epochs_run")} and metrics["best_epoch"] == 6
    curve = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + 6  # a header and every epoch, the three before the interruption included
    assert not checkpoint.exists()  # a finished run leaves no checkpoint


def test_a_checkpoint_of_other_settings_is_not_resumed(cache, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt.pt"
    train(params(**tiny(epochs=2)), cache, tmp_path / "a.pt", tmp_path / "live", checkpoint=checkpoint)
    assert not checkpoint.exists()
    trainer = trainer_module.Trainer(params(**tiny(epochs=2)), cache)
    from acento.training.checkpoint import run_key, save

    save(checkpoint, run_key(params(**tiny(epochs=2)), cache, ()), 1, trainer,
         trainer_module.EarlyStopping(0), [], 1.0)
    capsys.readouterr()
    train(params(**tiny(epochs=2, **{"train.lr": 0.01})), cache, tmp_path / "b.pt", tmp_path / "live",
          checkpoint=checkpoint)
    assert "a checkpoint of other settings" in capsys.readouterr().out


def test_the_train_stage_killed_by_sigkill_resumes_on_the_next_run(cache, tmp_path):
    """`python -m pipeline.train` killed (SIGKILL, as the OOM killer does) after some epochs; run again, it
    says where it resumes and writes the model of a run never killed."""
    settings = tiny(epochs=25, **{"train.augment.crop": 0.7})
    cfg = params_file(tmp_path, **settings)

    def stage(name, checkpoint):
        return [sys.executable, "-m", "pipeline.train", "--params", str(cfg), "--cache", str(cache),
                "--out", str(tmp_path / f"{name}.pt"), "--metrics", str(tmp_path / f"{name}.json"),
                "--timing", str(tmp_path / f"{name}-timing.json"), "--live", str(tmp_path / f"live-{name}"),
                "--checkpoint", str(checkpoint)]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(stage("whole", ""), cwd=ROOT, env=env, check=True, capture_output=True)
    checkpoint = tmp_path / "ckpt.pt"
    proc = subprocess.Popen(stage("killed", checkpoint), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and checkpoint.exists(), "the run ended before it could be killed"
    done = subprocess.run(stage("killed", checkpoint), cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True)
    assert "resuming after epoch" in done.stdout, done.stdout
    assert same_weights(tmp_path / "whole.pt", tmp_path / "killed.pt")
    assert json.loads((tmp_path / "whole.json").read_text()) == json.loads((tmp_path / "killed.json").read_text())
