"""Fixtures shared by several test modules."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from acento.corpus.release import extract_release
from acento.features.build import build_cache
from tests.helpers import SAMPLE, params, tiny, tone


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


def chirp(seconds: float, start_hz: float, end_hz: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (start_hz * t + (end_hz - start_hz) * t ** 2 / (2 * seconds))
    return (0.3 * np.sin(phase)).astype(np.float32)


@pytest.fixture(scope="session")
def pool_cache(tmp_path_factory):
    """12 labelled tone clips (two pitch ranges, one split each) and 10 unlabelled ones of 5 other speakers."""
    root = tmp_path_factory.mktemp("pool")
    rows = []
    for i in range(22):
        pooled = i >= 12
        label = "" if pooled else "low" if i % 2 else "high"
        split = "pool" if pooled else "train" if i < 8 else "dev" if i < 10 else "test"
        path = root / f"c{i}.wav"
        # pool clips sweep in pitch (a masked frame lies between its neighbours'), labelled ones are tones
        sf.write(path, chirp(0.5 + 0.05 * (i % 5), 300 + 30 * i, 3000 - 60 * i) if pooled else
                 tone(0.5 + 0.05 * (i % 5), rate=16000, freq=250 + 40 * i, seed=i), 16000)
        rows.append({"clip": path.name, "audio_path": str(path), "speaker": f"{'u' if pooled else 's'}{i // 2}",
                     "label": label, "split": split})
    out = root / "features.h5"
    build_cache(pd.DataFrame(rows), params().features, out, 1)
    return out


@pytest.fixture(scope="session")
def trained_model(cache, tmp_path_factory):
    from acento.training.trainer import train

    out = tmp_path_factory.mktemp("model") / "model.pt"
    train(params(**tiny(epochs=4)), cache, out, out.parent / "live")
    return out


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory):
    """12 real clips of the bundled sample: 4 at each of its rates (16, 32 and 48 kHz MP3), longer than 1.5 s,
    with silence before and after; the sample's deliberately broken clips are left out."""
    locale = extract_release(SAMPLE, tmp_path_factory.mktemp("sample"), "es")
    by_rate: dict[int, list] = {}
    for path in sorted((locale / "clips").glob("*.mp3")):
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError):
            continue
        if info.duration > 1.5 and len(by_rate.setdefault(info.samplerate, [])) < 4 \
                and np.abs(sf.read(str(path), dtype="float32")[0]).max() > 0.01:
            by_rate[info.samplerate].append(path)
    return sorted(p for paths in by_rate.values() for p in paths)
