import json

import numpy as np
import pytest
import torch

from acento.features.cache import SplitData
from acento.training.batches import bucketed_batches
from acento.training.trainer import Trainer, class_weights, train
from tests.helpers import params, tiny

# most tests here are about choosing the epoch on the dev speakers
TINY = tiny(epochs=3, **{"train.dev_speakers": "select"})


def test_training_is_deterministic_for_a_seed(cache, tmp_path):
    p = params(**TINY)
    a = train(p, cache, tmp_path / "a.pt", tmp_path / "live_a")
    b = train(p, cache, tmp_path / "b.pt", tmp_path / "live_b")
    for key in ("best_dev", "best_epoch", "epochs_run", "parameters"):
        assert a[key] == b[key]
    wa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    train(params(**TINY, **{"train.seed": 1}), cache, tmp_path / "c.pt", tmp_path / "live_c")
    wc = torch.load(tmp_path / "c.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_training_writes_model_metrics_and_curves(cache, tmp_path):
    metrics = train(params(**TINY, **{"model": "gru"}), cache, tmp_path / "m.pt", tmp_path / "live")
    assert metrics["model"] == "gru" and metrics["epochs_run"] == 3 and 1 <= metrics["best_epoch"] <= 3
    assert set(metrics["best_dev"]) == {"loss", "accuracy", "macro_f1"} and metrics["parameters"] > 0
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["classes"] == ["high", "low"] and ckpt["features"]["n_mels"] == 64
    curve = (tmp_path / "live" / "plots" / "metrics" / "dev" / "macro_f1.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "macro_f1"] and len(curve) == 4
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == 2


def test_speakers_left_out_are_neither_trained_on_nor_in_the_normalisation(cache, tmp_path):
    # a learning-curve point (ablate --train-fraction): half of the training speakers left out
    with SplitData(cache, "train") as full:
        dropped = set(sorted(set(full.speakers))[::2])
    with SplitData(cache, "train", drop_speakers=dropped) as kept:
        assert 0 < len(kept) < len(full) and not dropped & set(kept.speakers)
        mean = kept.mean
    metrics = train(params(**TINY), cache, tmp_path / "m.pt", tmp_path / "live", drop_speakers=dropped)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    np.testing.assert_allclose(ckpt["mean"].numpy(), mean, rtol=1e-6)
    assert np.abs(ckpt["mean"].numpy() - full.mean).max() > 1e-3  # the full split's statistics differ
    assert metrics["epochs_run"] == 3


def test_early_stopping_stops_before_the_epoch_limit(cache, tmp_path):
    metrics = train(params(**{**TINY, "train.epochs": 40, "train.early_stopping_patience": 1, "train.lr": 1e-9}),
                    cache, tmp_path / "m.pt", tmp_path / "live")
    assert metrics["epochs_run"] < 40 and metrics["epochs_run"] == metrics["best_epoch"] + 1


def test_patience_zero_never_stops_early(cache, tmp_path):
    # the same run as above that stops after one epoch without progress, with early stopping off
    metrics = train(params(**{**TINY, "train.epochs": 5, "train.early_stopping_patience": 0, "train.lr": 1e-9}),
                    cache, tmp_path / "m.pt", tmp_path / "live")
    assert metrics["epochs_run"] == 5 and metrics["best_epoch"] < 5


def test_dev_speakers_can_train_too_and_then_the_last_epoch_is_kept(cache, tmp_path):
    with SplitData(cache, "train") as train_only, SplitData(cache, "dev") as dev, \
            SplitData(cache, "train", dev_trains=True) as both, SplitData(cache, "dev", dev_trains=True) as no_dev:
        assert sorted(both.clips) == sorted([*train_only.clips, *dev.clips]) and len(no_dev) == 0
        assert np.abs(both.mean - train_only.mean).max() > 1e-3  # the dev clips are in the statistics
        mean = both.mean
    p = params(**{**TINY, "train.dev_speakers": "train"})
    metrics = train(p, cache, tmp_path / "m.pt", tmp_path / "live")
    assert metrics["best_dev"] == {} and metrics["best_epoch"] == metrics["epochs_run"] == 3
    assert not (tmp_path / "live" / "plots" / "metrics" / "dev").exists()
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    np.testing.assert_allclose(saved["mean"].numpy(), mean, rtol=1e-6)
    trainer = Trainer(p, cache)  # the same seed: the same run by hand, every epoch, no dev
    for epoch in (1, 2, 3):
        trainer.train_one_epoch(epoch)
        trainer.step_schedule({})
    last = trainer.scored_model.state_dict()
    assert all(torch.equal(saved["state_dict"][k], last[k]) for k in last)


def test_bucketing_groups_similar_lengths_and_keeps_every_clip():
    lengths = np.random.default_rng(0).integers(50, 1000, size=1000)
    rng = np.random.default_rng(1)
    bucketed = bucketed_batches(lengths, 16, rng, bucketing=True)
    plain = bucketed_batches(lengths, 16, np.random.default_rng(1), bucketing=False)
    for batches in (bucketed, plain):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padding = lambda bs: sum(lengths[b].max() * len(b) - lengths[b].sum() for b in bs)  # noqa: E731
    assert padding(bucketed) < 0.2 * padding(plain)


def test_class_weights_are_inverse_frequency():
    assert class_weights(np.array([0, 0, 0, 1]), 2).tolist() == pytest.approx([4 / 6, 2.0])


def test_dev_evaluation_combines_tensors_of_one_device_only(cache, monkeypatch):
    """The first dev evaluation crashed on GPUs: CPU log-probabilities met the CUDA class weight of
    the training loss.  Here the training loss's weight is put on the `meta` device (standing in
    for CUDA: its data cannot meet a CPU tensor either); the dev evaluation must not touch it, and
    every loss it computes must combine tensors of one device."""
    import acento.training.trainer as train_module

    seen = []
    real_nll = torch.nn.functional.nll_loss

    def spy(input, target, weight=None, **kwargs):
        seen.append({t.device.type for t in (input, target, weight) if t is not None})
        return real_nll(input, target, weight=weight, **kwargs)

    monkeypatch.setattr(train_module.torch.nn.functional, "nll_loss", spy)
    trainer = train_module.Trainer(params(**TINY), cache)
    trainer.class_weight = torch.tensor([3.0, 1.0])  # unequal, so that a loss without them differs
    trainer.loss_fn = torch.nn.CrossEntropyLoss(weight=trainer.class_weight.to("meta"))
    dev = trainer.validate()
    assert seen == [{"cpu"}]
    # the same scores computed another way: sklearn's macro-F1 and the class-weighted mean of -log p(true)
    from sklearn.metrics import f1_score

    from acento.model.inference import predict_proba

    data = trainer.dev_data
    probs = predict_proba(trainer.model, data.clip, data.lengths, trainer.normalise, 8, torch.device("cpu"))
    pred, w = probs.argmax(1), trainer.class_weight.numpy()[data.labels]
    assert dev["macro_f1"] == pytest.approx(f1_score(data.labels, pred, average="macro", zero_division=0))
    assert dev["accuracy"] == pytest.approx((pred == data.labels).mean())
    true_log_p = np.log(probs[np.arange(len(pred)), data.labels])
    assert dev["loss"] == pytest.approx(-(w * true_log_p).sum() / w.sum(), rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_one_epoch_and_dev_evaluation_on_cuda(cache, tmp_path):
    metrics = train(params(**{**TINY, "train.epochs": 1, "runtime.device": "cuda"}), cache, tmp_path / "m.pt",
                    tmp_path / "live")
    assert metrics["device"] == "cuda" and metrics["epochs_run"] == 1
    curve = (tmp_path / "live" / "plots" / "metrics" / "dev" / "macro_f1.tsv").read_text().splitlines()
    assert metrics["best_dev"]["macro_f1"] == pytest.approx(float(curve[1].split("\t")[1]), abs=1e-4)


def test_training_on_the_lazily_read_cache_matches_training_in_memory(cache, tmp_path, monkeypatch):
    p = params(**TINY)
    in_memory = train(p, cache, tmp_path / "a.pt", tmp_path / "live_a")
    monkeypatch.setenv("ACENTO_IN_MEMORY_BYTES", "1")  # every split is larger than this: read per clip
    assert SplitData(cache, "train").lazy and not isinstance(SplitData(cache, "train").frames, np.ndarray)
    lazy = train(p, cache, tmp_path / "b.pt", tmp_path / "live_b")
    assert {k: lazy[k] for k in ("best_dev", "best_epoch", "epochs_run")} == \
        {k: in_memory[k] for k in ("best_dev", "best_epoch", "epochs_run")}
    wa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_prefetch_keeps_order_and_raises_the_producers_error():
    from acento.training.batches import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad clip")

    got = []
    with pytest.raises(ValueError, match="bad clip"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]


def test_batch_clips_read_in_file_order_come_back_in_batch_order(cache):
    data = SplitData(cache, "train")
    index = np.array([5, 0, 9, 2])
    for got, i in zip(data.clips_at(index), index):
        np.testing.assert_array_equal(got, data.clip(int(i)))


def test_ema_scores_and_saves_the_moving_average_of_the_weights(cache, tmp_path):
    # After each optimiser step the average moves to decay * average + (1 - decay) * weights; the first
    # step copies the weights.  Recomputed here from the trained weights after every step.
    decay = 0.7
    trainer = Trainer(params(**TINY, **{"train.ema": decay}), cache)
    expected, steps = None, []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        out = step(*args, **kwargs)
        steps.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        return out

    trainer.optimizer.step = recording_step
    trainer.train_one_epoch(1)
    for weights in steps:
        expected = weights if expected is None else {
            k: decay * expected[k] + (1 - decay) * w if w.is_floating_point() else w for k, w in weights.items()}
    averaged = trainer.scored_model.state_dict()
    assert len(steps) > 2 and trainer.scored_model is not trainer.model
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(averaged[k], steps[-1][k]) for k in averaged)  # not simply the last weights
    # off: the trained weights themselves are scored and saved
    assert Trainer(params(**TINY), cache).scored_model.__class__.__name__ == "AccentClassifier"


def test_the_model_file_holds_the_averaged_weights(cache, tmp_path):
    # one epoch, so the kept epoch is that one: the file holds the average after it, not the trained weights
    p = params(**{**TINY, "train.epochs": 1, "train.ema": 0.9})
    train(p, cache, tmp_path / "ema.pt", tmp_path / "live")
    saved = torch.load(tmp_path / "ema.pt", weights_only=True)["state_dict"]
    trainer = Trainer(p, cache)  # the same seed: the same run, by hand
    trainer.train_one_epoch(1)
    averaged, trained = trainer.scored_model.state_dict(), trainer.model.state_dict()
    assert saved.keys() == trained.keys()  # the same network, loadable by AccentModel
    for key, value in averaged.items():
        torch.testing.assert_close(saved[key], value)
    assert not all(torch.equal(saved[k], trained[k]) for k in saved)


@pytest.mark.parametrize("warmup, expected", [(0, [1.0, 0.8535534, 0.5, 0.1464466]), (2, [1 / 3, 2 / 3, 1.0, 0.5])])
def test_warm_up_then_cosine(warmup, expected):
    """Linear warm-up over `warmup` epochs, then cosine to 0 over the rest: the lr of each epoch, known."""
    from acento.training.trainer import make_scheduler

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    cfg = params(**{"train.epochs": 4, "train.warmup_epochs": warmup}).train
    scheduler = make_scheduler(optimizer, cfg)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected, abs=1e-6)


def test_batches_by_frames_scale_the_lr_by_the_square_root_of_the_batch(cache):
    """With train.batch_frames, Adam's lr is train.lr x sqrt(clips per batch / train.batch_size)."""
    from acento.training.batches import frame_batches

    p = params(**tiny(**{"train.batch_frames": 2000, "train.batch_size": 4}))
    trainer = Trainer(p, cache)
    batches = frame_batches(trainer.train_data.lengths, 2000, np.random.default_rng(0))
    per_batch = len(trainer.train_data) / len(batches)
    assert per_batch > 4
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(p.train.lr * np.sqrt(per_batch / 4))
    assert Trainer(params(**tiny()), cache).optimizer.param_groups[0]["lr"] == p.train.lr
