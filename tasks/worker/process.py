"""The worker process's runtime: opened once per process, closed at shutdown.

A prefork child opens its own at ``worker_process_init`` (a NATS loop thread
does not survive ``fork``); the threads and solo pools, and tests, create it
on first use (``get_runtime``). Tests build one for their servers and install
it with ``set_runtime``. The Celery signal handlers here act only for our app
(``tasks.worker.app``): other apps in the same process (tests) are left alone.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import signals
from celery._state import get_current_app

from sync_core.settings import WorkerSettings, load_settings
from tasks.run.metrics import mark_process_dead
from tasks.run.runtime import Runtime
from tasks.worker.app import app

log = logging.getLogger(__name__)

_runtime: Runtime | None = None
_runtime_pid: int | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, opened from the environment on first use."""
    global _runtime, _runtime_pid
    runtime = _runtime
    if runtime is not None and _runtime_pid == os.getpid():
        return runtime
    with _runtime_lock:
        if _runtime is None or _runtime_pid != os.getpid():
            # A runtime inherited through fork has a dead NATS thread: never reuse it.
            _runtime = Runtime.from_settings(load_settings(WorkerSettings), send_task=app.send_task)
            _runtime_pid = os.getpid()
        return _runtime


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Install ``runtime`` for this process (tests); returns the one it replaces.

    A runtime without a task sender gets the app's, as the process's own would.
    """
    global _runtime, _runtime_pid
    if runtime is not None and runtime.send_task is None:
        runtime.send_task = app.send_task
    with _runtime_lock:
        previous, _runtime = _runtime, runtime
        _runtime_pid = os.getpid() if runtime is not None else None
    return previous


def has_runtime() -> bool:
    """Whether this process has a runtime open already."""
    return _runtime is not None and _runtime_pid == os.getpid()


def close_runtime() -> None:
    """Close and forget this process's runtime, if it opened one."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        runtime, owned = _runtime, _runtime_pid == os.getpid()
        _runtime, _runtime_pid = None, None
    if runtime is not None and owned:
        runtime.close()


# Celery signals are process-wide: every handler first checks that the worker
# is ours, so other apps in the same process (tests) are left alone.


def _ours(worker: Any = None) -> bool:
    """Whether the signalling worker (or, without one, this process's current app) is ours."""
    owner = getattr(worker, "app", None) if worker is not None else get_current_app()
    return owner is app


@signals.worker_init.connect
def _check_settings(sender: Any = None, **_: Any) -> None:
    """Stop a worker with bad configuration before it takes any task (exit code 2)."""
    if _ours(sender) and not has_runtime():
        load_settings(WorkerSettings)


@signals.worker_process_init.connect
def _open_in_child(**_: Any) -> None:
    """A prefork child opens its own connections before its first task."""
    if not _ours():
        return
    try:
        get_runtime()
    except Exception:
        # The first task tries again and retries with backoff if it still fails.
        log.exception("could not open the worker's connections")


@signals.worker_process_shutdown.connect
def _close_in_child(pid: int | None = None, **_: Any) -> None:
    if _ours():
        close_runtime()
        mark_process_dead(pid or os.getpid())


@signals.worker_shutdown.connect
def _close_in_main(sender: Any = None, **_: Any) -> None:
    if _ours(sender):
        close_runtime()
