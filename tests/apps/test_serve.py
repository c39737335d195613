"""The prediction service, through FastAPI's TestClient (no server, no network), and on a real server
for what only sockets show (half-sent requests, deadlines, HEAD on the wire)."""

import base64
import hashlib
import io
import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

import acento.apps.serve as serve
from acento.apps.predict import main as predict_main
from acento.model.accent_model import AccentModel, ModelFileError
from tests.helpers import tone


def wav_bytes(seconds: float, rate: int = 16000, freq: float = 900.0, level: float = 1.0) -> bytes:
    out = io.BytesIO()
    sf.write(out, level * tone(seconds, rate=rate, freq=freq), rate, format="WAV")
    return out.getvalue()


@pytest.fixture(scope="module")
def client(trained_model):
    return TestClient(serve.create_app(trained_model, max_upload_mb=1))


def upload(*named: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def test_health_names_the_model_its_classes_features_and_checksum(client, trained_model):
    ckpt = AccentModel.load(trained_model).checkpoint()
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == ckpt["model"] == "lstm"
    assert health["classes"] == ckpt["classes"] == ["high", "low"]
    assert health["features"] == ckpt["features"] and health["features"]["n_mels"] == 64
    assert health["model_file"]["sha256"] == hashlib.sha256(trained_model.read_bytes()).hexdigest()
    # concurrency 0 (the default) means one request per core this process may use
    assert health["limits"] == {"max_upload_mb": 1, "max_seconds": 60.0, "concurrency": len(os.sched_getaffinity(0)),
                                "queue": 16, "body_seconds": 60.0, "max_files": 20}
    limited = TestClient(serve.create_app(trained_model, concurrency=3, queue=5)).get("/health").json()["limits"]
    assert (limited["concurrency"], limited["queue"]) == (3, 5)


def test_several_files_in_one_request_get_the_clis_answers(client, trained_model, sample_clips, tmp_path, capsys):
    files = sample_clips[:3] + [tmp_path / "tone.wav"]
    (tmp_path / "tone.wav").write_bytes(wav_bytes(1.0, rate=44100, freq=250.0))
    assert predict_main(["--model", str(trained_model), "--json", *map(str, files)]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # a client's name is echoed, never used as a path: the bytes are read from the request
    names = [f.name for f in files[:3]] + ["../../etc/tone.wav"]
    response = client.post("/predict", files=upload(*zip(names, (f.read_bytes() for f in files))))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["file"] for r in results] == names
    for got, expected in zip(results, cli):
        assert got["label"] == expected["label"]
        assert got["probs"] == pytest.approx(expected["probs"], abs=1e-3)
        assert "log_mel" not in got
    assert results[3]["seconds"] == 1.0 and results[3]["cropped"] is False
    assert 0.9 <= results[3]["analysed_seconds"] <= 1.01  # the tone has no silence to trim


def test_a_clip_over_the_length_limit_is_cropped_and_the_response_says_so(trained_model):
    client = TestClient(serve.create_app(trained_model, max_seconds=2.0))
    result = client.post("/predict?spectrogram=true", files=upload(("long.wav", wav_bytes(3.0)))).json()["results"][0]
    assert result["seconds"] == 3.0 and result["cropped"] is True
    assert "only the first 2 s were read" in result["note"]
    assert result["analysed_seconds"] == pytest.approx(2.0, abs=0.02)
    picture = result["log_mel"]
    assert (picture["frames"], picture["n_mels"]) == (201, 64)
    assert len(base64.b64decode(picture["data"])) == 201 * 64


@pytest.mark.parametrize("name, data, reason", [
    ("garbage.mp3", b"\xff\xfb" + b"garbage" * 100, "unreadable_audio"),
    ("notes.txt", "Hola, ¿qué tal?\n".encode() * 20, "unsupported_format"),
    ("empty.wav", b"", "empty_audio"),
    ("silence.wav", wav_bytes(1.0, level=0.0), "silent_audio"),
])
def test_unusable_uploads_get_422_naming_the_file(client, name, data, reason):
    response = client.post("/predict", files=upload(("fine.wav", wav_bytes(0.5)), (name, data)))
    assert response.status_code == 422
    body = response.json()
    assert body["errors"] == [{"file": name, "error": body["errors"][0]["error"]}]
    assert body["errors"][0]["error"].startswith(f"{reason}: {name}: ")
    assert body["detail"].startswith("1 of 2 upload(s) could not be classified: ") and name in body["detail"]


def test_a_request_without_files_is_422(client):
    assert client.post("/predict").status_code == 422
    assert client.post("/predict/speaker").status_code == 422


# ---------------------------------------------------------------- several files of one person
def test_several_files_of_one_person_get_one_decision_as_predict_by_speaker_makes_it(client, trained_model,
                                                                                      sample_clips, tmp_path, capsys):
    person = tmp_path / "ana"
    person.mkdir()
    files = sample_clips[:3] + [person / "tone.wav", person / "broken.mp3"]
    (person / "tone.wav").write_bytes(wav_bytes(1.0, rate=44100, freq=250.0))
    (person / "broken.mp3").write_bytes(b"\xff\xfb" + b"garbage" * 100)
    for clip in sample_clips[:3]:
        (person / clip.name).write_bytes(clip.read_bytes())
    named = [(f.name, f.read_bytes()) for f in files]
    response = client.post("/predict/speaker", files=upload(*named))
    assert response.status_code == 200, response.text
    answer = response.json()
    # per file: /predict's own answer for the usable ones, the error for the broken one, in the order sent
    alone = client.post("/predict", files=upload(*named[:4])).json()["results"]
    assert [r["file"] for r in answer["results"]] == [f.name for f in files]
    assert answer["results"][:4] == alone
    assert answer["results"][4]["error"].startswith("unreadable_audio: broken.mp3: ")
    # one decision: the class of highest summed (so mean) probability over the usable files, its mean the confidence
    classes = AccentModel.load(trained_model).classes
    mean = np.mean([[r["probs"][c] for c in classes] for r in alone], axis=0)
    assert answer["label"] == classes[int(np.argmax(mean))]
    assert answer["confidence"] == pytest.approx(mean.max(), abs=1e-4) and 0 <= answer["confidence"] <= 1
    assert answer["probs"] == pytest.approx(dict(zip(classes, mean)), abs=1e-4)
    assert (answer["clips"], answer["failed"]) == (4, 1)
    # and what `acento-predict --by-speaker --json` says of the same files in a folder of their own
    assert predict_main(["--model", str(trained_model), "--by-speaker", "--json", "--workers", "1", str(person)]) == 1
    cli = json.loads(capsys.readouterr().out)
    assert cli["speaker"] == "ana" and (cli["label"], cli["clips"], cli["failed"]) == (answer["label"], 4, 1)
    assert cli["confidence"] == pytest.approx(answer["confidence"], abs=1e-3)


def test_the_persons_class_is_the_highest_summed_probability_not_the_first_file_nor_the_vote(trained_model,
                                                                                            monkeypatch):
    client = TestClient(serve.create_app(trained_model))
    scores = np.array([[0.4, 0.6], [0.45, 0.55], [0.95, 0.05]])  # two of three clips say low; summed: high 1.8
    monkeypatch.setattr(AccentModel, "predict_log_mels", lambda self, clips: scores[:len(clips)])
    named = [("a.wav", wav_bytes(0.5)), ("bad.wav", b""), ("b.wav", wav_bytes(0.6)), ("c.wav", wav_bytes(0.7))]
    answer = client.post("/predict/speaker", files=upload(*named)).json()
    assert [r.get("label") for r in answer["results"]] == ["low", None, "low", "high"]
    assert (answer["label"], answer["confidence"], answer["clips"], answer["failed"]) == ("high", 0.6, 3, 1)
    assert answer["probs"] == {"high": 0.6, "low": 0.4}


def test_a_person_none_of_whose_files_is_usable_gets_422_naming_each(client):
    response = client.post("/predict/speaker", files=upload(("empty.wav", b""), ("silence.wav", wav_bytes(1.0, level=0))))
    assert response.status_code == 422
    body = response.json()
    assert [e["file"] for e in body["errors"]] == ["empty.wav", "silence.wav"]
    assert body["errors"][0]["error"].startswith("empty_audio: empty.wav: ")
    assert body["errors"][1]["error"].startswith("silent_audio: silence.wav: ")
    assert body["detail"].startswith("none of the 2 upload(s) could be classified: empty_audio: empty.wav: ")


def test_more_files_than_max_files_get_413_before_any_is_classified(trained_model, monkeypatch):
    client = TestClient(serve.create_app(trained_model, max_files=2))
    assert client.get("/health").json()["limits"]["max_files"] == 2
    assert client.post("/predict/speaker", files=upload(*[(f"{i}.wav", wav_bytes(0.5)) for i in range(2)])) \
        .status_code == 200
    monkeypatch.setattr(serve.Classifier, "decode", lambda self, uploads: pytest.fail("classified"))
    for route in ("/predict", "/predict/speaker"):
        response = client.post(route, files=upload(*[(f"{i}.wav", wav_bytes(0.5)) for i in range(3)]))
        assert response.status_code == 413
        assert response.json()["detail"] == ("3 files in one request, over the limit of 2 (acento-serve --max-files); "
                                             "send them in several requests")


def test_a_body_over_the_limit_gets_413_declared_or_streamed(client):
    big = upload(("big.wav", wav_bytes(40.0)))  # 1.2 MB against the 1 MB limit
    response = client.post("/predict", files=big)
    assert response.status_code == 413 and "1 MB limit" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 65536
    response = client.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "1 MB limit" in response.json()["detail"]
    response = client.post("/predict/speaker", files=big)  # the same limit for several files of one person
    assert response.status_code == 413 and "1 MB limit" in response.json()["detail"]


def test_health_answers_while_a_request_is_classified_and_excess_requests_get_503(trained_model, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real = serve.Classifier.__call__

    def slow(self, *args):
        entered.set()
        release.wait(30)
        return real(self, *args)

    monkeypatch.setattr(serve.Classifier, "__call__", slow)
    app = serve.create_app(trained_model, concurrency=1, queue=0)
    files = upload(("a.wav", wav_bytes(0.5)))
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(client.post, "/predict", files=files)
            assert entered.wait(30)
            assert client.get("/health").status_code == 200  # the event loop is free meanwhile
            busy = client.post("/predict", files=files)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        finally:
            release.set()
        assert first.result(30).status_code == 200


def test_the_page_and_the_api_docs_are_served_and_the_page_loads_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "predict?spectrogram=true" in page.text and 'id="record"' in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert client.get("/docs").status_code == 200
    assert {"/predict", "/predict/speaker", "/health"} <= set(client.get("/openapi.json").json()["paths"])


def test_a_missing_model_file_is_one_line_and_status_2(tmp_path, capsys):
    assert serve.main(["--model", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such model file" in err and err.count("\n") == 1


@pytest.mark.parametrize("disposition", ['form-data; name="files"', "form-data; name=\"files\"; filename*=UTF-8''a%C3%B1o.wav"],
                         ids=["no filename", "only filename*"])
def test_a_malformed_part_gets_a_short_422_that_does_not_echo_the_upload(client, disposition):
    data = wav_bytes(10.0)  # 320 kB
    boundary = "acentoboundary"
    body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: audio/wav\r\n\r\n".encode()
            + data + f"\r\n--{boundary}--\r\n".encode())
    response = client.post("/predict", content=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 422
    assert len(response.content) < 1000
    detail = response.json()["detail"]
    assert "files" in detail and "filename" in detail


def test_a_request_without_files_gets_a_short_422_naming_the_field(client):
    response = client.post("/predict", data={"other": "x" * 5000})
    assert response.status_code == 422 and len(response.content) < 1000 and "files" in response.json()["detail"]


def test_the_service_decodes_what_predict_decodes_junk_first_or_vbr_without_xing(client, trained_model, tmp_path,
                                                                                 capsys):
    from tests.audio.test_decode import mp3_bytes, without_length_tag

    junk = b"\x00" * 4096 + mp3_bytes(4.0)
    vbr = without_length_tag(mp3_bytes(6.0, seed=3))
    response = client.post("/predict", files=upload(("junk.mp3", junk), ("junk.wav", junk), ("vbr.mp3", vbr)))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["seconds"] for r in results] == pytest.approx([4.0, 4.0, 6.0], abs=0.06)
    assert not any(r["cropped"] for r in results)
    (tmp_path / "junk.wav").write_bytes(junk)
    (tmp_path / "vbr.mp3").write_bytes(vbr)
    assert predict_main(["--model-file", str(trained_model), "--json", str(tmp_path / "junk.wav"),
                         str(tmp_path / "vbr.mp3")]) == 0
    from_cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["probs"] for r in from_cli] == [r["probs"] for r in results[1:]]
    assert [r["seconds"] for r in from_cli] == [r["seconds"] for r in results[1:]]


def test_the_api_reference_page_works_offline(client):
    """/docs is a page of its own, with no script from a CDN (FastAPI's Swagger page is blank offline)."""
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "cdn" not in page.text.lower()
    assert "POST /predict" in page.text and "GET /health" in page.text and "/openapi.json" in page.text
    assert "POST /predict/speaker" in page.text
    assert client.get("/redoc").status_code == 404


def test_create_app_defaults_to_the_commands_model_file(trained_model, monkeypatch):
    """create_app() and acento-serve pick the same model file when given none ($ACENTO_MODEL_FILE here)."""
    monkeypatch.setenv("ACENTO_MODEL_FILE", str(trained_model))
    health = TestClient(serve.create_app()).get("/health").json()
    assert health["model_file"]["sha256"] == hashlib.sha256(trained_model.read_bytes()).hexdigest()


# ---------------------------------------------------------------- a real server: sockets, deadlines, HEAD
@pytest.fixture(scope="module")
def live(trained_model):
    """The service as `acento-serve` runs it (serve.server_config) on a free port of 127.0.0.1, in a thread:
    one request classified at a time and two waiting, 1 MB uploads, a 2 s head and a 3 s body deadline."""
    import uvicorn

    app = serve.create_app(trained_model, max_upload_mb=1, concurrency=1, queue=2, body_seconds=3.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(serve.server_config(app, head_seconds=2.0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(10)
    sock.close()


def raw(address, data: bytes) -> socket.socket:
    conn = socket.create_connection(address, timeout=30)
    conn.sendall(data)
    return conn


def answer(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    conn.close()
    return b"".join(chunks)


def test_half_sent_requests_lock_no_one_out(live):
    """50 connections hold half-sent requests (headers cut short, or a body cut short): /health and a whole
    /predict from another client still get 200.  uvicorn's limit_concurrency (11 here) counted those sockets."""
    url = f"http://{live[0]}:{live[1]}"
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    held = [raw(live, (head + "Content-Le").encode()) for _ in range(25)]
    held += [raw(live, (head + "Content-Length: 500000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"files\"; "
                        "filename=\"a.wav\"\r\n\r\n").encode() + b"\0" * 20000) for _ in range(25)]
    try:
        health = httpx2.get(url + "/health", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        response = httpx2.post(url + "/predict", files=upload(("a.wav", wav_bytes(0.5))), timeout=60)
        assert response.status_code == 200 and response.json()["results"][0]["label"] in ("high", "low")
    finally:
        for conn in held:
            conn.close()


def test_a_connection_that_does_not_finish_its_headers_is_closed(live):
    conn = raw(live, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert answer(conn) == b""  # closed by the server after its 2 s head deadline, with nothing sent


def test_a_body_that_does_not_arrive_in_time_gets_408(live):
    conn = raw(live, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 1000\r\n\r\n--b\r\n")
    status, _, body = answer(conn).partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body) == {"detail": "request body not received within 3 s (acento-serve --body-seconds)"}


@pytest.mark.parametrize("path", ["/", "/health", "/docs", "/openapi.json"])
def test_head_answers_as_get_without_a_body(live, client, path):
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(got.content)) and \
        head.headers["content-type"] == got.headers["content-type"]
    # on the wire, as a health checker sees it: the headers, then nothing
    status, _, rest = answer(raw(live, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())) \
        .partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 ") and rest == b""


# ---------------------------------------------------------------- a model whose scores are not numbers
def test_a_model_that_scores_nan_is_refused_at_start_in_one_line(trained_model, tmp_path, capsys):
    from tests.apps.test_predict import overflowing_model

    model = overflowing_model(trained_model, tmp_path / "overflow.pt")
    with np.errstate(all="ignore"):
        with pytest.raises(ModelFileError):
            serve.create_app(model)
        assert serve.main(["--model-file", str(model)]) == 2
    assert capsys.readouterr().err == (f"error: {model}: the model gives scores that are not finite numbers (NaN or "
                                       "infinity) for 2 s of noise; the file is damaged or its training diverged, "
                                       "retrain it (dvc repro train)\n")


def strict_json(text: str):
    """The JSON in `text`; ValueError for a NaN or Infinity literal, which JSON does not have."""
    def refuse(literal: str):
        raise ValueError(f"{literal} in the answer")
    return json.loads(text, parse_constant=refuse)


def test_scores_that_turn_nan_get_503_and_an_unhealthy_health_never_500_or_nan(trained_model, monkeypatch):
    client = TestClient(serve.create_app(trained_model))
    assert client.get("/health").json()["status"] == "ok"
    monkeypatch.setattr(AccentModel, "predict_log_mels", lambda self, clips: np.full((len(clips), 2), np.nan))
    for route in ("/predict/speaker", "/predict"):  # the request that met it, and every later one
        response = client.post(route, files=upload(("a.wav", wav_bytes(0.5))))
        assert response.status_code == 503
        assert strict_json(response.text)["detail"].startswith(
            f"{trained_model}: the model gives scores that are not finite numbers (NaN or infinity) for 1 upload(s) "
            "(a.wav, ...); ")
    health = client.get("/health")
    assert health.status_code == 503
    assert strict_json(health.text)["status"] == "unhealthy" and health.json()["detail"] == response.json()["detail"]
