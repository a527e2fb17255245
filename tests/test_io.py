from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.io import FolderLockError, folder_lock

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from data.io import folder_lock
with folder_lock(sys.argv[1], what="test holder"):
    Path(sys.argv[2]).write_text("held")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.02)
"""


def _holder(folder: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A second process that holds the lock on ``folder`` until ``release`` exists."""
    ready, release = tmp_path / "ready", tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(ready), str(release)], env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "lock holder exited early"
        assert time.monotonic() < deadline, "lock holder did not start"
        time.sleep(0.02)
    return proc, release


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folder_lock_creates_and_removes_the_lock_file(tmp_path):
    folder = tmp_path / "ds"
    with folder_lock(folder, what="writing"):
        info = json.loads((folder / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["what"] == "writing"
    assert not (folder / ".lock").exists()


def test_folder_lock_is_released_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError), folder_lock(tmp_path):
        raise RuntimeError("boom")
    assert not (tmp_path / ".lock").exists()


def test_folder_lock_held_by_another_process_is_refused(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    proc, release = _holder(folder, tmp_path)
    try:
        with pytest.raises(FolderLockError) as err, folder_lock(folder, what="validation"):
            pass
        msg = str(err.value)
        assert f"{folder} is in use by PID {proc.pid}" in msg and "test holder" in msg
        assert f"remove {folder / '.lock'} if that process is gone" in msg
        assert "\n" not in msg
        # waiting a little does not help while it is held
        with pytest.raises(FolderLockError), folder_lock(folder, wait=0.3):
            pass
    finally:
        release.write_text("go")
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert not (folder / ".lock").exists()
    with folder_lock(folder):  # free again once the other process is done
        pass


def test_folder_lock_waits_for_a_short_holder(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    proc, release = _holder(folder, tmp_path)
    release.write_text("go")  # it lets go right away; `wait` covers the gap
    with folder_lock(folder, wait=30):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    proc.wait(timeout=60)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    dead = _dead_pid()
    (folder / ".lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "what": "crashed job"}))
    with folder_lock(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert not (folder / ".lock").exists()


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": "some-other-host", "what": "x"}))
    with pytest.raises(FolderLockError, match="some-other-host"), folder_lock(tmp_path):
        pass
    assert (tmp_path / ".lock").exists()
