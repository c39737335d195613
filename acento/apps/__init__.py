"""The commands a user runs on a trained model: `acento-predict` (`predict`), `acento-serve` and its page
(`serve`), `acento-score` (`score`), `acento-propose` (`propose`)."""


def serve_main(argv: list[str] | None = None) -> int:
    """`acento-serve`: the service's command, with one line instead of a traceback where the `serve` extra
    (FastAPI, uvicorn, python-multipart) is not installed."""
    try:
        from acento.apps import serve
    except ModuleNotFoundError as exc:
        import sys

        print(f"error: acento-serve needs {exc.name}, which a bare `pip install acento` leaves out: "
              "pip install 'acento[serve]'", file=sys.stderr)
        return 2
    return serve.main(argv)
