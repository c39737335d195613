"""The DVC stages named in dvc.yaml, each `python -m pipeline.<stage>`: a short `main` that reads its paths
and params and calls the library, `acento`.

`from pipeline import load` (before 0.2) still works in a checkout, with a warning: use `acento.load`.
"""


def __getattr__(name: str):
    if name in ("AccentModel", "Prediction", "load"):
        import warnings

        import acento

        warnings.warn(f"pipeline.{name} is acento.{name} since acento 0.2", DeprecationWarning, stacklevel=2)
        return getattr(acento, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
