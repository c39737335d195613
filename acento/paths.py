"""Where each stage's outputs live: the one place the Python code takes these paths from.

`dvc.yaml` names the same files (DVC needs them to track the stages); `tests/pipeline/test_dvc_wiring.py`
checks that the two agree.  Every stage also takes its inputs and outputs as command-line options
defaulting to these, so a stage can be run by hand on other files.
"""

from pathlib import Path

RELEASE_MANIFEST = Path("data/release.json")         # download: where the release is, TSV checksums


CLIP_MANIFEST = Path("data/prepared/manifest.tsv")   # prepare: one row per kept clip, with its split


DATA_METRICS = Path("metrics/data.json")             # prepare: clips/speakers per split, drops by reason


FEATURE_CACHE = Path("data/features/features.h5")    # features: log-mels of every clip, every fold (HDF5)


FEATURES_METRICS = Path("metrics/features.json")     # features: counts, failures by reason


MODEL_FILE = Path("models/model.pt")                 # train: weights + everything inference needs


FINAL_MODEL = Path("models/final.pt")                # final (`make final-model`): the deployable ensemble


FINAL_REPORT = Path("reports/final.json")            # final: its members' cross-validated scores


ENCODER_FILE = Path("models/encoder.pt")             # pretrain: the encoder pretrained on the unlabelled pool


PRETRAIN_METRICS = Path("metrics/pretrain.json")     # pretrain: objective, pool size, final loss


PRETRAINING_CURVES = Path("metrics/pretraining")     # pretrain: dvclive curve of the loss per epoch


TRAIN_METRICS = Path("metrics/train.json")           # train: best dev scores, timing


TRAINING_CURVES = Path("metrics/training")           # train: dvclive curves per epoch


EVAL_METRICS = Path("metrics/eval.json")             # evaluate: test-split metrics


TRAIN_TIMING = Path("logs/train.json")               # train: seconds and clips/s (git-ignored: not a result)
TRAIN_CHECKPOINT = Path("logs/train-checkpoint.pt")  # train: the state after the last epoch, to resume a kill
TEACHER_CURVES = Path("logs/teacher-training")      # train with train.self_train: the first model's curves


EVAL_TIMING = Path("logs/evaluate.json")             # evaluate: inference seconds and clips/s (the same)


CONFUSION = Path("metrics/confusion.json")           # evaluate: (actual, predicted) rows for dvc plots


CONFUSION_PNG = Path("metrics/confusion.png")        # evaluate: the confusion matrix as an image


PREDICTIONS = Path("metrics/predictions.csv")        # evaluate: per test clip: true, predicted, probabilities


COMPARE_REPORT = Path("reports/compare.md")          # compare: cross-validated LSTM vs GRU, for people


COMPARE_METRICS = Path("reports/compare.json")       # compare: the same numbers, for `dvc metrics show`


COMPARE_PLOT = Path("reports/compare.png")           # compare: per-fold scores and intervals


ABLATION_REPORT = Path("reports/ablation/ablation.md")   # ablate: the ablation table, for people


ABLATION_JSON = Path("reports/ablation/ablation.json")   # ablate: its rows and commands (merged across runs)


BENCH_REPORT = Path("bench/results.md")                  # bench: benchmark results, for people


BENCH_JSON = Path("bench/results.json")                  # bench: the same, merged across runs
