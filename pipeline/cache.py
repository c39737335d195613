"""The HDF5 feature cache: its schema, its writer and its reader, in one place (as lhotse's features/io).

Layout (one file):
  /<split>/frames    [total_frames, n_mels] float16|float32, every clip's log-mels end to end
  /<split>/offsets   [clips] int64   first row of each clip in `frames`
  /<split>/lengths   [clips] int32   frames per clip (10 ms each at the default hop)
  /<split>/labels    [clips] int16   index into the `classes` attribute
  /<split>/speakers  [clips] str     Common Voice client_id
  /<split>/clips     [clips] str     clip file name
  attrs: classes (JSON list), features (JSON of FeaturesConfig), mean, std ([n_mels] float32, train split)

One dataset per split rather than one per clip keeps the file's metadata small for 400k clips and
makes a clip one slice.  `frames` is chunked in CHUNK_ROWS-row chunks so that reading one random
clip (~500 frames) lazily pulls little more than its own bytes.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from pipeline.config import FeaturesConfig, stored_features_config
from pipeline.errors import StageError
from pipeline.manifest import SPLITS

FLUSH_FRAMES = 1 << 16  # frames buffered per split before a write (8 MB of float16 at 64 mels)
# Chunk height of `frames`: 128 rows are 16 kB at 64 mels in float16.  A random read of a clip of L
# frames touches about L/128 + 1 chunks, so a 5 s clip (500 frames) reads ~1.26x its bytes.
CHUNK_ROWS = 128
ATTRS = ("classes", "features", "mean", "std")


def in_memory_limit() -> int:
    """Bytes of frames up to which a split is read into memory once (else read lazily per clip).

    4 GiB by default; the ACENTO_IN_MEMORY_BYTES environment variable overrides it (tests and the
    lazy-read benchmark force the lazy path with a tiny value).
    """
    return int(os.environ.get("ACENTO_IN_MEMORY_BYTES", 4 << 30))


class SplitWriter:
    """Appends clips of one split to its datasets; buffers frames to write in large blocks."""

    def __init__(self, group: h5py.Group, n_mels: int, dtype: str):
        self.frames = group.create_dataset("frames", shape=(0, n_mels), maxshape=(None, n_mels), dtype=dtype,
                                           chunks=(CHUNK_ROWS, n_mels))
        self.group, self.buffer, self.buffered, self.written = group, [], 0, 0
        self.lengths: list[int] = []
        self.labels: list[int] = []
        self.speakers: list[str] = []
        self.clips: list[str] = []

    def add(self, feats: np.ndarray, label: int, speaker: str, clip: str) -> None:
        self.buffer.append(feats)
        self.buffered += len(feats)
        self.lengths.append(len(feats))
        self.labels.append(label)
        self.speakers.append(speaker)
        self.clips.append(clip)
        if self.buffered >= FLUSH_FRAMES:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        block = np.concatenate(self.buffer)
        self.frames.resize(self.written + len(block), axis=0)
        self.frames[self.written:] = block
        self.written += len(block)
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        lengths = np.asarray(self.lengths, dtype=np.int64)
        self.group.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
                                  if len(lengths) else np.zeros(0, np.int64))
        self.group.create_dataset("lengths", data=lengths.astype(np.int32))
        self.group.create_dataset("labels", data=np.asarray(self.labels, dtype=np.int16))
        str_type = h5py.string_dtype()
        self.group.create_dataset("speakers", data=np.asarray(self.speakers, dtype=object), dtype=str_type)
        self.group.create_dataset("clips", data=np.asarray(self.clips, dtype=object), dtype=str_type)


class CacheWriter:
    """Writes a whole cache: `add` clips to their splits in any order, then `finish` with the attributes.

    The caller owns atomicity (write to a temporary path, rename on success: `stage.atomic_path`).
    """

    def __init__(self, path: str | Path, n_mels: int, dtype: str):
        self.file = h5py.File(path, "w")
        self.splits = {s: SplitWriter(self.file.create_group(s), n_mels, dtype) for s in SPLITS}

    def add(self, split: str, feats: np.ndarray, label: int, speaker: str, clip: str) -> None:
        self.splits[split].add(feats, label, speaker, clip)

    def finish(self, classes: list[str], features: FeaturesConfig | dict, mean: np.ndarray, std: np.ndarray) -> None:
        for writer in self.splits.values():
            writer.close()
        self.file.attrs["features"] = json.dumps(features if isinstance(features, dict) else asdict(features))
        self.file.attrs["classes"] = json.dumps(list(classes))
        self.file.attrs["mean"] = np.asarray(mean, np.float32)
        self.file.attrs["std"] = np.asarray(std, np.float32)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SplitData:
    """One split of the cache: frames in memory (or read lazily from the file) plus the clip tables.

    Holds the HDF5 file open for lazy reads: `close()` it, or use it as a context manager.
    """

    def __init__(self, path: str | Path, split: str):
        self.path = Path(path)
        if not self.path.is_file():
            raise StageError(f"{path}: not found; run the features stage first (dvc repro features)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(exc):
                raise StageError(f"{path}: locked, another process has it open for writing (a features stage "
                                 "still running?); wait for it to finish or stop it, then run again") from None
            raise StageError(f"{path}: not a readable HDF5 feature cache ({exc}); rebuild it with "
                             "`dvc repro --force features`") from None
        if split not in self._file or any(a not in self._file.attrs for a in ATTRS):
            self._file.close()
            raise StageError(f"{path}: no '{split}' split or cache attributes in it; it was not written by "
                             "the features stage, rebuild it with `dvc repro --force features`")
        group = self._file[split]
        frames = group["frames"]
        self.lazy = frames.size * frames.dtype.itemsize > in_memory_limit()
        self.frames = frames if self.lazy else frames[()]
        if self.lazy and hasattr(os, "posix_fadvise"):
            # Clips are read in random order: the kernel's readahead would fetch ~10x the bytes asked.
            os.posix_fadvise(self._file.id.get_vfd_handle(), 0, 0, os.POSIX_FADV_RANDOM)
        self.offsets = group["offsets"][()]
        self.lengths = group["lengths"][()].astype(np.int64)
        self.labels = group["labels"][()].astype(np.int64)
        self.speakers = group["speakers"].asstr()[()]
        self.clips = group["clips"].asstr()[()]
        self.classes: list[str] = json.loads(self._file.attrs["classes"])
        self.feature_config: FeaturesConfig = stored_features_config(self._file.attrs["features"])
        self.mean = np.asarray(self._file.attrs["mean"], np.float32)
        self.std = np.asarray(self._file.attrs["std"], np.float32)

    def __len__(self) -> int:
        return len(self.lengths)

    def close(self) -> None:
        """Closes the HDF5 file; the clip tables stay usable, clips held in memory too, lazy reads not."""
        self._file.close()

    def __enter__(self) -> "SplitData":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clip(self, i: int) -> np.ndarray:
        """Clip i's log-mels, [frames, n_mels] float32."""
        start = self.offsets[i]
        return np.asarray(self.frames[start:start + self.lengths[i]], dtype=np.float32)

    def clips_at(self, index: np.ndarray) -> list[np.ndarray]:
        """The clips of `index`, in that order, read in file order (sequential reads on the lazy path)."""
        out: list[np.ndarray] = [None] * len(index)  # type: ignore[list-item]
        for pos in np.argsort(self.offsets[index], kind="stable"):
            out[pos] = self.clip(int(index[pos]))
        return out
