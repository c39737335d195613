"""The HDF5 feature cache: its schema, its writer and its reader, in one place (as lhotse's features/io).

Layout (one file, FORMAT_VERSION 3): every clip once, whatever the fold.
  /clips/frames     [total_frames, n_mels] float16|float32, every clip's log-mels end to end, in chunks
                    that each carry a Fletcher-32 checksum (HDF5's filter, checked on every read)
  /clips/offsets    [clips] int64   first row of each clip in `frames`
  /clips/lengths    [clips] int32   frames per clip (10 ms each at the default hop)
  /clips/labels     [clips] int16   index into the `classes` attribute
  /clips/speakers   [clips] str     Common Voice client_id
  /clips/clips      [clips] str     clip file name
  /clips/split      [clips] str     train | dev | test in a cache of one split; "" when cross-validated
  /clips/fold       [clips] int16   test fold of the clip's speaker (0 .. folds-1); -1 in a cache of one split
  /clips/dev_folds  [clips] int64   bit f set: a dev clip while fold f is the test fold
  /clips/group      [clips] int32   the clip's row in /stats
  /stats/frames     [groups] int64            frames of each statistics group
  /stats/sum        [groups, n_mels] float64  per-mel sum of the group's log-mels
  /stats/sum_sq     [groups, n_mels] float64  per-mel sum of squares
  attrs: format ("acento-features"), version, classes (JSON list), features (JSON of FeaturesConfig),
         folds (number of test folds; 0 for a cache of one split), tables_sha256 (SHA-256 of every
         /clips table but frames, of /stats and of classes and features: `tables_digest`)

Damaged bytes are refused, never read as numbers (issue #34): a changed chunk of frames fails its
checksum, a changed table or attribute its digest, and the tables must agree with each other (every
clip's frames inside `frames`, labels among the classes, ...: `check_tables`); every clip's log-mels are
finite when written and when read.  Each is one StageError line saying to rebuild the cache.

A statistics group is one speaker's clips of one split (a speaker, when cross-validated): every
training split (any fold, or a fold less some speakers) is made of whole groups, so its per-mel mean
and std are a sum over a few thousand rows, with no pass over the frames.  Which clips are train,
dev and test is decided when the cache is read (`SplitData`, from `fold`, `dev_folds` and `split`:
`manifest.split_of`), so one cache serves every `data.fold`.

One dataset for all clips rather than one per clip keeps the file's metadata small for 400k clips and
makes a clip one slice.  `frames` is chunked in CHUNK_ROWS-row chunks so that reading one random
clip (~500 frames) lazily pulls little more than its own bytes.

Just over 300 lines on purpose: the file's layout, its writer and its reader side by side, so that a
change to one is seen beside the others.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from acento.config import ConfigError, FeaturesConfig, stored_features_config
from acento.corpus.manifest import POOL, SPLITS, split_of
from acento.errors import StageError

FORMAT = "acento-features"


# 3: checksummed frames and tables (2: one /clips group for every fold, with per-group statistics;
# 1: one group per split, one file per fold).
FORMAT_VERSION = 3


FLUSH_FRAMES = 1 << 16  # frames buffered before a write (8 MB of float16 at 64 mels)


# Chunk height of `frames`: 128 rows are 16 kB at 64 mels in float16.  A random read of a clip of L
# frames touches about L/128 + 1 chunks, so a 5 s clip (500 frames) reads ~1.26x its bytes.
CHUNK_ROWS = 128


ATTRS = ("format", "version", "classes", "features", "folds", "tables_sha256")


UNLABELLED = -1  # the label of an unlabelled pool clip (split POOL): `SplitData(path, POOL)`
TABLES = ("offsets", "lengths", "labels", "speakers", "clips", "split", "fold", "dev_folds", "group")  # /clips
STATS = ("frames", "sum", "sum_sq")  # /stats


# Free bytes the writer leaves on the cache's disk beyond the block it writes: HDF5 must still write
# its tables and metadata to close the file.  A write that fails for space inside HDF5 leaves the file
# in a state h5py cannot even close (it crashes the process at exit), so the writer stops before.
DISK_RESERVE = 64 << 20

REBUILD = "rebuild it with `dvc repro --force features`"


SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFull(StageError):
    """The cache's disk filled up while it was written (the temporary file is removed).  HDF5 cannot close
    the file any more, so the process must end without tearing it down: `hard_exit`."""

    hard_exit = True


def in_memory_limit() -> int:
    """Bytes of frames up to which a split is read into memory once (else read lazily per clip).

    4 GiB by default; the ACENTO_IN_MEMORY_BYTES environment variable overrides it (tests and the
    lazy-read benchmark force the lazy path with a tiny value).
    """
    return int(os.environ.get("ACENTO_IN_MEMORY_BYTES", 4 << 30))


class CacheWriter:
    """Writes a whole cache: `add` clips in the order they should keep, then `finish` with the attributes.

    The caller owns atomicity (write to a temporary path, rename on success: `stage.atomic_path`).
    """

    def __init__(self, path: str | Path, n_mels: int, dtype: str):
        self.path = Path(path)
        self.file = h5py.File(path, "w")
        self.group = self.file.create_group("clips")
        self.frames = self.group.create_dataset("frames", shape=(0, n_mels), maxshape=(None, n_mels), dtype=dtype,
                                                chunks=(CHUNK_ROWS, n_mels), fletcher32=True)
        self.n_mels, self.buffer, self.buffered, self.written, self.broken = n_mels, [], 0, 0, False
        self.columns: dict[str, list] = {name: [] for name in
                                         ("lengths", "labels", "speakers", "clips", "split", "fold", "dev_folds",
                                          "group")}
        self.groups: dict[tuple[str, str], int] = {}
        self.stats: list[list] = []  # per group: [frames, sum, sum_sq]

    def add(self, feats: np.ndarray, label: int, speaker: str, clip: str, *, split: str = "", fold: int = -1,
            dev_folds: int = 0, total: np.ndarray | None = None, total_sq: np.ndarray | None = None) -> None:
        """One clip: log-mels [frames, n_mels], class index, speaker, clip name, and where it goes (`split`
        for a cache of one split, else `fold` and `dev_folds`: `acento.corpus.manifest`).  total, total_sq:
        the clip's per-mel sum and sum of squares [n_mels] (of the features before storage rounding);
        computed from `feats` when not given."""
        if (split == "") == (fold < 0):
            raise ValueError(f"clip {clip}: give either a split ({split!r}) or a fold ({fold}), not both or none")
        if total is None or total_sq is None:
            wide = np.asarray(feats, np.float64)
            total, total_sq = wide.sum(0), np.square(wide).sum(0)
        if not (np.isfinite(total).all() and np.isfinite(total_sq).all() and np.isfinite(feats).all()):
            raise ValueError(f"clip {clip}: log-mels that are not finite numbers; nothing was written for it")
        group = self.groups.setdefault((speaker, split), len(self.groups))
        if group == len(self.stats):
            self.stats.append([0, np.zeros(self.n_mels, np.float64), np.zeros(self.n_mels, np.float64)])
        self.stats[group][0] += len(feats)
        self.stats[group][1] += total
        self.stats[group][2] += total_sq
        self.buffer.append(feats)
        self.buffered += len(feats)
        for name, value in zip(self.columns, (len(feats), label, speaker, clip, split, fold, dev_folds, group)):
            self.columns[name].append(value)
        if self.buffered >= FLUSH_FRAMES:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        block = np.concatenate(self.buffer).astype(self.frames.dtype, copy=False)
        free = shutil.disk_usage(self.path.parent).free
        if free < block.nbytes + DISK_RESERVE:
            raise StageError(f"{self.path.parent}: {free / 2**20:.0f} MiB free, too little to go on writing the "
                             f"feature cache ({self.written * block.itemsize * self.n_mels / 2**20:.0f} MiB written "
                             f"so far, about 35 kB more per clip); free space on that disk and rerun")
        with self._space_guard():
            self.frames.resize(self.written + len(block), axis=0)
            self.frames[self.written:] = block
        self.written += len(block)

    @contextlib.contextmanager
    def _space_guard(self) -> Iterator[None]:
        """Turns a write the system refused for space (a full disk, a quota, a file-size limit), which HDF5
        may report at any later write or at close, into DiskFull, removing the partial file."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            if getattr(exc, "errno", None) not in SPACE_ERRNOS and \
                    not any(f"errno = {n}," in str(exc) for n in SPACE_ERRNOS):
                raise
            self.broken = True
            self.path.unlink(missing_ok=True)
            raise DiskFull(f"{self.path.parent}: the disk is full (or a file-size limit reached) while writing the "
                           "feature cache; the partial cache was removed; free space and rerun") from None
        self.buffer, self.buffered = [], 0

    def finish(self, classes: list[str], features: FeaturesConfig | dict) -> None:
        """Writes the clip tables, the statistics and the attributes (`folds` from the clips' folds)."""
        self.flush()
        with self._space_guard():
            self._finish(classes, features)

    def _finish(self, classes: list[str], features: FeaturesConfig | dict) -> None:
        c, g, str_type = self.columns, self.group, h5py.string_dtype()
        lengths = np.asarray(c["lengths"], dtype=np.int64)
        g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
                         if len(lengths) else np.zeros(0, np.int64))
        g.create_dataset("lengths", data=lengths.astype(np.int32))
        g.create_dataset("labels", data=np.asarray(c["labels"], dtype=np.int16))
        for name in ("speakers", "clips", "split"):
            g.create_dataset(name, data=np.asarray(c[name], dtype=object), dtype=str_type)
        g.create_dataset("fold", data=np.asarray(c["fold"], dtype=np.int16))
        g.create_dataset("dev_folds", data=np.asarray(c["dev_folds"], dtype=np.int64))
        g.create_dataset("group", data=np.asarray(c["group"], dtype=np.int32))
        stats = self.file.create_group("stats")
        stats.create_dataset("frames", data=np.asarray([s[0] for s in self.stats], dtype=np.int64))
        for i, name in ((1, "sum"), (2, "sum_sq")):
            stats.create_dataset(name, data=np.asarray([s[i] for s in self.stats], np.float64).reshape(-1, self.n_mels))
        self.file.attrs["format"] = FORMAT
        self.file.attrs["version"] = FORMAT_VERSION
        self.file.attrs["features"] = json.dumps(features if isinstance(features, dict) else asdict(features))
        self.file.attrs["classes"] = json.dumps(list(classes))
        self.file.attrs["folds"] = int(max(c["fold"], default=-1)) + 1
        self.file.attrs["tables_sha256"] = tables_digest(
            {name: g[name][()] for name in TABLES}, {name: stats[name][()] for name in STATS},
            self.file.attrs["classes"], self.file.attrs["features"])

    def close(self) -> None:
        """Closes the file; after a failed write for space (`DiskFull`) the file is left to the process's
        end (`acento.console.run_stage` ends it at once: h5py cannot close such a file)."""
        if not self.broken:
            with self._space_guard():
                self.file.close()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tables_digest(tables: dict[str, np.ndarray], stats: dict[str, np.ndarray], classes: str, features: str) -> str:
    """SHA-256 (hex) of the clip tables, the statistics and the classes and features attributes: each
    array's name, dtype, shape and bytes in a fixed order (strings as UTF-8, each ended by a NUL)."""
    digest = hashlib.sha256()
    for name, array in [*sorted(tables.items()), *(("stats/" + k, v) for k, v in sorted(stats.items()))]:
        array = np.asarray(array)
        strings = array.dtype.kind in "OSU"
        digest.update(f"{name}|{'str' if strings else array.dtype.str}|{array.shape}|".encode())
        if strings:
            digest.update(b"".join((v.decode() if isinstance(v, bytes) else str(v)).encode() + b"\0"
                                   for v in array.ravel()))
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    for text in (classes, features):
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def check_tables(path: Path, tables: dict[str, np.ndarray], stats: dict[str, np.ndarray], n_frames: int,
                 n_mels: int, n_classes: int, folds: int) -> None:
    """StageError (one line) unless the clip tables and statistics agree with each other and with the
    frames [n_frames, n_mels]: one row per clip in every table, every clip's frames contiguous, in
    order and inside `frames`, labels among the classes, folds and statistics groups in range."""
    n = len(tables["lengths"])
    groups = len(stats["frames"])
    problems = [f"/clips/{name} has {len(a)} rows for {n} clips" for name, a in tables.items() if len(a) != n]
    problems += [f"/stats/{name} has shape {a.shape}" for name, a in stats.items()
                 if a.shape != ((groups,) if name == "frames" else (groups, n_mels))]
    if not problems and n:
        lengths, offsets = tables["lengths"].astype(np.int64), tables["offsets"].astype(np.int64)
        checks = {
            "a clip of no frames": (lengths < 1).any(),
            "clip offsets that do not follow the lengths": (offsets != np.concatenate([[0], np.cumsum(lengths)[:-1]])).any(),
            f"clips ending past the {n_frames} frames": int(lengths.sum()) != n_frames,
            f"a label outside the {n_classes} classes": ((tables["labels"] < 0) & (tables["split"] != POOL)
                                                         | (tables["labels"] >= n_classes)).any(),
            "an unlabelled pool clip with a label or a fold": ((tables["split"] == POOL)
                                                              & ((tables["labels"] != UNLABELLED)
                                                                 | (tables["fold"] != -1))).any(),
            f"a fold outside -1 .. {folds - 1}": ((tables["fold"] < -1) | (tables["fold"] >= max(folds, 0))).any(),
            "a statistics group out of range": ((tables["group"] < 0) | (tables["group"] >= groups)).any(),
            "statistics that are not finite": not all(np.isfinite(stats[k]).all() for k in ("sum", "sum_sq")),
        }
        problems += [what for what, bad in checks.items() if bad]
    if problems:
        raise StageError(f"{path}: damaged feature cache ({problems[0]}); {REBUILD}")


def training_statistics(frames: np.ndarray, total: np.ndarray, total_sq: np.ndarray,
                        groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel mean and std [n_mels] float32 of the frames of statistics groups `groups` (row indices
    of the /stats arrays: frames [groups], total and total_sq [groups, n_mels] float64)."""
    n = frames[groups].sum()
    mean = total[groups].sum(0) / n
    std = np.sqrt(np.maximum(total_sq[groups].sum(0) / n - mean ** 2, 1e-8))
    return mean.astype(np.float32), std.astype(np.float32)


class SplitData:
    """One split of the cache for one fold: its clips' frames in memory (or read lazily from the file),
    the clip tables, and the per-mel mean and std of that fold's training split.

    split: train | dev | test | pool (the unlabelled clips, label UNLABELLED, with the pool's own mean and
    std: it is no fold's, so needs no `fold`, and has no training split).  fold: the test fold (`data.fold`) of a cross-validated cache; a cache of
    one split ignores it.  drop_speakers: training speakers left out of the train split and of the
    statistics (a learning curve, `acento.evaluation.crossval`).  dev_trains: the dev speakers' clips belong to the
    train split (and its statistics), and the dev split is empty (`train.dev_speakers: train`).  pseudo_labels:
    {pool speaker: class index}, whose pool clips join the train split (and its statistics) with that class
    (self-training, `acento.evaluation.crossval`).  Clips keep
    the cache's order (the manifest's).
    Holds the HDF5 file open for lazy reads: `close()` it, or use it as a context manager.
    StageError (one line) for a missing, locked, foreign or old cache, or a fold the cache does not have.
    """

    def __init__(self, path: str | Path, split: str, fold: int | None = None, drop_speakers: Iterable[str] = (),
                 dev_trains: bool = False, pseudo_labels: dict[str, int] | None = None):
        self.path = Path(path)
        self._file = open_cache(self.path)
        if split not in (*SPLITS, POOL):
            self._file.close()
            raise ValueError(f"split {split!r}: one of {', '.join(SPLITS)}, {POOL}")
        group = self._file["clips"]
        try:
            tables, stats = read_tables(self.path, self._file)
        except BaseException:
            self._file.close()
            raise
        self.folds = int(self._file.attrs["folds"])
        if self.folds >= 2 and split != POOL and (fold is None or not 0 <= fold < self.folds):
            self._file.close()
            which = "give the test fold (data.fold)" if fold is None else f"it has no fold {fold}"
            raise StageError(f"{path}: a cache of {self.folds} cross-validation folds: {which}; set data.fold to "
                             f"0 .. {self.folds - 1}, or rebuild the cache for data.folds (dvc repro)")
        self.fold = fold if self.folds >= 2 and split != POOL else None
        speakers = tables["speakers"]
        splits = split_of(tables["split"], tables["fold"], tables["dev_folds"], self.fold if self.fold is not None else -1)
        if dev_trains:
            splits = np.where(splits == "dev", "train", splits)
        train = splits == "train"
        dropped = set(drop_speakers)
        if dropped:
            train &= ~np.isin(speakers, list(dropped))
        labels = tables["labels"].astype(np.int64)
        if pseudo_labels:  # self-training: these pool speakers join the training split with the given class
            pseudo = (splits == POOL) & np.isin(speakers, list(pseudo_labels))
            labels = np.where(pseudo, [pseudo_labels.get(s, UNLABELLED) for s in speakers], labels)
            splits = np.where(pseudo, "train", splits)
            train |= pseudo
        chosen = train if split == "train" else splits == split
        self.index = np.flatnonzero(chosen)  # positions in the cache, ascending (file order)
        if split == POOL:  # the pool is normalised with its own statistics: it has no training split
            train = chosen
        clip_group = tables["group"]
        frames, total, total_sq = (stats[name] for name in STATS)
        train_groups = np.unique(clip_group[train])
        if len(train_groups) == 0 or frames[train_groups].sum() == 0:
            self._file.close()
            if split == POOL:
                raise StageError(f"{path}: no unlabelled clip in the cache (the pool is empty); set "
                                 "data.unlabelled_clips > 0 on a release with clips of no accent, or use no pool "
                                 "(train.init: scratch, train.self_train: 0)")
            raise StageError(f"{path}: no training clip{'' if self.fold is None else f' in fold {self.fold}'}; "
                             "check the manifest's splits (dvc repro prepare)")
        whole = np.bincount(clip_group[train], minlength=len(frames))[train_groups] == \
            np.bincount(clip_group, minlength=len(frames))[train_groups]
        if not whole.all():  # a group is one speaker of one split: only a foreign file splits one
            self._file.close()
            raise StageError(f"{path}: a speaker's clips are on both sides of the training split; rebuild it "
                             "with `dvc repro --force features`")
        self.mean, self.std = training_statistics(frames, total, total_sq, train_groups)
        self.lengths = tables["lengths"].astype(np.int64)[self.index]
        self.labels = labels[self.index]
        self.speakers = speakers[self.index]
        self.clips = tables["clips"][self.index]
        self.classes: list[str] = json.loads(self._file.attrs["classes"])
        try:
            self.feature_config: FeaturesConfig = stored_features_config(self._file.attrs["features"])
        except (ConfigError, TypeError) as exc:
            self._file.close()
            raise StageError(f"{path}: damaged feature cache (impossible feature settings: "
                             f"{str(exc).removeprefix('params.yaml: ')}); {REBUILD}") from None
        all_frames = group["frames"]
        offsets = tables["offsets"][self.index]
        self.lazy = int(self.lengths.sum()) * all_frames.shape[1] * all_frames.dtype.itemsize > in_memory_limit()
        if self.lazy:
            self.frames, self.offsets = all_frames, offsets
            if hasattr(os, "posix_fadvise"):
                # Clips are read in random order: the kernel's readahead would fetch ~10x the bytes asked.
                os.posix_fadvise(self._file.id.get_vfd_handle(), 0, 0, os.POSIX_FADV_RANDOM)
        else:
            try:
                self.frames, self.offsets = read_clips(all_frames, offsets, self.lengths)
            except StageError:
                self._file.close()
                raise
            if not np.isfinite(self.frames).all():
                self._file.close()
                raise StageError(f"{path}: damaged feature cache (log-mels that are not finite numbers); {REBUILD}")

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
        """Clip i's log-mels, [frames, n_mels] float32; StageError if its bytes are damaged (lazy reads)."""
        start = self.offsets[i]
        if not self.lazy:
            return np.asarray(self.frames[start:start + self.lengths[i]], dtype=np.float32)
        try:
            feats = np.asarray(self.frames[start:start + self.lengths[i]], dtype=np.float32)
        except OSError as exc:
            raise damaged(self.path, exc) from None
        if not np.isfinite(feats).all():
            raise StageError(f"{self.path}: damaged feature cache (clip {self.clips[i]}: log-mels that are not "
                             f"finite numbers); {REBUILD}")
        return feats

    def clips_at(self, index: np.ndarray) -> list[np.ndarray]:
        """The clips of `index`, in that order, read in file order (sequential reads on the lazy path)."""
        out: list[np.ndarray] = [None] * len(index)  # type: ignore[list-item]
        for pos in np.argsort(self.offsets[index], kind="stable"):
            out[pos] = self.clip(int(index[pos]))
        return out


def read_clips(frames: h5py.Dataset, offsets: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clips at `offsets` (ascending) of `lengths` frames, read into one array [sum(lengths), n_mels]
    in runs of adjacent clips (one read per run: a fold's clips lie in a few long runs); returns it and
    each clip's offset in it."""
    out = np.empty((int(lengths.sum()), frames.shape[1]), dtype=frames.dtype)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else \
        np.zeros(0, np.int64)
    if len(lengths):
        ends = offsets + lengths
        starts = np.flatnonzero(np.concatenate([[True], offsets[1:] != ends[:-1]]))
        try:
            for first, last in zip(starts, np.append(starts[1:], len(offsets)) - 1):
                out[new_offsets[first]:new_offsets[last] + lengths[last]] = frames[offsets[first]:ends[last]]
        except OSError as exc:
            raise damaged(Path(frames.file.filename), exc) from None
    return out, new_offsets


def damaged(path: Path, exc: OSError) -> StageError:
    """The error for bytes HDF5 could not read back (a failed checksum, a broken chunk index)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StageError(f"{path}: damaged feature cache ({first}); {REBUILD}")


def read_tables(path: Path, file: h5py.File) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The clip tables (strings as str arrays) and the statistics of an open cache, checked against the
    file's digest and each other (`check_tables`); StageError (one line) for a damaged file."""
    try:
        group, stat_group = file["clips"], file["stats"]
        tables = {name: group[name].asstr()[()] if name in ("speakers", "clips", "split") else group[name][()]
                  for name in TABLES}
        stats = {name: stat_group[name][()] for name in STATS}
        frames = group["frames"]
        shape = frames.shape
        classes, features = str(file.attrs["classes"]), str(file.attrs["features"])
        stored = file.attrs["tables_sha256"]
    except (OSError, KeyError, UnicodeDecodeError, ValueError) as exc:
        raise damaged(path, exc if isinstance(exc, OSError) else OSError(str(exc))) from None
    if tables_digest(tables, stats, classes, features) != stored:
        raise StageError(f"{path}: damaged feature cache (its tables do not match their checksum); {REBUILD}")
    try:
        n_classes = len(json.loads(classes))
        n_mels = int(json.loads(features)["n_mels"])
    except (ValueError, KeyError, TypeError):
        raise StageError(f"{path}: damaged feature cache (unreadable classes or features attribute); {REBUILD}") from None
    if len(shape) != 2 or shape[1] != n_mels:
        raise StageError(f"{path}: damaged feature cache (frames of shape {shape} for {n_mels} mel bands); {REBUILD}")
    check_tables(path, tables, stats, shape[0], n_mels, n_classes, int(file.attrs["folds"]))
    return tables, stats


def open_cache(path: Path) -> h5py.File:
    """The cache at `path` open for reading; StageError (one line) if it is missing, locked, not HDF5,
    not a feature cache, or of an older format."""
    if not path.is_file():
        raise StageError(f"{path}: not found; run the features stage first (dvc repro features)")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(exc):
            raise StageError(f"{path}: locked, another process has it open for writing (a features stage "
                             "still running?); wait for it to finish or stop it, then run again") from None
        raise StageError(f"{path}: not a readable HDF5 feature cache ({exc}); rebuild it with "
                         "`dvc repro --force features`") from None
    attrs = file.attrs
    if attrs.get("format") == FORMAT and attrs.get("version") != FORMAT_VERSION or \
            "format" not in attrs and "classes" in attrs:
        file.close()
        raise StageError(f"{path}: a feature cache of an older format (this version reads format "
                         f"{FORMAT_VERSION}); rebuild: dvc repro --force features")
    if any(a not in attrs for a in ATTRS) or attrs.get("format") != FORMAT or "clips" not in file or \
            "stats" not in file:
        file.close()
        raise StageError(f"{path}: not a feature cache written by the features stage; rebuild it with "
                         "`dvc repro --force features`")
    return file
