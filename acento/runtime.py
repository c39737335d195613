"""Where the work runs: device choice and CPU threads, shared by train, evaluate, predict and bench; and
worker processes and scratch folders that end with the process that owns them, whatever kills it."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from acento.errors import StageError
from acento.files import pid_alive

if TYPE_CHECKING:  # torch is imported where it is used: a decoding worker calling die_with_parent needs none
    import torch


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0))


def resolve_count(requested: int) -> int:
    """A worker or thread count from params, where 0 means one per available core."""
    return requested or available_cores()


def select_device(preference: str = "auto", setting: str = "runtime.device") -> torch.device:
    """CUDA when asked for or available (`auto`), else the CPU; `setting` names the knob in the error."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise StageError(f"{setting} is 'cuda' but no CUDA device is available (torch "
                         f"{torch.__version__}); set it to 'auto' or 'cpu', or install a CUDA build of torch")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def configure_torch(device: torch.device, num_threads: int, deterministic: bool = False) -> None:
    """CPU threads for torch (0 = all cores) and, for training, deterministic kernels on the CPU."""
    import torch

    if device.type == "cpu":
        torch.set_num_threads(resolve_count(num_threads))
        if deterministic:
            torch.use_deterministic_algorithms(True)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _parent_death_signal(signal_number: int) -> None:
    """Linux: asks the kernel to send `signal_number` to this process when the thread that created it ends."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)


def _watch_parent(parent: int, signal_number: int, poll_seconds: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os.kill(os.getpid(), signal_number)


def die_with_parent(signal_number: int = signal.SIGKILL, poll_seconds: float = 1.0) -> None:
    """Makes this (worker) process end when its parent process ends, however the parent ends (SIGKILL and
    the OOM killer included): for a process pool's `initializer`, e.g. `ProcessPoolExecutor(n,
    initializer=die_with_parent)`.

    On Linux the kernel sends `signal_number` (default SIGKILL: no handler can delay it) the moment the
    parent dies (prctl PR_SET_PDEATHSIG; the pool must be created from a thread that outlives it, as the main
    thread does); everywhere, a daemon thread also checks every `poll_seconds` (seconds) whether the parent
    changed (an orphan is adopted by another process) and sends the signal then.  A parent that dies while
    this runs ends the process at once.  Raises nothing."""
    parent = os.getppid()
    _parent_death_signal(signal_number)
    if os.getppid() != parent:  # the parent died before the kernel was asked
        os.kill(os.getpid(), signal_number)
    threading.Thread(target=_watch_parent, args=(parent, signal_number, poll_seconds), daemon=True,
                     name="die-with-parent").start()


SCRATCH_PREFIX = "acento-"


_SCRATCH_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"([a-z]+)-(\d+)-[A-Za-z0-9_]+")


def remove_stale_scratch(folder: str | Path | None = None) -> list[Path]:
    """Removes the scratch folders (`scratch_folder`'s `acento-KIND-PID-RANDOM`) in `folder` (default: the
    temporary directory, $TMPDIR) whose owning process is gone, as a killed run leaves them; returns them.
    A folder of a live process (or of a reused process id) is kept for a later run; one that cannot be
    removed (another user's) is left as it is.  Raises nothing."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*-*"):
        match = _SCRATCH_NAME.fullmatch(path.name)
        if match and int(match[2]) != os.getpid() and not pid_alive(int(match[2])) and path.is_dir() \
                and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


def scratch_folder(kind: str) -> Path:
    """A new, empty folder in the temporary directory named `acento-KIND-PID-RANDOM` after this process,
    for a run's temporary files (the caller removes it when done); first removes the folders killed
    runs left (`remove_stale_scratch`).  kind: lower-case letters, e.g. "final" or "ablate"."""
    remove_stale_scratch()
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-"))
