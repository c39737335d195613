"""acento: Spanish accent identification on Common Voice with recurrent networks (LSTM and GRU).

A trained model is one object:

    import acento
    model = acento.load("models/final.pt")     # or models/model.pt from `dvc repro`
    model.classify("clip.mp3")                  # Prediction(label=..., probs={class: probability})

The sub-packages, in the order the data flows:

    acento.corpus      Common Voice releases: TSV records, download and extraction, manifest, splits
    acento.audio       decoding any audio file (bounded), MPEG framing, log-mels
    acento.features    the HDF5 feature cache: building it, reading splits of it
    acento.model       the network (LSTM/GRU), the model file, batched inference
    acento.training    batches and augmentation, the training loop, the deployable fold ensemble
    acento.evaluation  metrics, statistics (speaker bootstrap, McNemar), cross-validation, LSTM vs GRU
    acento.apps        acento-predict, acento-serve (and its page), acento-score

`load`, `AccentModel` and `Prediction` are imported on first use, so that `import acento.config` (every
stage) does not pay for torch.
"""

__version__ = "0.2.0"
__all__ = ["AccentModel", "Prediction", "load", "__version__"]


def __getattr__(name: str):
    if name in ("AccentModel", "Prediction", "load"):
        from acento.model import accent_model

        return getattr(accent_model, name)
    raise AttributeError(f"module 'acento' has no attribute {name!r}")
