"""Damaged or impossible feature caches are refused in one line, never read as numbers (issue #34), and
a cache that cannot be written for lack of space leaves nothing behind."""

import json
import os
import subprocess
import sys
from collections import namedtuple

import h5py
import numpy as np
import pytest

from acento.errors import StageError
from acento.features import cache as cache_module
from acento.features.build import build_cache
from acento.features.cache import CacheWriter, SplitData, tables_digest
from tests.features.test_features import BASIC, manifest
from tests.helpers import params

DAMAGED = r"damaged feature cache \((?P<why>.*)\); rebuild it with `dvc repro --force features`"


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "features.h5"
    build_cache(manifest(tmp_path, BASIC), params().features, out, 1)
    return out


def read_both_ways(path, monkeypatch):
    """SplitData's train split read into memory, then lazily (clip by clip); the errors of each."""
    errors = []
    for limit in (str(4 << 30), "1"):
        monkeypatch.setenv("ACENTO_IN_MEMORY_BYTES", limit)
        try:
            with SplitData(path, "train") as data:
                data.clips_at(np.arange(len(data)))
            errors.append(None)
        except StageError as exc:
            errors.append(str(exc))
    return errors


def test_an_intact_cache_reads_both_ways(built, monkeypatch):
    assert read_both_ways(built, monkeypatch) == [None, None]


def test_changed_bytes_in_the_frames_fail_their_checksum(built, monkeypatch):
    with h5py.File(built) as h5:
        chunk = h5["clips/frames"].id.get_chunk_info(0)
    raw = bytearray(built.read_bytes())
    raw[chunk.byte_offset + 100] ^= 0x7C  # as a bad disk block or a bit flip would
    built.write_bytes(bytes(raw))
    in_memory, lazy = read_both_ways(built, monkeypatch)
    assert in_memory.startswith(f"{built}: damaged feature cache (Can't") and "filter returned failure" in in_memory
    assert lazy == in_memory


def test_nan_frames_written_with_a_valid_checksum_are_refused_on_read(built, monkeypatch):
    with h5py.File(built, "r+") as h5:  # HDF5 recomputes the chunk's checksum: only the values tell
        h5["clips/frames"][5] = np.nan
    in_memory, lazy = read_both_ways(built, monkeypatch)
    assert in_memory == f"{built}: damaged feature cache (log-mels that are not finite numbers); " \
                        "rebuild it with `dvc repro --force features`"
    assert "clip clip0.mp3: log-mels that are not finite numbers" in lazy


@pytest.mark.parametrize("table, row, value", [("lengths", 1, 9999), ("offsets", 2, 1 << 40), ("labels", 0, 7),
                                                ("speakers", 3, "spk9"), ("fold", 0, 3)])
def test_a_changed_table_entry_fails_the_tables_checksum(built, table, row, value):
    with h5py.File(built, "r+") as h5:
        h5["clips"][table][row] = value
    with pytest.raises(StageError, match=DAMAGED) as err:
        SplitData(built, "train")
    assert "(its tables do not match their checksum)" in str(err.value)


@pytest.mark.parametrize("table, row, value, why", [
    ("lengths", 1, 9999, "clip offsets that do not follow the lengths"),
    ("labels", 0, 7, "a label outside the 2 classes"),
    ("labels", 0, -1, "a label outside the 2 classes"),  # the unlabelled pool's label on a labelled clip
    ("lengths", 0, 0, "a clip of no frames"),
    ("group", 2, 99, "a statistics group out of range"),
])
def test_tables_that_disagree_are_refused_even_with_a_matching_checksum(built, table, row, value, why):
    with h5py.File(built, "r+") as h5:  # a writer's bug, not damage: the digest is recomputed
        h5["clips"][table][row] = value
        if table == "lengths":  # offsets follow, so only the total can tell
            lengths = h5["clips/lengths"][()].astype(np.int64)
            if why.startswith("clip offsets"):
                h5["clips/offsets"][...] = np.concatenate([[0], np.cumsum(lengths)[:-1]])
                why = "clips ending past the"
        tables = {n: h5["clips"][n].asstr()[()] if n in ("speakers", "clips", "split") else h5["clips"][n][()]
                  for n in cache_module.TABLES}
        stats = {n: h5["stats"][n][()] for n in cache_module.STATS}
        h5.attrs["tables_sha256"] = tables_digest(tables, stats, h5.attrs["classes"], h5.attrs["features"])
    with pytest.raises(StageError, match=DAMAGED) as err:
        SplitData(built, "train")
    assert why in str(err.value)


def test_the_writer_refuses_non_finite_log_mels(tmp_path):
    with CacheWriter(tmp_path / "c.h5", 4, "float16") as writer, pytest.raises(ValueError, match="clip x.mp3"):
        writer.add(np.full((3, 4), np.inf, np.float32), 0, "s", "x.mp3", split="train")


def test_too_little_free_space_stops_the_writer_before_the_disk_is_full(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage(1 << 30, 1 << 30, 10 << 20))
    monkeypatch.setattr(cache_module, "FLUSH_FRAMES", 1)
    out = tmp_path / "features.h5"
    with pytest.raises(StageError, match=r": 10 MiB free, too little to go on writing the feature cache"):
        build_cache(manifest(tmp_path, BASIC), params().features, out, 1)
    assert not out.exists() and not list(tmp_path.glob(".features.h5.*"))


def test_a_disk_that_fills_inside_hdf5_is_one_line_and_leaves_no_partial_cache(built, tmp_path):
    """A write refused by the system (here a file-size limit, as a full disk refuses) inside HDF5: h5py
    cannot close the file after it (it crashed the process at exit, status 139); one line, status 2."""
    manifest(tmp_path, BASIC * 40).to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "out" / "features.h5"
    script = (
        "import resource, signal, sys\n"
        "import pandas as pd\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "from acento.console import run_stage\n"
        "from acento.features import cache\n"
        "from acento.features.build import build_cache\n"
        "cache.FLUSH_FRAMES = 64\n"
        "rows = pd.read_csv(sys.argv[1])\n"
        "sys.exit(run_stage('features', lambda p, a: build_cache(rows, p.features, sys.argv[2], 1), None, []))\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "manifest.csv"), str(out)],
                         capture_output=True, text=True, cwd=os.getcwd())
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {out.parent}: the disk is full (or a file-size limit reached) while writing the feature cache; "
        "the partial cache was removed; free space and rerun")
    assert "Traceback" not in run.stderr
    assert list(out.parent.iterdir()) == []


def test_an_old_partial_cache_of_a_killed_run_is_removed_by_the_next(built, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".features.h5.{dead.stdout.strip()}.abcd1234.h5"
    stale.write_bytes(b"partial")
    alive = tmp_path / f".features.h5.{os.getppid()}.abcd1234.h5"  # a live writer's: kept
    alive.write_bytes(b"partial")
    build_cache(manifest(tmp_path, BASIC), params().features, built, 1)
    assert not stale.exists() and alive.exists()
    assert json.loads(h5py.File(built).attrs["classes"]) == ["a", "b"]
