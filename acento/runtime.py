"""Where the network runs: device choice and CPU threads, shared by train, evaluate, predict and bench."""

from __future__ import annotations

import os

import torch

from acento.errors import StageError


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0))


def resolve_count(requested: int) -> int:
    """A worker or thread count from params, where 0 means one per available core."""
    return requested or available_cores()


def select_device(preference: str = "auto", setting: str = "runtime.device") -> torch.device:
    """CUDA when asked for or available (`auto`), else the CPU; `setting` names the knob in the error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise StageError(f"{setting} is 'cuda' but no CUDA device is available (torch "
                         f"{torch.__version__}); set it to 'auto' or 'cpu', or install a CUDA build of torch")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def configure_torch(device: torch.device, num_threads: int, deterministic: bool = False) -> None:
    """CPU threads for torch (0 = all cores) and, for training, deterministic kernels on the CPU."""
    if device.type == "cpu":
        torch.set_num_threads(resolve_count(num_threads))
        if deterministic:
            torch.use_deterministic_algorithms(True)
