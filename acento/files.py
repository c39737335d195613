"""Atomic outputs: a killed stage or tool leaves nothing at its output path that DVC or the next stage
could take for a finished result, so every output is written to a temporary sibling and renamed at the end.

A temporary sibling is named `.NAME.PID.RANDOM.SUFFIX` after its writer's process id, so that one left by
a killed writer (SIGKILL, the OOM killer, a full disk) is removed by the next write of the same output
once no process of that id is alive (`remove_stale_siblings`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acento.errors import StageError


def pid_alive(pid: int) -> bool:
    """Whether a process of id `pid` exists on this machine (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(path: str | Path) -> list[Path]:
    """Removes the temporary siblings of `path` (`.NAME.PID.*`) whose writing process is gone; returns them.

    Only names with a process id are touched, and never one of a live process (a writer still running,
    or a reused id: then the file waits for a later run)."""
    path = Path(path)
    removed = []
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = sibling.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)) and sibling.is_file():
            with contextlib.suppress(FileNotFoundError):
                sibling.unlink()
                removed.append(sibling)
    return removed


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds.

    Temporaries that killed writers left beside `path` are removed first (`remove_stale_siblings`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would make every output private
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Writes `obj` as indented UTF-8 JSON, atomically.  StageError for a non-finite number (NaN, infinity):
    JSON has none, and a metric that is not a number must not be written as if it were one."""
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise StageError(f"{path}: not written, a value in it is not a finite number ({exc})") from None
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
