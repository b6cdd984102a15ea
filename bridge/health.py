"""``/livez``, ``/readyz`` and ``/metrics`` over HTTP on ``BIND``:``PORT``.

The standard library's threading HTTP server on a daemon thread: it answers
even while the event loop is busy, and it only reads state the loop writes
(plain attribute reads, safe under the GIL).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, bool]]
Exposition = Callable[[], bytes]


class _Handler(BaseHTTPRequestHandler):
    # Without this, Nagle's algorithm delays each response by ~40 ms.
    disable_nagle_algorithm = True
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/livez":
            self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            checks = self.server.readiness()
            status = HTTPStatus.OK if all(checks.values()) else HTTPStatus.SERVICE_UNAVAILABLE
            body = json.dumps({"ready": status == HTTPStatus.OK, "checks": checks}).encode()
            self._reply(status, body + b"\n", "application/json")
        elif path == "/metrics":
            self._reply(HTTPStatus.OK, self.server.exposition(), CONTENT_TYPE_LATEST)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Probes hit these endpoints every few seconds: keep them out of the logs.
        return


class HealthServer(ThreadingHTTPServer):
    """The bridge's probe and metrics endpoint."""

    daemon_threads = True

    def __init__(self, host: str, port: int, readiness: Readiness, exposition: Exposition) -> None:
        super().__init__((host, port), _Handler)
        self.readiness = readiness
        self.exposition = exposition
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful when asked for port 0)."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="bridge-health", daemon=True
        )
        self._thread.start()
        log.info("health endpoint listening", extra={"port": self.port})

    def stop(self) -> None:
        """Stop serving and release the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
