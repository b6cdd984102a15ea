"""The worker's HTTP endpoint: ``/livez``, ``/readyz`` and ``/metrics`` on one port.

Served from a daemon thread of the worker's main process (``WORKER_METRICS_PORT``),
so a Kubernetes ``httpGet`` probe costs the worker one small request and
starts no process. ``/livez`` and ``/readyz`` answer 200 or 503 with the
checks behind the verdict as JSON (``tasks.worker.health``); every other path
is Prometheus's exposition (``tasks.run.metrics``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from tasks.worker.health import HealthReport, WorkerHealth

log = logging.getLogger(__name__)

LIVENESS_PATH = "/livez"
READINESS_PATH = "/readyz"
JSON_HEADERS = [("Content-Type", "application/json")]
OK = "200 OK"
UNAVAILABLE = "503 Service Unavailable"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scrape never delays a probe."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Probes and scrapes every few seconds: keep them out of the logs.
        return


def probe_app(health: WorkerHealth, registry: CollectorRegistry) -> WsgiApp:
    """The WSGI app: the two probes, and the metrics of ``registry`` everywhere else."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == LIVENESS_PATH:
            return _reply(health.liveness(), start_response)
        if path == READINESS_PATH:
            return _reply(health.readiness(), start_response)
        return metrics(environ, start_response)

    return app


def _reply(report: HealthReport, start_response: StartResponse) -> list[bytes]:
    body = json.dumps({"ok": report.ok, "checks": report.checks}).encode() + b"\n"
    start_response(
        OK if report.ok else UNAVAILABLE, [*JSON_HEADERS, ("Content-Length", str(len(body)))]
    )
    return [body]


def serve_probes(
    port: int, host: str, health: WorkerHealth, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the probes and ``/metrics`` on ``host:port`` from a daemon thread.

    Stop with ``server.shutdown()`` then ``server.server_close()``.
    """
    server = make_server(
        host,
        port,
        probe_app(health, registry),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="worker-probes", daemon=True)
    thread.start()
    log.info("serving worker probes and metrics", extra={"port": server.server_port})
    return server, thread
