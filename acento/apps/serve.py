"""A local prediction service and a page to try a model: `acento-serve` (FastAPI on uvicorn).

The model is loaded once, at start.  `POST /predict` classifies one or more uploaded clips
(multipart, field `files`) with the features and network `acento-predict` uses, and answers each
with the fields of its `--json` lines; `GET /health` says which model answers (cell, classes,
feature parameters, the model file's sha256); `GET /` is a page to upload a file or record one from
the microphone; `/docs` is the API as FastAPI describes it.

  acento-serve                                        # then open http://127.0.0.1:8000
  curl -F files=@a.mp3 -F files=@b.wav http://127.0.0.1:8000/predict

Uploads are decoded from memory; a client's file name is only echoed back, never used as a path.
Inference runs on worker threads, at most `--concurrency` requests at a time and `--queue` more
waiting (past that: 503), so the event loop, and /health, answer while a long request runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acento.apps.options import add_model_file_option, deployed_model
from acento.audio.decode import AudioError
from acento.errors import StageError
from acento.model.accent_model import AccentModel, ModelFileError
from acento.runtime import available_cores, select_device

MIB = 2 ** 20


PAGE = Path(__file__).with_name("static") / "index.html"


MAX_NAME = 255  # characters of a client's file name echoed back


class BodyLimit:
    """ASGI middleware: a request whose body exceeds `limit` bytes gets 413 before it is parsed, whether
    it declares its length (refused unread) or streams it (refused once the count passes the limit)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit
        self.detail = f"request body over the {limit / MIB:g} MB limit (acento-serve --max-upload-mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": self.detail}, 413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # raised inside the form parser; FastAPI turns it into the response
                raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)


class Turns:
    """At most `running` requests classify at once and at most `waiting` more wait for a turn; beyond
    that a request gets 503 at once, so a burst cannot pile up without bound.  Event-loop only."""

    def __init__(self, running: int, waiting: int):
        self.running, self.waiting, self.inside = running, waiting, 0
        self.slots = asyncio.Semaphore(running)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.inside >= self.running + self.waiting:
            raise HTTPException(503, f"busy: {self.inside} requests running or waiting; try again shortly",
                                headers={"Retry-After": "1"})
        self.inside += 1
        try:
            async with self.slots:
                yield
        finally:
            self.inside -= 1


def validation_detail(errors: list[dict]) -> str:
    """One line for a request FastAPI could not validate: each field and what was wrong, without the values."""
    problems = []
    for error in errors[:5]:
        field = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        if field.startswith("files") and error.get("type") != "missing":
            problems.append(f"{field}: not a file (each `files` part needs a Content-Disposition with a "
                            "filename, as `curl -F files=@clip.mp3` sends)")
        else:
            problems.append(f"{field}: {str(error.get('msg', 'invalid'))[:100]}")
    return "request not understood: " + "; ".join(problems)


def log_mel_picture(feats: np.ndarray, hop_seconds: float) -> dict:
    """The log-mels as bytes a page can draw: [frames, n_mels] row-major uint8 (0 = `min`, 255 = `max`),
    base64-encoded; about 85 kB for 10 s of 64 mels."""
    low, high = float(feats.min()), float(feats.max())
    scaled = np.round((feats - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8)
    return {"frames": int(feats.shape[0]), "n_mels": int(feats.shape[1]), "hop_seconds": hop_seconds,
            "min": round(low, 3), "max": round(high, 3), "data": base64.b64encode(scaled.tobytes()).decode()}


class Classifier:
    """The model, loaded once, and the work of one request: decode, features, network.  Runs on a
    worker thread (numpy, libsndfile, soxr and torch release the GIL while they compute)."""

    def __init__(self, model_file: Path, device: torch.device, max_seconds: float):
        self.model = AccentModel.load(model_file, device)
        self.max_seconds = max_seconds
        self.extractor = self.model.log_mel
        cfg = self.model.features
        self.hop_seconds = cfg.hop_length / cfg.sample_rate
        self.health = {"status": "ok", **self.model.describe(),
                       "model_file": {"name": model_file.name, "bytes": model_file.stat().st_size,
                                      "sha256": self.model.sha256}}

    def features(self, name: str, data: bytes) -> tuple[np.ndarray, dict]:
        """One upload's log-mels and what the response says about its audio; AudioError if unusable."""
        clip = self.extractor.analyse(data, name, self.max_seconds)
        about = clip.about()
        if clip.cropped:
            about["note"] = (f"{clip.seconds:.1f} s long, over the service's {self.max_seconds:g} s limit: only "
                             f"the first {self.max_seconds:g} s were read")
        return clip.frames, about

    def __call__(self, uploads: list[tuple[str, bytes]], spectrogram: bool) -> tuple[list[dict], list[dict]]:
        """(results, errors): a result per upload, in order, or the errors of those that failed."""
        done, errors = [], []
        for name, data in uploads:
            try:
                done.append((name, *self.features(name, data)))
            except AudioError as exc:
                errors.append({"file": name, "error": exc.report()})
        if errors:
            return [], errors
        probs = self.model.predict_log_mels([feats for _, feats, _ in done])
        return [{"file": name, **self.model.prediction(p).as_dict(), **about,
                 **({"log_mel": log_mel_picture(feats, self.hop_seconds)} if spectrogram else {})}
                for (name, feats, about), p in zip(done, probs)], []


def api_page(schema: dict) -> str:
    """The OpenAPI `schema` as one HTML page with no scripts: each route, its parameters and answers."""
    def esc(text: Any) -> str:
        return html.escape(str(text))

    parts = [f"<!doctype html><meta charset=utf-8><title>{esc(schema['info']['title'])} API</title>",
             "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em}"
             "code{background:#f3f3f3;padding:0 .2em}</style>",
             f"<h1>{esc(schema['info']['title'])} API</h1><p>{esc(schema['info'].get('summary', ''))}</p>",
             '<p>The schema: <a href="/openapi.json">/openapi.json</a>.</p>']
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{method.upper()} {esc(path)}</code></h2><p>{esc(op.get('summary', ''))}</p>")
            if op.get("description"):
                parts.append(f"<p>{esc(op['description'])}</p>")
            params = [f"<li><code>{esc(p['name'])}</code> ({esc(p['in'])}, "
                      f"{esc(p.get('schema', {}).get('type', ''))})</li>" for p in op.get("parameters", [])]
            if "requestBody" in op:
                params.append("<li>a <code>multipart/form-data</code> body: <code>files</code>, one or more</li>")
            if params:
                parts.append("<ul>" + "".join(params) + "</ul>")
            answers = "".join(f"<li><code>{esc(code)}</code>: {esc(r.get('description', ''))}</li>"
                              for code, r in op.get("responses", {}).items())
            parts.append(f"<p>Answers:</p><ul>{answers}</ul>")
    return "\n".join(parts)


def create_app(model_file: str | Path | None = None, *, max_upload_mb: float = 20.0, max_seconds: float = 60.0,
               concurrency: int = 0, queue: int = 16, device: torch.device | str = "cpu") -> FastAPI:
    """The service for one model file (default: `deployed_model()`, as `acento-serve`'s; ModelFileError if it is
    not a usable one).  The defaults are the command's.  concurrency: requests classified at once (0 = one per
    core); queue: requests that may wait for a turn.  `/docs` is the API's reference as a page of its own
    (FastAPI's Swagger page loads its scripts from a CDN, blank offline); `/openapi.json` the schema."""
    classifier = Classifier(Path(model_file or deployed_model()), torch.device(device), max_seconds)
    turns = Turns(concurrency or available_cores(), queue)
    page = PAGE.read_text(encoding="utf-8")
    app = FastAPI(title="acento", summary="Spanish accent identification: classify recordings with a "
                  f"trained {classifier.model.cell.upper()} model", version="1",
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=int(max_upload_mb * MIB))
    health = {**classifier.health, "limits": {"max_upload_mb": max_upload_mb, "max_seconds": max_seconds,
                                              "concurrency": turns.running, "queue": queue}}

    @app.exception_handler(RequestValidationError)
    async def request_not_understood(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A short answer naming the fields, never echoing what was sent (FastAPI's default repeats each
        invalid value: a whole upload for a part without a file name)."""
        return JSONResponse({"detail": validation_detail(exc.errors())}, 422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_reference() -> str:
        return api_page(app.openapi())

    @app.get("/health", summary="The model that answers, its feature parameters and the service's limits")
    async def get_health() -> dict[str, Any]:
        return health

    @app.post("/predict", summary="Classify one or more recordings (MP3, WAV, FLAC, OGG/Opus)",
              responses={413: {"description": "request body over the size limit"},
                         422: {"description": "an upload is empty or not readable audio; `errors` names it"},
                         503: {"description": "too many requests running or waiting"}})
    async def predict(files: list[UploadFile] = File(..., description="audio files, any rate and channels"),
                      spectrogram: bool = False) -> JSONResponse:
        """Each file gets `label` and `probs` (as `acento-predict --json`), `seconds` (its length),
        `analysed_seconds` (what the model heard: silence trimmed, cropped to the model's clip length) and
        `cropped`; with `spectrogram=true`, also `log_mel` (the features, as 8-bit base64 for drawing).
        If any file cannot be used, nothing is classified and the answer is 422 with `errors`."""
        uploads = [((f.filename or f"upload {i + 1}")[:MAX_NAME], await f.read()) for i, f in enumerate(files)]
        async with turns.turn():
            results, errors = await run_in_threadpool(classifier, uploads, spectrogram)
        if errors:
            detail = f"{len(errors)} of {len(uploads)} upload(s) could not be classified: " + \
                "; ".join(e["error"] for e in errors)
            return JSONResponse({"detail": detail, "errors": errors}, 422)
        return JSONResponse({"results": results})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acento-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_file_option(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only); 0.0.0.0 exposes the "
                             "service, without authentication, to every machine that can reach this one")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default: 20)")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="a longer clip is cropped to its first this-many seconds (default: 60)")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="requests classified at once; 0 = one per core (default)")
    parser.add_argument("--queue", type=int, default=16, help="requests that may wait for a turn (default: 16)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default: cpu")
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0 or args.max_seconds <= 0 or args.concurrency < 0 or args.queue < 0:
        parser.error("--max-upload-mb and --max-seconds must be > 0, --concurrency and --queue >= 0")
    try:
        app = create_app(args.model_file, max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                         concurrency=args.concurrency, queue=args.queue,
                         device=select_device(args.device, "--device"))
    except (ModelFileError, StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    running = args.concurrency or available_cores()
    # One torch thread per running request: more would spin against each other on a busy machine.
    torch.set_num_threads(max(1, available_cores() // running))
    import uvicorn  # only the command line needs the server

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the service "
              "(there is no authentication)", file=sys.stderr)
    print(f"acento-serve: {args.model_file} on http://{args.host}:{args.port}/ (API: /docs)", flush=True)
    # Connections beyond the turns and the queue get 503 from uvicorn, before their bodies are read.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                limit_concurrency=running + args.queue + 8, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
