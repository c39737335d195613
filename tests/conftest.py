"""Fixtures shared by several test modules."""

import pandas as pd
import pytest
import soundfile as sf

from pipeline.download import extract_release
from pipeline.features import build_cache
from tests.helpers import SAMPLE, params, tone


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A feature cache of 36 tone clips (18 speakers): two 'accents' as two pitch ranges."""
    root = tmp_path_factory.mktemp("cache")
    rows = []
    for i in range(36):
        label = "low" if i % 2 else "high"
        split = "train" if i < 24 else "dev" if i < 30 else "test"
        path = root / f"c{i}.wav"
        sf.write(path, tone(0.6 + 0.05 * (i % 7), rate=16000, freq=(250 if label == "low" else 900) + 7 * i,
                            seed=i), 16000)
        rows.append({"clip": path.name, "audio_path": str(path), "speaker": f"s{i // 2}", "label": label,
                     "split": split})
    out = root / "features.h5"
    build_cache(pd.DataFrame(rows), params().features, out, 1)
    return out


@pytest.fixture(scope="session")
def trained_model(cache, tmp_path_factory):
    from pipeline.train import train

    out = tmp_path_factory.mktemp("model") / "model.pt"
    tiny = {"train.epochs": 4, "rnn.hidden_size": 8, "rnn.num_layers": 1, "rnn.frontend_channels": 8,
            "train.batch_size": 4, "runtime.num_threads": 1}
    train(params(**tiny), cache, out, out.parent / "live")
    return out


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory):
    """13 real clips of the bundled sample (MP3 of 3-4 s, 48 kHz and 32 kHz, silence before and after)."""
    locale = extract_release(SAMPLE, tmp_path_factory.mktemp("sample"), "es")
    return sorted((locale / "clips").glob("*.mp3"))[::45]
