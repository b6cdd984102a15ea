"""``make run``'s supervisor: a pipeline process that died is restarted with one line,
and a crash loop is reported instead of restarted forever (real child processes)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from sandbox.stack import ChildProcess, Supervisor

DEADLINE = 20.0


class Clock:
    """A clock the test moves by hand, so the restart window needs no waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def child(tmp_path: Path, name: str, code: str) -> ChildProcess:
    return ChildProcess(
        name, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.log"
    )


def wait_exited(process: ChildProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while process.exit_code is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_killed_worker_is_restarted_and_the_stack_says_so(tmp_path: Path) -> None:
    worker = child(tmp_path, "worker", "import time; print('up', flush=True); time.sleep(60)")
    bridge = child(tmp_path, "bridge", "import time; time.sleep(60)")
    lines: list[str] = []
    supervisor = Supervisor([bridge, worker], lines.append, clock=Clock())
    worker.start()
    bridge.start()
    try:
        assert supervisor.check() is None
        assert lines == []
        assert worker.process is not None
        first_pid = worker.process.pid
        os.kill(first_pid, signal.SIGKILL)
        wait_exited(worker)

        assert supervisor.check() is None
        assert worker.exit_code is None
        assert worker.process.pid != first_pid
        (line,) = lines
        assert line.startswith("worker exited with code -9; restarted (1/5 in 60s)")
        assert bridge.exit_code is None  # the others are left alone
    finally:
        worker.stop()
        bridge.stop()


def test_a_crash_loop_is_reported_and_left_dead(tmp_path: Path) -> None:
    clock = Clock()
    bridge = child(tmp_path, "bridge", "import sys; sys.exit(3)")
    lines: list[str] = []
    supervisor = Supervisor([bridge], lines.append, max_restarts=3, window=60.0, clock=clock)
    bridge.start()
    try:
        for _ in range(3):
            wait_exited(bridge)
            assert supervisor.check() is None, lines
            clock.now += 1
        wait_exited(bridge)
        assert supervisor.check() is bridge
        assert len(lines) == 4
        assert "a crash loop, not restarting it" in lines[-1]
        assert bridge.exit_code == 3

        # Restarts older than the window no longer count.
        clock.now += 61
        assert supervisor.check() is None
        assert lines[-1].startswith("bridge exited with code 3; restarted (1/3 in 60s)")
    finally:
        bridge.stop()
