"""Pretraining the encoder on the unlabelled pool and starting `train` from it (issue #35)."""

import numpy as np
import pytest
import torch

from acento.errors import StageError
from acento.model.network import AccentClassifier
from acento.training.pretrain import load_encoder, pretrain, pretraining_loss, span_mask
from acento.training.trainer import Trainer, train
from tests.helpers import params, tiny

PRETRAIN = {"pretrain.epochs": 2, "pretrain.batch_size": 4}


def test_span_masks_cover_the_share_in_spans_within_each_clip():
    mask = span_mask(np.array([100, 3, 40]), 120, 0.15, 7, np.random.default_rng(0))
    assert mask.shape == (3, 120)
    assert not mask[0, 100:].any() and not mask[1, 3:].any() and not mask[2, 40:].any()
    assert 7 <= mask[0].sum() <= 21  # ceil(0.15 * 100 / 7) = 3 spans of 7 frames, perhaps overlapping
    assert mask[1].tolist()[:3] == [True] * 3  # a clip shorter than a span: one span of its length
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], mask[2].astype(int), [0]]))))[::2]
    assert all(r % 7 == 0 or r > 7 for r in runs)  # whole spans (overlaps merge into longer runs)


@pytest.mark.parametrize("objective, bidirectional", [("masked", True), ("masked", False), ("apc", False)])
def test_a_silent_head_scores_the_mean_absolute_target_of_the_frames_it_must_predict(objective, bidirectional):
    p = params(**tiny(), **{"rnn.bidirectional": bidirectional, "rnn.frontend_stride": 4})
    model = AccentClassifier(8, 2, "lstm", p.rnn)
    head = torch.nn.Linear(8 * (2 if bidirectional else 1), 4 * 8)
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    x = torch.randn(2, 13, 8)
    lengths = torch.tensor([13, 9])
    x[1, 9:] = 0
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[0, 2:5], mask[1, 7:12] = True, True  # frames 9-11 of clip 1 are padding: not scored
    loss = pretraining_loss(model, head, x, lengths, objective, mask if objective == "masked" else None, 1)
    if objective == "masked":
        expected = torch.cat([x[0, 2:5], x[1, 7:9]]).abs().mean(-1).mean()
    else:  # each step of 4 frames predicts the next step's: frames 4.. of each clip
        expected = torch.cat([x[0, 4:13], x[1, 4:9]]).abs().mean(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pretraining_lowers_its_loss_and_train_starts_from_the_encoder(pool_cache, tmp_path):
    p = params(**tiny(), **{**PRETRAIN, "pretrain.epochs": 20, "pretrain.lr": 0.01, "train.init": "pretrained"})
    metrics = pretrain(p, pool_cache, tmp_path / "encoder.pt", tmp_path / "live")
    assert metrics["clips"] == 10 and metrics["speakers"] == 5 and metrics["epochs"] == 20
    losses = [float(line.split("\t")[1]) for line in
              (tmp_path / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()[1:]]
    assert len(losses) == 20 and np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
    state = load_encoder(tmp_path / "encoder.pt", p, _features(pool_cache))
    assert state and all(k.startswith(("frontend.", "rnn.")) for k in state)
    trainer = Trainer(p, pool_cache, encoder=tmp_path / "encoder.pt")
    model_state = trainer.model.state_dict()
    assert all(torch.equal(model_state[k], v) for k, v in state.items())
    trainer.close()
    scratch = Trainer(params(**tiny()), pool_cache)  # same seed: the head starts alike, the encoder does not
    assert torch.equal(scratch.model.state_dict()["head.1.weight"], model_state["head.1.weight"])
    assert not torch.equal(scratch.model.state_dict()["rnn.weight_ih_l0"], model_state["rnn.weight_ih_l0"])
    scratch.close()
    # the pool is no split of any fold: training reads the labelled clips only
    result = train(p, pool_cache, tmp_path / "m.pt", tmp_path / "live_train", encoder=tmp_path / "encoder.pt")
    assert result["epochs_run"] == 1 and len(Trainer(params(**tiny()), pool_cache).train_data) == 10


def _features(cache):
    import dataclasses

    from acento.features.cache import SplitData

    with SplitData(cache, "train") as data:
        return dataclasses.asdict(data.feature_config)


@pytest.mark.parametrize("change, why", [
    ({"model": "gru"}, "cell 'lstm' (train asks for 'gru')"),
    ({"rnn.hidden_size": 16}, "rnn.hidden_size 8 (train asks for 16)"),
    ({"rnn.frontend_stride": 2}, "rnn.frontend_stride 4 (train asks for 2)"),
])
def test_an_encoder_of_other_settings_is_refused_in_one_line(pool_cache, tmp_path, change, why):
    pretrain(params(**tiny(), **PRETRAIN), pool_cache, tmp_path / "encoder.pt", tmp_path / "live")
    p = params(**{**tiny(), **PRETRAIN, "train.init": "pretrained", **change})
    with pytest.raises(StageError, match="pretrained with other settings than train asks for") as err:
        Trainer(p, pool_cache, encoder=tmp_path / "encoder.pt")
    assert why in str(err.value) and "\n" not in str(err.value)
    # the pretrained features are checked too: other log-mels, another encoder
    with pytest.raises(StageError, match=r"features.fmax 8000.0 \(train asks for 7000.0\)"):
        load_encoder(tmp_path / "encoder.pt", params(**tiny()), {**_features(pool_cache), "fmax": 7000.0})


def test_no_pretraining_no_pool_or_no_file_are_one_line_each(pool_cache, cache, tmp_path):
    p = params(**tiny(), **{"pretrain.epochs": 0})
    assert pretrain(p, pool_cache, tmp_path / "none.pt", tmp_path / "live")["epochs"] == 0
    first = (tmp_path / "none.pt").read_bytes()  # written again, byte for byte the same (dvc.lock stays)
    pretrain(p, pool_cache, tmp_path / "none.pt", tmp_path / "live")
    assert (tmp_path / "none.pt").read_bytes() == first
    wanted = params(**tiny(), **PRETRAIN, **{"train.init": "pretrained"})
    with pytest.raises(StageError, match="holds no pretrained encoder \\(pretrain.epochs is 0\\)"):
        Trainer(wanted, pool_cache, encoder=tmp_path / "none.pt")
    with pytest.raises(StageError, match="the pool is empty"):  # a release without unlabelled clips
        pretrain(params(**tiny(), **PRETRAIN), cache, tmp_path / "e.pt", tmp_path / "live2")
    with pytest.raises(StageError, match="not found; run the pretrain stage first"):
        Trainer(wanted, pool_cache, encoder=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(StageError, match="not an encoder file"):
        Trainer(wanted, pool_cache, encoder=tmp_path / "junk.pt")


@pytest.mark.parametrize("overrides, message", [
    ({"pretrain.objective": "apc", "rnn.bidirectional": True}, "'pretrain.objective' is 'apc'"),
    ({"train.init": "pretrained", "pretrain.epochs": 0}, "'train.init' is 'pretrained' but 'pretrain.epochs' is 0"),
])
def test_impossible_pretraining_settings_are_refused_at_load(overrides, message):
    from acento.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        params(**overrides)
