"""scripts/make_scale_corpus.py: a release of real shape from the sample's clips, read as `prepare` reads it."""

import dataclasses
import os

import numpy as np
import pytest

from acento.corpus.prepare import prepare
from tests.helpers import load_script, params


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    module = load_script("make_scale_corpus")
    assert module.main(["--clips", "3000", "--out", str(out), "--seed", "1"]) == 0
    return module, out, out / "cv-corpus-scale-3000" / "es"


def rows(path):
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]


def test_the_release_has_the_size_and_shape_asked_for(scale):
    module, _, locale = scale
    validated = rows(locale / "validated.tsv")
    assert len(validated) == 3000 and len(rows(locale / "other.tsv")) == 7500
    assert len(rows(locale / "invalidated.tsv")) == 450
    speakers, counts = np.unique([r[0] for r in validated], return_counts=True)
    assert len(speakers) == round(3000 * 25_695 / 405_662)
    assert counts.max() >= 0.1 * 3000 and np.median(counts) <= 6  # one prolific speaker, most with a handful
    with_accent = np.mean([bool(r[7]) for r in validated])
    assert 0.2 < with_accent < 0.6
    assert module.zipf_counts(1000, 50).sum() == 1000 and module.zipf_counts(1000, 50).min() >= 1


def test_clips_are_hard_links_to_the_samples_files_with_their_durations(scale):
    _, out, locale = scale
    clips = sorted((locale / "clips").iterdir())
    sample = {os.stat(p).st_ino for p in (out / ".sample").rglob("*.mp3")}
    assert clips and all(os.stat(p).st_ino in sample for p in clips)
    durations = dict(r for r in rows(locale / "clip_durations.tsv"))
    assert {r[1] for r in rows(locale / "validated.tsv")} <= set(durations)


def test_prepare_reads_it_and_a_cap_balances_the_folds(scale):
    _, _, locale = scale
    data = params().data
    uncapped, metrics = prepare(dataclasses.replace(data, max_clips_per_speaker=0), locale)
    assert sum(metrics["dropped"].values()) > 0 and metrics["dropped"]["no_accent"] > 0
    capped, _ = prepare(dataclasses.replace(data, max_clips_per_speaker=100), locale)
    sizes = capped.groupby("fold").size()
    assert sizes.max() <= 1.5 * sizes.min() and len(capped) < len(uncapped)


def test_the_same_seed_gives_the_same_release_and_an_existing_one_is_kept(scale, tmp_path):
    module, out, locale = scale
    assert module.main(["--clips", "3000", "--out", str(out), "--seed", "1"]) == 2  # exists: refused
    assert module.main(["--clips", "3000", "--out", str(tmp_path), "--seed", "1"]) == 0
    again = tmp_path / "cv-corpus-scale-3000" / "es" / "validated.tsv"
    assert again.read_text(encoding="utf-8") == (locale / "validated.tsv").read_text(encoding="utf-8")
