"""Self-training in cross-validation: the pool's speakers the fold's model is sure of join its training (#35)."""

import numpy as np

from acento.corpus.manifest import POOL
from acento.evaluation.crossval import run_fold
from acento.features.cache import SplitData
from tests.helpers import params_file, tiny


def test_pseudo_labelled_pool_speakers_join_the_training_split_and_its_statistics(pool_cache):
    with SplitData(pool_cache, "train") as plain, SplitData(pool_cache, POOL) as pool, \
            SplitData(pool_cache, "train", pseudo_labels={"u6": 1, "u7": 0, "s5": 0}) as taught:  # s5: a test speaker
        added = [c for c, s in zip(pool.clips, pool.speakers) if s in ("u6", "u7")]
        assert added == ["c12.wav", "c13.wav", "c14.wav", "c15.wav"]
        assert taught.clips.tolist() == plain.clips.tolist() + added  # the cache's order
        assert taught.labels.tolist() == plain.labels.tolist() + [1, 1, 0, 0]
        assert np.abs(taught.mean - plain.mean).max() > 1e-3  # their frames count in the statistics
    with SplitData(pool_cache, "dev", pseudo_labels={"u6": 1}) as dev, SplitData(pool_cache, "dev") as plain_dev:
        assert dev.clips.tolist() == plain_dev.clips.tolist()  # never a dev or test clip


def test_self_training_relabels_the_sure_speakers_and_trains_again(pool_cache, tmp_path, capsys):
    job = {"params_file": str(params_file(tmp_path, **tiny(epochs=2))), "overrides": {}, "cell": "lstm", "fold": 0,
           "cache": str(pool_cache), "scratch": str(tmp_path / "scratch"), "variant": "v", "base": "v"}
    everyone = run_fold({**job, "self_train": 0.0})  # every pool speaker, whatever the confidence
    assert everyone["pseudo_speakers"] == everyone["pool_speakers"] == 5 and sum(everyone["pseudo_classes"]) == 5
    progress = capsys.readouterr().err.splitlines()  # one line per step of the long run, on stderr
    assert progress[0] == "v lstm fold 0: training"
    assert progress[1].startswith("v lstm fold 0: first model ") and "5 of 5 pool speakers at a mean probability " \
        ">= 0 (" in progress[1] and progress[1].endswith("; training the second") and len(progress) == 2
    assert not np.allclose(everyone["teacher_probs"], everyone["probs"])  # another model, on more clips
    nobody = run_fold({**job, "self_train": 1.0})  # no mean probability reaches 1: no speaker is added
    assert nobody["pseudo_speakers"] == 0
    np.testing.assert_array_equal(nobody["teacher_probs"], nobody["probs"])  # the same run again: deterministic
    np.testing.assert_array_equal(run_fold(job)["probs"], nobody["teacher_probs"])  # and the plain run's
