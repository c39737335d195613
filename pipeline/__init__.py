"""acento: Spanish accent identification from Common Voice with recurrent networks.

From Python, a trained model is one object (`pipeline.model.AccentModel`):

    from pipeline import load
    model = load("models/model.pt")
    model.classify("clip.mp3")          # Prediction(label=..., probs={class: probability})

`load`, `AccentModel` and `Prediction` are imported on first use, so that `import pipeline.config`
(every stage) does not pay for torch.
"""

__version__ = "0.1.0"
__all__ = ["AccentModel", "Prediction", "load"]


def __getattr__(name: str):
    if name in __all__:
        from pipeline import model

        return getattr(model, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
