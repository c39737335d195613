"""A local prediction service and a page to try a model: `acento-serve` (FastAPI on uvicorn).

The model is loaded once, at start.  `POST /predict` classifies one or more uploaded clips
(multipart, field `files`) with the features and network `acento-predict` uses, and answers each
with the fields of its `--json` lines; `POST /predict/speaker` takes several clips of one person and
answers one decision for them, as `acento-predict --by-speaker --json` does, with each file's own
answer or error; `GET /health` says which model answers (cell, classes,
feature parameters, the model file's sha256); `GET /` is a page to upload a file or record one from
the microphone; `/docs` is the API as FastAPI describes it.

  acento-serve                                        # then open http://127.0.0.1:8000
  curl -F files=@a.mp3 -F files=@b.wav http://127.0.0.1:8000/predict
  curl -F files=@a.mp3 -F files=@b.wav http://127.0.0.1:8000/predict/speaker

Uploads are decoded from memory; a client's file name is only echoed back, never used as a path.
Inference runs on worker threads, at most `--concurrency` requests at a time and `--queue` more
waiting (past that: 503), so the event loop, and /health, answer while a long request runs; a request
carries at most `--max-files` files (413 beyond).  Uploads
on their way may hold together what those may (bytes received, not sockets, are counted): a client
that opens connections and sends half a request holds only what it sent, and locks no one out; its
headers must arrive within HEAD_SECONDS (16 KiB at most) or the connection is closed, and its body
within `--body-seconds` (else 408).
A model whose scores are not finite numbers (NaN) is refused at start; if it gives one later, that
request and /health answer 503 saying so, never 500 and never NaN.
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

from acento.apps.options import add_model_file_option, deployed_model, non_finite_scores
from acento.apps.predict import by_speaker
from acento.audio.decode import AudioError
from acento.errors import StageError
from acento.model.accent_model import AccentModel, ModelFileError
from acento.runtime import available_cores, select_device

MIB = 2 ** 20


PAGE = Path(__file__).with_name("static") / "index.html"


MAX_NAME = 255  # characters of a client's file name echoed back


HEAD_SECONDS = 10.0  # a request's line and headers must arrive within this of the connection's start or last answer


class Turns:
    """At most `running` requests classify at once and at most `waiting` more wait for a turn; beyond
    that a request gets 503 at once, so a burst cannot pile up without bound.  Counted once a request's
    body is in; what bodies on their way may hold is `RequestLimits`' budget.  Event-loop only."""

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


class RequestLimits:
    """ASGI middleware for the requests that carry a body (every method but GET and HEAD; GET and HEAD,
    /health and the pages, pass untouched).  A body over `max_bytes` gets 413, whether it declares its
    length (refused unread) or streams it (refused once the count passes); one not received whole within
    `body_seconds` of its headers gets 408; and the bytes that all requests in progress hold together
    may not pass `budget` (503 beyond).  What is counted is bytes received, not connections or declared
    lengths: clients that send half a request hold what they sent, so they cannot lock others out."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_seconds: float, budget: int):
        self.app, self.max_bytes, self.body_seconds, self.budget, self.held = app, max_bytes, body_seconds, budget, 0
        self.too_large = f"request body over the {max_bytes / MIB:g} MB limit (acento-serve --max-upload-mb)"
        self.too_slow = f"request body not received within {body_seconds:g} s (acento-serve --body-seconds)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.too_large}, 413)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline, seen, whole = loop.time() + self.body_seconds, 0, False

        async def limited() -> Message:  # raised inside the form parser; FastAPI turns it into the response
            nonlocal seen, whole
            if whole:  # the body is in: later calls only wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise HTTPException(408, self.too_slow) from None
            size = len(message.get("body", b""))
            seen, self.held, whole = seen + size, self.held + size, not message.get("more_body", False)
            if seen > self.max_bytes:
                raise HTTPException(413, self.too_large)
            if self.held > self.budget:
                raise HTTPException(503, f"busy: {self.held / MIB:.0f} MB of uploads in progress; try again "
                                         "shortly", headers={"Retry-After": "1"})
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            self.held -= seen


class HeadAsGet:
    """ASGI middleware: HEAD on a GET route (/, /health, /docs, /openapi.json) answers as GET does, status
    and headers, without the body (FastAPI's routes answer only the methods they declare)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            await send({**message, "body": b""} if message["type"] == "http.response.body" else message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def http_protocol(head_seconds: float = HEAD_SECONDS) -> type:
    """uvicorn's h11 protocol with a deadline for each request's line and headers: a connection that has
    not sent them whole within `head_seconds` of opening, or of its last answer, is closed (as is one still
    sending a body nobody reads, once its answer has gone).  uvicorn has none: its keep-alive timer stops at
    the first byte, so a client sending half its headers held a connection for ever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadline(H11Protocol):
        timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self.arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timer:
                self.timer.cancel()
            super().connection_lost(exc)

        def arm(self) -> None:
            if self.timer:
                self.timer.cancel()
            self.timer = self.loop.call_later(head_seconds, self.expire)

        def expire(self) -> None:
            answered = self.cycle is None or self.cycle.response_complete  # else the app reads the body, in time
            if answered and self.conn.their_state is not h11.DONE and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, head_seconds: float = HEAD_SECONDS) -> Any:
    """The uvicorn.Config `acento-serve` runs `app` with: the head deadline (`http_protocol`), h11's bound
    of 16 KiB on a request's line and headers (a longer one gets 400), and no limit on connections: the
    app counts what requests hold, where uvicorn's `limit_concurrency` counted sockets, half-sent ones too."""
    import uvicorn  # only the command line needs the server

    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=http_protocol(head_seconds),
                          timeout_graceful_shutdown=5)


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


class UnhealthyModel(Exception):
    """The model gave scores that are not finite numbers: the service answers 503 from then on."""


class Classifier:
    """The model, loaded once, and the work of one request: decode, features, network.  Runs on a
    worker thread (numpy, libsndfile, soxr and torch release the GIL while they compute).

    ModelFileError at start if the model is not usable or scores 2 s of noise with a NaN or an infinity;
    `problem` says why once it has given such scores for a request ("" while it has not)."""

    def __init__(self, model_file: Path, device: torch.device, max_seconds: float):
        self.model = AccentModel.load(model_file, device)
        self.model_file, self.max_seconds, self.problem = model_file, max_seconds, ""
        self.extractor = self.model.log_mel
        cfg = self.model.features
        self.hop_seconds = cfg.hop_length / cfg.sample_rate
        self.health = {"status": "ok", **self.model.describe(),
                       "model_file": {"name": model_file.name, "bytes": model_file.stat().st_size,
                                      "sha256": self.model.sha256}}
        noise = 0.1 * np.random.default_rng(0).standard_normal(2 * cfg.sample_rate).astype(np.float32)
        if not np.isfinite(self.model.predict_log_mels([self.extractor(noise)])).all():
            raise ModelFileError(non_finite_scores(model_file, "2 s of noise"))

    def features(self, name: str, data: bytes) -> tuple[np.ndarray, dict]:
        """One upload's log-mels and what the response says about its audio; AudioError if unusable."""
        clip = self.extractor.analyse(data, name, self.max_seconds)
        about = clip.about()
        if clip.cropped:
            about["note"] = (f"{clip.seconds:.1f} s long, over the service's {self.max_seconds:g} s limit: only "
                             f"the first {self.max_seconds:g} s were read")
        return clip.frames, about

    def decode(self, uploads: list[tuple[str, bytes]]) -> list[tuple[str, np.ndarray, dict] | dict]:
        """Per upload, in order: (name, log-mels, what the response says about its audio), or {"file", "error"}."""
        decoded: list[tuple[str, np.ndarray, dict] | dict] = []
        for name, data in uploads:
            try:
                decoded.append((name, *self.features(name, data)))
            except AudioError as exc:
                decoded.append({"file": name, "error": exc.report()})
        return decoded

    def infer(self, done: list[tuple[str, np.ndarray, dict]], spectrogram: bool) -> list[dict]:
        """The answer for each decoded upload; UnhealthyModel (and `problem` set) if a score is not finite."""
        probs = self.model.predict_log_mels([feats for _, feats, _ in done])
        if not np.isfinite(probs).all():
            self.problem = non_finite_scores(self.model_file, f"{len(done)} upload(s) ({done[0][0]}, ...)")
            raise UnhealthyModel(self.problem)
        return [{"file": name, **self.model.prediction(p).as_dict(), **about,
                 **({"log_mel": log_mel_picture(feats, self.hop_seconds)} if spectrogram else {})}
                for (name, feats, about), p in zip(done, probs)]

    def __call__(self, uploads: list[tuple[str, bytes]], spectrogram: bool) -> tuple[list[dict], list[dict]]:
        """(results, errors): a result per upload, in order, or the errors of those that failed."""
        decoded = self.decode(uploads)
        errors = [d for d in decoded if isinstance(d, dict)]
        if errors:
            return [], errors
        return self.infer(decoded, spectrogram), []  # type: ignore[arg-type]

    def speaker(self, uploads: list[tuple[str, bytes]]) -> tuple[dict | None, list[dict]]:
        """(decision, results): one decision for the person who recorded every upload, as `acento-predict
        --by-speaker --json` makes it (`acento.apps.predict.by_speaker`: the class of highest summed probability
        over the usable uploads, its mean probability the confidence; {"label", "confidence", "probs" (the mean),
        "clips", "failed"}), None if no upload is usable; and per upload, in order, its answer or its error."""
        decoded = self.decode(uploads)
        done = [d for d in decoded if not isinstance(d, dict)]
        if not done:
            return None, decoded  # type: ignore[return-value]
        answers = iter(self.infer(done, spectrogram=False))  # type: ignore[arg-type]
        results = [d if isinstance(d, dict) else next(answers) for d in decoded]
        decision = by_speaker(results, ["speaker"] * len(results), self.model.classes)[0]
        return {k: v for k, v in decision.items() if k != "speaker"}, results


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
               concurrency: int = 0, queue: int = 16, body_seconds: float = 60.0, max_files: int = 20,
               device: torch.device | str = "cpu") -> FastAPI:
    """The service for one model file (default: `deployed_model()`, as `acento-serve`'s; ModelFileError if it is
    not a usable one, or scores noise with NaN).  The defaults are the command's.  concurrency: requests
    classified at once (0 = one per core); queue: requests that may wait for a turn; body_seconds: time a
    request's body has to arrive whole, from its headers (else 408); max_files: files one request may carry
    (else 413).  `/docs` is the API's reference as a page of
    its own (FastAPI's Swagger page loads its scripts from a CDN, blank offline); `/openapi.json` the schema."""
    classifier = Classifier(Path(model_file or deployed_model()), torch.device(device), max_seconds)
    turns = Turns(concurrency or available_cores(), queue)
    page = PAGE.read_text(encoding="utf-8")
    app = FastAPI(title="acento", summary="Spanish accent identification: classify recordings with a "
                  f"trained {classifier.model.cell.upper()} model", version="1",
                  docs_url=None, redoc_url=None)
    # uploads on their way may hold together what the requests classified or waiting may
    app.add_middleware(RequestLimits, max_bytes=int(max_upload_mb * MIB), body_seconds=body_seconds,
                       budget=int((turns.running + queue) * max_upload_mb * MIB))
    app.add_middleware(HeadAsGet)
    health = {**classifier.health, "limits": {"max_upload_mb": max_upload_mb, "max_seconds": max_seconds,
                                              "concurrency": turns.running, "queue": queue,
                                              "body_seconds": body_seconds, "max_files": max_files}}

    def too_many(files: list[UploadFile]) -> JSONResponse | None:
        """413 for a request of more than `max_files` files, before any is read."""
        if len(files) <= max_files:
            return None
        return JSONResponse({"detail": f"{len(files)} files in one request, over the limit of {max_files} "
                                       "(acento-serve --max-files); send them in several requests"}, 413)

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

    @app.get("/health", summary="The model that answers, its feature parameters and the service's limits",
             responses={503: {"description": "the model gives scores that are not finite numbers; `detail` says so"}})
    async def get_health() -> JSONResponse:
        if classifier.problem:
            return JSONResponse({**health, "status": "unhealthy", "detail": classifier.problem}, 503)
        return JSONResponse(health)

    async def classify(files: list[UploadFile], work, *args) -> tuple[list, object, JSONResponse | None]:
        """(uploads, what `work(uploads, *args)` returned, None) after the file limit, the model's health and a
        turn in the queue; or (uploads, None, the refusal: 413 for too many files, 503 for an unhealthy model)."""
        if refused := too_many(files):
            return [], None, refused
        uploads = [((f.filename or f"upload {i + 1}")[:MAX_NAME], await f.read()) for i, f in enumerate(files)]
        if classifier.problem:
            return uploads, None, JSONResponse({"detail": classifier.problem}, 503)
        try:
            async with turns.turn():
                return uploads, await run_in_threadpool(work, uploads, *args), None
        except UnhealthyModel as exc:
            return uploads, None, JSONResponse({"detail": str(exc)}, 503)

    upload_responses = {  # what both predict routes may answer besides their own 413 and 422
        408: {"description": "the body did not arrive within the time limit"},
        503: {"description": "too many requests running or waiting, or the model gives scores that are not "
                             "finite numbers (`detail` says which)"}}

    @app.post("/predict", summary="Classify one or more recordings (MP3, WAV, FLAC, OGG/Opus)",
              responses={413: {"description": "request body over the size limit"},
                         422: {"description": "an upload is empty or not readable audio; `errors` names it"},
                         **upload_responses})
    async def predict(files: list[UploadFile] = File(..., description="audio files, any rate and channels"),
                      spectrogram: bool = False) -> JSONResponse:
        """Each file gets `label` and `probs` (as `acento-predict --json`), `seconds` (its length),
        `analysed_seconds` (what the model heard: silence trimmed, cropped to the model's clip length) and
        `cropped`; with `spectrogram=true`, also `log_mel` (the features, as 8-bit base64 for drawing).
        If any file cannot be used, nothing is classified and the answer is 422 with `errors`."""
        uploads, answer, refused = await classify(files, classifier, spectrogram)
        if refused:
            return refused
        results, errors = answer
        if errors:
            detail = f"{len(errors)} of {len(uploads)} upload(s) could not be classified: " + \
                "; ".join(e["error"] for e in errors)
            return JSONResponse({"detail": detail, "errors": errors}, 422)
        return JSONResponse({"results": results})

    @app.post("/predict/speaker", summary="One decision for several recordings of one person",
              responses={413: {"description": "request body over the size limit, or more files than allowed"},
                         422: {"description": "no upload is usable audio; `errors` names each one"},
                         **upload_responses})
    async def predict_speaker(files: list[UploadFile] = File(..., description="audio files of one person")) \
            -> JSONResponse:
        """One decision for the person who recorded every file, as `acento-predict --by-speaker --json` makes it:
        `label`, the class of highest summed probability over the usable files; `confidence`, its mean
        probability; `probs`, the mean probability of each class; `clips`, the files used; `failed`, the files
        that could not be; `results`, each file's own answer (as from /predict) or `error`.  A file that cannot
        be used is reported and the others decide; if none can, the answer is 422 with `errors`."""
        uploads, answer, refused = await classify(files, classifier.speaker)
        if refused:
            return refused
        decision, results = answer
        if decision is None:
            detail = f"none of the {len(uploads)} upload(s) could be classified: " + \
                "; ".join(e["error"] for e in results)
            return JSONResponse({"detail": detail, "errors": results}, 422)
        return JSONResponse({**decision, "results": results})

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
    parser.add_argument("--body-seconds", type=float, default=60.0,
                        help="a request's body must arrive whole within this (default: 60); else 408")
    parser.add_argument("--max-files", type=int, default=20,
                        help="files one request may carry, /predict or /predict/speaker (default: 20); else 413")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="default: cpu")
    args = parser.parse_args(argv)
    if min(args.max_upload_mb, args.max_seconds, args.body_seconds) <= 0 or args.concurrency < 0 or args.queue < 0 \
            or args.max_files < 1:
        parser.error("--max-upload-mb, --max-seconds and --body-seconds must be > 0, --concurrency and --queue >= 0, "
                     "--max-files >= 1")
    try:
        app = create_app(args.model_file, max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                         concurrency=args.concurrency, queue=args.queue, body_seconds=args.body_seconds,
                         max_files=args.max_files, device=select_device(args.device, "--device"))
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
    uvicorn.Server(server_config(app, args.host, args.port)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
