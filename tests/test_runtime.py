"""Worker processes and scratch folders that end with the process owning them (`acento.runtime`)."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from acento.runtime import remove_stale_scratch, scratch_folder
from tests.helpers import ROOT


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_scratch_folders_of_ended_processes_are_removed(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = dead_pid()
    stale = tmp_path / f"acento-final-{gone}-ab_12"
    (stale / "members").mkdir(parents=True)
    (stale / "members" / "fold0.pt").write_bytes(b"x")
    kept = [tmp_path / f"acento-ablate-{os.getppid()}-live1",  # a live owner (pytest's parent)
            tmp_path / "acento-final-x2k9",                      # named before the owner's id was in it
            tmp_path / f"other-final-{gone}-ab_12"]              # not ours
    for path in kept:
        path.mkdir()
    (tmp_path / f"acento-final-{gone}-file").write_text("a file, not a folder")
    mine = scratch_folder("final")  # removes the stale one first
    assert mine.name.startswith(f"acento-final-{os.getpid()}-") and mine.is_dir() and not any(mine.iterdir())
    assert not stale.exists()
    assert all(path.is_dir() for path in kept) and (tmp_path / f"acento-final-{gone}-file").is_file()
    assert remove_stale_scratch() == []  # its own folder is never stale
    assert mine.is_dir()


CHILD = """
import sys, time
import acento.runtime as runtime
if sys.argv[2] == "watcher":
    runtime._parent_death_signal = lambda signal_number: None  # as where prctl does not exist
else:
    runtime._watch_parent = lambda *args: None  # the kernel's signal alone
runtime.die_with_parent(poll_seconds=0.1)
open(sys.argv[1], "w").close()
time.sleep(600)
"""


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["kernel", "watcher"])
def test_a_process_ends_with_its_killed_parent_by_either_mechanism(tmp_path, how):
    """die_with_parent: the kernel's parent-death signal and, without it, the thread watching the parent
    each end the process once its parent is SIGKILLed."""
    from tests.training.test_final import _alive, _wait_for

    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(ready), how], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    child = int(parent.stdout.readline())
    try:
        _wait_for(ready.exists, 60, "child ready")
        parent.kill()
        parent.wait()
        _wait_for(lambda: not _alive(child), 30, "end of the child")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        parent.kill()
