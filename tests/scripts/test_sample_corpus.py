"""The corpus generator's accent rules, its oracle counts and the oracle ceiling (no espeak-ng needed)."""

import random

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_script

corpus = load_script("make_sample_corpus")
oracle = load_script("oracle_ceiling")


def clause(text: str) -> list[list[list[str]]]:
    return [[corpus.tokenize(w) for w in text.split()]]


def spoken(clauses) -> str:
    return " ".join("".join(w) for w in clauses[0])


def test_rewrite_counts_occurrences_and_applications():
    # "las casas": two word-final /s/ (both can drop) and one /s/ before a vowel
    counts: dict = {}
    out = corpus.rewrite(clause("l'as k'asas"), {"s_drop_final": 1.0}, random.Random(0), counts)
    assert spoken(out) == "l'a k'asa"
    assert counts == {"s_drop_final": [2, 2]}
    counts = {}
    out = corpus.rewrite(clause("l'as k'asas"), {"ceceo": 1.0, "s_drop_final": 1.0}, random.Random(0), counts)
    assert spoken(out) == "l'a k'aTa"  # ceceo first (before a vowel), then the final ones drop
    assert counts == {"ceceo": [1, 1], "s_drop_final": [2, 2]}


def test_rewrite_counts_partial_rates_and_draws_the_same_numbers():
    text = "l'as k'asas s'on p'ekes "
    with_counts, without = random.Random(7), random.Random(7)
    counts: dict = {}
    a = corpus.rewrite(clause(text), {"s_drop_final": 0.5}, with_counts, counts)
    b = corpus.rewrite(clause(text), {"s_drop_final": 0.5}, without)
    assert a == b and with_counts.random() == without.random()  # counting draws nothing
    kept = sum(w[-1] == "s" for w in a[0])  # three words end in /s/ ("son" ends in /n/)
    assert counts["s_drop_final"] == [3 - kept, 3] and 0 < kept < 3


def test_full_rate_speakers_have_every_rule_at_rate_one_and_others_keep_the_sample_stream():
    bench = corpus.make_speakers(random.Random(1), 20, 3, corpus.BENCHMARK)
    full = [s for s in bench if s.full_rate]
    assert 0 < len(full) < len(bench)
    assert all(rate == 1.0 for s in full for _, rate in s.rates)
    # the sample's design draws exactly what it drew before the benchmark design existed
    assert [s.client_id for s in corpus.make_speakers(random.Random(1), 4, 3)] == \
           [s.client_id for s in corpus.make_speakers(random.Random(1), 4, 3, corpus.SAMPLE)]
    assert not set(s.client_id for s in bench) & set(s.client_id for s in corpus.make_speakers(random.Random(1), 20, 3))
    assert not set(corpus.BENCHMARK_SENTENCES) & set(corpus.SENTENCES)


def test_oracle_features_parse_counts():
    frame = pd.DataFrame({"rules": ["seseo:2/2;yeismo:0/1", "yeismo:1/2", ""]})
    x, rules = oracle.oracle_features(frame)
    assert rules == ["seseo", "yeismo"]
    np.testing.assert_allclose(x, [[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("noise, expected", [(0.0, 1.0), (1.0, None)])
def test_ceiling_is_perfect_when_rules_separate_the_classes_and_near_chance_when_they_do_not(noise, expected):
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 60)
    speakers = np.repeat([f"s{i}" for i in range(40)], 3)
    signal = (labels == "a").astype(float)
    x = np.stack([signal * (1 - noise) + noise * rng.random(len(labels)), np.ones(len(labels))], axis=1)
    value = oracle.ceiling(x, labels, speakers, folds=5, seed=0)
    if expected is not None:
        assert value == expected
    else:
        assert value < 0.75
