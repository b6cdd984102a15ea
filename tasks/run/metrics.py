"""Prometheus metrics of the workers, correct with several worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the worker command sets it to a fresh
directory before anything imports this module or ``prometheus_client``: the
mode is chosen at import), every process writes
its samples to files there and the main process serves their sum on
``WORKER_METRICS_PORT`` through a ``MultiProcessCollector``. Without it, the
default registry of this one process is served.

The V2 call latency histogram (``v1sync_v2_request_seconds``) lives beside the
client that measures it, in ``tasks.clients.v2``.
"""

from __future__ import annotations

import logging
import os
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, multiprocess, start_http_server

log = logging.getLogger(__name__)

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
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def serve_metrics(
    port: int, host: str = "0.0.0.0", path: str | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; stop with ``server.shutdown()``."""
    server, thread = start_http_server(port, addr=host, registry=scrape_registry(path))
    log.info("serving worker metrics", extra={"port": server.server_port})
    return server, thread


def mark_process_dead(pid: int) -> None:
    """Tidy the samples of a pool process that exited (multi-process mode only)."""
    path = multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(pid, path)


def record_skip(object_type: str, reason: str) -> None:
    """Count one skipped run."""
    SKIPPED.labels(object_type=object_type, reason=reason).inc()
