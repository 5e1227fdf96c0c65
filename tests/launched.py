"""The multi-process tests' helpers: ``collabkit`` started as a real process tree (launcher, torchrun, workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def launched(argv: list[str], stderr=subprocess.PIPE) -> Iterator[subprocess.Popen]:
    """``python -m collabkit *argv`` running (output unbuffered), killed on the way out if it still runs."""
    launcher = subprocess.Popen([sys.executable, "-m", "collabkit", *argv], stdout=subprocess.PIPE, stderr=stderr,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield launcher
    finally:
        if launcher.poll() is None:
            launcher.kill()


def wait_for_file(launcher: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    """Wait until the run writes ``path`` (a checkpoint); fail if it ends or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() < deadline, f"{path.name} was not written"
        time.sleep(0.1)


def workers_of(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes below the launcher, read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if env.get(b"TORCHELASTIC_RUN_ID") is None or b"RANK" not in env:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == launcher_pid:
            found[int(env[b"RANK"])] = int(entry.name)
    return found


def kill_worker(launcher: subprocess.Popen, rank: int = 1, timeout: float = 90) -> str | None:
    """SIGKILL the worker of ``rank`` (of the two), then wait for the launcher to end; returns its stderr."""
    workers = workers_of(launcher.pid)
    assert set(workers) == {0, 1}
    os.kill(workers[rank], signal.SIGKILL)
    return launcher.communicate(timeout=timeout)[1]
