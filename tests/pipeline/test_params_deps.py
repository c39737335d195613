"""Each stage's `params` deps in dvc.yaml are exactly the parameters it reads.

A key a stage reads but does not list: changing it does not rerun the stage, and the results silently
describe other settings (`data.fold` was once found missing by hand).  A key it lists but does not read
(a worker count, a device): changing it reruns the stage for identical results.  Each stage runs here,
in-process on a tiny release, with parameters that record every field read.
"""

import argparse
import dataclasses
import json

import pytest
import yaml

from acento.errors import StageError
from pipeline import download, evaluate, features, prepare, pretrain, train
from tests.helpers import ROOT, balanced_rows, make_release, params, speaker_id, tiny

TINY = tiny(**{"runtime.workers": 1, "data.folds": 3, "data.min_speakers": 2})


def recording(obj, seen: set[str], prefix: str = ""):
    """A copy of the (nested) parameter dataclass `obj` that adds 'prefix.field' to `seen` on each read."""
    cls = type(obj)
    names = {f.name for f in dataclasses.fields(cls)}

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        if name in names and not dataclasses.is_dataclass(value):  # a value, not a section
            seen.add(prefix + name)
        return value

    recorded = object.__new__(type(f"Recorded{cls.__name__}", (cls,), {"__getattribute__": getattribute}))
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = recording(value, seen, f"{prefix}{f.name}.")
        object.__setattr__(recorded, f.name, value)
    return recorded


def covered(key: str, deps: set[str]) -> bool:
    """Whether a dotted key is listed, itself or through a section above it."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in deps for i in range(1, len(parts) + 1))


def declared() -> dict[str, set[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: set(stage.get("params", [])) for name, stage in stages.items()}


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> dict[str, set[str]]:
    """The parameters each stage read, running the pipeline once on a small release."""
    tmp = tmp_path_factory.mktemp("deps")
    unlabelled = [{"client_id": speaker_id(70 + i), "path": f"u{i}.mp3", "accents": ""} for i in range(4)]
    locale = make_release(tmp / "release", balanced_rows(speakers_per_class=4, clips_per_speaker=2) + unlabelled)
    p = params(**TINY, **{"data.source": str(locale.parent), "data.unlabelled_clips": 10, "pretrain.epochs": 1,
                          "data.classes": {"norte": [balanced_rows()[0]["accents"]],
                                           "mexico": [balanced_rows()[3]["accents"]]}})
    out: dict[str, set[str]] = {}

    def run(stage, **args):
        seen: set[str] = set()
        stage.run(recording(p, seen), argparse.Namespace(**args))
        return seen

    out["download"] = run(download, out=tmp / "release.json")
    # the branches a folder does not take: an archive (data.sha256) and a URL (data.token_env)
    for source in ("http://127.0.0.1:9/cv.tar.gz", str(tmp / "absent.tar.gz")):
        seen: set[str] = set()
        with pytest.raises(StageError):
            download.run(recording(dataclasses.replace(p, data=dataclasses.replace(p.data, source=source)), seen),
                         argparse.Namespace(out=tmp / "unused.json"))
        out["download"] |= seen
    out["prepare"] = run(prepare, release=tmp / "release.json", out=tmp / "manifest.tsv", metrics=tmp / "data.json")
    out["features"] = run(features, manifest=tmp / "manifest.tsv", out=tmp / "features.h5",
                          metrics=tmp / "features.json")
    out["pretrain"] = run(pretrain, cache=tmp / "features.h5", out=tmp / "encoder.pt", metrics=tmp / "pretrain.json",
                          live=tmp / "live-pretrain")
    assert json.loads((tmp / "pretrain.json").read_text())["clips"] == 4  # the pool was there to pretrain on
    out["train"] = run(train, cache=tmp / "features.h5", out=tmp / "model.pt", metrics=tmp / "train.json",
                       live=tmp / "live", timing=tmp / "train-timing.json", checkpoint=tmp / "ckpt.pt",
                       encoder=tmp / "encoder.pt")
    out["evaluate"] = run(evaluate, model_file=tmp / "model.pt", cache=tmp / "features.h5",
                          metrics=tmp / "eval.json", confusion=tmp / "confusion.json",
                          predictions=tmp / "predictions.csv", png=tmp / "confusion.png",
                          timing=tmp / "eval-timing.json")
    assert json.loads((tmp / "eval.json").read_text())  # the pipeline really ran to the end
    return out


@pytest.mark.parametrize("stage", ["download", "prepare", "features", "pretrain", "train", "evaluate"])
def test_a_stage_lists_every_parameter_it_reads_and_no_other(reads, stage):
    deps = declared()[stage]
    read = {key for key in reads[stage] if not key.startswith("runtime.")}
    unlisted = sorted(key for key in read if not covered(key, deps))
    unread = sorted(dep for dep in deps if not any(covered(key, {dep}) for key in read))
    assert not unlisted, f"dvc.yaml: stage '{stage}' reads but does not list: {', '.join(unlisted)}"
    assert not unread, f"dvc.yaml: stage '{stage}' lists but never reads: {', '.join(unread)}"


def test_no_stage_lists_runtime_settings():
    """runtime.* says how fast and where, not what: it must never rerun a stage."""
    for stage, deps in declared().items():
        assert not any(covered(dep, {"runtime"}) or dep == "runtime" for dep in deps), stage


def test_the_recorder_records_nested_reads_and_whole_sections():
    seen: set[str] = set()
    p = recording(params(), seen)
    assert p.data.split.train == 0.6 and p.model == "lstm"
    dataclasses.asdict(p.normalise)
    assert seen == {"data.split.train", "model", "normalise.global_stats", "normalise.utterance_mean",
                    "normalise.utterance_std"}
