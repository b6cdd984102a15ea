"""Prometheus metrics of the workers, correct with several worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the worker command sets it to a fresh
directory before anything imports this module or ``prometheus_client``: the
mode is chosen at import), every process writes
its samples to files there and the main process serves their sum on
``WORKER_METRICS_PORT`` through a ``MultiProcessCollector`` (``scrape_registry``,
served by ``tasks.worker_probes``). Without it, the
default registry of this one process is served.

Prometheus's multi-process mode has no per-process collectors (the
``process_*`` and ``python_info`` series): the served registry adds them for
the main process, the one that runs the consumer and, with the default
threads pool, every task too (with ``--pool prefork`` they describe the parent
only). The build-info gauge (``sync_core.build_info``) is served beside them.

The V2 call latency histogram (``v1sync_v2_request_seconds``) lives beside the
client that measures it, in ``tasks.clients.v2``; the V2 -> V1 direction's V1
call histogram (``v1sync_v1_request_seconds``) in ``tasks.clients.v1_committees``.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
)

from sync_core.build_info import register_build_info

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

TASK_OUTCOMES = Counter(
    "v1sync_task_outcomes",
    "Sync task runs by V1 object type and outcome.",
    ["object_type", "outcome"],
)
SKIPPED = Counter(
    "v1sync_skipped",
    "Task runs skipped without a V2 call, by object type and reason.",
    ["object_type", "reason"],
)
DEAD_LETTERS = Counter(
    "v1sync_dead_letters",
    "Tasks written to the dead letters, by object type and error kind.",
    ["object_type", "error_kind"],
)
DELETES = Counter(
    "v1sync_deletes",
    "V1 deletes that reached the delete path, by object type and result "
    "(deleted, already_gone, refused, budget_exceeded, disabled).",
    ["object_type", "result"],
)
TOMBSTONED_UPSERTS = Counter(
    "v1sync_tombstoned_upserts",
    "Upserts of a V1 record whose V2 object was deleted on purpose (not re-created).",
    ["object_type"],
)
# From seconds (a change synced at once) to a day (a child that waited for its parent).
SYNC_LAG_BUCKETS = (
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    86400.0,
)
SYNC_LAG = Histogram(
    "v1sync_sync_lag_seconds",
    "From the V1 change's write into v1-objects (its JetStream timestamp) to the end of "
    "the V2 write that synced it, by object type.",
    ["object_type"],
    buckets=SYNC_LAG_BUCKETS,
)
V2_TO_V1_OUTCOMES = Counter(
    "v1sync_v2_to_v1_outcomes",
    "V2 -> V1 task runs (SYNC_V2_TO_V1) by V2 object type and outcome "
    "(created, updated, deleted, skipped:echo, skipped:not_in_v1, parked, retrying, ...).",
    ["object_type", "outcome"],
)
KEY_LOCK_WAITS = Counter(
    "v1sync_key_lock_waits",
    "Task runs that found their key locked by another task and came back later.",
)


def multiprocess_dir() -> str | None:
    """The directory of the multi-process samples, when that mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def scrape_registry(path: str | None = None) -> CollectorRegistry:
    """The registry to serve: the sum over ``path`` (or the env dir), else this process."""
    path = path or multiprocess_dir()
    if not path:
        _build_info_on_default_registry()
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    # The default registry's own collectors are not in the multi-process sum.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    register_build_info(registry)
    return registry


_build_info_registered = threading.Lock()
_build_info_done: list[bool] = []


def _build_info_on_default_registry() -> None:
    """Register the build-info gauge on the default registry, once per process."""
    with _build_info_registered:
        if not _build_info_done:
            register_build_info(REGISTRY)
            _build_info_done.append(True)


def mark_process_dead(pid: int) -> None:
    """Tidy the samples of a pool process that exited (multi-process mode only)."""
    path = multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(pid, path)


def observe_sync_lag(object_type: str, written_at: datetime | None) -> None:
    """Observe the time since ``written_at`` (the V1 write) now that its V2 write ended.

    Nothing is observed without the write time (a delete marker carries none that
    the run reads). A clock skew that puts the write in the future counts as 0.
    """
    if written_at is None:
        return
    lag = time.time() - written_at.timestamp()
    SYNC_LAG.labels(object_type=object_type).observe(max(0.0, lag))


def record_skip(object_type: str, reason: str) -> None:
    """Count one skipped run."""
    SKIPPED.labels(object_type=object_type, reason=reason).inc()
