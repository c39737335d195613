"""Benchmarks (`make bench`): feature extraction, cache reads, training (and its recurrent layers on
packed against padded batches), prediction, the command line's start-up and the service under load.

Everything runs on the bundled sample, extracted into a scratch folder, and the results go to
`bench/results.md` and `bench/results.json` with a description of the machine.  Timings belong
here, never in tests: they depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

from acento.audio.decode import load_audio
from acento.audio.logmel import LogMel
from acento.config import load_params
from acento.corpus.manifest import write_manifest
from acento.corpus.prepare import prepare
from acento.corpus.release import extract_release
from acento.features.build import build_cache
from acento.files import atomic_path, write_json
from acento.paths import BENCH_JSON, BENCH_REPORT, MODEL_FILE
from acento.runtime import available_cores, resolve_count

SAMPLE = Path("data/sample/cv-corpus-sample-es.tar.gz")


SECTIONS = ("features", "training", "recurrent", "predict", "cli", "service", "lazy")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return {"cpu": cpu, "cores": available_cores(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "libsndfile": sf.__libsndfile_version__, "cuda": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None, "date": time.strftime("%Y-%m-%d %H:%M")}


def timed(fn, repeat: int = 1) -> float:
    """Best of `repeat` wall-clock runs, in seconds (best-of filters out other load on the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_features(manifest: pd.DataFrame, params, scratch: Path, repeat: int) -> dict:
    cfg = params.features
    paths = manifest["audio_path"].tolist()
    seconds = float(manifest["duration"].sum())
    extractor = LogMel(cfg)
    extractor.from_file(paths[0])  # warm-up: page cache
    n = len(paths)
    decode = timed(lambda: [sf.read(p, dtype="float32") for p in paths], repeat)
    with threadpool_limits(1, user_api="blas"):  # as in each worker of the stage
        compute = timed(lambda: [extractor.from_file(p) for p in paths], repeat)
    one = timed(lambda: build_cache(manifest, cfg, scratch / "f1.h5", 1), repeat)
    cores = resolve_count(0)
    many = timed(lambda: build_cache(manifest, cfg, scratch / "fn.h5", cores), repeat)
    rate = lambda t: {"clips_per_second": round(n / t, 1), "audio_seconds_per_second": round(seconds / t, 1)}  # noqa: E731
    result = {
        "clips": n, "audio_seconds": round(seconds, 1),
        "decode_only_floor": rate(decode),
        "compute_bound_1_process": rate(compute),
        "stage_1_worker": rate(one),
        f"stage_{cores}_workers": rate(many),
        "stage_1_worker_vs_compute_bound": round(compute / one, 3),
        "speedup_1_to_all_workers": round(one / many, 2),
        "resample_plus_logmel_share_of_compute": round(1 - decode / compute, 3),
    }
    result["peak_memory"] = bench_memory(manifest, params, scratch)
    result["batch_read"] = bench_batch_read(scratch / "f1.h5", manifest, extractor, params.train.batch_size)
    return result


def bench_memory(manifest: pd.DataFrame, params, scratch: Path) -> dict:
    """Peak RSS of the writer and of the largest worker, for the sample's clips once and 4 times over."""
    out = {}
    for factor in (1, 4):
        path = scratch / f"manifest_x{factor}.tsv"
        write_manifest(pd.concat([manifest] * factor), path)
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so the child would report the
        # high-water mark of this (torch-laden) process that started it.
        code = ("import re,resource,pathlib;from acento.config import load_params;"
                "from acento.features.build import build_cache;from acento.corpus.manifest import read_manifest;"
                "from acento.runtime import resolve_count;p=load_params();"
                f"build_cache(read_manifest({str(path)!r}),p.features,pathlib.Path("
                f"{str(scratch / 'mem.h5')!r}),resolve_count(0));"
                "print(re.search(r'VmHWM:\\s+(\\d+)',open('/proc/self/status').read()).group(1),"
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        writer_kib, worker_kib = map(int, run.stdout.split()[-2:])
        out[f"x{factor}"] = {"clips": len(manifest) * factor, "writer_mib": round(writer_kib / 1024, 1),
                             "largest_worker_mib": round(worker_kib / 1024, 1)}
    return out


def bench_batch_read(cache: Path, manifest: pd.DataFrame, extractor: LogMel, batch_size: int) -> dict:
    """One training batch from the HDF5 cache (read lazily from disk) against decoding its clips."""
    rng = np.random.default_rng(0)
    with h5py.File(cache) as h5:
        group = h5["clips"]  # every clip of the cache, whatever its split
        offsets, lengths, frames = group["offsets"][()], group["lengths"][()], group["frames"]
        clips = group["clips"].asstr()[()]
        batches = [rng.choice(len(lengths), batch_size, replace=False) for _ in range(20)]
        cached = timed(lambda: [[np.asarray(frames[offsets[i]:offsets[i] + lengths[i]], np.float32) for i in b]
                                for b in batches])
    by_clip = dict(zip(manifest["clip"], manifest["audio_path"]))
    decoded = timed(lambda: [[extractor.from_file(by_clip[clips[i]]) for i in b] for b in batches[:5]]) * 4
    return {"cache_ms_per_batch": round(1000 * cached / 20, 2), "decode_ms_per_batch": round(1000 * decoded / 20, 1),
            "speedup": round(decoded / cached, 1), "batch_size": batch_size}


def write_synthetic_cache(path: Path, target_bytes: int, features, seed: int = 0) -> int:
    """A cache of random float16 clips of 2-10 s (200-1000 frames) in its train split, about
    `target_bytes` of frames, labelled as made with `features`; returns the number of clips."""
    from acento.features.cache import CacheWriter

    n_mels = features.n_mels
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((1000, n_mels)).astype(np.float16)
    written, clips = 0, 0
    with CacheWriter(path, n_mels, "float16") as cache:
        while written < target_bytes:
            length = int(rng.integers(200, 1001))
            cache.add(block[:length], clips % 7, f"speaker{clips % 997}", f"clip{clips}", split="train",
                      total=np.zeros(n_mels), total_sq=np.full(n_mels, float(length)))
            written += length * n_mels * 2
            clips += 1
        cache.finish([f"class{i}" for i in range(7)], features)
    return clips


def read_epoch(cache: str, batches: int, batch_size: int, cold: bool) -> dict:
    """Runs in a fresh process (`bench_lazy_read`): reads `batches` shuffled, bucketed training
    batches the way `train` does and reports clips/s, bytes read from disk per clip byte (cold:
    the file's pages are dropped from the page cache first), and the process's peak memory."""
    import torch

    from acento.config import NormaliseConfig
    from acento.features.cache import SplitData
    from acento.model.inputs import Normaliser
    from acento.training.batches import Batcher, bucketed_batches, no_draws

    def disk_read_bytes() -> int:
        return int(next(line for line in open("/proc/self/io") if line.startswith("read_bytes")).split()[1])

    if cold:
        fd = os.open(cache, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    data = SplitData(cache, "train")
    order = bucketed_batches(data.lengths, batch_size, np.random.default_rng(1))[:batches]
    before, start = disk_read_bytes(), time.perf_counter()
    normalise = Normaliser(NormaliseConfig(True, False, False), data.mean, data.std)
    batcher = Batcher(data, normalise, torch.device("cpu"))
    clips = sum(len(batch.index) for batch in batcher.epoch(no_draws(data.lengths), order))
    seconds = time.perf_counter() - start
    clip_bytes = int(sum(data.lengths[b].sum() for b in order)) * data.frames.dtype.itemsize * data.frames.shape[1]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    return {"lazy": data.lazy, "clips_per_second": round(clips / seconds, 1),
            "disk_bytes_per_clip_byte": round((disk_read_bytes() - before) / clip_bytes, 2),
            "peak_rss_mib": round(hwm / 1024, 1)}


def bench_lazy_read(scratch: Path, features, gigabytes: float, batches: int, batch_size: int) -> dict:
    """The cache past memory: a synthetic cache of `gigabytes` read lazily (cold and warm page
    cache) and in memory, each in its own process so its peak memory is its own."""
    path = scratch / "lazy.h5"
    clips = write_synthetic_cache(path, int(gigabytes * 2 ** 30), features)

    def run(cold: bool, limit: int) -> dict:
        code = (f"import json,sys;sys.path.insert(0,{str(Path(__file__).parent)!r});from bench import read_epoch;"
                f"print(json.dumps(read_epoch({str(path)!r},{batches},{batch_size},{cold})))")
        env = {**os.environ, "ACENTO_IN_MEMORY_BYTES": str(limit)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        return json.loads(out.stdout.splitlines()[-1])

    lazy_cold = run(True, 1)
    lazy_warm = run(False, 1)
    in_memory = run(False, 1 << 40)
    return {"cache_gib": round(path.stat().st_size / 2 ** 30, 2), "clips": clips, "batches_read": batches,
            "batch_size": batch_size, "lazy_cold": lazy_cold, "lazy_warm": lazy_warm, "in_memory": in_memory,
            "lazy_warm_vs_in_memory": round(lazy_warm["clips_per_second"] / in_memory["clips_per_second"], 2)}


def bench_training(cache: Path, params, scratch: Path, full: bool) -> dict:
    from acento.evaluation.metrics import classification_metrics
    from acento.features.cache import SplitData
    from acento.model.accent_model import AccentModel
    from acento.training.trainer import train

    variants = {"default (conv stride 4, bucketing)": {},
                "no bucketing": {"train": {"bucketing": False}},
                "no conv front-end": {"rnn": {"frontend": "none"}}}
    results = {}
    test = SplitData(cache, "test", params.data.fold)
    for name, change in variants.items():
        p = with_changes(params, **change)
        if not full:
            p = dataclasses.replace(p, train=dataclasses.replace(p.train, epochs=2))
        out = scratch / "model.pt"
        metrics = train(p, cache, out, scratch / "live")
        probs = AccentModel.load(out).predict_split(test)
        scores, _ = classification_metrics(test.labels, probs, test.speakers, test.classes)
        results[name] = {"train_clips_per_second": metrics["train_clips_per_second"],
                         "seconds_per_epoch": round(metrics["train_seconds"] / metrics["epochs_run"], 2),
                         "epochs": metrics["epochs_run"], **({"test_accuracy": scores["accuracy"],
                                                              "test_macro_f1": scores["macro_f1"]} if full else {})}
    return results


def subset(data, index: np.ndarray):
    """A view of SplitData `data` holding only the clips at `index` (frames shared, tables sliced)."""
    import copy

    part = copy.copy(data)
    for name in ("offsets", "lengths", "labels", "speakers", "clips"):
        setattr(part, name, getattr(data, name)[index])
    return part


def with_changes(params, **sections):
    """`params` with some fields of some sections replaced: with_changes(p, rnn={"hidden_size": 8})."""
    for section, values in sections.items():
        params = dataclasses.replace(params, **{section: dataclasses.replace(getattr(params, section), **values)})
    return params


def epoch_batches(trainer, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """One epoch's augmented lengths and batches, as `trainer.train_one_epoch` draws them."""
    from acento.training.batches import draw_epoch

    cfg = trainer.cfg
    draws = draw_epoch(trainer.train_data.lengths, cfg.augment, cfg.specaugment, trainer.batcher.n_mels, rng)
    return draws.length, trainer.epoch_batches(draws.length)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rnn_floor(model, lengths: np.ndarray, batches: list[np.ndarray], device: torch.device) -> float:
    """Seconds of a bare forward + backward of the model's recurrent layer alone (a fresh nn.LSTM/GRU
    of the same sizes, dense random input) over `batches` of clips of `lengths` frames, at the RNN's
    frame rate (after the conv front-end): what the issue's floor measures."""
    rnn = type(model.rnn)(model.rnn.input_size, model.rnn.hidden_size, num_layers=model.rnn.num_layers,
                          batch_first=True, bidirectional=model.rnn.bidirectional).to(device)
    steps = model.frontend.out_lengths(torch.from_numpy(lengths)).numpy() if model.frontend else lengths
    inputs = [torch.randn(len(index), int(steps[index].max()), rnn.input_size, device=device) for index in batches]
    synchronize(device)
    start = time.perf_counter()
    for x in inputs:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            out, _ = rnn(x)
        out.float().sum().backward()
    synchronize(device)
    return time.perf_counter() - start


def network_floor(model, lengths: np.ndarray, batches: list[np.ndarray], n_mels: int, device: torch.device) -> float:
    """Seconds of the whole network's forward + backward (conv front-end, recurrent layers, pooling, head)
    over `batches`, its inputs made beforehand: everything a training step must compute, with no data
    work, no loss and no optimiser."""
    inputs = [(torch.randn(len(b), int(lengths[b].max()), n_mels, device=device),
               torch.from_numpy(lengths[b]).to(device)) for b in batches]
    model.train()
    synchronize(device)
    start = time.perf_counter()
    for x, n in inputs:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            out = model(x, n)
        out.float().sum().backward()
    synchronize(device)
    return time.perf_counter() - start


def bench_recurrent(cache: Path, params, clips: int, preset_clips: int, repeats: int, device: str = "cpu",
                    frames: tuple[int, ...] = (16000,)) -> dict:
    """Training clips/s of the project's loop (`Trainer.train_one_epoch`: batches built on the device,
    augmentation, forward, backward, optimiser) beside two floors over the same batches of the same
    epoch's augmented lengths: the whole network's forward + backward alone (`network_floor`) and the bare
    recurrent layers' (`rnn_floor`).  The loop's share of each floor is the figure.

    The default network (params.yaml) on `clips` training clips at batch 16/32/64 clips and by frames
    (train.batch_frames 16000), 1 torch thread; each original preset (`acento.model.presets.PRESETS`) on
    `preset_clips` clips at the default batch.  Medians of `repeats` epochs after a warm-up epoch."""
    from acento.config import CELLS
    from acento.features.cache import SplitData
    from acento.model.presets import PRESETS
    from acento.training.trainer import Trainer

    full = SplitData(cache, "train", params.data.fold)
    rng = np.random.default_rng(0)
    cases = [("default", {}, {"batch_size": batch}) for batch in (16, 32, 64)]
    cases += [("default", {}, {"batch_frames": budget, "warmup_epochs": 2}) for budget in frames]
    cases += [(name, preset, {}) for name, preset in PRESETS.items()]
    rows, load_before = [], os.getloadavg()
    for name, preset, batching in cases:
        n = min(len(full), clips if name == "default" else preset_clips)
        index = np.sort(rng.choice(len(full), n, replace=False))
        for cell in CELLS:
            p = with_changes(params, rnn=preset, train=batching, runtime={"num_threads": 1, "device": device})
            trainer = Trainer(dataclasses.replace(p, model=cell), cache)
            trainer.train_data = subset(trainer.train_data, index)
            trainer.batcher = type(trainer.batcher)(trainer.train_data, trainer.normalise, trainer.device)
            seconds = []
            for epoch in range(repeats + 1):
                start = time.perf_counter()
                trainer.train_one_epoch(epoch + 1)
                if epoch:  # the first epoch is the warm-up
                    seconds.append(time.perf_counter() - start)
            lengths, batches = epoch_batches(trainer, np.random.default_rng(1))
            net = statistics.median(network_floor(trainer.model, lengths, batches, trainer.batcher.n_mels,
                                                  trainer.device) for _ in range(repeats))
            bare = statistics.median(rnn_floor(trainer.model, lengths, batches, trainer.device) for _ in range(repeats))
            rate = n / statistics.median(seconds)
            batch = f"{batching['batch_frames']} frames" if "batch_frames" in batching else \
                str(batching.get("batch_size", p.train.batch_size))
            rows.append({"network": name, "cell": cell, "batch": batch, "clips": n,
                         "clips_per_batch": round(n / len(batches), 1), "loop_clips_per_second": round(rate, 1),
                         "network_floor_clips_per_second": round(n / net, 1),
                         "rnn_floor_clips_per_second": round(n / bare, 1),
                         "loop_vs_network_floor": round(rate * net / n, 2), "loop_vs_rnn_floor": round(rate * bare / n, 2)})
            print(f"  {name:8s} {cell} batch {batch:>12s}: loop {rate:7.1f} clips/s, network floor {n / net:7.1f} "
                  f"(x{rows[-1]['loop_vs_network_floor']}), RNN floor {n / bare:7.1f} "
                  f"(x{rows[-1]['loop_vs_rnn_floor']})", flush=True)
    return {"repeats": repeats, "threads": 1, "device": device, "load_average_1_5_15_min": {
        "before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]}, "rows": rows}


def recurrent_table(section: dict) -> list[str]:
    """The recurrent section as a Markdown table."""
    lines = ["| network | cell | batch | clips | clips/batch | loop clips/s | network floor clips/s | loop / network "
             "floor | bare RNN floor clips/s | loop / RNN floor |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in section["rows"]:
        lines.append(f"| {r['network']} | {r['cell']} | {r['batch']} | {r['clips']} | {r['clips_per_batch']} | "
                     f"{r['loop_clips_per_second']} | {r['network_floor_clips_per_second']} | "
                     f"{r['loop_vs_network_floor']} | {r['rnn_floor_clips_per_second']} | {r['loop_vs_rnn_floor']} |")
    return lines


def five_second_clip(manifest: pd.DataFrame, scratch: Path) -> Path:
    """A 5 s MP3 at 48 kHz made of the sample's first clips: the clip a user would try first."""
    audio = np.concatenate([load_audio(p, 48000) for p in manifest["audio_path"][:2]])[:5 * 48000]
    clip = scratch / "five_seconds.mp3"
    sf.write(clip, audio, 48000, format="MP3")
    return clip


def bench_predict(model_path: Path, manifest: pd.DataFrame, scratch: Path) -> dict:
    from acento.apps.predict import inference_threads
    from acento.model.accent_model import AccentModel

    model = AccentModel.load(model_path)
    torch.set_num_threads(inference_threads(1, 1))
    clip = five_second_clip(manifest, scratch)
    model.classify(clip)  # warm-up
    latencies = []
    for _ in range(30):
        start = time.perf_counter()
        model.classify(clip)
        latencies.append(time.perf_counter() - start)
    return {"single_5s_clip_ms_median": round(1000 * statistics.median(latencies), 1),
            "single_5s_clip_ms_p90": round(1000 * sorted(latencies)[int(0.9 * len(latencies))], 1),
            **batch_throughput(model_path, manifest), "model": model.cell}


def batch_throughput(model_path: Path, manifest: pd.DataFrame) -> dict:
    """`acento-predict`'s throughput on a folder of the sample's clips, in this process (best of 2)."""
    from acento.apps.predict import classify_files, inference_threads
    from acento.model.accent_model import AccentModel

    model = AccentModel.load(model_path)
    files = [Path(p) for p in manifest["audio_path"]]
    torch.set_num_threads(inference_threads(len(files), resolve_count(0)))
    batch = timed(lambda: list(classify_files(files, model, resolve_count(0))), 2)
    return {"batch_clips_per_second": round(len(files) / batch, 1), "batch_clips": len(files)}


def predict_command() -> list[str]:
    """`acento-predict` as a user runs it: the console script beside this interpreter, else `-m`."""
    script = Path(sys.executable).with_name("acento-predict")
    return [str(script)] if script.exists() else [sys.executable, "-m", "acento.apps.predict"]


def bench_cli(model_path: Path, manifest: pd.DataFrame, scratch: Path, runs: int = 5) -> dict:
    """What a user waits for: the whole `acento-predict` process on one 5 s clip, beside a bare
    `python -c "import torch"`, the two alternated so that both see the same load on the machine;
    median of `runs` each."""
    clip = five_second_clip(manifest, scratch)
    cli = predict_command()
    commands = {"bare_torch_import": [sys.executable, "-c", "import torch"],
                "cli_one_5s_clip": cli + ["--model-file", str(model_path), str(clip)]}
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {"command": " ".join([Path(cli[0]).name, *cli[1:]]) + " --model-file MODEL five_seconds.mp3",
            "runs": runs, **{f"{name}_s_median": round(v, 3) for name, v in median.items()},
            "cli_vs_bare_torch_import": round(median["cli_one_5s_clip"] / median["bare_torch_import"], 2),
            "all_runs_s": {name: [round(v, 3) for v in values] for name, values in seconds.items()}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_memory_mib(pid: int) -> dict:
    """Resident and peak resident memory (VmRSS, VmHWM) of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: round(int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024, 1) for key in ("VmRSS", "VmHWM")}


def load_test(port: int, bodies: list[bytes], clients: int, requests: int, time_limit: float) -> dict:
    """`clients` threads post the clips of `bodies` (multipart, in turn) to /predict on 127.0.0.1 until
    `requests` are answered or `time_limit` seconds pass; latencies and errors by status."""
    import http.client
    import threading

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + time_limit
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in counter:  # shared: each request number is taken once
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", bodies[n % len(bodies)], headers)
                response = conn.getresponse()
                response.read()
                outcome = None if response.status == 200 else str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                if outcome is None:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    answered = len(latencies) + sum(errors.values())
    return {"clients": clients, "requests": answered, "seconds": round(wall, 2),
            "requests_per_second": round(answered / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
            "errors": sum(errors.values()), "errors_by_kind": errors}


BOUNDARY = "acento-bench-boundary"


def multipart(name: str, data: bytes) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def bench_service(model_path: Path, manifest: pd.DataFrame, clients: int, requests: int, time_limit: float) -> dict:
    """`acento-serve` under a bounded local load: its own process on 127.0.0.1, one sample clip per
    request from `clients` threads of this process (on the same cores); the server's memory after a
    warm-up and after the load (flat = no leak), beside the in-process batched throughput on the same clips."""
    import urllib.request

    port = free_port()
    bodies = [multipart(Path(p).name, Path(p).read_bytes()) for p in manifest["audio_path"]]
    log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the server
    server = subprocess.Popen([sys.executable, "-m", "acento.apps.serve", "--model-file", str(model_path),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"acento-serve did not start: {log.read().strip()}") from None
                time.sleep(0.2)
        # every clip once first: the allocator's high-water mark settles (batches of every length seen),
        # so what the load adds after it is what a leak would add
        warm = load_test(port, bodies, clients, len(bodies), time_limit)
        before = server_memory_mib(server.pid)
        load = load_test(port, bodies, clients, requests, time_limit)
        after = server_memory_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return {"server": f"acento-serve, concurrency {health['limits']['concurrency']}, queue {health['limits']['queue']}",
            "clip_seconds_mean": round(float(manifest["duration"].mean()), 2), "time_limit_s": time_limit,
            **load, "warm_up_requests": warm["requests"], "warm_up_errors": warm["errors"],
            "server_rss_mib": {"after_warm_up": before, "after_load": after},
            "in_process": batch_throughput(model_path, manifest)}


def write_report(results: dict, out: Path) -> None:
    write_json(out / BENCH_JSON.name, results)
    lines = ["# acento benchmarks", "", "Written by `make bench` (`python scripts/bench.py`).", "",
             "## Machine", ""] + [f"- {k}: {v}" for k, v in results["machine"].items()]
    if "recurrent" in results:
        lines += ["", "## recurrent (training clips/s of the loop against the network's and the bare RNN's floors)", "",
                  *recurrent_table(results["recurrent"]), "", "```json",
                  json.dumps({k: v for k, v in results["recurrent"].items() if k != "rows"}, indent=2), "```"]
    for section in ("features", "training", "predict", "cli", "service", "lazy_read"):
        if section in results:
            lines += ["", f"## {section}", "", "```json", json.dumps(results[section], indent=2), "```"]
    with atomic_path(out / BENCH_REPORT.name, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 training epochs per variant, no accuracy")
    parser.add_argument("--repeat", type=int, default=3, help="feature timings: best of N runs (default: 3)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--lazy-gib", type=float, default=2.0,
                        help="size of the synthetic cache of the lazy-read benchmark (default: 2 GiB)")
    parser.add_argument("--clients", type=int, default=8, help="service load test: concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=500, help="service load test: requests (default: 500)")
    parser.add_argument("--time-limit", type=float, default=180,
                        help="service load test: stop after this many seconds (default: 180)")
    parser.add_argument("--cache", type=Path, help="training and recurrent benchmarks: this feature cache "
                        "(e.g. data/features/features.h5) instead of one built from the sample")
    parser.add_argument("--recurrent-clips", type=int, default=256,
                        help="recurrent benchmark: training clips per epoch, default network (default: 256)")
    parser.add_argument("--preset-clips", type=int, default=48,
                        help="recurrent benchmark: training clips per epoch, each preset (default: %(default)s)")
    parser.add_argument("--recurrent-repeats", type=int, default=2,
                        help="recurrent benchmark: epochs timed per figure, median (default: 2)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file (default: params.yaml; a cache given by --cache must match its features)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="recurrent benchmark: where the loop and the floors run (default: cpu)")
    parser.add_argument("--batch-frames", type=int, nargs="+", default=[16000],
                        help="recurrent benchmark: frame budgets (train.batch_frames) timed beside batches of "
                             "16/32/64 clips (default: 16000)")
    parser.add_argument("--out", type=Path, default=BENCH_REPORT.parent,
                        help=f"folder for {BENCH_REPORT.name} and {BENCH_JSON.name} (default: {BENCH_REPORT.parent})")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    previous = args.out / BENCH_JSON.name
    results = json.loads(previous.read_text()) if previous.exists() else {}
    results["machine"] = machine()
    scratch = Path(tempfile.mkdtemp(prefix="acento-bench-"))
    try:
        locale = extract_release(SAMPLE, scratch / "raw", "es")
        manifest, _ = prepare(params.data, locale)
        if "features" in args.only:
            print("benchmarking features ...", flush=True)
            results["features"] = bench_features(manifest, params, scratch, args.repeat)
        cache = args.cache or scratch / "cache.h5"
        if args.cache is None:
            build_cache(manifest, params.features, cache, resolve_count(0))
        if "recurrent" in args.only:
            print("benchmarking the training loop against its floors ...", flush=True)
            results["recurrent"] = bench_recurrent(cache, params, 128 if args.quick else args.recurrent_clips,
                                                   32 if args.quick else args.preset_clips,
                                                   1 if args.quick else args.recurrent_repeats, args.device,
                                                   tuple(args.batch_frames))
        if "training" in args.only:
            print("benchmarking training ...", flush=True)
            results["training"] = bench_training(cache, params, scratch, not args.quick)
        model = MODEL_FILE
        if {"predict", "cli", "service"} & set(args.only) and not model.exists():
            from acento.training.trainer import train
            model = scratch / "predict-model.pt"
            train(params, cache, model, scratch / "live")
        if "predict" in args.only:
            print("benchmarking predict ...", flush=True)
            results["predict"] = bench_predict(model, manifest, scratch)
        if "cli" in args.only:
            print("benchmarking the command line's start-up ...", flush=True)
            results["cli"] = bench_cli(model, manifest, scratch)
        if "service" in args.only:
            print(f"benchmarking the service ({args.clients} clients, {args.requests} requests) ...", flush=True)
            results["service"] = bench_service(model, manifest, args.clients, args.requests, args.time_limit)
        if "lazy" in args.only:
            print(f"benchmarking lazy cache reads ({args.lazy_gib:g} GiB) ...", flush=True)
            results["lazy_read"] = bench_lazy_read(scratch, params.features, args.lazy_gib, 400,
                                                  params.train.batch_size)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_report(results, args.out)
    print(f"results -> {args.out / BENCH_REPORT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
