"""scripts/make_scale_corpus.py: a release of Common Voice's size and shape from the sample's clips (hard
links), read as `prepare` reads it; known answers at 2,000 validated clips, seed 0."""

import dataclasses
import os
from collections import Counter

import numpy as np
import pytest

from acento.corpus.prepare import DROP_REASONS, prepare
from tests.helpers import HEADER_16, load_script, params

CLIPS = 2000


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    module = load_script("make_scale_corpus")
    assert module.main(["--clips", str(CLIPS), "--out", str(out), "--seed", "0"]) == 0
    return module, out, out / f"cv-corpus-scale-{CLIPS}" / "es"


def table(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def rows(path):
    return table(path)[1]


def test_every_tsv_has_the_16x_columns_and_the_rows_asked_for(scale):
    _, _, locale = scale
    sizes = {}
    for name in ("validated", "other", "invalidated", "train", "dev", "test"):
        header, records = table(locale / f"{name}.tsv")
        assert header == HEADER_16 and all(len(r) == len(HEADER_16) for r in records)
        sizes[name] = len(records)
    assert (sizes["validated"], sizes["other"], sizes["invalidated"]) == (2000, 5000, 300)
    assert sizes["train"] + sizes["dev"] + sizes["test"] == 2000
    assert 0.04 * CLIPS <= sizes["dev"] <= 0.05 * CLIPS and 0.04 * CLIPS <= sizes["test"] <= 0.05 * CLIPS
    speakers = {name: {r[0] for r in rows(locale / f"{name}.tsv")} for name in ("train", "dev", "test")}
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"]
                or speakers["dev"] & speakers["test"])
    validated = rows(locale / "validated.tsv")
    assert all(len(r[0]) == 128 and int(r[0], 16) >= 0 for r in validated)
    assert np.mean([r[4] != "0" for r in validated]) == pytest.approx(0.05, abs=0.015)
    assert all(int(r[3]) + int(r[4]) < 2 for r in rows(locale / "other.tsv"))
    assert all(int(r[4]) >= 2 and int(r[3]) < int(r[4]) for r in rows(locale / "invalidated.tsv"))


def test_speakers_are_heavy_tailed_and_37_percent_of_clips_carry_an_accent(scale):
    module, out, locale = scale
    validated = rows(locale / "validated.tsv")
    counts = np.array(sorted(Counter(r[0] for r in validated).values(), reverse=True))
    assert len(counts) == round(CLIPS * 25_695 / 405_662) == 127
    assert 0.05 <= counts[0] / CLIPS <= 0.2 and np.median(counts) <= 10 and counts.min() >= 1
    assert np.mean([bool(r[7]) for r in validated]) == pytest.approx(0.37, abs=0.02)
    fields, probs = module.accent_table(module.read_tsv(next((out / ".sample").glob("*/es")) / "validated.tsv"))
    assert probs.sum() == pytest.approx(1) and {r[7] for r in validated if r[7]} <= set(fields)
    assert any("," in f for f in fields) and not any("|" in f for f in fields)  # 16.x joins with ","
    assert all(len({r[7] for r in validated if r[0] == s}) == 1 for s in set(r[0] for r in validated))
    counts = module.zipf_counts(1000, 60, 1.0, 4.0, 0.3, np.random.default_rng(0))
    assert counts.sum() == 1000 and counts.min() >= 1 and list(counts) == sorted(counts, reverse=True)


def test_clips_are_hard_links_to_sample_clips_of_the_same_accent_with_their_durations(scale):
    module, out, locale = scale
    sample_dir = next((out / ".sample").glob("*/es"))
    sample = {os.stat(p).st_ino: p.name for p in (sample_dir / "clips").iterdir()}
    sample_rows = {r[1]: r for r in rows(sample_dir / "validated.tsv")}
    sample_ms = dict(rows(sample_dir / "clip_durations.tsv"))
    durations = dict(rows(locale / "clip_durations.tsv"))
    listed = [r for name in ("validated", "other", "invalidated") for r in rows(locale / f"{name}.tsv")]
    assert len(durations) == len(listed) == 7300
    present = 0
    for r in listed:
        path = locale / "clips" / r[1]
        if not path.exists():
            continue  # linked to one of the sample's deliberately missing clips
        present += 1
        st = os.stat(path)
        assert st.st_nlink > 1 and st.st_ino in sample
        source = sample[st.st_ino]
        assert durations[r[1]] == sample_ms[source]
        key = module.pool_key(r[7]) if r[7] else ""
        if key in module.REAL_CLASS_CLIPS and any(module.pool_key(s[7]) == key for s in sample_rows.values()):
            assert module.pool_key(sample_rows[source][7]) == key  # the label stays meaningful
    assert present >= 0.99 * len(listed)


def test_prepare_reads_it_and_counts_every_dropped_row(scale):
    _, _, locale = scale
    data = params().data
    manifest, metrics = prepare(dataclasses.replace(data, max_clips_per_speaker=0), locale)
    dropped = metrics["dropped"]
    assert set(dropped) == set(DROP_REASONS)
    assert len(manifest) + sum(dropped.values()) == CLIPS
    assert dropped["down_voted"] > 0 and dropped["no_accent"] > 0 and dropped["unmapped_accent"] > 0
    assert dropped["speaker_cap"] == 0 and 0.2 * CLIPS < len(manifest) < 0.37 * CLIPS
    sizes = manifest.groupby("fold").size()
    assert sizes.max() > 1.5 * sizes.min()  # one prolific speaker tips his fold without a cap
    capped, capped_metrics = prepare(dataclasses.replace(data, max_clips_per_speaker=25), locale)
    sizes = capped.groupby("fold").size()
    assert sizes.max() <= 1.5 * sizes.min() and len(capped) + sum(capped_metrics["dropped"].values()) == CLIPS


def test_the_same_seed_gives_the_same_bytes_and_an_existing_release_is_kept(scale, tmp_path):
    module, out, locale = scale
    assert module.main(["--clips", str(CLIPS), "--out", str(out), "--seed", "0"]) == 2  # not empty: refused
    assert module.main(["--clips", str(CLIPS), "--out", str(tmp_path), "--seed", "0"]) == 0
    again = tmp_path / f"cv-corpus-scale-{CLIPS}" / "es"
    for name in ("validated", "other", "invalidated", "train", "dev", "test", "clip_durations"):
        assert (again / f"{name}.tsv").read_bytes() == (locale / f"{name}.tsv").read_bytes(), name
    assert module.main(["--clips", str(CLIPS), "--out", str(tmp_path), "--seed", "1", "--force"]) == 0
    assert (again / "validated.tsv").read_bytes() != (locale / "validated.tsv").read_bytes()
